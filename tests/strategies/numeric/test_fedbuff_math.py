"""Tests for strategies.numeric.fedbuff: staleness weights and buffer application."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strategies.numeric.fedbuff import apply_buffer, staleness_weight


@pytest.mark.parametrize(
    ("tau", "expected"),
    [(0, 1.0), (3, 0.5), (8, 1.0 / 3.0), (np.int64(15), 0.25), (1, 1.0 / math.sqrt(2.0))],
)
def test_staleness_weight_known_values(tau: int, expected: float) -> None:
    assert staleness_weight(tau) == pytest.approx(expected, rel=1e-15)


def test_staleness_weight_decreases_with_staleness() -> None:
    weights = [staleness_weight(t) for t in range(20)]
    assert all(a > b for a, b in zip(weights, weights[1:], strict=False))


@pytest.mark.parametrize("tau", [-1, 1.5, 3.0, True, None, "3"])
def test_staleness_weight_rejects_non_integer_or_negative(tau: object) -> None:
    with pytest.raises(ValueError, match=r"^tau must be an integer >= 0"):
        staleness_weight(tau)  # type: ignore[arg-type]


def test_apply_buffer_known_values() -> None:
    # Prepare: w + 0.5 * buffer / 3 on two layers.
    weights = [np.array([1.0, -1.0]), np.array([[2.0]])]
    buffer_sum = [np.array([3.0, -6.0]), np.array([[0.0]])]

    # Execute
    new = apply_buffer(weights, buffer_sum, count=3, server_lr=0.5)

    # Assert: [1 + 0.5, -1 - 1] and unchanged second layer.
    np.testing.assert_allclose(new[0], [1.5, -2.0], rtol=1e-15)
    np.testing.assert_allclose(new[1], [[2.0]], rtol=1e-15)


def test_buffer_of_stale_updates_by_hand() -> None:
    # Prepare: three updates with staleness 0, 3, 8 (weights 1, 1/2, 1/3).
    updates = [(np.array([2.0]), 0), (np.array([4.0]), 3), (np.array([3.0]), 8)]
    buffer_sum = [np.zeros(1)]
    for delta, tau in updates:
        buffer_sum[0] = buffer_sum[0] + staleness_weight(tau) * delta

    # Execute
    (new,) = apply_buffer([np.array([1.0])], buffer_sum, count=3, server_lr=0.6)

    # Assert: buffer = 2 + 2 + 1 = 5; w = 1 + 0.6 * 5 / 3 = 2.
    np.testing.assert_allclose(buffer_sum[0], [5.0], rtol=1e-15)
    np.testing.assert_allclose(new, [2.0], rtol=1e-15)


def test_fresh_identical_updates_reduce_to_fedavg() -> None:
    # Prepare: K = 4 fresh copies of the same update, eta_g = 1.
    delta = np.array([0.25, -0.5, 1.0])
    buffer_sum = [sum(staleness_weight(0) * delta for _ in range(4))]

    # Execute
    (new,) = apply_buffer([np.array([1.0, 1.0, 1.0])], buffer_sum, count=4, server_lr=1.0)

    # Assert
    np.testing.assert_allclose(new, [1.25, 0.5, 2.0], rtol=1e-15)


def test_apply_buffer_keeps_dtypes_and_rounds_integer_layers() -> None:
    # Prepare
    weights = [np.array([1.0], dtype=np.float32), np.array([10], dtype=np.int64)]
    buffer_sum = [np.array([1.0], dtype=np.float32), np.array([5.2])]

    # Execute
    new = apply_buffer(weights, buffer_sum, count=2, server_lr=1.0)

    # Assert: 10 + 2.6 rounds to 13.
    assert new[0].dtype == np.float32 and new[1].dtype == np.int64
    np.testing.assert_array_equal(new[0], [1.5])
    np.testing.assert_array_equal(new[1], [13])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"count": 0, "server_lr": 1.0}, "^count must be"),
        ({"count": 1.5, "server_lr": 1.0}, "^count must be"),
        ({"count": True, "server_lr": 1.0}, "^count must be"),
        ({"count": 2, "server_lr": 0.0}, "^server_lr must be"),
        ({"count": 2, "server_lr": -1.0}, "^server_lr must be"),
        ({"count": 2, "server_lr": math.inf}, "^server_lr must be"),
    ],
)
def test_apply_buffer_rejects_bad_parameters(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        apply_buffer([np.zeros(2)], [np.zeros(2)], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weights", "buffer_sum", "match"),
    [
        ([np.zeros(2)], [np.zeros(3)], "shape"),
        ([np.zeros(2)], [np.zeros(2), np.zeros(2)], "layers"),
        ([], [], "at least one layer"),
        ([np.zeros(2)], [np.array([np.nan, 0.0])], "non-finite"),
    ],
)
def test_apply_buffer_rejects_mismatched_or_non_finite_layers(
    weights: list[np.ndarray], buffer_sum: list[np.ndarray], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        apply_buffer(weights, buffer_sum, count=1, server_lr=1.0)
