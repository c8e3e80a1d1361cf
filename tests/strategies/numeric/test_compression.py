"""Tests for strategies.numeric.compression: quantization error, top-k, error feedback, bytes, wire format."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.numeric.compression import (
    ErrorFeedback,
    QuantizedTensor,
    SparseTensor,
    decode_quantized,
    decode_sparse,
    decode_update,
    densify,
    dequantize,
    encode_quantized,
    encode_sparse,
    encode_update,
    is_compressed,
    nbytes,
    quantize_uint8,
    topk_sparsify,
)

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)

FLOAT32_ARRAYS = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
)


# --------------------------------------------------------------------------- #
# Quantization                                                                #
# --------------------------------------------------------------------------- #


def test_quantize_known_values() -> None:
    # Prepare: range [-1, 1.55] -> scale = 2.55 / 255 = 0.01, zero_point = 1 / 0.01 = 100.
    x = np.array([-1.0, 0.0, 0.5, 1.55])

    # Execute
    q = quantize_uint8(x)

    # Assert: levels (x / 0.01) + 100.
    assert q.scale == pytest.approx(0.01, rel=1e-12)
    assert q.zero_point == 100
    np.testing.assert_array_equal(q.data, np.array([0, 100, 150, 255], dtype=np.uint8))
    np.testing.assert_allclose(dequantize(q), x, atol=1e-12)


def test_quantize_positive_range_keeps_all_levels() -> None:
    # Prepare: values in [1000, 1255] -> scale 1, zero_point -1000 (outside [0, 255]).
    x = np.array([[1000.0, 1001.4], [1254.6, 1255.0]], dtype=np.float32)

    # Execute
    q = quantize_uint8(x)

    # Assert
    assert q.scale == pytest.approx(1.0) and q.zero_point == -1000
    assert q.shape == (2, 2) and q.dtype == np.float32
    np.testing.assert_array_equal(q.data, [[0, 1], [255, 255]])
    np.testing.assert_array_equal(dequantize(q), np.array([[1000.0, 1001.0], [1255.0, 1255.0]], np.float32))


@pytest.mark.parametrize("value", [3.5, -2.25, 0.0, -0.0, 1e-30, 3e38])
def test_constant_tensors_are_exact(value: float) -> None:
    # Prepare
    x = np.full((2, 3), value, dtype=np.float32)

    # Execute
    q = quantize_uint8(x)
    x_hat = dequantize(q)

    # Assert
    assert q.scale == abs(float(x[0, 0]))
    assert x_hat.dtype == np.float32
    np.testing.assert_array_equal(x_hat, x)


@given(x=FLOAT32_ARRAYS)
@PROPERTY_SETTINGS
def test_quantization_error_is_at_most_half_a_step(x: np.ndarray) -> None:
    # Execute
    q = quantize_uint8(x)
    x_hat = dequantize(q)

    # Assert: scale/2 (plus 1e-5 * scale of float64 round-off) plus the final cast to
    # float32, at most half a float32 ulp of the larger of |x|, |x_hat|.
    assert x_hat.dtype == np.float32 and x_hat.shape == x.shape
    err = np.abs(x.astype(np.float64) - x_hat.astype(np.float64))
    # np.spacing(float32 max) is inf; 2**127 lies in the same binade and has a finite ulp.
    magnitude = np.minimum(np.maximum(np.abs(x), np.abs(x_hat)), np.float32(2.0**127))
    ulp = np.spacing(magnitude).astype(np.float64)
    assert np.all(err <= q.scale * (0.5 + 1e-5) + 0.5 * ulp)


@given(x=hnp.arrays(np.float64, st.integers(2, 40), elements=st.floats(-1e6, 1e6)))
@PROPERTY_SETTINGS
def test_quantization_error_float64_within_half_step(x: np.ndarray) -> None:
    # Execute
    q = quantize_uint8(x)

    # Assert: float64 round-off is negligible next to scale / 2.
    err = np.abs(x - dequantize(q))
    assert np.all(err <= q.scale * (0.5 + 1e-5) + 4 * np.spacing(np.abs(x)))


def test_quantization_error_reaches_half_a_step() -> None:
    # Prepare: 0.005 lies exactly between levels 0 and 1 (scale 0.01 on [0, 2.55]).
    x = np.array([0.0, 0.004, 2.55])

    # Execute
    x_hat = dequantize(quantize_uint8(x))

    # Assert: the bound is tight: error 0.004 < 0.005 = scale / 2, rounded to level 0.
    assert x_hat[1] == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- #
# Top-k                                                                       #
# --------------------------------------------------------------------------- #


def test_topk_known_values_and_ties_to_lowest_index() -> None:
    # Prepare: |-3| and |3| tie for the largest magnitude.
    x = np.array([[1.0, -3.0], [3.0, 2.0]], dtype=np.float32)

    # Execute
    top1, top2, top3 = (topk_sparsify(x, k=k) for k in (1, 2, 3))

    # Assert
    np.testing.assert_array_equal(top1.indices, [1])
    np.testing.assert_array_equal(top2.indices, [1, 2])
    np.testing.assert_array_equal(top2.values, np.array([-3.0, 3.0], dtype=np.float32))
    np.testing.assert_array_equal(top3.indices, [1, 2, 3])
    assert top2.indices.dtype == np.int32 and top2.dtype == np.float32 and top2.shape == (2, 2)
    np.testing.assert_array_equal(densify(top2), [[0.0, -3.0], [3.0, 0.0]])


def test_topk_all_ties_keep_the_first_k() -> None:
    x = np.array([2.0, -2.0, 2.0, -2.0, 2.0])
    np.testing.assert_array_equal(topk_sparsify(x, k=3).indices, [0, 1, 2])


def test_topk_with_k_equal_size_is_lossless() -> None:
    x = np.arange(-3.0, 3.0).reshape(2, 3)
    np.testing.assert_array_equal(densify(topk_sparsify(x, k=6)), x)


NONZERO_ARRAYS = hnp.arrays(
    np.float64,
    st.integers(1, 30),
    elements=st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3),
)


@given(x=NONZERO_ARRAYS, data=st.data())
@PROPERTY_SETTINGS
def test_topk_keeps_exactly_k_largest_magnitudes(x: np.ndarray, data: st.DataObject) -> None:
    # Prepare
    k = data.draw(st.integers(1, x.size), label="k")

    # Execute
    s = topk_sparsify(x, k=k)
    dense = densify(s)

    # Assert: k nonzeros, equal to x where kept, and no dropped entry larger than a kept one.
    kept = dense != 0
    assert np.count_nonzero(dense) == k == s.indices.size
    np.testing.assert_array_equal(dense[kept], x[kept])
    if k < x.size:
        assert np.abs(x[kept]).min() >= np.abs(x[~kept]).max()


# --------------------------------------------------------------------------- #
# Error feedback                                                              #
# --------------------------------------------------------------------------- #


def test_error_feedback_carries_the_rest_to_the_next_round() -> None:
    # Prepare
    memory = ErrorFeedback()

    # Execute
    sent1 = memory.compress("w", np.array([3.0, 1.0, -2.0]), k=1)
    residual1 = memory.residual("w")
    sent2 = memory.compress("w", np.array([0.0, 0.0, 0.5]), k=1)

    # Assert: round 1 sends 3 and keeps [0, 1, -2]; round 2 sees [0, 1, -1.5], sends -1.5.
    np.testing.assert_array_equal(densify(sent1), [3.0, 0.0, 0.0])
    np.testing.assert_array_equal(residual1, [0.0, 1.0, -2.0])
    np.testing.assert_array_equal(densify(sent2), [0.0, 0.0, -1.5])
    np.testing.assert_array_equal(memory.residual("w"), [0.0, 1.0, 0.0])
    assert memory.residual("other") is None


@st.composite
def update_rounds(draw: st.DrawFn) -> tuple[list[np.ndarray], int]:
    size = draw(st.integers(1, 12))
    rounds = draw(st.integers(1, 6))
    k = draw(st.integers(1, size))
    # Small integers in float64 make every addition exact, so the identity is checked exactly.
    updates = [
        draw(hnp.arrays(np.float64, (size,), elements=st.integers(-1000, 1000).map(float)))
        for _ in range(rounds)
    ]
    return updates, k


@given(case=update_rounds())
@PROPERTY_SETTINGS
def test_error_feedback_sent_plus_residual_equals_raw_sum(case: tuple[list[np.ndarray], int]) -> None:
    # Prepare
    updates, k = case
    memory = ErrorFeedback()

    # Execute
    sent = [densify(memory.compress("layer", u, k=k)) for u in updates]

    # Assert: nothing is lost or invented, only delayed.
    np.testing.assert_array_equal(sum(sent) + memory.residual("layer"), sum(updates))
    assert all(np.count_nonzero(s) <= k for s in sent)


def test_error_feedback_with_real_valued_float32_updates() -> None:
    # Prepare
    rng = np.random.default_rng(3)
    updates = [rng.normal(size=(4, 5)).astype(np.float32) for _ in range(10)]
    memory = ErrorFeedback()

    # Execute
    sent = [densify(memory.compress("conv", u, k=3)) for u in updates]

    # Assert: equal up to float32 addition; the residual keeps the update's dtype.
    residual = memory.residual("conv")
    assert residual is not None and residual.dtype == np.float32
    np.testing.assert_allclose(sum(sent) + residual, sum(updates), rtol=1e-5, atol=1e-5)


def test_error_feedback_state_round_trip_and_shape_check() -> None:
    # Prepare
    memory = ErrorFeedback()
    memory.compress("w", np.array([3.0, 1.0, -2.0]), k=1)

    # Execute
    restored = ErrorFeedback.from_state_dict(memory.state_dict())

    # Assert: same next message; a wrong shape fails and leaves the residual alone.
    nxt = np.array([0.0, 0.0, 0.5])
    np.testing.assert_array_equal(
        densify(restored.compress("w", nxt, k=1)), densify(memory.compress("w", nxt, k=1))
    )
    with pytest.raises(ValueError, match="shape"):
        memory.compress("w", np.zeros(4), k=1)
    np.testing.assert_array_equal(memory.residual("w"), [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="non-finite"):
        ErrorFeedback.from_state_dict({"w": np.array([np.nan])})


# --------------------------------------------------------------------------- #
# Bytes and wire format                                                       #
# --------------------------------------------------------------------------- #


def test_nbytes_of_compressed_tensors_is_smaller_than_dense() -> None:
    # Prepare: 1000 float32 values = 4000 bytes dense.
    x = np.random.default_rng(0).normal(size=1000).astype(np.float32)

    # Execute
    dense, quant, sparse = nbytes(x), nbytes(quantize_uint8(x)), nbytes(topk_sparsify(x, k=10))

    # Assert: 1000 levels + 8 (scale) + 8 (zero point); 10 int32 indices + 10 float32 values.
    assert dense == 4000
    assert quant == 1016
    assert sparse == 80


def test_quantized_encoding_round_trip() -> None:
    # Prepare
    x = np.array([[-1.0, 0.25], [0.5, 2.0]], dtype=np.float32)
    q = quantize_uint8(x)

    # Execute
    arrays = encode_quantized("fc.weight", q)
    back = decode_quantized("fc.weight", arrays | {"other/q_data": np.zeros(1, np.uint8)})

    # Assert
    assert set(arrays) == {
        "fc.weight/q_data",
        "fc.weight/q_scale",
        "fc.weight/q_zero_point",
        "fc.weight/q_dtype",
    }
    assert back.dtype == np.float32 and back.scale == q.scale and back.zero_point == q.zero_point
    np.testing.assert_array_equal(dequantize(back), dequantize(q))


def test_sparse_encoding_round_trip() -> None:
    # Prepare
    x = np.array([[1.0, -3.0], [3.0, 2.0]])
    s = topk_sparsify(x, k=2)

    # Execute
    arrays = encode_sparse("fc.bias", s)
    back = decode_sparse("fc.bias", arrays)

    # Assert
    assert set(arrays) == {"fc.bias/sp_indices", "fc.bias/sp_values", "fc.bias/sp_shape"}
    assert back.shape == (2, 2)
    np.testing.assert_array_equal(densify(back), densify(s))


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"b/sp_indices": np.array([0]), "b/sp_values": np.array([1.0])}, "missing"),
        (
            {"b/sp_indices": np.array([0, 5]), "b/sp_values": np.ones(2), "b/sp_shape": np.array([4])},
            r"\[0, 4\)",
        ),
        (
            {"b/sp_indices": np.array([1, 1]), "b/sp_values": np.ones(2), "b/sp_shape": np.array([4])},
            "increasing",
        ),
        (
            {"b/sp_indices": np.array([0, 1]), "b/sp_values": np.ones(3), "b/sp_shape": np.array([4])},
            "values",
        ),
        (
            {"b/sp_indices": np.array([0]), "b/sp_values": np.array([np.inf]), "b/sp_shape": np.array([4])},
            "finite",
        ),
        ({"b/sp_indices": np.array([0]), "b/sp_values": np.ones(1), "b/sp_shape": np.array([-4])}, "shape"),
    ],
)
def test_decode_sparse_rejects_malformed_input(arrays: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_sparse("b", arrays)


def test_decode_quantized_rejects_malformed_input() -> None:
    # Prepare
    good = encode_quantized("w", quantize_uint8(np.array([0.0, 1.0], dtype=np.float32)))

    # Execute / Assert
    with pytest.raises(ValueError, match="uint8"):
        decode_quantized("w", good | {"w/q_data": np.array([0, 255], dtype=np.int16)})
    with pytest.raises(ValueError, match="scale"):
        decode_quantized("w", good | {"w/q_scale": np.array([-1.0])})
    with pytest.raises(ValueError, match="floating"):
        decode_quantized("w", good | {"w/q_dtype": np.empty(0, dtype=np.int32)})
    with pytest.raises(ValueError, match="missing"):
        decode_quantized("v", good)


# --------------------------------------------------------------------------- #
# Validation                                                                  #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("k", [0, 5, -1, 1.5, True])
def test_topk_rejects_bad_k(k: int) -> None:
    with pytest.raises(ValueError, match=r"^k must be an integer in \[1, 4\]"):
        topk_sparsify(np.ones(4), k=k)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros(0, dtype=np.float32), "non-empty"),
        (np.array([1.0, np.nan]), "NaN or inf"),
        (np.array([1.0, -np.inf]), "NaN or inf"),
    ],
)
def test_compressors_reject_empty_and_non_finite(x: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        quantize_uint8(x)
    with pytest.raises(ValueError, match=match):
        topk_sparsify(x, k=1)
    with pytest.raises(ValueError, match=match):
        ErrorFeedback().compress("w", x, k=1)


def test_quantize_rejects_non_float_and_overflowing_range() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        quantize_uint8(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="overflows"):
        quantize_uint8(np.array([-1e308, 1e308]))


def test_nbytes_rejects_other_types() -> None:
    with pytest.raises(ValueError, match="compressed must be"):
        nbytes([1.0, 2.0])  # type: ignore[arg-type]


def test_dataclasses_validate_direct_construction() -> None:
    with pytest.raises(ValueError, match="zero_point"):
        QuantizedTensor(np.zeros(2, np.uint8), 1.0, 2**60, np.dtype(np.float32))
    with pytest.raises(ValueError, match="1-D integer"):
        SparseTensor(np.array([0.5]), np.array([1.0]), (2,))


# --------------------------------------------------------------------------- #
# Untrusted fields: every dtype and range checked before decoding (issue 12.7) #
# --------------------------------------------------------------------------- #

GOOD_QUANTIZED = encode_quantized("w", quantize_uint8(np.array([0.0, 0.5, 1.0], dtype=np.float32)))
GOOD_SPARSE = encode_sparse("w", topk_sparsify(np.array([0.0, 3.0, -1.0, 2.0], dtype=np.float32), k=2))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("w/q_scale", np.array([0.01 + 2j])),  # complex: used to be cut silently to its real part
        ("w/q_scale", np.array([1], dtype="m8[s]")),  # timedelta: used to raise TypeError
        ("w/q_scale", np.array(["0.01"])),
        ("w/q_scale", np.array([True])),
        ("w/q_scale", np.array([1], dtype=np.int64)),
        ("w/q_scale", np.array([0.01], dtype=np.float32)),
        ("w/q_scale", np.array(0.01)),
        ("w/q_scale", np.array([0.01, 0.02])),
        ("w/q_scale", np.array([np.nan])),
        ("w/q_scale", np.array([np.inf])),
        ("w/q_scale", np.array([-0.5])),
        ("w/q_zero_point", np.array([3.0])),
        ("w/q_zero_point", np.array([3], dtype="m8[s]")),
        ("w/q_zero_point", np.array([2**64 - 1], dtype=np.uint64)),
        ("w/q_zero_point", np.array([True])),
        ("w/q_zero_point", np.array([1 + 0j])),
        ("w/q_zero_point", np.array([2**60])),
        ("w/q_zero_point", np.array(3)),
        ("w/q_dtype", np.empty(0, dtype=np.complex64)),
        ("w/q_dtype", np.empty(0, dtype="m8[s]")),
        ("w/q_dtype", np.zeros(3, dtype=np.float32)),
        ("w/q_data", np.array([0, 1, 2], dtype=np.int8)),
        ("w/q_data", np.array([0.0, 1.0, 2.0])),
    ],
)
def test_decode_quantized_checks_every_field_and_raises_only_value_error(
    field: str, value: np.ndarray
) -> None:
    # Prepare
    arrays = GOOD_QUANTIZED | {field: value}

    # Execute / Assert: a clear ValueError naming the layer, never TypeError or a silent cast.
    with pytest.raises(ValueError, match="'w'"):
        decode_quantized("w", arrays)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        # Unsigned and out of order: np.diff wrapped around and the first/last check passed.
        ("w/sp_indices", np.array([3, 1], dtype=np.uint8), "int32 or int64"),
        ("w/sp_indices", np.array([2**63, 1], dtype=np.uint64), "int32 or int64"),
        ("w/sp_indices", np.array([1, 3], dtype="m8[s]"), "int32 or int64"),
        ("w/sp_indices", np.array([1.0, 3.0]), "int32 or int64"),
        ("w/sp_indices", np.array([1 + 0j, 3 + 0j]), "int32 or int64"),
        ("w/sp_indices", np.array([3, 1], dtype=np.int32), "increasing"),
        ("w/sp_indices", np.array([1, 1], dtype=np.int32), "increasing"),
        ("w/sp_indices", np.array([-1, 3], dtype=np.int32), r"\[0, 4\)"),
        ("w/sp_indices", np.array([1, 4], dtype=np.int64), r"\[0, 4\)"),
        ("w/sp_indices", np.array([[1, 3]], dtype=np.int32), "1-D"),
        ("w/sp_values", np.array([3.0 + 1j, 2.0]), "floating or integer"),
        ("w/sp_values", np.array([np.nan, 2.0], dtype=np.float32), "finite"),
        ("w/sp_values", np.array([3.0], dtype=np.float32), "shape"),
        ("w/sp_shape", np.array([4], dtype=np.uint64), "int64"),
        ("w/sp_shape", np.array([4.0]), "int64"),
        ("w/sp_shape", np.array(4), "int64"),
        ("w/sp_shape", np.array([-4]), ">= 0"),
    ],
)
def test_decode_sparse_checks_every_field_and_raises_only_value_error(
    field: str, value: np.ndarray, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        decode_sparse("w", GOOD_SPARSE | {field: value})


def test_sparse_tensor_checks_every_index_whatever_its_integer_dtype() -> None:
    # Unsigned indices out of order: the range and order checks must not rely on the first
    # and last index, nor on np.diff (which wraps around for unsigned dtypes).
    with pytest.raises(ValueError, match="increasing"):
        SparseTensor(np.array([3, 1], dtype=np.uint8), np.ones(2), (4,))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        SparseTensor(np.array([2**63, 1], dtype=np.uint64), np.ones(2), (4,))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        SparseTensor(np.array([0, 9, 3]), np.ones(3), (4,))
    # timedelta64 is an np.integer to NumPy, but neither an index nor a value.
    with pytest.raises(ValueError, match="1-D integer"):
        SparseTensor(np.array([0, 1], dtype="m8[s]"), np.ones(2), (4,))
    with pytest.raises(ValueError, match="floating or integer"):
        SparseTensor(np.array([0, 1]), np.array([1, 2], dtype="m8[s]"), (4,))


def test_quantized_tensor_rejects_a_non_real_scale_with_value_error() -> None:
    with pytest.raises(ValueError, match="real number"):
        QuantizedTensor(np.zeros(2, np.uint8), 1 + 1j, 0, np.dtype(np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer"):
        QuantizedTensor(np.zeros(2, np.uint8), 1.0, 0.5, np.dtype(np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="real number"):
        QuantizedTensor(np.zeros(2, np.uint8), np.timedelta64(1), 0, np.dtype(np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer"):
        QuantizedTensor(np.zeros(2, np.uint8), 1.0, np.timedelta64(1), np.dtype(np.float32))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# Integer buffers are not parameters: not compressed, not sent                #
# --------------------------------------------------------------------------- #

#: A BatchNorm layer's state: float parameters and running stats, an int64 counter.
BN_SPEC = {
    "bn.weight": ((3,), np.dtype(np.float32)),
    "bn.running_mean": ((3,), np.dtype(np.float32)),
    "bn.num_batches_tracked": ((), np.dtype(np.int64)),
    "mask": ((2, 2), np.dtype(np.bool_)),
}
BN_FLOAT = ["bn.weight", "bn.running_mean"]


def test_only_floating_dtypes_are_compressed() -> None:
    assert [is_compressed(d) for d in (np.float16, np.float32, np.float64)] == [True] * 3
    assert [is_compressed(d) for d in (np.int64, np.uint8, np.bool_, np.complex64, "m8[s]")] == [False] * 5


@pytest.mark.parametrize("scheme", ["int8", "topk"])
def test_encode_update_refuses_an_integer_layer(scheme: str) -> None:
    # Quantizing a counter, or letting its step of 100 batches into top-k and the residual, is wrong.
    with pytest.raises(ValueError, match=r"'bn.num_batches_tracked' has dtype int64: only floating"):
        encode_update(["bn.num_batches_tracked"], [np.array(100)], scheme=scheme, topk_fraction=1.0)


@pytest.mark.parametrize("scheme", ["int8", "topk"])
def test_integer_layers_are_not_on_the_wire_and_decode_to_no_update(scheme: str) -> None:
    # Prepare: what a client sends for the floating layers of BN_SPEC.
    deltas = [np.array([0.5, -1.0, 2.0], np.float32), np.array([0.1, 0.0, -0.1], np.float32)]
    encoded = encode_update(BN_FLOAT, deltas, scheme=scheme, topk_fraction=1.0)

    # Execute
    decoded = decode_update(encoded, BN_SPEC, scheme=scheme, topk_fraction=1.0)

    # Assert: no key of an integer layer is sent; only the floating layers decode.
    assert {key.split("/")[0] for key in encoded} == set(BN_FLOAT)
    assert list(decoded) == BN_FLOAT
    for name, delta in zip(BN_FLOAT, deltas, strict=True):
        assert decoded[name].dtype == np.float32
        np.testing.assert_allclose(decoded[name], delta, atol=3.0 / 255)
    # A counter sent anyway (as the old int8 format did) is an unexpected key.
    with pytest.raises(ValueError, match="unexpected keys"):
        decode_update(encoded | {"bn.num_batches_tracked/raw": np.array(100)}, BN_SPEC, scheme=scheme)
