"""The arithmetic of SecAgg+: what a client masks, how the server reads the unmasked sum.

Bell et al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead"
(arXiv:2006.04747), as Flower implements it (Bonawitz et al. 2017 for SecAgg). Client k
sends ``y_k = v_k + PRG(b_k) + Σ_{j<k} PRG(s_kj) − Σ_{j>k} PRG(s_kj)  (mod 2^b)`` where
``v_k`` is its *encoded* contribution (below); pairwise masks cancel in ``Σ_k y_k``, the
server removes the survivors' ``PRG(b_k)`` and the dropped clients' pairwise masks, and is
left with ``Σ_k v_k mod 2^b``. This module is that encoding and its inverse, the modulus
that keeps the sum from wrapping, the neighbour graph and the error bound; no Flower
records, no cryptography (the masks come from Flower's ``pseudo_rand_gen``, the
quantizer is Flower's ``quantize`` / ``dequantize``).

Encoding (what is masked)
-------------------------
The client masks its weighted *update* ``w_k·Q(Δ_k)``, Δ_k = x_k − x (local model minus the
global model it received), not its model: updates are small and centred on 0, so a
small ``clipping_range`` c covers them and the quantization step ``2c/R`` is fine (a
model's weights would need a c as large as the largest weight). With client-side DP
clipping ‖Δ_k‖ ≤ S, so every coordinate is within [−S, S] and ``c ≥ S`` loses nothing.

- ``Q(Δ) = quantize(Δ, c, R)``: clip to [−c, c], map to [0, R] with stochastic rounding
  (unbiased): an integer in [0, R] per coordinate.
- ``w_k = min(n_k, max_weight)``: the integer example count, capped, so the sum is bounded.
- The masked vector is ``[meta, w_k·Q(Δ_k) per layer]`` with ``meta = [w_k,
  w_k·Q_loss(loss_k), u_k]`` (the train loss quantized over [0, ``LOSS_RANGE``], and DP's
  unclipped bit u_k), so the server learns Σ w_k, the weighted-mean train loss and the
  number of unclipped updates, nothing per client.

Decoding: with ``W = Σ w_k`` and ``T = Σ w_k·Q(Δ_k)``, the weighted mean update is
``dequantize(T / W, c, R) = (T/W)·2c/R − c = Σ_k (w_k/W)·(Q(Δ_k)·2c/R − c)``.

Error bound: stochastic rounding moves each client's coordinate by less than one step
``2c/R``, so per coordinate ``|mean − Σ_k (w_k/W)·clip(Δ_k, c)| < 2c/R`` (the weighted
sum ``W·mean`` is within ``W·2c/R``), and coordinates beyond ±c are clipped to ±c.

No wrap-around: every entry of ``v_k`` is at most ``max_weight·R``, so the sum over K
clients is below ``K·max_weight·(R + 1)``; the modulus ``2^b`` is the smallest power of two
above it (at least ``2^MIN_MODULUS_BITS``: masks need entropy), and at most
``2^MAX_MODULUS_BITS`` (int64 arithmetic: a sum of two residues must not overflow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize

#: Bytes of a client's private mask seed b (Flower's PRG folds it into a 32-bit seed, 4 bytes at a time).
SEED_BYTES = 32
#: The train loss a client reports is quantized over [0, LOSS_RANGE] (cross-entropy above it is clipped).
LOSS_RANGE = 100.0
#: Entries of the meta array: weight, weight * quantized loss, unclipped bit.
META_LENGTH = 3
#: Smallest modulus exponent: masks drawn from a tiny range would hide little.
MIN_MODULUS_BITS = 32
#: Largest: residues < 2^62, so a sum of two stays inside int64 before it is reduced.
MAX_MODULUS_BITS = 62
#: Largest quantization range: Flower's stochastic rounding produces int32.
MAX_QUANTIZATION_RANGE = 2**30
#: The most clients per round the run-config check allows for (2^20, about a million).
MAX_CLIENTS_BITS = 20

Layers = list[np.ndarray[Any, Any]]


def modulus_bits(*, num_clients: int, max_weight: int, quantization_range: int) -> int:
    """B such that ``num_clients`` encoded vectors sum below ``2^b`` (never wrap).

    Parameters
    ----------
    num_clients : int
        K, the clients whose vectors may be summed (the round's sample).
    max_weight : int
        The cap on each client's weight (``secagg-max-weight``).
    quantization_range : int
        R (``secagg-quantization-range``).

    Returns
    -------
    int
        ``max(MIN_MODULUS_BITS, bit_length(K·max_weight·(R+1)))``; may exceed
        ``MAX_MODULUS_BITS`` (the caller refuses that, see :func:`wrap_problem`).
    """
    bound = max(num_clients, 1) * max_weight * (quantization_range + 1)
    return max(MIN_MODULUS_BITS, bound.bit_length())


def wrap_problem(*, num_clients: int, max_weight: int, quantization_range: int) -> str | None:
    """Why K clients' weighted, quantized sum would not fit the largest modulus, or None."""
    bits = modulus_bits(num_clients=num_clients, max_weight=max_weight, quantization_range=quantization_range)
    if bits <= MAX_MODULUS_BITS:
        return None
    return (
        f"{num_clients} clients x secagg-max-weight={max_weight} x secagg-quantization-range="
        f"{quantization_range} needs a {bits}-bit modulus, more than {MAX_MODULUS_BITS}: lower "
        "secagg-max-weight or secagg-quantization-range (or sample fewer clients per round)"
    )


def capped_weight(num_examples: int, max_weight: int) -> int:
    """``min(n_k, max_weight)``: the integer weight a client masks its update with."""
    return int(min(max(int(num_examples), 0), int(max_weight)))


def encode_update(
    delta: Sequence[np.ndarray],
    *,
    weight: int,
    train_loss: float,
    unclipped: int,
    clipping_range: float,
    quantization_range: int,
) -> Layers:
    """A client's contribution before masking: ``[meta, weight·Q(Δ) per layer]`` as int64.

    Parameters
    ----------
    delta : sequence of ndarray
        Δ_k, the floating-point parameters' update (local − global), in model order.
    weight : int
        w_k = min(n_k, max_weight) (:func:`capped_weight`).
    train_loss : float
        The client's mean train loss (quantized over [0, LOSS_RANGE]; NaN counts as LOSS_RANGE).
    unclipped : int
        DP's unclipped bit (1 if ‖Δ_k‖ ≤ S), 0 without client clipping.
    clipping_range, quantization_range : float, int
        c and R.
    """
    quantized = quantize([np.asarray(d, np.float64) for d in delta], clipping_range, quantization_range)
    loss = train_loss if math.isfinite(train_loss) else LOSS_RANGE
    half = LOSS_RANGE / 2
    (loss_q,) = quantize([np.asarray(min(max(loss, 0.0), LOSS_RANGE) - half)], half, quantization_range)
    meta = np.array([weight, weight * int(loss_q), int(unclipped)], dtype=np.int64)
    return [meta] + [weight * q.astype(np.int64) for q in quantized]


@dataclass(frozen=True)
class SecureSum:
    """What the server learns from one round of SecAgg+: sums over the survivors only.

    Attributes
    ----------
    mean_update : list of ndarray
        Σ_k w_k·Δ_k / Σ_k w_k (float64, dequantized), one array per floating-point layer.
    total_weight : int
        W = Σ_k w_k.
    train_loss : float or None
        Σ_k w_k·loss_k / W (None when W = 0).
    unclipped : int
        Σ_k u_k, the number of updates within DP's clipping norm.
    num_clients : int
        The survivors whose vectors are in the sum.
    """

    mean_update: Layers
    total_weight: int
    train_loss: float | None
    unclipped: int
    num_clients: int

    @property
    def weighted_update_sum(self) -> Layers:
        """Σ_k w_k·Δ_k."""
        return [m * self.total_weight for m in self.mean_update]


def decode_sum(
    total: Sequence[np.ndarray], *, clipping_range: float, quantization_range: int, num_clients: int
) -> SecureSum:
    """The unmasked sum ``[Σ meta, Σ w_k·Q(Δ_k) ...]`` (mod already removed) as a :class:`SecureSum`.

    Raises
    ------
    ValueError
        If the total weight is not positive (nothing to average).
    """
    meta = np.asarray(total[0], np.int64)
    weight = int(meta[0])
    if weight <= 0:
        raise ValueError(f"the secure sum carries a total weight of {weight}; nothing to average")
    # dequantize maps q to q*2c/R - c; the weighted mean of the q's maps to the weighted mean of Δ.
    # (Flower types dequantize's input as integer arrays; the affine map is the same for means.)
    mean = dequantize(
        cast(Layers, [np.asarray(t, np.float64) / weight for t in total[1:]]),
        clipping_range,
        quantization_range,
    )
    half = LOSS_RANGE / 2
    (loss,) = dequantize(cast(Layers, [np.asarray(float(meta[1]) / weight)]), half, quantization_range)
    return SecureSum(
        mean_update=[np.asarray(m, np.float64) for m in mean],
        total_weight=weight,
        train_loss=float(loss) + half,
        unclipped=int(meta[2]),
        num_clients=num_clients,
    )


def mean_error_bound(*, clipping_range: float, quantization_range: int) -> float:
    """Per-coordinate bound on |secure mean − plain weighted mean of the clipped updates|: 2c/R."""
    return 2 * clipping_range / quantization_range


# ------------------------------------------------------------------ modular arithmetic
def add_mod(a: Sequence[np.ndarray], b: Sequence[np.ndarray], modulus: int) -> Layers:
    """(a + b) mod ``modulus`` (a power of two ≤ 2^62), elementwise, in int64."""
    return parameters_mod(parameters_addition(list(a), list(b)), modulus)


def subtract_mod(a: Sequence[np.ndarray], b: Sequence[np.ndarray], modulus: int) -> Layers:
    """(a − b) mod ``modulus`` (a power of two: two's complement makes the mask exact)."""
    return parameters_mod(parameters_subtraction(list(a), list(b)), modulus)


# ------------------------------------------------------------------ the neighbour graph
def neighbours(
    node_ids: Sequence[int], num_shares: int, rng: np.random.Generator
) -> dict[int, frozenset[int]]:
    """SecAgg+'s sparse graph: each node and its ``num_shares − 1`` neighbours (itself included).

    Nodes are shuffled onto a ring and linked to the ``num_shares // 2`` on each side (Flower's
    construction; Bell et al. use a random k-regular graph with k = O(log n)). With
    ``num_shares ≥ len(node_ids)`` every node is every node's neighbour (SecAgg).
    """
    order = [int(n) for n in node_ids]
    rng.shuffle(order)
    count = len(order)
    if num_shares >= count:
        everyone = frozenset(order)
        return {n: everyone for n in order}
    half = num_shares // 2
    return {
        n: frozenset(order[(i + offset) % count] for offset in range(-half, half + 1))
        for i, n in enumerate(order)
    }


def below_threshold(
    graph: dict[int, frozenset[int]], alive: set[int], threshold: int, nodes: Sequence[int] | set[int]
) -> list[int]:
    """The nodes of ``nodes`` with fewer than ``threshold`` alive neighbours (themselves included)."""
    return sorted(n for n in nodes if len(graph[n] & alive) < threshold)
