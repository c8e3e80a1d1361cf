"""Aggregation math on plain NumPy arrays.

FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", arXiv:1602.05629): w ← Σ_k (n_k / n)·w_k with n = Σ_k n_k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Layers = list[np.ndarray]


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
        # Accumulate floats in their own precision (float32 stays float32: K ≤ 1000
        # normalized terms lose nothing that matters) and integers in float64.
        acc_dtype = np.dtype(layer.dtype if np.issubdtype(layer.dtype, np.floating) else np.float64)
        acc = np.zeros(layer.shape, dtype=acc_dtype)
        tmp = np.empty_like(acc)
        for client, factor in zip(updates, factors, strict=True):
            x = client[i]
            if x.shape != layer.shape:
                raise ValueError(f"layer {i}: shape {x.shape} differs from {layer.shape}")
            np.multiply(x, acc_dtype.type(factor), out=tmp, casting="unsafe")
            acc += tmp
        if not np.issubdtype(layer.dtype, np.floating):
            acc = np.rint(acc)
        out.append(acc.astype(layer.dtype, copy=False))
    return out
