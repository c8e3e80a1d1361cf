import numpy as np
import pytest

from strategies.aggregate import normalized_weights, weighted_average


def test_weights_100_200_300_are_one_two_three_sixths() -> None:
    np.testing.assert_allclose(normalized_weights([100, 200, 300]), [1 / 6, 2 / 6, 3 / 6])


def test_weighted_average_on_hand_made_layers() -> None:
    # Prepare: three clients, two layers; weights 100, 200, 300.
    updates = [
        [np.array([6.0, 0.0], np.float32), np.array([[1.0]], np.float32)],
        [np.array([0.0, 6.0], np.float32), np.array([[2.0]], np.float32)],
        [np.array([0.0, 0.0], np.float32), np.array([[3.0]], np.float32)],
    ]

    # Execute
    out = weighted_average(updates, [100, 200, 300])

    # Assert: 6·1/6 = 1, 6·2/6 = 2; (1 + 4 + 9)/6 = 14/6.
    np.testing.assert_allclose(out[0], [1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [[14 / 6]], rtol=1e-6)
    assert out[0].dtype == np.float32 and out[1].shape == (1, 1)


def test_integer_buffers_keep_their_dtype() -> None:
    out = weighted_average([[np.array([10], np.int64)], [np.array([20], np.int64)]], [1, 1])
    assert out[0].dtype == np.int64 and out[0][0] == 15


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1], [1, float("nan")]])
def test_bad_weights_are_rejected(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        normalized_weights(weights)


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        weighted_average([[np.zeros(2)], [np.zeros(3)]], [1, 1])
