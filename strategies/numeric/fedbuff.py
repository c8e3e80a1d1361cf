"""Buffered asynchronous aggregation math, framework-free (numpy in, numpy out).

Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation"
(FedBuff, arXiv:2106.06639). The server keeps a fixed number of clients training
concurrently. Each returned update ``Delta_k = w_k - w_old`` is scaled by the staleness
weight ``s(tau) = 1 / sqrt(1 + tau)``, where ``tau`` counts the global model versions
published since the client downloaded ``w_old``, and added to a buffer. After ``K``
updates the server applies ``w <- w + eta_g * buffer / K`` and clears the buffer.

Sign convention: ``Delta_k`` points the way the client moved, so the buffer is added
(the paper writes ``w - eta_g * buffer / K`` with ``Delta = w_old - w_k``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Layers = list[np.ndarray]


def staleness_weight(tau: int) -> float:
    """Weight of an update that is ``tau`` model versions old: ``1 / sqrt(1 + tau)``.

    Parameters
    ----------
    tau : int
        Staleness, an integer >= 0 (0 = computed on the current global model).

    Returns
    -------
    float
        ``s(tau)`` in (0, 1]; ``s(0) = 1``, ``s(3) = 0.5``.

    Raises
    ------
    ValueError
        If ``tau`` is not an integer >= 0 (bools and floats are rejected: staleness
        counts model versions).
    """
    if isinstance(tau, bool) or not isinstance(tau, int | np.integer) or tau < 0:
        raise ValueError(f"tau must be an integer >= 0 (model versions), got {tau!r}")
    return 1.0 / math.sqrt(1 + int(tau))


def apply_buffer(
    weights: Sequence[np.ndarray],
    buffer_sum: Sequence[np.ndarray],
    *,
    count: int,
    server_lr: float,
) -> Layers:
    """Apply a full buffer: ``w + server_lr * buffer_sum / count``.

    Parameters
    ----------
    weights : sequence of np.ndarray
        Current global weights, one array per layer.
    buffer_sum : sequence of np.ndarray
        Sum of staleness-weighted updates ``sum_k s(tau_k) * Delta_k``, with the shapes
        of ``weights``.
    count : int
        Number of updates K in the buffer, an integer >= 1.
    server_lr : float
        Server learning rate eta_g, finite and > 0.

    Returns
    -------
    list of np.ndarray
        New weights, each layer in the dtype of the matching ``weights`` layer (computed
        in float64; integer layers rounded to the nearest integer).

    Raises
    ------
    ValueError
        If ``count`` or ``server_lr`` is out of range, layer counts or shapes differ, or
        a value is non-finite.
    """
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"count must be an integer >= 1 (updates in the buffer), got {count!r}")
    if (
        isinstance(server_lr, bool)
        or not isinstance(server_lr, int | float | np.integer | np.floating)
        or not (math.isfinite(server_lr) and server_lr > 0)
    ):
        raise ValueError(f"server_lr must be in (0, inf), got {server_lr!r}")
    if len(weights) == 0:
        raise ValueError("weights must contain at least one layer, got 0")
    if len(buffer_sum) != len(weights):
        raise ValueError(f"buffer_sum has {len(buffer_sum)} layers, expected {len(weights)} (as weights)")
    scale = float(server_lr) / int(count)
    new_weights = []
    for i, (w, b) in enumerate(zip(weights, buffer_sum, strict=True)):
        w64 = np.asarray(w, dtype=np.float64)
        b64 = np.asarray(b, dtype=np.float64)
        if b64.shape != w64.shape:
            raise ValueError(f"buffer_sum[{i}] has shape {b64.shape}, expected {w64.shape} (as weights[{i}])")
        if not (np.all(np.isfinite(w64)) and np.all(np.isfinite(b64))):
            raise ValueError(f"weights[{i}] or buffer_sum[{i}] contains non-finite values")
        updated = w64 + scale * b64
        dtype = np.asarray(w).dtype
        if not np.issubdtype(dtype, np.inexact):
            # Truncation would bias integer layers towards zero.
            updated = np.rint(updated)
        # Beyond the dtype's range this is inf: FedBuff's released-model check keeps the model.
        with np.errstate(over="ignore"):
            new_weights.append(updated.astype(dtype))
    return new_weights
