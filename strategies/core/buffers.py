"""Parameters and buffers of a model, and the check of every released model: one rule for all strategies.

The rule
--------
An array with a floating-point dtype is a **parameter**; any other array (BatchNorm's
``num_batches_tracked``, an ``int64`` counter) is a **buffer**. Strategies aggregate
parameters only: no clipping, norm, distance, DP noise, robust statistic or server
optimizer step ever sees a buffer, and the released global model carries the *previous
global model's* buffers unchanged. Why:

- A counter is not a coordinate of the model. With a counter step of 100 next to a
  0.10 weight step, a global norm is dominated by the counter: norm-bounded FedAvg and
  DP-FedAvg clipped the weight step to 0.001, and Multi-Krum ranked clients by their
  counters and chose an attacker over honest clients.
- Under DP nothing client-derived may be released without noise; the previous model's
  buffers are public already, so carrying them forward spends no privacy.
- Every strategy (FedAvg and its subclasses, FedBuff's buffer application, the DP
  wrapper) applies the rule through the functions below, so it cannot differ between
  them. ``num_batches_tracked`` only matters to BatchNorm with ``momentum=None``
  (cumulative averages); the running means and variances are float buffers and are
  averaged like parameters.

The released model
------------------
Every rule computes in float64 where a float32 sum can overflow, yet an aggregate of
finite replies near the float32 maximum, a server optimizer's step or DP noise can still
leave the float32 range. :func:`check_released_model` is applied once to the model a
round would release, after every rule; a non-finite model is not released: the round
keeps the previous model, logs a warning and counts ``non-finite-model`` in the round's
``rejected``. Nothing raises.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies.core.reply_checks import Rejection

#: Reason counted in ``RoundStats.rejected`` when the aggregate is not finite.
NON_FINITE_MODEL = "non-finite-model"


def is_parameter(dtype: np.dtype | type) -> bool:
    """Whether an array of ``dtype`` is a parameter (floating point), not a buffer."""
    return bool(np.issubdtype(np.dtype(dtype), np.floating))


def parameter_indices(layers: Sequence[np.ndarray]) -> list[int]:
    """Positions of the parameters (floating-point arrays) among ``layers``, in order."""
    return [i for i, a in enumerate(layers) if is_parameter(np.asarray(a).dtype)]


def select(layers: Sequence[np.ndarray], indices: Sequence[int]) -> list[np.ndarray]:
    """``layers`` at ``indices`` (the parameters, given :func:`parameter_indices`)."""
    return [layers[i] for i in indices]


def with_previous_buffers(
    parameters: Sequence[np.ndarray], previous: Sequence[np.ndarray], indices: Sequence[int]
) -> list[np.ndarray]:
    """The full model: ``parameters`` at ``indices``, the ``previous`` model's arrays elsewhere.

    Parameters
    ----------
    parameters : sequence of np.ndarray
        The new parameters, one per index.
    previous : sequence of np.ndarray
        The previous global model, every array (its buffers are carried over unchanged).
    indices : sequence of int
        Positions of the parameters in the model.

    Returns
    -------
    list of np.ndarray
        One array per array of ``previous``.

    Raises
    ------
    ValueError
        If there is not one parameter per index.
    """
    if len(parameters) != len(indices):
        raise ValueError(f"{len(parameters)} parameter arrays for {len(indices)} parameter positions")
    merged = list(previous)
    for i, p in zip(indices, parameters, strict=True):
        merged[i] = p
    return merged


def check_released_model(names: Sequence[str], layers: Sequence[np.ndarray]) -> Rejection | None:
    """``Rejection(non-finite-model, …)`` naming the first array with a non-finite value, or None.

    Parameters
    ----------
    names : sequence of str
        Array names, for the message.
    layers : sequence of np.ndarray
        The model a round would release.
    """
    for name, a in zip(names, layers, strict=True):
        a = np.asarray(a)
        if is_parameter(a.dtype):
            bad = a.size - int(np.count_nonzero(np.isfinite(a)))
            if bad:
                return Rejection(
                    NON_FINITE_MODEL,
                    f"{name}: {bad} non-finite value(s) in the aggregate (out of the float range of "
                    f"{a.dtype}); the round keeps the previous model",
                )
    return None
