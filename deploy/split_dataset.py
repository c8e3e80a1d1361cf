"""Cut a dataset into one ``.npz`` file per device, the way simulation partitions it.

Each ``partition-<i>.npz`` holds ``x_train, y_train, x_test, y_test`` (images uint8
``[N,H,W]`` / ``[N,H,W,C]``, integer labels): device ``i``'s share of the dataset's
training split, of which a seeded ``--test-fraction`` is held out as its local test
set. Dataset split, partitioner and hold-out use the same functions and seeds as the
simulation (``tasks.loading.client_data``), so device ``i`` gets exactly simulated
client ``i``'s data when ``--seed`` and ``--dataset-test-fraction`` equal the run
config's ``seed`` and ``test-fraction``. The dataset's own test split never reaches a
device: the ServerApp evaluates on it centrally.

Usage::

    python deploy/split_dataset.py --dataset digits --partitioner dirichlet \
        --alpha 0.3 --num-partitions 3 --seed 42 --out data/
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

# Run as a script, Python puts deploy/ (not the repo root) on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.data import DatasetError, load_arrays, split_holdout, synthetic_devices  # noqa: E402
from tasks.partition import partition_indices  # noqa: E402

PARTITIONERS = ("iid", "dirichlet", "shard", "pathological", "natural")


def split_dataset(
    dataset: str,
    *,
    partitioner: str,
    num_partitions: int,
    seed: int,
    test_fraction: float = 0.1,
    dataset_test_fraction: float = 0.2,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    classes_per_client: int = 2,
) -> list[dict[str, np.ndarray]]:
    """Return one ``{x_train, y_train, x_test, y_test}`` dict per device.

    Parameters
    ----------
    dataset : str
        Dataset name as in the run config (``digits``, ``synthetic``, a hub name or
        an ``.npz`` path).
    partitioner : str
        ``iid``, ``dirichlet``, ``shard``, ``pathological`` or ``natural``
        (``synthetic`` only: one partition per generated device).
    num_partitions : int
        Number of devices, at least 1.
    seed : int
        Seed of the dataset split, the partitioner and each device's hold-out
        (device ``i`` uses ``seed + i``, as the simulation does).
    test_fraction : float
        Share of each device's examples held out as its local test set, in [0, 1).
    dataset_test_fraction : float
        Share of the dataset kept as the server's central test set, in (0, 1).
    alpha, shards_per_client, classes_per_client
        Partitioner parameters, as in the run config.

    Returns
    -------
    list[dict[str, np.ndarray]]
        Arrays of device ``0 .. num_partitions - 1``.
    """
    if partitioner not in PARTITIONERS:
        raise ValueError(f"partitioner={partitioner!r} is unknown; use one of {', '.join(PARTITIONERS)}")
    if num_partitions < 1:
        raise ValueError(f"num-partitions={num_partitions} must be >= 1")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test-fraction={test_fraction} must be in [0, 1)")
    if not 0.0 < dataset_test_fraction < 1.0:
        raise ValueError(f"dataset-test-fraction={dataset_test_fraction} must be in (0, 1)")

    if partitioner == "natural":
        if dataset != "synthetic":
            raise ValueError(f"partitioner='natural' needs dataset='synthetic', got dataset={dataset!r}")
        # Each device generated alone, as a simulated client generates it (tasks.loading).
        dev = synthetic_devices(alpha=1.0, beta=1.0, num_devices=num_partitions, iid=False, seed=seed)
        x_train, y_train = np.concatenate(dev.x_train), np.concatenate(dev.y_train)
        bounds = np.cumsum([0] + [len(y) for y in dev.y_train])
        parts = [np.arange(bounds[i], bounds[i + 1]) for i in range(num_partitions)]
    else:
        x_train, y_train, _, _ = load_arrays(dataset, seed=seed, test_fraction=dataset_test_fraction)
        parts = partition_indices(
            y_train,
            partitioner=partitioner,
            num_partitions=num_partitions,
            seed=seed,
            alpha=alpha,
            shards_per_client=shards_per_client,
            classes_per_client=classes_per_client,
        )

    devices = []
    for i, idx in enumerate(parts):
        train_pos, test_pos = split_holdout(len(idx), fraction=test_fraction, seed=seed + i)
        tr, te = idx[train_pos], idx[test_pos]
        devices.append(
            {"x_train": x_train[tr], "y_train": y_train[tr], "x_test": x_train[te], "y_test": y_train[te]}
        )
    return devices


def write_devices(devices: list[dict[str, np.ndarray]], out: Path) -> list[Path]:
    """Write ``out/partition-<i>.npz`` for every device (atomically) and return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arrays in enumerate(devices):
        path = out / f"partition-{i}.npz"
        # A device may be copying the previous file while we rewrite it.
        tmp = out / f".partition-{i}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write one .npz data file per device (partition-<i>.npz), "
        "partitioned as in edgebloom's simulation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset", default="digits", help="digits, synthetic, a hub dataset or an .npz path"
    )
    parser.add_argument("--partitioner", default="iid", choices=PARTITIONERS)
    parser.add_argument("--num-partitions", type=int, required=True, help="number of devices")
    parser.add_argument("--seed", type=int, default=42, help="equal to the run config's seed")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (dirichlet)")
    parser.add_argument("--shards-per-client", type=int, default=2, help="shards per device (shard)")
    parser.add_argument("--classes-per-client", type=int, default=2, help="classes per device (pathological)")
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of each device's data held out as its x_test/y_test",
    )
    parser.add_argument(
        "--dataset-test-fraction",
        type=float,
        default=0.2,
        help="the run config's test-fraction: the server's test split, which devices never get",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        devices = split_dataset(
            args.dataset,
            partitioner=args.partitioner,
            num_partitions=args.num_partitions,
            seed=args.seed,
            test_fraction=args.test_fraction,
            dataset_test_fraction=args.dataset_test_fraction,
            alpha=args.alpha,
            shards_per_client=args.shards_per_client,
            classes_per_client=args.classes_per_client,
        )
    except (ValueError, DatasetError) as exc:  # DatasetError is a ValueError; named for readers
        parser.error(str(exc))
    for path, arrays in zip(write_devices(devices, args.out), devices, strict=True):
        labels = np.unique(arrays["y_train"]) if arrays["y_train"].dtype.kind in "iu" else []
        print(
            f"{path}: {len(arrays['y_train'])} train, {len(arrays['y_test'])} test"
            + (f", labels {labels.tolist()}" if len(labels) else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
