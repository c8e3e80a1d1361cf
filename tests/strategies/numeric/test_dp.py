"""Tests for strategies.numeric.dp: hand-computed values, sensitivity properties, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.numeric.dp import (
    adaptive_clip_update,
    add_gaussian_noise,
    client_weights,
    clip_update,
    clipped_denominator_aggregate,
    clipped_denominator_noise_std,
    clipped_denominator_sensitivity,
    expected_total_weight,
    fixed_denominator_aggregate,
    fixed_denominator_noise_std,
    fixed_denominator_sensitivity,
    l2_norm,
    make_noise_rng,
    uniform_aggregate,
    uniform_noise_std,
    uniform_sensitivity,
    update_noise_multiplier,
    validate_dp_params,
)

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return l2_norm([x - y for x, y in zip(a, b, strict=True)])


# --------------------------------------------------------------------------- #
# Norm and clipping                                                           #
# --------------------------------------------------------------------------- #


def test_l2_norm_spans_all_layers() -> None:
    # Prepare: 3-4-12 triangle split over two layers -> sqrt(9 + 16 + 144) = 13
    layers = [np.array([3.0, 4.0], dtype=np.float32), np.array([[12.0]])]

    # Execute / Assert
    assert l2_norm(layers) == pytest.approx(13.0)


def test_clip_update_scales_long_update_to_clip_norm() -> None:
    # Prepare: ||[3, 4]|| = 5 > S = 1, so the update is scaled by 1/5
    layers = [np.array([3.0, 4.0], dtype=np.float32)]

    # Execute
    clipped, unclipped = clip_update(layers, clip_norm=1.0)

    # Assert
    np.testing.assert_allclose(clipped[0], [0.6, 0.8], rtol=1e-6)
    assert clipped[0].dtype == np.float32
    assert unclipped is False


def test_clip_update_keeps_short_update() -> None:
    # Prepare: ||[3, 4]|| = 5 <= S = 10
    layers = [np.array([3.0, 4.0]), np.array([0.0])]

    # Execute
    clipped, unclipped = clip_update(layers, clip_norm=10.0)

    # Assert
    np.testing.assert_array_equal(clipped[0], [3.0, 4.0])
    np.testing.assert_array_equal(clipped[1], [0.0])
    assert unclipped is True
    assert clipped[0] is not layers[0]


def test_clip_update_norm_equal_to_clip_norm_counts_as_unclipped() -> None:
    _, unclipped = clip_update([np.array([3.0, 4.0])], clip_norm=5.0)

    assert unclipped is True


def test_clip_update_zero_vector_is_unchanged_without_division() -> None:
    # Prepare
    layers = [np.zeros(3), np.zeros((2, 2))]

    # Execute
    with np.errstate(all="raise"):
        clipped, unclipped = clip_update(layers, clip_norm=1.0)

    # Assert
    assert unclipped is True
    assert all(np.all(a == 0) for a in clipped)


@pytest.mark.parametrize("clip_norm", [0.0, -1.0, math.inf, math.nan])
def test_clip_update_rejects_bad_clip_norm(clip_norm: float) -> None:
    with pytest.raises(ValueError, match="clip_norm"):
        clip_update([np.ones(2)], clip_norm=clip_norm)


def test_clip_update_rejects_non_finite_update() -> None:
    with pytest.raises(ValueError, match="finite"):
        clip_update([np.array([1.0, np.inf])], clip_norm=1.0)


# --------------------------------------------------------------------------- #
# Weights                                                                     #
# --------------------------------------------------------------------------- #


def test_client_weights_are_capped_ratios() -> None:
    # Prepare: w_hat = 100 -> 50/100, 100/100, min(300/100, 1), 0/100
    num_examples = [50, 100, 300, 0]

    # Execute
    weights = client_weights(num_examples, weight_cap=100)

    # Assert
    np.testing.assert_allclose(weights, [0.5, 1.0, 1.0, 0.0])
    assert weights.dtype == np.float64


@pytest.mark.parametrize("weight_cap", [0, -5.0, math.inf, math.nan])
def test_client_weights_rejects_bad_weight_cap(weight_cap: float) -> None:
    with pytest.raises(ValueError, match="weight_cap"):
        client_weights([10, 20], weight_cap=weight_cap)


def test_client_weights_rejects_negative_num_examples() -> None:
    with pytest.raises(ValueError, match="num_examples"):
        client_weights([10, -1], weight_cap=10)


def test_expected_total_weight_without_counts_assumes_full_weights() -> None:
    assert expected_total_weight(population_size=250, weight_cap=100) == 250.0


def test_expected_total_weight_with_counts_sums_capped_weights() -> None:
    # Prepare: w_hat = 100 -> 0.5 + 1 + 1 + 0.2 = 2.7
    num_examples = [50, 100, 300, 20]

    # Execute / Assert
    assert expected_total_weight(
        population_size=4, weight_cap=100, num_examples=num_examples
    ) == pytest.approx(2.7)


def test_expected_total_weight_rejects_wrong_number_of_counts() -> None:
    with pytest.raises(ValueError, match="population_size"):
        expected_total_weight(population_size=3, weight_cap=10, num_examples=[1, 2])


@pytest.mark.parametrize("population_size", [0, -3, 2.5])
def test_expected_total_weight_rejects_bad_population_size(population_size: int) -> None:
    with pytest.raises(ValueError, match="population_size"):
        expected_total_weight(population_size=population_size, weight_cap=10)


def test_expected_total_weight_rejects_all_empty_clients() -> None:
    with pytest.raises(ValueError, match="total_weight"):
        expected_total_weight(population_size=2, weight_cap=10, num_examples=[0, 0])


# --------------------------------------------------------------------------- #
# Estimators on known values                                                  #
# --------------------------------------------------------------------------- #

# Two clients, one layer of 2 coordinates.
UPDATES = [[np.array([1.0, 0.0])], [np.array([0.0, 2.0])]]


def test_fixed_denominator_aggregate_known_values() -> None:
    # Prepare: weights 0.5, 1; q W = 0.1 * 50 = 5 -> ([0.5, 0] + [0, 2]) / 5
    weights = [0.5, 1.0]

    # Execute
    result = fixed_denominator_aggregate(UPDATES, weights, sampling_rate=0.1, total_weight=50.0)

    # Assert
    np.testing.assert_allclose(result[0], [0.1, 0.4])


def test_clipped_denominator_uses_floor_when_sum_is_small() -> None:
    # Prepare: sum w = 1.5 < q W_min = 0.5 * 10 = 5 -> ([0.5, 0] + [0, 2]) / 5
    result = clipped_denominator_aggregate(UPDATES, [0.5, 1.0], sampling_rate=0.5, min_total_weight=10.0)

    np.testing.assert_allclose(result[0], [0.1, 0.4])


def test_clipped_denominator_uses_sum_when_above_floor() -> None:
    # Prepare: sum w = 1.5 > q W_min = 0.1 * 10 = 1 -> ([0.5, 0] + [0, 2]) / 1.5
    result = clipped_denominator_aggregate(UPDATES, [0.5, 1.0], sampling_rate=0.1, min_total_weight=10.0)

    np.testing.assert_allclose(result[0], [1 / 3, 4 / 3])


def test_uniform_aggregate_is_mean() -> None:
    result = uniform_aggregate(UPDATES)

    np.testing.assert_allclose(result[0], [0.5, 1.0])


def test_aggregates_keep_float32() -> None:
    updates = [[np.array([1.0, 2.0], dtype=np.float32)], [np.array([3.0, 4.0], dtype=np.float32)]]

    assert uniform_aggregate(updates)[0].dtype == np.float32
    assert fixed_denominator_aggregate(updates, [1, 1], sampling_rate=1.0, total_weight=2)[0].dtype == (
        np.float32
    )


def test_aggregates_reject_weight_above_one() -> None:
    with pytest.raises(ValueError, match="weights"):
        fixed_denominator_aggregate(UPDATES, [0.5, 2.0], sampling_rate=0.1, total_weight=50.0)


def test_aggregates_reject_mismatched_shapes() -> None:
    updates = [[np.zeros(2)], [np.zeros(3)]]

    with pytest.raises(ValueError, match="shapes"):
        uniform_aggregate(updates)


def test_aggregates_reject_no_clients() -> None:
    with pytest.raises(ValueError, match="at least one client"):
        clipped_denominator_aggregate([], [], sampling_rate=0.1, min_total_weight=10.0)


# --------------------------------------------------------------------------- #
# Sensitivity: removing one sampled client                                    #
# --------------------------------------------------------------------------- #


@st.composite
def populations(draw: st.DrawFn) -> dict:
    """A sampled set of 2..8 clients (clipped updates, weights) and which one to remove."""
    num_sampled = draw(st.integers(2, 8))
    dim = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    clip_norm = draw(st.floats(0.1, 10.0))
    weight_cap = draw(st.floats(1.0, 200.0))
    rng = np.random.default_rng(seed)
    num_examples = rng.integers(0, 400, size=num_sampled)
    # Mix of long (clipped to S) and short updates; a second layer checks the global norm.
    scales = rng.choice([0.01, 1.0, 100.0], size=num_sampled)
    updates = [
        clip_update(
            [rng.normal(size=dim) * s, rng.normal(size=(2,)) * s],
            clip_norm=clip_norm,
        )[0]
        for s in scales
    ]
    return {
        "updates": updates,
        "weights": client_weights(num_examples, weight_cap=weight_cap),
        "removed": draw(st.integers(0, num_sampled - 1)),
        "clip_norm": clip_norm,
        "sampling_rate": draw(st.floats(0.01, 1.0)),
        "population_size": num_sampled + draw(st.integers(0, 1000)),
    }


def without(items: list, index: int) -> list:
    return items[:index] + items[index + 1 :]


@PROPERTY_SETTINGS
@given(pop=populations())
def test_fixed_denominator_sensitivity_bounds_removing_a_client(pop: dict) -> None:
    # Prepare: W = N (full weights assumed), the same for both neighbours
    total_weight = expected_total_weight(population_size=pop["population_size"], weight_cap=1.0)
    q, k = pop["sampling_rate"], pop["removed"]
    weights = list(pop["weights"])

    # Execute
    full = fixed_denominator_aggregate(pop["updates"], weights, sampling_rate=q, total_weight=total_weight)
    neighbour = fixed_denominator_aggregate(
        without(pop["updates"], k), without(weights, k), sampling_rate=q, total_weight=total_weight
    )
    bound = fixed_denominator_sensitivity(
        clip_norm=pop["clip_norm"], sampling_rate=q, total_weight=total_weight
    )

    # Assert: S / (q W), by hand
    assert bound == pytest.approx(pop["clip_norm"] / (q * total_weight))
    assert distance(full, neighbour) <= bound * (1 + 1e-9)


@PROPERTY_SETTINGS
@given(pop=populations(), min_total_weight=st.floats(0.5, 500.0))
def test_clipped_denominator_sensitivity_bounds_removing_a_client(pop: dict, min_total_weight: float) -> None:
    # Prepare
    q, k = pop["sampling_rate"], pop["removed"]
    weights = list(pop["weights"])

    # Execute
    full = clipped_denominator_aggregate(
        pop["updates"], weights, sampling_rate=q, min_total_weight=min_total_weight
    )
    neighbour = clipped_denominator_aggregate(
        without(pop["updates"], k), without(weights, k), sampling_rate=q, min_total_weight=min_total_weight
    )
    bound = clipped_denominator_sensitivity(
        clip_norm=pop["clip_norm"], sampling_rate=q, min_total_weight=min_total_weight
    )

    # Assert: 2 S / (q W_min), by hand
    assert bound == pytest.approx(2 * pop["clip_norm"] / (q * min_total_weight))
    assert distance(full, neighbour) <= bound * (1 + 1e-9)


def test_clipped_denominator_change_can_exceed_s_over_q_w_min() -> None:
    # Prepare: q W_min = 1 * 2 = 2, S = 1. Neighbour: two clients [1], w = 1 -> 2 / max(2, 2) = 1.
    # Adding a client [-1], w = 1 -> (2 - 1) / max(2, 3) = 1/3. Change 2/3 > S / (q W_min) = 1/2,
    # so the bound needs more than one S; it stays within 2 S / (q W_min) = 1.
    neighbour_updates = [[np.array([1.0])], [np.array([1.0])]]
    updates = [*neighbour_updates, [np.array([-1.0])]]

    # Execute
    full = clipped_denominator_aggregate(updates, [1.0, 1.0, 1.0], sampling_rate=1.0, min_total_weight=2.0)
    neighbour = clipped_denominator_aggregate(
        neighbour_updates, [1.0, 1.0], sampling_rate=1.0, min_total_weight=2.0
    )

    # Assert
    assert distance(full, neighbour) == pytest.approx(2 / 3)
    assert clipped_denominator_sensitivity(clip_norm=1.0, sampling_rate=1.0, min_total_weight=2.0) == 1.0


def test_fixed_denominator_bound_is_attained() -> None:
    # Prepare: removing a weight-1 client with ||Delta|| = S = 2 moves the sum by exactly S / (q W)
    updates = [[np.array([0.0, 2.0])], [np.array([1.0, 0.0])]]

    # Execute
    full = fixed_denominator_aggregate(updates, [1.0, 0.5], sampling_rate=0.5, total_weight=4.0)
    neighbour = fixed_denominator_aggregate(updates[1:], [0.5], sampling_rate=0.5, total_weight=4.0)

    # Assert: 2 / (0.5 * 4) = 1
    assert distance(full, neighbour) == pytest.approx(1.0)
    assert fixed_denominator_sensitivity(clip_norm=2.0, sampling_rate=0.5, total_weight=4.0) == 1.0


def test_uniform_sensitivity_known_value() -> None:
    assert uniform_sensitivity(clip_norm=2.0, num_sampled=8) == 0.25


# --------------------------------------------------------------------------- #
# Noise                                                                       #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("std_fn", "expected_std"),
    [
        # 1.1 * 0.5 / (0.1 * 80) = 0.06875
        (
            lambda: fixed_denominator_noise_std(
                noise_multiplier=1.1, clip_norm=0.5, sampling_rate=0.1, total_weight=80.0
            ),
            0.06875,
        ),
        # 2 * 1.1 * 0.5 / (0.1 * 40) = 0.275
        (
            lambda: clipped_denominator_noise_std(
                noise_multiplier=1.1, clip_norm=0.5, sampling_rate=0.1, min_total_weight=40.0
            ),
            0.275,
        ),
        # 1.1 * 0.5 / 10 = 0.055
        (lambda: uniform_noise_std(noise_multiplier=1.1, clip_norm=0.5, num_sampled=10), 0.055),
    ],
    ids=["fixed-denominator", "clipped-denominator", "uniform"],
)
def test_noise_std_formula_and_empirical_calibration(std_fn, expected_std: float) -> None:
    # Prepare: a zero update of 100,000 coordinates over two layers
    zeros = [np.zeros(60_000, dtype=np.float32), np.zeros((200, 200), dtype=np.float32)]
    rng = make_noise_rng(0)

    # Execute
    std = std_fn()
    noisy = add_gaussian_noise(zeros, std=std, rng=rng)

    # Assert
    assert std == pytest.approx(expected_std)
    values = np.concatenate([a.ravel() for a in noisy]).astype(np.float64)
    assert np.std(values) == pytest.approx(expected_std, rel=0.05)
    assert abs(np.mean(values)) < 0.05 * expected_std
    assert [a.dtype for a in noisy] == [np.float32, np.float32]
    assert [a.shape for a in noisy] == [(60_000,), (200, 200)]


def test_add_gaussian_noise_is_reproducible_with_a_seed_and_leaves_input() -> None:
    # Prepare
    layers = [np.ones(5)]

    # Execute
    first = add_gaussian_noise(layers, std=1.0, rng=make_noise_rng(7))
    second = add_gaussian_noise(layers, std=1.0, rng=make_noise_rng(7))

    # Assert
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(layers[0], np.ones(5))
    assert not np.array_equal(first[0], layers[0])


def test_make_noise_rng_without_seed_differs_between_calls() -> None:
    a = make_noise_rng(None).normal(size=4)
    b = make_noise_rng(None).normal(size=4)

    assert not np.array_equal(a, b)


def test_add_gaussian_noise_rejects_negative_std() -> None:
    with pytest.raises(ValueError, match="std"):
        add_gaussian_noise([np.zeros(2)], std=-1.0, rng=make_noise_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "name", "valid_range"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier", "a finite number > 0"),
        ({"noise_multiplier": -1.0}, "noise_multiplier", "a finite number > 0"),
        ({"clip_norm": 0.0}, "clip_norm", "a finite number > 0"),
        ({"clip_norm": -2.0}, "clip_norm", "a finite number > 0"),
        ({"sampling_rate": 0.0}, "sampling_rate", "in (0, 1]"),
        ({"sampling_rate": 1.5}, "sampling_rate", "in (0, 1]"),
        ({"weight_cap": 0.0}, "weight_cap", "a finite number > 0"),
        ({"total_weight": 0.0}, "total_weight", "a finite number > 0"),
        ({"total_weight": -1.0}, "total_weight", "a finite number > 0"),
        ({"min_total_weight": 0.0}, "min_total_weight", "a finite number > 0"),
    ],
)
def test_validate_dp_params_names_the_bad_parameter(kwargs: dict, name: str, valid_range: str) -> None:
    with pytest.raises(ValueError, match=name) as info:
        validate_dp_params(**kwargs)
    # The message names this parameter's own valid range and the value it got.
    assert f"{name} must be {valid_range}, got " in str(info.value)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize(
    ("name", "boundary", "past_boundary"),
    [
        ("noise_multiplier", 1e-12, 0.0),
        ("clip_norm", 1e-12, 0.0),
        ("sampling_rate", 1.0, 1.0 + 1e-12),
        ("weight_cap", 1e-12, 0.0),
        ("total_weight", 1e-12, 0.0),
        ("min_total_weight", 1e-12, 0.0),
    ],
)
def test_validate_dp_params_accepts_the_edge_of_each_range(
    name: str, boundary: float, past_boundary: float
) -> None:
    # Accepted at the edge of the valid range, rejected just past it: the check sits exactly on the edge.
    validate_dp_params(**{name: boundary})
    with pytest.raises(ValueError, match=name):
        validate_dp_params(**{name: past_boundary})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"clip_norm": -1.0}, "clip_norm"),
        ({"sampling_rate": 0.0}, "sampling_rate"),
        ({"total_weight": 0.0}, "total_weight"),
    ],
)
def test_fixed_denominator_noise_std_rejects_bad_parameter(kwargs: dict, name: str) -> None:
    params = {"noise_multiplier": 1.0, "clip_norm": 1.0, "sampling_rate": 0.1, "total_weight": 100.0}

    with pytest.raises(ValueError, match=name):
        fixed_denominator_noise_std(**{**params, **kwargs})


def test_uniform_noise_std_rejects_zero_clients() -> None:
    with pytest.raises(ValueError, match="num_sampled"):
        uniform_noise_std(noise_multiplier=1.0, clip_norm=1.0, num_sampled=0)


# --------------------------------------------------------------------------- #
# Adaptive clipping                                                           #
# --------------------------------------------------------------------------- #


def test_adaptive_clipping_settles_at_the_median_norm() -> None:
    # Prepare: norms lognormal with median M = 2; C0 = 0.1, gamma = 0.5, eta = 0.2
    rng = np.random.default_rng(123)
    median, clip_norm, num_clients = 2.0, 0.1, 100

    # Execute
    for _ in range(200):
        norms = median * np.exp(0.5 * rng.normal(size=num_clients))
        clip_norm = adaptive_clip_update(
            clip_norm=clip_norm,
            unclipped_count=int(np.sum(norms <= clip_norm)),
            num_clients=num_clients,
            target_quantile=0.5,
            learning_rate=0.2,
            count_noise_std=0.0,
        )

    # Assert
    assert clip_norm == pytest.approx(median, rel=0.10)


def test_adaptive_clipping_shrinks_when_all_unclipped_and_grows_when_all_clipped() -> None:
    # Prepare: b~ = 1 -> C * exp(-0.2 * 0.5); b~ = 0 -> C * exp(+0.2 * 0.5)
    params = {"num_clients": 10, "target_quantile": 0.5, "learning_rate": 0.2, "count_noise_std": 0.0}

    # Execute
    shrunk = adaptive_clip_update(clip_norm=1.0, unclipped_count=10, **params)
    grown = adaptive_clip_update(clip_norm=1.0, unclipped_count=0, **params)

    # Assert: exp(-0.1) = 0.904837418..., exp(0.1) = 1.105170918...
    assert shrunk == pytest.approx(0.9048374180359595)
    assert grown == pytest.approx(1.1051709180756477)


def test_adaptive_clipping_expected_denominator() -> None:
    # Prepare: centred sum 6 - 10/2 = 1 over m_hat = 8 -> b~ = 1/8 + 1/2 = 0.625
    # C' = 2 * exp(-0.2 * (0.625 - 0.5)) = 2 * exp(-0.025)
    result = adaptive_clip_update(
        clip_norm=2.0,
        unclipped_count=6,
        num_clients=10,
        target_quantile=0.5,
        learning_rate=0.2,
        count_noise_std=0.0,
        expected_num_clients=8.0,
    )

    assert result == pytest.approx(2.0 * 0.9753099120283326)


def test_adaptive_clipping_count_noise_has_std_sigma_b_over_m() -> None:
    # Prepare: log(C'/C) = -eta (b~ - gamma); b~ = (5 + N(0, 4)) / 10 -> mean 0, std 0.2 * 2 / 10 = 0.04
    rng = make_noise_rng(5)

    # Execute
    logs = np.array(
        [
            math.log(
                adaptive_clip_update(
                    clip_norm=1.0,
                    unclipped_count=5,
                    num_clients=10,
                    target_quantile=0.5,
                    learning_rate=0.2,
                    count_noise_std=2.0,
                    rng=rng,
                )
            )
            for _ in range(4000)
        ]
    )

    # Assert
    assert np.std(logs) == pytest.approx(0.04, rel=0.05)
    assert abs(np.mean(logs)) < 0.005


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"unclipped_count": 11}, "unclipped_count"),
        ({"unclipped_count": -1}, "unclipped_count"),
        ({"num_clients": 0}, "num_clients"),
        ({"target_quantile": 1.5}, "target_quantile"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"count_noise_std": -1.0}, "count_noise_std"),
        ({"count_noise_std": 1.0}, "rng"),
        ({"expected_num_clients": 0.0}, "expected_num_clients"),
    ],
)
def test_adaptive_clip_update_rejects_bad_parameter(kwargs: dict, name: str) -> None:
    params = {
        "clip_norm": 1.0,
        "unclipped_count": 5,
        "num_clients": 10,
        "target_quantile": 0.5,
        "learning_rate": 0.2,
        "count_noise_std": 0.0,
    }

    with pytest.raises(ValueError, match=name):
        adaptive_clip_update(**{**params, **kwargs})


def test_update_noise_multiplier_known_value() -> None:
    # z = 1, sigma_b = 5: (1 - 1/100)^(-1/2) = 1 / sqrt(0.99) = 1.0050378152592121
    assert update_noise_multiplier(noise_multiplier=1.0, count_noise_std=5.0) == pytest.approx(
        1.0050378152592121
    )


def test_update_noise_multiplier_second_known_value() -> None:
    # z = 1, sigma_b = 1: (1 - 1/4)^(-1/2) = 2 / sqrt(3) = 1.1547005383792515
    assert update_noise_multiplier(noise_multiplier=1.0, count_noise_std=1.0) == pytest.approx(
        1.1547005383792515
    )


@pytest.mark.parametrize(("z", "sigma_b"), [(2.0, 1.0), (3.0, 1.0)])
def test_update_noise_multiplier_rejects_z_at_least_two_sigma_b(z: float, sigma_b: float) -> None:
    with pytest.raises(ValueError, match="noise_multiplier"):
        update_noise_multiplier(noise_multiplier=z, count_noise_std=sigma_b)


def test_update_noise_multiplier_rejects_zero_count_noise() -> None:
    with pytest.raises(ValueError, match="count_noise_std"):
        update_noise_multiplier(noise_multiplier=1.0, count_noise_std=0.0)


def test_adaptive_clip_update_with_no_clients_releases_the_noisy_count() -> None:
    # Prepare: nobody replied; the noise draw is the first N(0, 2^2) of a seeded generator.
    noise = float(np.random.default_rng(7).normal(0.0, 2.0))

    # Execute
    result = adaptive_clip_update(
        clip_norm=1.0,
        unclipped_count=0,
        num_clients=0,
        target_quantile=0.5,
        learning_rate=0.2,
        count_noise_std=2.0,
        rng=np.random.default_rng(7),
        expected_num_clients=4.0,
    )

    # Assert: b~ = (0 + noise) / 4 + 1/2, so C = exp(-0.2 (noise / 4)).
    assert result == pytest.approx(math.exp(-0.2 * noise / 4))


def test_secure_noise_generator_is_the_half_sum_of_four_draws() -> None:
    # Prepare: the same bit stream through the plain and the secure generator.
    plain = np.random.Generator(np.random.PCG64DXSM(11))
    secure = make_noise_rng(None, secure=True)
    secure.bit_generator.state = np.random.PCG64DXSM(11).state

    # Execute
    drawn = secure.normal(0.5, 2.0, size=(3, 2))

    # Assert: (X1 + X2 + X3 + X4) / 2 + loc, each X ~ N(0, 2^2): still N(0.5, 4).
    expected = sum(plain.normal(0.0, 2.0, size=(3, 2)) for _ in range(4)) / 2 + 0.5
    np.testing.assert_allclose(drawn, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="known seed"):
        make_noise_rng(3, secure=True)


def test_secure_noise_generator_has_the_requested_std() -> None:
    values = make_noise_rng(None, secure=True).normal(0.0, 3.0, size=200_000)

    # The std of a 200,000-sample std is 0.16% of sigma: 1% is six of those.
    assert abs(values.std() - 3.0) < 0.01 * 3.0 and abs(values.mean()) < 0.05
