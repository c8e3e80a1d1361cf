"""Byzantine attacks for robustness experiments, framework-free and seedable.

The attacks commonly used to evaluate robust aggregation, e.g. in Yin et al. 2018,
"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
(arXiv:1803.01498) and Blanchard et al. 2017, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent" (arXiv:1703.02757):

- sign flip: send ``-c * Delta`` instead of the honest update ``Delta``;
- scaling: send ``c * Delta``;
- Gaussian: send ``N(0, scale^2)`` noise with the update's shapes;
- label flipping: train on ``num_classes - 1 - y`` instead of ``y``.

Update attacks take and return one client's update as ``list[np.ndarray]`` (one
array per layer) and keep each layer's shape and dtype; the input is not modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np

from tasks.config import Section, declare, in_range, one_of

Layers = list[np.ndarray]


#: Values of run-config key ``attack``: what the attacking clients send (README "Reliability").
ATTACKS = ("none", "sign-flip", "scale", "gaussian", "label-flip")


@dataclass(frozen=True)
class AttackConfig(Section):
    """Keys of the attack simulation (simulation engine only; README "Reliability")."""

    attack: str = declare(
        "none",
        "Byzantine clients: none, sign-flip (−cΔ), scale (cΔ), gaussian (N(0, c²)), label-flip",
        one_of(*ATTACKS),
    )
    attack_fraction: float = declare(0.2, "share of partitions that attack (chosen by seed)", in_range(0, 1))
    attack_scale: float = declare(
        10.0, "c of sign-flip / scale; noise std of gaussian", in_range(0, 1e6, lo_open=True)
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_scale(scale: float, *, positive: bool) -> None:
    bound = "> 0" if positive else ">= 0"
    ok = (
        isinstance(scale, int | float | np.number)
        and not isinstance(scale, bool)
        and math.isfinite(scale)
        and (scale > 0 if positive else scale >= 0)
    )
    if not ok:
        raise ValueError(f"scale must be finite and {bound}, got scale={scale!r}")


def sign_flip(update: Layers, *, scale: float) -> Layers:
    """Return ``-scale * update``, layer by layer.

    Parameters
    ----------
    update : list of np.ndarray
        The honest update Delta.
    scale : float
        Finite c > 0 (c = 1 is a plain sign flip).

    Returns
    -------
    list of np.ndarray
        ``-c * Delta`` with the layers' shapes and dtypes.
    """
    _check_scale(scale, positive=True)
    return [(-scale * np.asarray(a)).astype(np.asarray(a).dtype) for a in update]


def scale_update(update: Layers, *, scale: float) -> Layers:
    """Return ``scale * update``, layer by layer (a boosting attack for c > 1).

    Parameters
    ----------
    update : list of np.ndarray
        The honest update Delta.
    scale : float
        Finite c > 0.

    Returns
    -------
    list of np.ndarray
        ``c * Delta`` with the layers' shapes and dtypes.
    """
    _check_scale(scale, positive=True)
    return [(scale * np.asarray(a)).astype(np.asarray(a).dtype) for a in update]


def gaussian_update(update: Layers, *, scale: float, rng: np.random.Generator) -> Layers:
    """Return i.i.d. ``N(0, scale^2)`` noise shaped like ``update``.

    Parameters
    ----------
    update : list of np.ndarray
        The honest update; only its shapes and dtypes are used.
    scale : float
        Finite standard deviation >= 0.
    rng : np.random.Generator
        Source of randomness, e.g. ``np.random.default_rng(seed)``.

    Returns
    -------
    list of np.ndarray
        Noise arrays with the layers' shapes and dtypes.
    """
    _check_scale(scale, positive=False)
    return [rng.normal(0.0, scale, size=np.shape(a)).astype(np.asarray(a).dtype) for a in update]


def choose_attacked(num_partitions: int, *, fraction: float, seed: int) -> list[int]:
    """Choose which partitions are Byzantine, reproducibly.

    ``round(fraction * num_partitions)`` ids are taken (halves round up) from a
    permutation drawn with ``seed``, so for one seed a larger fraction attacks a
    superset of the partitions a smaller one does.

    Parameters
    ----------
    num_partitions : int
        Number of partitions (clients), >= 1; ids are 0 .. num_partitions - 1.
    fraction : float
        Fraction of attacked partitions, in [0, 1].
    seed : int
        Seed of the permutation.

    Returns
    -------
    list of int
        The attacked partition ids, sorted.
    """
    if not _is_int(num_partitions) or num_partitions < 1:
        raise ValueError(f"num_partitions must be an integer >= 1, got {num_partitions!r}")
    if not (isinstance(fraction, int | float) and 0 <= fraction <= 1):
        raise ValueError(f"fraction must be in [0, 1], got fraction={fraction!r}")
    # Half-up rather than Python's round-half-to-even: 25% of 10 attacks 3, not 2.
    count = math.floor(fraction * num_partitions + 0.5)
    order = np.random.default_rng(seed).permutation(num_partitions)
    return sorted(int(k) for k in order[:count])


def flip_labels(y: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Map every label ``y`` to ``num_classes - 1 - y``.

    Parameters
    ----------
    y : np.ndarray
        Integer labels in [0, num_classes).
    num_classes : int
        Number of classes, >= 2.

    Returns
    -------
    np.ndarray
        The flipped labels, same shape and dtype as ``y``.
    """
    if not _is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"y must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]")
    return (num_classes - 1 - y).astype(y.dtype)
