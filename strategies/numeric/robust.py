"""Byzantine-robust aggregation rules, framework-free (numpy in, numpy out).

- Coordinate-wise median and beta-trimmed mean: Yin et al. 2018, "Byzantine-Robust
  Distributed Learning: Towards Optimal Statistical Rates" (arXiv:1803.01498). The
  median tolerates f < n/2 Byzantine clients; the trimmed mean needs beta >= f/n,
  i.e. at least f values trimmed on each side of every coordinate.
- Krum / Multi-Krum: Blanchard et al. 2017, "Machine Learning with Adversaries:
  Byzantine Tolerant Gradient Descent" (arXiv:1703.02757). The guarantee needs
  n > 2f + 2.
- Norm-bounded mean: each client's update is clipped to a global L2 norm, then
  averaged with weights (e.g. number of training examples).

Every rule takes one ``list[np.ndarray]`` per client (one array per layer, the same
shapes for every client) and returns one ``list[np.ndarray]`` with those shapes and
the inputs' dtype. Sums (and the median's middle pair) are accumulated in float64, so
finite inputs near the float32 maximum do not overflow; integer layers are rounded to
the nearest integer (ties to even) before the cast back. (Strategies pass only
floating-point parameters, see ``strategies/core/buffers.py``; the integer handling is for
direct callers.)

Updates or models
-----------------
Median, trimmed mean and Multi-Krum commute with a common shift, so they can be fed
either client updates ``Delta_k = w_k - w`` or client models ``w_k``:
``median_k(w + Delta_k) = w + median_k(Delta_k)`` (Krum distances do not change
under the shift, so it selects the same clients). ``norm_bounded_mean`` does *not*:
clipping a model's norm is meaningless, so it must be fed updates.

Inputs must be finite (filter replies with ``strategies.core.reply_checks`` first); a
non-finite value raises ``ValueError`` rather than silently poisoning the result.
Each rule validates its arguments against the actual number of clients; the
``validate_*`` functions and ``check_robust_config`` let a strategy reject a
configuration outside the guarantee before the first round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeGuard

import numpy as np

Layers = list[np.ndarray]

# Tolerates float error in beta * n, so that beta=0.29, n=100 trims 29 values.
_TRIM_EPS = 1e-9


def _check_updates(updates: Sequence[Layers]) -> None:
    if len(updates) == 0:
        raise ValueError("updates must contain at least one client, got 0")
    if len(updates[0]) == 0:
        raise ValueError("updates[0] must contain at least one layer, got 0")
    shapes = [np.shape(a) for a in updates[0]]
    for k, layers in enumerate(updates):
        if len(layers) != len(shapes):
            raise ValueError(
                f"updates[{k}] has {len(layers)} layers, expected {len(shapes)} "
                "(the number of layers of updates[0])"
            )
        for i, (a, shape) in enumerate(zip(layers, shapes, strict=True)):
            if np.shape(a) != shape:
                raise ValueError(f"updates[{k}][{i}] has shape {np.shape(a)}, expected {shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"updates[{k}][{i}] contains non-finite values")


def _stack_layer(updates: Sequence[Layers], i: int) -> tuple[np.ndarray, np.dtype]:
    """Return layer ``i`` of every client stacked on axis 0, and the output dtype."""
    arrays = [np.asarray(layers[i]) for layers in updates]
    dtype = np.result_type(*{a.dtype for a in arrays})
    stacked = np.stack(arrays)
    if not np.issubdtype(stacked.dtype, np.inexact):
        stacked = stacked.astype(np.float64)
    return stacked, dtype


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if not np.issubdtype(dtype, np.inexact):
        # Truncation would bias integer layers towards zero.
        values = np.rint(values)
    return np.asarray(values).astype(dtype)


def _check_weights(weights: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"weights must be finite and > 0, got {w.tolist()}")
    return w


def _weighted_mean(updates: Sequence[Layers], coefficients: np.ndarray) -> Layers:
    """Return ``sum_k coefficients[k] * updates[k]`` layer by layer."""
    result = []
    for i in range(len(updates[0])):
        stacked, dtype = _stack_layer(updates, i)
        mean = np.tensordot(coefficients, stacked.astype(np.float64, copy=False), axes=1)
        result.append(_cast(mean, dtype))
    return result


def _flatten(updates: Sequence[Layers]) -> np.ndarray:
    """Return the (n, D) float64 matrix of flattened client updates."""
    return np.stack(
        [np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in layers]) for layers in updates]
    )


def _global_norm(layers: Layers) -> float:
    """L2 norm of all of a client's layers taken together."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in layers))


def _is_int(value: object) -> TypeGuard[int | np.integer]:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# --------------------------------------------------------------------------- #
# Validation                                                                  #
# --------------------------------------------------------------------------- #


def _check_num_clients(num_clients: object) -> None:
    if not (_is_int(num_clients) and num_clients >= 1):
        raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")


def _check_num_byzantine(num_byzantine: object) -> None:
    if not (_is_int(num_byzantine) and num_byzantine >= 0):
        raise ValueError(f"num_byzantine must be an integer >= 0, got {num_byzantine!r}")


def _num_trimmed(num_clients: int, beta: float) -> int:
    return math.floor(beta * num_clients + _TRIM_EPS)


def validate_median(*, num_clients: int, num_byzantine: int = 0) -> None:
    """Check that the coordinate-wise median tolerates ``num_byzantine`` clients.

    Parameters
    ----------
    num_clients : int
        Number of clients aggregated per round, n >= 1.
    num_byzantine : int, default 0
        Number of Byzantine clients f to tolerate; needs 2f < n.

    Raises
    ------
    ValueError
        Naming the parameter, its value and the violated condition.
    """
    _check_num_clients(num_clients)
    _check_num_byzantine(num_byzantine)
    if 2 * num_byzantine >= num_clients:
        raise ValueError(f"median needs n > 2f, got n={num_clients}, f={num_byzantine}")


def validate_trimmed_mean(*, num_clients: int, beta: float, num_byzantine: int = 0) -> None:
    """Check a beta-trimmed-mean configuration.

    Parameters
    ----------
    num_clients : int
        Number of clients aggregated per round, n >= 1.
    beta : float
        Fraction trimmed from each side, in [0, 0.5); floor(beta * n) values are
        removed from the top and from the bottom of every coordinate.
    num_byzantine : int, default 0
        Number of Byzantine clients f to tolerate; needs floor(beta * n) >= f
        (beta >= f / n), so that every Byzantine value can be trimmed.

    Raises
    ------
    ValueError
        Naming the parameter, its value and the violated condition.
    """
    _check_num_clients(num_clients)
    _check_num_byzantine(num_byzantine)
    if not (isinstance(beta, int | float | np.floating) and 0 <= beta < 0.5):
        raise ValueError(f"beta must be in [0, 0.5), got beta={beta!r}")
    trimmed = _num_trimmed(num_clients, beta)
    # Implied by beta < 0.5 up to float error; kept so the reason is explicit.
    if 2 * trimmed >= num_clients:
        raise ValueError(
            f"trimmed-mean needs 2 * floor(beta * n) < n (some values left), got beta={beta}, n={num_clients}"
        )
    if trimmed < num_byzantine:
        raise ValueError(
            f"trimmed-mean needs floor(beta * n) >= f (beta >= f / n), got "
            f"beta={beta}, n={num_clients}, f={num_byzantine}: trims {trimmed} per side"
        )


def validate_krum(*, num_clients: int, num_byzantine: int, num_selected: int) -> None:
    """Check a (Multi-)Krum configuration against n > 2f + 2 and 1 <= m <= n - f.

    Parameters
    ----------
    num_clients : int
        Number of clients aggregated per round, n.
    num_byzantine : int
        Number of Byzantine clients f to tolerate, f >= 0.
    num_selected : int
        Number of clients m averaged; m = 1 is Krum.

    Raises
    ------
    ValueError
        Naming the parameter, its value and the violated condition, e.g.
        ``multi-krum needs n > 2f + 2, got n=5, f=2``.
    """
    _check_num_clients(num_clients)
    _check_num_byzantine(num_byzantine)
    if num_clients <= 2 * num_byzantine + 2:
        raise ValueError(f"multi-krum needs n > 2f + 2, got n={num_clients}, f={num_byzantine}")
    if not _is_int(num_selected) or not 1 <= num_selected <= num_clients - num_byzantine:
        raise ValueError(
            f"multi-krum needs num_selected m in [1, n - f] = "
            f"[1, {num_clients - num_byzantine}], got m={num_selected!r}"
        )


def validate_norm_bounded_mean(*, max_norm: float) -> None:
    """Check that ``max_norm`` is finite and > 0.

    Parameters
    ----------
    max_norm : float
        Bound on each client's global L2 update norm.

    Raises
    ------
    ValueError
        If ``max_norm`` is not a finite number > 0.
    """
    if not (
        isinstance(max_norm, int | float | np.number)
        and not isinstance(max_norm, bool)
        and math.isfinite(max_norm)
        and max_norm > 0
    ):
        raise ValueError(f"max_norm must be finite and > 0, got max_norm={max_norm!r}")


def _validate_norm_bounded_config(*, num_clients: int, max_norm: float) -> None:
    _check_num_clients(num_clients)
    validate_norm_bounded_mean(max_norm=max_norm)


_VALIDATORS: dict[str, Callable[..., None]] = {
    "median": validate_median,
    "trimmed-mean": validate_trimmed_mean,
    "multi-krum": validate_krum,
    "norm-bounded-mean": _validate_norm_bounded_config,
}


def check_robust_config(name: str, *, num_clients: int, **params: object) -> None:
    """Validate a robust-aggregation configuration by rule name.

    Parameters
    ----------
    name : str
        One of ``"median"``, ``"trimmed-mean"``, ``"multi-krum"``,
        ``"norm-bounded-mean"``.
    num_clients : int
        Number of clients aggregated per round.
    **params
        Keyword arguments of the rule's ``validate_*`` function, e.g. ``beta``
        and ``num_byzantine`` for ``"trimmed-mean"``.

    Raises
    ------
    ValueError
        If ``name`` is unknown (listing the known names), a parameter is missing or
        unexpected, or the configuration is outside the rule's guarantee.
    """
    if name not in _VALIDATORS:
        raise ValueError(f"unknown robust aggregation {name!r}; known: {sorted(_VALIDATORS)}")
    try:
        _VALIDATORS[name](num_clients=num_clients, **params)
    except TypeError as err:  # missing or unexpected keyword
        raise ValueError(f"invalid parameters for {name!r}: {err}") from err


# --------------------------------------------------------------------------- #
# Aggregation rules                                                           #
# --------------------------------------------------------------------------- #


def coordinate_median(updates: Sequence[Layers]) -> Layers:
    """Coordinate-wise median of client updates (Yin et al. 2018).

    Parameters
    ----------
    updates : sequence of list of np.ndarray
        One layer list per client, same shapes for every client, finite values.

    Returns
    -------
    list of np.ndarray
        Per coordinate, the median over clients; for an even number of clients the
        mean of the two middle values.
    """
    _check_updates(updates)
    result = []
    for i in range(len(updates[0])):
        stacked, dtype = _stack_layer(updates, i)
        result.append(_cast(_median(stacked), dtype))
    return result


def _median(stacked: np.ndarray) -> np.ndarray:
    """Median over axis 0; the two middle values of an even count are averaged in float64.

    ``np.median`` averages them in the input's dtype, and ``(a + b) / 2`` of two float32
    values near the maximum is ``inf``. Partitioning stays in the input dtype (no float64
    copy of the whole stack); only the two middle rows are widened.
    """
    n = len(stacked)
    if n % 2:
        return np.partition(stacked, n // 2, axis=0)[n // 2]
    part = np.partition(stacked, [n // 2 - 1, n // 2], axis=0)
    return (part[n // 2 - 1].astype(np.float64) + part[n // 2]) / 2.0


def trimmed_mean(updates: Sequence[Layers], *, beta: float) -> Layers:
    """Coordinate-wise beta-trimmed mean of client updates (Yin et al. 2018).

    Parameters
    ----------
    updates : sequence of list of np.ndarray
        One layer list per client, same shapes for every client, finite values.
    beta : float
        In [0, 0.5). Per coordinate, the floor(beta * n) largest and the
        floor(beta * n) smallest values are removed and the rest averaged
        (beta * n within 1e-9 of an integer counts as that integer).

    Returns
    -------
    list of np.ndarray
        The trimmed mean, layer by layer.

    Raises
    ------
    ValueError
        If ``beta`` is outside [0, 0.5) or nothing would be left after trimming.
    """
    _check_updates(updates)
    n = len(updates)
    validate_trimmed_mean(num_clients=n, beta=beta)
    k = _num_trimmed(n, beta)
    result = []
    for i in range(len(updates[0])):
        stacked, dtype = _stack_layer(updates, i)
        kept = np.sort(stacked, axis=0)[k : n - k]
        result.append(_cast(kept.mean(axis=0, dtype=np.float64), dtype))
    return result


def _pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``x`` (centred in place)."""
    # Distances are shift-invariant; centring on the coordinate median keeps the
    # honest rows' norms small, so ||a||^2 + ||b||^2 - 2<a, b> does not cancel
    # catastrophically under a large common offset (models rather than updates)
    # or when huge Byzantine rows would drag a mean-centre away. In place: x can
    # be a (100 x 1.7M) float64 matrix.
    x -= np.median(x, axis=0)
    gram = x @ x.T
    sq_norms = np.diag(gram)
    dist = sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def _krum_scores(flat: np.ndarray, num_byzantine: int) -> np.ndarray:
    dist = _pairwise_sq_distances(flat)
    np.fill_diagonal(dist, np.inf)  # a client is not its own neighbour
    num_neighbours = len(flat) - num_byzantine - 2
    return np.sort(dist, axis=1)[:, :num_neighbours].sum(axis=1)


def krum_scores(updates: Sequence[Layers], *, num_byzantine: int) -> np.ndarray:
    """Krum score of every client (Blanchard et al. 2017).

    Parameters
    ----------
    updates : sequence of list of np.ndarray
        One layer list per client, same shapes for every client, finite values.
    num_byzantine : int
        Number of Byzantine clients f; needs n > 2f + 2.

    Returns
    -------
    np.ndarray
        Shape (n,), float64: for each client, the sum of squared L2 distances to
        its n - f - 2 nearest other clients.
    """
    _check_updates(updates)
    validate_krum(num_clients=len(updates), num_byzantine=num_byzantine, num_selected=1)
    return _krum_scores(_flatten(updates), num_byzantine)


def multi_krum(
    updates: Sequence[Layers],
    *,
    num_byzantine: int,
    num_selected: int,
    weights: Sequence[float] | np.ndarray | None = None,
) -> tuple[Layers, list[int]]:
    """Multi-Krum: average the ``num_selected`` clients with the lowest Krum score.

    Parameters
    ----------
    updates : sequence of list of np.ndarray
        One layer list per client, same shapes for every client, finite values.
    num_byzantine : int
        Number of Byzantine clients f; needs n > 2f + 2.
    num_selected : int
        Number of clients m averaged, in [1, n - f]; m = 1 is Krum.
    weights : sequence of float, optional
        Positive per-client weights (e.g. number of training examples). If given,
        the selected clients are averaged with these weights; by default the
        average is unweighted, as in the paper.

    Returns
    -------
    aggregate : list of np.ndarray
        Average of the selected clients, layer by layer.
    selected : list of int
        Indices of the selected clients, lowest score first (ties to the lower
        index).

    Raises
    ------
    ValueError
        If n <= 2f + 2, m is outside [1, n - f], or ``weights`` is invalid.
    """
    _check_updates(updates)
    n = len(updates)
    validate_krum(num_clients=n, num_byzantine=num_byzantine, num_selected=num_selected)
    w = np.ones(n) if weights is None else _check_weights(weights, n)
    scores = _krum_scores(_flatten(updates), num_byzantine)
    selected = [int(k) for k in np.argsort(scores, kind="stable")[:num_selected]]
    chosen_w = w[selected]
    aggregate = _weighted_mean([updates[k] for k in selected], chosen_w / chosen_w.sum())
    return aggregate, selected


def norm_bounded_mean(
    updates: Sequence[Layers],
    weights: Sequence[float] | np.ndarray,
    *,
    max_norm: float,
) -> Layers:
    """Clip every client's update to ``max_norm``, then take the weighted mean.

    Computes ``sum_k w_k * Delta_k * min(1, S / ||Delta_k||) / sum_k w_k`` with
    ``S = max_norm`` and ``||.||`` the L2 norm over all of a client's layers. Feed
    updates, not models: clipping does not commute with a shift.

    Parameters
    ----------
    updates : sequence of list of np.ndarray
        One update per client, same shapes for every client, finite values.
    weights : sequence of float
        One weight > 0 per client, e.g. its number of training examples.
    max_norm : float
        Finite bound S > 0.

    Returns
    -------
    list of np.ndarray
        The weighted mean of the clipped updates; its norm is at most ``max_norm``.

    Raises
    ------
    ValueError
        If ``max_norm`` or ``weights`` is invalid.
    """
    _check_updates(updates)
    validate_norm_bounded_mean(max_norm=max_norm)
    w = _check_weights(weights, len(updates))
    norms = np.array([_global_norm(layers) for layers in updates])
    # np.divide with where= avoids 0/0 for all-zero updates (which need no clipping).
    factors = np.minimum(1.0, np.divide(max_norm, norms, out=np.ones_like(norms), where=norms > 0))
    return _weighted_mean(updates, w * factors / w.sum())
