"""Aggregation math on plain NumPy arrays.

FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", arXiv:1602.05629): w ← Σ_k (n_k / n)·w_k with n = Σ_k n_k.

The weighted average is memory-bound: it reads every reply once and does two flops per
value. It runs at about the memory-bandwidth floor (``python -m bench --only
aggregation``) by reading the replies in place and accumulating with BLAS axpy.

Overflow: a convex combination of finite values cannot exceed their largest magnitude,
but a float32 accumulator can: BLAS takes the factor n_k / n as a float32 (1/3 rounds
up), and rounding errors add, so three replies near the float32 maximum summed to
``inf``. Each accumulator block is checked while it is still in cache (one float32 sum:
``inf`` or ``nan`` anywhere makes it non-finite); only a block that did not stay finite
is accumulated again in float64 from the inputs. The common path reads every input once,
as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.linalg.blas import daxpy, saxpy

Layers = list[np.ndarray]

#: BLAS y ← a·x + y, in place on a contiguous float32 / float64 ``y``.
_AXPY: dict[np.dtype, Callable] = {np.dtype(np.float32): saxpy, np.dtype(np.float64): daxpy}
#: Elements per block: 128K float32 = 512 KiB of accumulator, small enough to stay in a core's L2.
_BLOCK = 131_072


def normalized_weights(weights: Sequence[float]) -> np.ndarray:
    """n_k / Σ n: raise ``ValueError`` for empty, negative, non-finite or all-zero weights."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0:
        raise ValueError("weights must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and >= 0, got {w.tolist()}")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights sum to 0: nothing to average")
    return w / total


def weighted_average(updates: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> Layers:
    """Σ_k (w_k / Σw)·x_k per layer; each output keeps its input layer's dtype.

    Float layers are accumulated in place with BLAS axpy (y ← a·x + y) straight from the
    inputs, which may be read-only zero-copy views of the reply payloads
    (``strategies.core.records.array_view``): the only memory written is the output. The
    layer is walked in blocks of ``_BLOCK`` elements so the accumulator block stays in
    cache while every client's block streams past it; each input is read once. A block
    that overflowed float32 is accumulated again in float64 (see the module docstring).

    Parameters
    ----------
    updates : Sequence[Sequence[np.ndarray]]
        One list of layers per client; all clients share the layer shapes.
    weights : Sequence[float]
        One non-negative weight per client (FedAvg: its number of training examples).

    Returns
    -------
    list[np.ndarray]
        The weighted average, one array per layer.
    """
    factors = normalized_weights(weights)
    if len(updates) != len(factors):
        raise ValueError(f"{len(updates)} updates but {len(factors)} weights")
    first = updates[0]
    out: Layers = []
    for i, layer in enumerate(first):
        column = [client[i] for client in updates]
        for x in column:
            if x.shape != layer.shape:
                raise ValueError(f"layer {i}: shape {x.shape} differs from {layer.shape}")
        axpy = _AXPY.get(np.dtype(layer.dtype))
        if axpy is not None:
            out.append(_axpy_average(column, factors, axpy, layer.dtype).reshape(layer.shape))
        else:
            out.append(_generic_average(column, factors, layer.dtype))
    return out


def _axpy_average(
    column: list[np.ndarray], factors: np.ndarray, axpy: Callable, dtype: np.dtype
) -> np.ndarray:
    flat = [_flat(x) for x in column]
    acc = np.zeros(flat[0].size, dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing check sum is expected
        for lo in range(0, acc.size, _BLOCK):
            block = acc[lo : lo + _BLOCK]
            for x, factor in zip(flat, factors, strict=True):
                # axpy writes into ``block`` (a contiguous view of acc) and returns it.
                axpy(x[lo : lo + _BLOCK], block, a=float(factor))
            # A float32 sum of the block overflows only if the block holds values near the
            # maximum (or inf/nan): then, and only then, redo the block in float64.
            if dtype != np.float64 and not np.isfinite(block.sum()):
                block[...] = _float64_block(flat, factors, lo, block.size)
    return acc


def _float64_block(flat: list[np.ndarray], factors: np.ndarray, lo: int, size: int) -> np.ndarray:
    """Σ_k factor_k·x_k[lo : lo + size] accumulated in float64 (values near the float32 maximum)."""
    acc = np.zeros(size, dtype=np.float64)
    for x, factor in zip(flat, factors, strict=True):
        acc += float(factor) * x[lo : lo + size].astype(np.float64)
    return acc


def _flat(x: np.ndarray) -> np.ndarray:
    """A 1-D C-order view of ``x`` (copied only if ``x`` is not C-contiguous)."""
    return (x if x.flags.c_contiguous else np.ascontiguousarray(x)).reshape(-1)


def _generic_average(column: list[np.ndarray], factors: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer (and other) layers: accumulate in float64, round back to the layer's dtype."""
    acc = np.zeros(column[0].shape, dtype=np.result_type(dtype, np.float64))
    for x, factor in zip(column, factors, strict=True):
        acc += x * factor
    if not np.issubdtype(dtype, np.floating):
        acc = np.rint(acc)
    return acc.astype(dtype, copy=False)
