import numpy as np
import pytest

from strategies.numeric.aggregate import normalized_weights, weighted_average


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


def test_blocked_axpy_matches_float64_reference_across_block_boundaries() -> None:
    # Prepare: a layer longer than two blocks (so blocks and the ragged tail are both used),
    # read-only inputs as the zero-copy reply views are, one float64 layer, one F-ordered input.
    from strategies.numeric.aggregate import _BLOCK

    rng = np.random.default_rng(0)
    n = 2 * _BLOCK + 123
    updates = []
    for _ in range(5):
        big = rng.normal(size=n).astype(np.float32)
        big.setflags(write=False)
        updates.append(
            [big, rng.normal(size=(3, 4)), np.asfortranarray(rng.normal(size=(2, 3)).astype(np.float32))]
        )
    weights = [1, 2, 3, 4, 5]

    # Execute
    out = weighted_average(updates, weights)

    # Assert: equal to the float64 weighted mean, dtypes kept, inputs untouched.
    for i in range(3):
        expected = np.average(
            np.stack([np.asarray(u[i], np.float64) for u in updates]), axis=0, weights=weights
        )
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-6)
        assert out[i].dtype == updates[0][i].dtype and out[i].shape == updates[0][i].shape
    assert not np.shares_memory(out[0], updates[0][0])


def test_weighted_average_writes_only_its_output() -> None:
    # The accumulator is the output: inputs are never copied or modified.
    x = [np.full(10, 2.0, np.float32)], [np.full(10, 4.0, np.float32)]
    before = [u[0].copy() for u in x]

    out = weighted_average(x, [1, 3])

    np.testing.assert_allclose(out[0], np.full(10, 3.5))
    assert all(np.array_equal(u[0], b) for u, b in zip(x, before, strict=True))


def test_replies_at_the_float32_maximum_average_to_a_finite_value() -> None:
    # Prepare: five replies at ±max with unequal weights: the float32 factors n_k / n sum
    # past 1, and main's float32 accumulator overflowed to ±inf.
    edge = np.finfo(np.float32).max
    layer = np.array([edge, -edge, edge, 1.0], np.float32)
    weights = [220, 158, 518, 1305, 1048]

    # Execute
    out = weighted_average([[layer] for _ in weights], weights)[0]

    # Assert: the exact average is the layer itself.
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, layer, rtol=1e-6)


def test_only_the_overflowing_block_is_redone_and_the_others_keep_float32_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: three blocks of 4 values; only the middle one holds values at the maximum.
    monkeypatch.setattr("strategies.numeric.aggregate._BLOCK", 4)
    edge = np.finfo(np.float32).max
    rng = np.random.default_rng(0)
    clients = [rng.normal(size=12).astype(np.float32) for _ in range(5)]
    for c in clients:
        c[4:8] = edge
    weights = [220, 158, 518, 1305, 1048]
    factors = np.asarray(weights, np.float64) / sum(weights)

    # Execute
    out = weighted_average([[c] for c in clients], weights)[0]

    # Assert: finite everywhere and equal to the float64 average up to float32 rounding.
    reference = sum(f * c.astype(np.float64) for f, c in zip(factors, clients, strict=True))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-6)
