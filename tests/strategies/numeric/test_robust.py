"""Tests for strategies.numeric.robust: hand-computed values, validation, properties."""

from __future__ import annotations

import math
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.numeric.robust import (
    check_robust_config,
    coordinate_median,
    krum_scores,
    multi_krum,
    norm_bounded_mean,
    trimmed_mean,
    validate_krum,
    validate_median,
    validate_trimmed_mean,
)

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


def scalar_clients(values: list[float]) -> list[list[np.ndarray]]:
    """One client per value: a (1,) layer holding it and a (2, 2) layer of zeros."""
    return [[np.array([v], dtype=np.float64), np.zeros((2, 2))] for v in values]


# Points on a line for Krum with n=6, f=1 (n - f - 2 = 3 neighbours).
# Squared distances to the 3 nearest other points, by hand:
#   2 -> 1, 4, 4 = 9;  1 -> 1, 1, 9 = 11;  0 -> 1, 4, 16 = 21;  4 -> 4, 9, 9 = 22;
#   7 -> 9, 25, 36 = 70;  100 -> 93^2 + 96^2 + 98^2 = 27469.
KRUM_VALUES = [7.0, 100.0, 2.0, 0.0, 4.0, 1.0]
KRUM_SCORES = [70.0, 27469.0, 9.0, 21.0, 22.0, 11.0]
KRUM_ORDER = [2, 5, 3, 4, 0, 1]
OUTLIER = 1


# --------------------------------------------------------------------------- #
# Coordinate-wise median                                                      #
# --------------------------------------------------------------------------- #


def test_median_of_three_takes_middle_value_per_coordinate() -> None:
    # Prepare: each coordinate has a different client in the middle.
    updates = [
        [np.array([1.0, 10.0]), np.array([[0.0]])],
        [np.array([2.0, 30.0]), np.array([[4.0]])],
        [np.array([100.0, 20.0]), np.array([[-1.0]])],
    ]

    # Execute
    result = coordinate_median(updates)

    # Assert
    np.testing.assert_array_equal(result[0], [2.0, 20.0])
    np.testing.assert_array_equal(result[1], [[0.0]])


def test_median_of_even_count_averages_the_middle_pair() -> None:
    updates = [[np.array([v])] for v in [1.0, 10.0, 2.0, 3.0]]

    result = coordinate_median(updates)

    np.testing.assert_array_equal(result[0], [2.5])


def test_median_keeps_float32_dtype_and_layer_shapes() -> None:
    updates = [
        [np.full((2, 3), v, dtype=np.float32), np.full(4, -v, dtype=np.float32)] for v in [1.0, 5.0, 3.0]
    ]

    result = coordinate_median(updates)

    assert [a.shape for a in result] == [(2, 3), (4,)]
    assert [a.dtype for a in result] == [np.float32, np.float32]
    np.testing.assert_array_equal(result[0], np.full((2, 3), 3.0))
    np.testing.assert_array_equal(result[1], np.full(4, -3.0))


def test_median_rounds_integer_layers_instead_of_truncating() -> None:
    # Median of 1, 2, 5, 6 is 3.5; truncation would give 3.
    updates = [[np.array([v], dtype=np.int64)] for v in [1, 2, 5, 6]]

    result = coordinate_median(updates)

    assert result[0].dtype == np.int64
    np.testing.assert_array_equal(result[0], [4])


def test_validate_median_rejects_half_byzantine() -> None:
    with pytest.raises(ValueError, match=r"median needs n > 2f, got n=4, f=2"):
        validate_median(num_clients=4, num_byzantine=2)


# --------------------------------------------------------------------------- #
# Trimmed mean                                                                #
# --------------------------------------------------------------------------- #


def test_trimmed_mean_beta_0_2_of_five_values() -> None:
    # floor(0.2 * 5) = 1 per side. Coordinate 0: drop 1 and 100 -> mean(2, 3, 4) = 3.
    # Coordinate 1: drop -50 and 3 -> mean(0, 1, 2) = 1.
    updates = [
        [np.array([1.0, 3.0])],
        [np.array([100.0, 0.0])],
        [np.array([2.0, -50.0])],
        [np.array([3.0, 1.0])],
        [np.array([4.0, 2.0])],
    ]

    result = trimmed_mean(updates, beta=0.2)

    np.testing.assert_allclose(result[0], [3.0, 1.0], rtol=1e-15)


def test_trimmed_mean_with_beta_zero_is_the_plain_mean() -> None:
    updates = [[np.array([v])] for v in [1.0, 2.0, 6.0]]

    result = trimmed_mean(updates, beta=0.0)

    np.testing.assert_allclose(result[0], [3.0], rtol=1e-15)


def test_trimmed_mean_trims_29_of_100_despite_float_error_in_beta_times_n() -> None:
    # 0.29 * 100 == 28.999999999999996 in floating point. 71 zeros and 29 values of
    # 1000: trimming 29 per side removes every 1000 (mean 0); trimming 28 would
    # keep one (mean 1000 / 44).
    updates = [[np.array([0.0 if k < 71 else 1000.0])] for k in range(100)]

    result = trimmed_mean(updates, beta=0.29)

    np.testing.assert_array_equal(result[0], [0.0])


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7, math.nan])
def test_trimmed_mean_rejects_beta_outside_zero_to_half(beta: float) -> None:
    updates = [[np.array([v])] for v in [1.0, 2.0, 3.0]]

    with pytest.raises(ValueError, match=r"beta must be in \[0, 0\.5\)"):
        trimmed_mean(updates, beta=beta)


def test_trimmed_mean_rejects_trimming_everything() -> None:
    # beta just below 0.5 rounds to trimming 5 of 10 per side: nothing left.
    updates = [[np.array([float(v)])] for v in range(10)]

    with pytest.raises(ValueError, match=r"2 \* floor\(beta \* n\) < n"):
        trimmed_mean(updates, beta=0.4999999999)


def test_validate_trimmed_mean_needs_f_trimmed_per_side() -> None:
    # floor(0.1 * 10) = 1 < f = 2.
    with pytest.raises(ValueError, match=r"floor\(beta \* n\) >= f.*n=10, f=2"):
        validate_trimmed_mean(num_clients=10, beta=0.1, num_byzantine=2)
    assert validate_trimmed_mean(num_clients=10, beta=0.2, num_byzantine=2) is None


# --------------------------------------------------------------------------- #
# Krum / Multi-Krum                                                           #
# --------------------------------------------------------------------------- #


def test_krum_scores_match_hand_computed_values() -> None:
    scores = krum_scores(scalar_clients(KRUM_VALUES), num_byzantine=1)

    np.testing.assert_allclose(scores, KRUM_SCORES, rtol=1e-12)


def test_krum_selects_the_lowest_score_client() -> None:
    aggregate, selected = multi_krum(scalar_clients(KRUM_VALUES), num_byzantine=1, num_selected=1)

    assert selected == [2]
    np.testing.assert_array_equal(aggregate[0], [2.0])
    np.testing.assert_array_equal(aggregate[1], np.zeros((2, 2)))


def test_multi_krum_averages_the_selected_clients_unweighted() -> None:
    # Selected values 2, 1, 0 -> mean 1.
    aggregate, selected = multi_krum(scalar_clients(KRUM_VALUES), num_byzantine=1, num_selected=3)

    assert selected == [2, 5, 3]
    np.testing.assert_allclose(aggregate[0], [1.0], rtol=1e-15)


@pytest.mark.parametrize("num_selected", [1, 2, 3, 4, 5])
def test_multi_krum_never_selects_the_far_outlier(num_selected: int) -> None:
    _, selected = multi_krum(scalar_clients(KRUM_VALUES), num_byzantine=1, num_selected=num_selected)

    assert selected == KRUM_ORDER[:num_selected]
    assert OUTLIER not in selected


def test_multi_krum_breaks_score_ties_by_lower_index() -> None:
    # n=6, f=1, 3 neighbours. Scores by hand: 0 -> 1+4+9 = 14, 1 -> 1+1+4 = 6,
    # 3 -> 1+1+4 = 6, 4 -> 1+4+9 = 14, 2 -> 1+1+4 = 6, 100 -> far.
    updates = scalar_clients([0.0, 1.0, 3.0, 4.0, 2.0, 100.0])

    _, selected = multi_krum(updates, num_byzantine=1, num_selected=5)

    assert selected == [1, 2, 4, 0, 3]


def test_multi_krum_with_weights_averages_selected_clients_by_weight() -> None:
    # Selected values 2 (weight 3) and 1 (weight 1): (3 * 2 + 1 * 1) / 4 = 1.75.
    weights = [10.0, 10.0, 3.0, 10.0, 10.0, 1.0]

    aggregate, selected = multi_krum(
        scalar_clients(KRUM_VALUES), num_byzantine=1, num_selected=2, weights=weights
    )

    assert selected == [2, 5]
    np.testing.assert_allclose(aggregate[0], [1.75], rtol=1e-15)


def test_multi_krum_selection_survives_a_large_common_offset() -> None:
    # Models rather than updates: every coordinate shifted by 1e8. Without
    # centring, the Gram-matrix distances of points 1 apart cancel to noise.
    offset = 1e8
    updates = [[layer + offset for layer in client] for client in scalar_clients(KRUM_VALUES)]

    aggregate, selected = multi_krum(updates, num_byzantine=1, num_selected=3)

    assert selected == [2, 5, 3]
    np.testing.assert_allclose(aggregate[0], [offset + 1.0], rtol=0, atol=1e-6)


def test_krum_scores_match_brute_force_distances() -> None:
    # Prepare: random multi-layer updates; brute-force squared distances by loops.
    rng = np.random.default_rng(0)
    updates = [[rng.normal(size=(3, 2)), rng.normal(size=5)] for _ in range(7)]
    flat = [np.concatenate([a.ravel() for a in u]) for u in updates]
    f = 2
    expected = []
    for i, x in enumerate(flat):
        dists = sorted(float(np.sum((x - y) ** 2)) for j, y in enumerate(flat) if j != i)
        expected.append(sum(dists[: len(flat) - f - 2]))

    # Execute
    scores = krum_scores(updates, num_byzantine=f)

    # Assert
    np.testing.assert_allclose(scores, expected, rtol=1e-10)


def test_validate_krum_names_the_n_greater_than_2f_plus_2_condition() -> None:
    with pytest.raises(ValueError, match=r"^multi-krum needs n > 2f \+ 2, got n=5, f=2$"):
        validate_krum(num_clients=5, num_byzantine=2, num_selected=1)


@pytest.mark.parametrize(
    ("num_clients", "num_byzantine", "num_selected", "message"),
    [
        (6, 1, 0, r"num_selected m in \[1, n - f\] = \[1, 5\], got m=0"),
        (6, 1, 6, r"num_selected m in \[1, n - f\] = \[1, 5\], got m=6"),
        (6, 1, 2.0, r"num_selected m .* got m=2\.0"),
        (6, -1, 1, r"num_byzantine must be an integer >= 0, got -1"),
        (6, 1.5, 1, r"num_byzantine must be an integer >= 0, got 1\.5"),
        (0, 0, 1, r"num_clients must be an integer >= 1, got 0"),
        (4, 1, 1, r"n > 2f \+ 2, got n=4, f=1"),
    ],
)
def test_validate_krum_rejects_invalid_configs(
    num_clients: int, num_byzantine: int, num_selected: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        validate_krum(
            num_clients=num_clients,
            num_byzantine=num_byzantine,
            num_selected=num_selected,
        )


def test_multi_krum_rejects_too_few_clients_for_the_round() -> None:
    # The config may have been valid at start time; 4 replies with f=1 are not.
    updates = scalar_clients([0.0, 1.0, 2.0, 3.0])

    with pytest.raises(ValueError, match=r"n > 2f \+ 2, got n=4, f=1"):
        multi_krum(updates, num_byzantine=1, num_selected=1)


# --------------------------------------------------------------------------- #
# Norm-bounded mean                                                           #
# --------------------------------------------------------------------------- #


def test_norm_bounded_mean_clips_3_4_to_unit_norm() -> None:
    result = norm_bounded_mean([[np.array([3.0, 4.0])]], [1.0], max_norm=1.0)

    np.testing.assert_allclose(result[0], [0.6, 0.8], rtol=1e-15)


def test_norm_bounded_mean_uses_the_norm_over_all_layers() -> None:
    # Layers [3] and [[4]] together have norm 5.
    update = [np.array([3.0]), np.array([[4.0]])]

    result = norm_bounded_mean([update], [1.0], max_norm=1.0)

    np.testing.assert_allclose(result[0], [0.6], rtol=1e-15)
    np.testing.assert_allclose(result[1], [[0.8]], rtol=1e-15)


def test_norm_bounded_mean_weights_the_clipped_updates() -> None:
    # [3, 4] -> [0.6, 0.8]; [0, 0.5] has norm 0.5 and is kept.
    # Weights 1 and 3: ([0.6, 0.8] + 3 * [0, 0.5]) / 4 = [0.15, 0.575].
    updates = [[np.array([3.0, 4.0])], [np.array([0.0, 0.5])]]

    result = norm_bounded_mean(updates, [1.0, 3.0], max_norm=1.0)

    np.testing.assert_allclose(result[0], [0.15, 0.575], rtol=1e-14)


def test_norm_bounded_mean_keeps_zero_updates_without_warnings() -> None:
    updates = [[np.zeros(3)], [np.array([0.0, 0.0, 2.0])]]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = norm_bounded_mean(updates, [1.0, 1.0], max_norm=1.0)

    np.testing.assert_allclose(result[0], [0.0, 0.0, 0.5], rtol=1e-15)


@pytest.mark.parametrize("max_norm", [0.0, -1.0, math.nan, math.inf, True])
def test_norm_bounded_mean_rejects_invalid_max_norm(max_norm: float) -> None:
    with pytest.raises(ValueError, match=r"max_norm must be finite and > 0"):
        norm_bounded_mean([[np.array([1.0])]], [1.0], max_norm=max_norm)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, 0.0], r"weights must be finite and > 0"),
        ([1.0, -2.0], r"weights must be finite and > 0"),
        ([1.0, math.nan], r"weights must be finite and > 0"),
        ([1.0], r"weights must have shape \(2,\), got shape \(1,\)"),
    ],
)
def test_norm_bounded_mean_rejects_invalid_weights(weights: list[float], message: str) -> None:
    updates = [[np.array([1.0])], [np.array([2.0])]]

    with pytest.raises(ValueError, match=message):
        norm_bounded_mean(updates, weights, max_norm=1.0)


# --------------------------------------------------------------------------- #
# Shared input validation and config checks                                   #
# --------------------------------------------------------------------------- #

AGGREGATORS = {
    "median": coordinate_median,
    "trimmed-mean": lambda u: trimmed_mean(u, beta=0.0),
    "multi-krum": lambda u: multi_krum(u, num_byzantine=0, num_selected=1)[0],
    "norm-bounded-mean": lambda u: norm_bounded_mean(u, [1.0] * len(u), max_norm=1.0),
}


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([], r"at least one client"),
        ([[np.ones(2)], [np.ones(2)], [np.ones(3)]], r"updates\[2\]\[0\] has shape"),
        ([[np.ones(2)], [np.ones(2), np.ones(1)], [np.ones(2)]], r"updates\[1\] has 2"),
        ([[np.ones(2)], [np.array([1.0, np.nan])], [np.ones(2)]], r"non-finite"),
    ],
)
def test_every_aggregator_rejects_malformed_updates(
    name: str, updates: list[list[np.ndarray]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AGGREGATORS[name](updates)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("median", {"num_byzantine": 2}),
        ("trimmed-mean", {"beta": 0.2, "num_byzantine": 2}),
        ("multi-krum", {"num_byzantine": 3, "num_selected": 7}),
        ("norm-bounded-mean", {"max_norm": 0.5}),
    ],
)
def test_check_robust_config_accepts_configs_inside_the_guarantee(
    name: str, params: dict[str, object]
) -> None:
    assert check_robust_config(name, num_clients=10, **params) is None


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("median", {"num_byzantine": 5}, r"median needs n > 2f, got n=10, f=5"),
        ("trimmed-mean", {"beta": 0.6}, r"beta must be in \[0, 0\.5\), got beta=0\.6"),
        (
            "multi-krum",
            {"num_byzantine": 4, "num_selected": 1},
            r"multi-krum needs n > 2f \+ 2, got n=10, f=4",
        ),
        ("norm-bounded-mean", {"max_norm": -1.0}, r"max_norm must be finite and > 0"),
        ("multi-krum", {"num_byzantine": 1}, r"invalid parameters for 'multi-krum'"),
        ("median", {"beta": 0.1}, r"invalid parameters for 'median'"),
        ("krum", {}, r"unknown robust aggregation 'krum'; known: \['median'"),
    ],
)
def test_check_robust_config_rejects_with_the_reason(
    name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_robust_config(name, num_clients=10, **params)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_aggregators_leave_their_inputs_unchanged(name: str) -> None:
    updates = scalar_clients([5.0, -3.0, 1.0])
    before = [[a.copy() for a in u] for u in updates]

    AGGREGATORS[name](updates)

    for got, expected in zip(updates, before, strict=True):
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- #
# Properties                                                                  #
# --------------------------------------------------------------------------- #

FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def layer_shapes(draw: st.DrawFn) -> list[tuple[int, ...]]:
    return draw(st.lists(hnp.array_shapes(min_dims=1, max_dims=2, max_side=3), min_size=1, max_size=3))


@st.composite
def client_updates(draw: st.DrawFn, min_clients: int = 1, max_clients: int = 7) -> list[list[np.ndarray]]:
    shapes = draw(layer_shapes())
    n = draw(st.integers(min_clients, max_clients))
    return [[draw(hnp.arrays(np.float64, shape, elements=FINITE)) for shape in shapes] for _ in range(n)]


def median_and_trimmed(updates: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    return [coordinate_median(updates), trimmed_mean(updates, beta=0.25)]


@PROPERTY_SETTINGS
@given(data=st.data(), updates=client_updates())
def test_median_and_trimmed_mean_are_permutation_invariant(
    data: st.DataObject, updates: list[list[np.ndarray]]
) -> None:
    order = data.draw(st.permutations(range(len(updates))))
    permuted = [updates[k] for k in order]

    for original, shuffled in zip(median_and_trimmed(updates), median_and_trimmed(permuted), strict=True):
        for a, b in zip(original, shuffled, strict=True):
            np.testing.assert_array_equal(a, b)


@PROPERTY_SETTINGS
@given(updates=client_updates())
def test_median_and_trimmed_mean_lie_between_coordinate_min_and_max(
    updates: list[list[np.ndarray]],
) -> None:
    for result in median_and_trimmed(updates):
        for i, layer in enumerate(result):
            stacked = np.stack([u[i] for u in updates])
            lo, hi = stacked.min(axis=0), stacked.max(axis=0)
            # The mean of values in [lo, hi] may round one ulp outside it.
            tol = 1e-12 * np.maximum(1.0, np.abs(stacked).max(axis=0))
            assert np.all(layer >= lo - tol)
            assert np.all(layer <= hi + tol)


@st.composite
def poisoned_round(
    draw: st.DrawFn,
) -> tuple[list[list[np.ndarray]], list[int], int]:
    """Honest updates in [-1, 1] plus f Byzantine ones of +/-1e6, with n > 2f + 2."""
    f = draw(st.integers(0, 3))
    num_honest = draw(st.integers(f + 3, f + 6))
    honest_values = st.floats(-1.0, 1.0, allow_nan=False)
    honest = [
        [
            draw(hnp.arrays(np.float64, (3,), elements=honest_values)),
            draw(hnp.arrays(np.float64, (2, 2), elements=honest_values)),
        ]
        for _ in range(num_honest)
    ]
    byzantine = [
        [np.full(3, sign * 1e6), np.full((2, 2), sign * 1e6)]
        for sign in draw(st.lists(st.sampled_from([1.0, -1.0]), min_size=f, max_size=f))
    ]
    clients = honest + byzantine
    order = draw(st.permutations(range(len(clients))))
    updates = [clients[k] for k in order]
    byzantine_ids = [pos for pos, k in enumerate(order) if k >= num_honest]
    return updates, byzantine_ids, f


@PROPERTY_SETTINGS
@given(data=st.data(), poisoned=poisoned_round())
def test_multi_krum_selects_no_byzantine_client(
    data: st.DataObject, poisoned: tuple[list[list[np.ndarray]], list[int], int]
) -> None:
    updates, byzantine_ids, f = poisoned
    num_selected = data.draw(st.integers(1, len(updates) - f))

    aggregate, selected = multi_krum(updates, num_byzantine=f, num_selected=num_selected)

    assert set(selected).isdisjoint(byzantine_ids)
    assert len(selected) == num_selected
    assert all(np.all(np.abs(a) <= 1.0) for a in aggregate)


@PROPERTY_SETTINGS
@given(poisoned=poisoned_round())
def test_median_and_trimmed_mean_stay_in_the_honest_range(
    poisoned: tuple[list[list[np.ndarray]], list[int], int],
) -> None:
    # n > 2f + 2 > 2f, and beta = f / n trims f values per side.
    updates, _, f = poisoned
    n = len(updates)

    results = [coordinate_median(updates), trimmed_mean(updates, beta=f / n)]

    for result in results:
        assert all(np.all(np.abs(a) <= 1.0 + 1e-12) for a in result)


@PROPERTY_SETTINGS
@given(
    update=client_updates(min_clients=1, max_clients=1).map(lambda u: u[0]),
    n=st.integers(3, 7),
    weights=st.lists(st.floats(0.1, 100.0), min_size=7, max_size=7),
)
def test_identical_updates_aggregate_to_that_update(
    update: list[np.ndarray], n: int, weights: list[float]
) -> None:
    # Prepare
    updates = [[a.copy() for a in update] for _ in range(n)]
    norm = math.sqrt(sum(float(np.sum(a**2)) for a in update))

    # Execute
    results = [
        coordinate_median(updates),
        trimmed_mean(updates, beta=0.2),
        multi_krum(updates, num_byzantine=0, num_selected=n)[0],
        multi_krum(updates, num_byzantine=0, num_selected=1, weights=weights[:n])[0],
        norm_bounded_mean(updates, weights[:n], max_norm=norm + 1.0),
    ]

    # Assert
    for result in results:
        for got, expected in zip(result, update, strict=True):
            assert got.shape == expected.shape
            # atol covers values near the underflow limit (weight * 1e-310 -> 0).
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)


@PROPERTY_SETTINGS
@given(
    updates=client_updates(),
    max_norm=st.floats(1e-3, 1e3),
    data=st.data(),
)
def test_norm_bounded_mean_has_norm_at_most_max_norm(
    updates: list[list[np.ndarray]], max_norm: float, data: st.DataObject
) -> None:
    weights = data.draw(st.lists(st.floats(0.1, 100.0), min_size=len(updates), max_size=len(updates)))

    result = norm_bounded_mean(updates, weights, max_norm=max_norm)

    norm = math.sqrt(sum(float(np.sum(a**2)) for a in result))
    assert norm <= max_norm * (1 + 1e-12)


def test_median_of_an_even_count_at_the_float32_maximum_is_finite() -> None:
    # (a + b) / 2 in float32 overflowed to inf for two middle values at the maximum.
    edge = np.finfo(np.float32).max
    updates = [[np.array([edge, -edge, 1.0], np.float32)] for _ in range(4)]

    out = coordinate_median(updates)[0]

    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [edge, -edge, 1.0])


def test_median_averages_the_two_middle_values_of_an_even_count() -> None:
    updates = [[np.array([v], np.float32)] for v in (4.0, 1.0, 3.0, 10.0)]

    assert coordinate_median(updates)[0].tolist() == [3.5]
