"""Random data files of a given image shape, in the app's ``.npz`` format (``tasks.data.read_npz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPES = {"mnist": (28, 28), "digits": (8, 8)}


def random_images_npz(directory: Path, kind: str, num_train: int, num_test: int = 200, seed: int = 0) -> Path:
    """Write ``<kind>-<num_train>.npz``: uint8 images [N,H,W] and labels 0..9 (once per size)."""
    path = directory / f"{kind}-{num_train}.npz"
    if not path.exists():
        rng = np.random.default_rng(seed)
        h, w = SHAPES[kind]
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            x_train=rng.integers(0, 256, (num_train, h, w), dtype=np.uint8),
            y_train=rng.integers(0, 10, num_train),
            x_test=rng.integers(0, 256, (num_test, h, w), dtype=np.uint8),
            y_test=rng.integers(0, 10, num_test),
        )
    return path
