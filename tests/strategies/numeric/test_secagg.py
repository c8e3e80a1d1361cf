"""The SecAgg+ arithmetic on known values: encoding, decoding, modulus, graph, masks."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.numeric.secagg import (
    LOSS_RANGE,
    MAX_MODULUS_BITS,
    MIN_MODULUS_BITS,
    add_mod,
    below_threshold,
    capped_weight,
    decode_sum,
    encode_update,
    mean_error_bound,
    modulus_bits,
    neighbours,
    subtract_mod,
    wrap_problem,
)


def test_modulus_is_the_smallest_power_of_two_above_the_largest_sum() -> None:
    # 10 clients x weight 1000 x (R + 1 = 2^20 + 1): 10_485_770_000 < 2^34.
    assert modulus_bits(num_clients=10, max_weight=1000, quantization_range=2**20) == 34
    assert 10 * 1000 * (2**20 + 1) < 2**34 and 10 * 1000 * (2**20 + 1) >= 2**33
    # Small sums still get 32 bits of mask.
    assert modulus_bits(num_clients=2, max_weight=1, quantization_range=4) == MIN_MODULUS_BITS


def test_a_sum_too_large_for_int64_masks_is_refused_naming_the_keys() -> None:
    assert wrap_problem(num_clients=100, max_weight=10_000, quantization_range=2**22) is None
    problem = wrap_problem(num_clients=2**30, max_weight=2**20, quantization_range=2**22)
    assert problem is not None and "secagg-max-weight" in problem and str(MAX_MODULUS_BITS) in problem


def test_weights_are_capped_integers() -> None:
    assert [capped_weight(n, 100) for n in (0, 7, 100, 101, 10_000)] == [0, 7, 100, 100, 100]


def test_values_on_the_quantization_grid_decode_exactly_to_the_weighted_mean() -> None:
    # Prepare: c = 1, R = 4 → grid step 0.5; values on the grid quantize without rounding.
    deltas = [[np.array([0.5, -1.0, 0.0])], [np.array([-1.0, 1.0, 0.5])]]
    weights, losses = [1, 3], [50.0, 25.0]

    # Execute
    encoded = [
        encode_update(d, weight=w, train_loss=loss, unclipped=u, clipping_range=1.0, quantization_range=4)
        for d, w, loss, u in zip(deltas, weights, losses, (1, 0), strict=True)
    ]
    total = [a + b for a, b in zip(*encoded, strict=True)]
    secure = decode_sum(total, clipping_range=1.0, quantization_range=4, num_clients=2)

    # Assert: (1*0.5 + 3*(-1))/4 = -0.625, (1*(-1) + 3*1)/4 = 0.5, (0 + 3*0.5)/4 = 0.375.
    np.testing.assert_array_equal(secure.mean_update[0], [-0.625, 0.5, 0.375])
    assert secure.total_weight == 4 and secure.unclipped == 1 and secure.num_clients == 2
    assert secure.train_loss == pytest.approx((50.0 + 3 * 25.0) / 4)
    np.testing.assert_allclose(secure.weighted_update_sum[0], [-2.5, 2.0, 1.5])


def test_off_grid_values_decode_within_one_step_and_beyond_c_are_clipped() -> None:
    rng = np.random.default_rng(0)
    c, r = 0.5, 2**10
    deltas = [[rng.uniform(-0.4, 0.4, (20, 3))] for _ in range(5)]
    deltas[0][0][0, 0] = 3.0  # beyond c: clipped to 0.5
    weights = [3, 1, 4, 1, 5]
    total = None
    for d, w in zip(deltas, weights, strict=True):
        enc = encode_update(d, weight=w, train_loss=1.0, unclipped=0, clipping_range=c, quantization_range=r)
        total = enc if total is None else [a + b for a, b in zip(total, enc, strict=True)]
    secure = decode_sum(total, clipping_range=c, quantization_range=r, num_clients=5)
    plain = sum(w * np.clip(d[0], -c, c) for d, w in zip(deltas, weights, strict=True)) / sum(weights)
    bound = mean_error_bound(clipping_range=c, quantization_range=r)
    assert bound == 2 * c / r
    assert np.max(np.abs(secure.mean_update[0] - plain)) < bound


def test_a_non_finite_loss_is_reported_as_the_loss_range() -> None:
    enc = encode_update(
        [np.zeros(2)],
        weight=2,
        train_loss=float("nan"),
        unclipped=0,
        clipping_range=1.0,
        quantization_range=4,
    )
    assert decode_sum(enc, clipping_range=1.0, quantization_range=4, num_clients=1).train_loss == LOSS_RANGE


def test_a_zero_total_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="total weight"):
        decode_sum(
            [np.zeros(3, np.int64), np.zeros(2, np.int64)],
            clipping_range=1,
            quantization_range=4,
            num_clients=1,
        )


def test_masks_added_and_subtracted_modulo_a_power_of_two_cancel() -> None:
    rng = np.random.default_rng(1)
    modulus = 2**40
    value = [rng.integers(0, modulus, (4, 2), dtype=np.int64)]
    mask = [rng.integers(0, modulus, (4, 2), dtype=np.int64)]
    masked = add_mod(value, mask, modulus)
    assert masked[0].min() >= 0 and masked[0].max() < modulus
    np.testing.assert_array_equal(subtract_mod(masked, mask, modulus)[0], value[0])


def test_the_neighbour_graph_is_a_symmetric_ring_of_num_shares_nodes() -> None:
    nodes = list(range(100, 120))
    graph = neighbours(nodes, 5, np.random.default_rng(0))
    assert set(graph) == set(nodes)
    for node, near in graph.items():
        assert node in near and len(near) == 5
        assert all(node in graph[other] for other in near)
    full = neighbours(nodes[:4], 5, np.random.default_rng(0))
    assert all(near == frozenset(nodes[:4]) for near in full.values())


def test_nodes_below_threshold_are_those_with_too_few_live_neighbours() -> None:
    graph = {
        1: frozenset({1, 2, 3}),
        2: frozenset({1, 2, 3}),
        3: frozenset({1, 2, 3}),
        4: frozenset({4, 3, 1}),
    }
    assert below_threshold(graph, {1, 2, 3, 4}, 3, [1, 2, 3, 4]) == []
    assert below_threshold(graph, {1, 2, 4}, 3, [1, 2, 3, 4]) == [1, 2, 3, 4]
