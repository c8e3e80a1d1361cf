"""Tests for harness.attacks: hand-computed values, seeding, validation."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from harness.attacks import (
    choose_attacked,
    flip_labels,
    gaussian_update,
    scale_update,
    sign_flip,
)


def make_update() -> list[np.ndarray]:
    return [
        np.array([1.0, -2.0], dtype=np.float32),
        np.array([[3.0, 0.5]], dtype=np.float64),
    ]


def test_sign_flip_returns_minus_c_times_update() -> None:
    # Prepare
    update = make_update()

    # Execute
    attacked = sign_flip(update, scale=2.0)

    # Assert
    np.testing.assert_array_equal(attacked[0], [-2.0, 4.0])
    np.testing.assert_array_equal(attacked[1], [[-6.0, -1.0]])
    assert [a.dtype for a in attacked] == [np.float32, np.float64]


def test_scale_update_returns_c_times_update_and_leaves_input_alone() -> None:
    update = make_update()

    attacked = scale_update(update, scale=10.0)

    np.testing.assert_array_equal(attacked[0], [10.0, -20.0])
    np.testing.assert_array_equal(attacked[1], [[30.0, 5.0]])
    assert attacked[0].dtype == np.float32
    np.testing.assert_array_equal(update[0], [1.0, -2.0])


@pytest.mark.parametrize("attack", [sign_flip, scale_update])
@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf, True])
def test_scaling_attacks_reject_invalid_scale(attack: Callable[..., list[np.ndarray]], scale: float) -> None:
    with pytest.raises(ValueError, match=r"scale must be finite and > 0"):
        attack(make_update(), scale=scale)


def test_gaussian_update_keeps_shapes_and_dtypes_and_ignores_values() -> None:
    update = [np.zeros((2, 3), dtype=np.float32), np.zeros(4)]

    noise = gaussian_update(update, scale=1.0, rng=np.random.default_rng(0))

    assert [a.shape for a in noise] == [(2, 3), (4,)]
    assert [a.dtype for a in noise] == [np.float32, np.float64]
    assert np.all(noise[0] != 0.0)


def test_gaussian_update_is_reproducible_by_seed() -> None:
    update = make_update()

    first = gaussian_update(update, scale=1.0, rng=np.random.default_rng(7))
    again = gaussian_update(update, scale=1.0, rng=np.random.default_rng(7))
    other = gaussian_update(update, scale=1.0, rng=np.random.default_rng(8))

    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def test_gaussian_update_has_the_requested_standard_deviation() -> None:
    # 40,000 draws: the sample std is within 2% of 3 with overwhelming probability
    # (its standard error is about 3 / sqrt(2 * 40,000) ~ 0.011).
    update = [np.zeros(40_000)]

    noise = gaussian_update(update, scale=3.0, rng=np.random.default_rng(1))

    assert abs(noise[0].std() - 3.0) < 0.06
    assert abs(noise[0].mean()) < 0.06


def test_gaussian_update_with_zero_scale_is_zero() -> None:
    noise = gaussian_update(make_update(), scale=0.0, rng=np.random.default_rng(0))

    assert all(np.all(a == 0.0) for a in noise)


@pytest.mark.parametrize("scale", [-1.0, math.nan, math.inf])
def test_gaussian_update_rejects_invalid_scale(scale: float) -> None:
    with pytest.raises(ValueError, match=r"scale must be finite and >= 0"):
        gaussian_update(make_update(), scale=scale, rng=np.random.default_rng(0))


def test_choose_attacked_returns_sorted_distinct_ids_in_range() -> None:
    attacked = choose_attacked(10, fraction=0.3, seed=0)

    assert len(attacked) == 3
    assert attacked == sorted(set(attacked))
    assert all(0 <= k < 10 for k in attacked)


def test_choose_attacked_is_reproducible_and_depends_on_the_seed() -> None:
    first = choose_attacked(100, fraction=0.1, seed=3)
    again = choose_attacked(100, fraction=0.1, seed=3)
    others = [choose_attacked(100, fraction=0.1, seed=s) for s in range(4, 8)]

    assert first == again
    assert any(other != first for other in others)


@pytest.mark.parametrize(
    ("num_partitions", "fraction", "expected_count"),
    [(10, 0.0, 0), (10, 1.0, 10), (10, 0.25, 3), (10, 0.24, 2), (3, 0.5, 2)],
)
def test_choose_attacked_count_rounds_half_up(
    num_partitions: int, fraction: float, expected_count: int
) -> None:
    attacked = choose_attacked(num_partitions, fraction=fraction, seed=0)

    assert len(attacked) == expected_count


def test_choose_attacked_larger_fraction_is_a_superset_for_one_seed() -> None:
    small = choose_attacked(20, fraction=0.2, seed=5)
    large = choose_attacked(20, fraction=0.5, seed=5)

    assert set(small) <= set(large)
    assert len(large) == 10


@pytest.mark.parametrize(
    ("num_partitions", "fraction", "message"),
    [
        (10, -0.1, r"fraction must be in \[0, 1\], got fraction=-0\.1"),
        (10, 1.1, r"fraction must be in \[0, 1\], got fraction=1\.1"),
        (10, math.nan, r"fraction must be in \[0, 1\]"),
        (0, 0.5, r"num_partitions must be an integer >= 1, got 0"),
        (2.0, 0.5, r"num_partitions must be an integer >= 1, got 2\.0"),
    ],
)
def test_choose_attacked_rejects_invalid_arguments(
    num_partitions: int, fraction: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        choose_attacked(num_partitions, fraction=fraction, seed=0)


def test_flip_labels_maps_y_to_num_classes_minus_one_minus_y() -> None:
    y = np.array([0, 1, 9, 4], dtype=np.int64)

    flipped = flip_labels(y, num_classes=10)

    np.testing.assert_array_equal(flipped, [9, 8, 0, 5])
    assert flipped.dtype == np.int64


def test_flip_labels_is_an_involution_and_keeps_unsigned_dtype() -> None:
    y = np.arange(10, dtype=np.uint8)

    twice = flip_labels(flip_labels(y, num_classes=10), num_classes=10)

    np.testing.assert_array_equal(twice, y)
    assert twice.dtype == np.uint8


@pytest.mark.parametrize(
    ("y", "num_classes", "message"),
    [
        (np.array([0, 10]), 10, r"y must lie in \[0, 10\), got values in \[0, 10\]"),
        (np.array([-1, 3]), 10, r"y must lie in \[0, 10\)"),
        (np.array([0.0, 1.0]), 10, r"y must hold integer labels, got dtype float64"),
        (np.array([0]), 1, r"num_classes must be an integer >= 2, got 1"),
    ],
)
def test_flip_labels_rejects_invalid_input(y: np.ndarray, num_classes: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        flip_labels(y, num_classes=num_classes)
