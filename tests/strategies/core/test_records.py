import numpy as np
import pytest
from flwr.app import Array

from strategies.core.records import array_view, from_layers, to_layers


@pytest.mark.parametrize(
    "value", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(5, np.int64), np.zeros((0, 3))]
)
def test_array_view_equals_flowers_decoder_without_copying(value: np.ndarray) -> None:
    arr = Array(value)
    view = array_view(arr)
    np.testing.assert_array_equal(view, arr.numpy())
    assert view.dtype == value.dtype and not view.flags.writeable


def test_array_view_rejects_metadata_that_disagrees_with_the_payload() -> None:
    arr = Array(np.zeros((2, 3), np.float32))
    forged = Array(dtype="float32", shape=(3, 2), stype=arr.stype, data=arr.data)
    with pytest.raises(ValueError, match="metadata"):
        array_view(forged)
    truncated = Array(dtype="float32", shape=(2, 3), stype=arr.stype, data=arr.data[:-4])
    with pytest.raises(ValueError, match="size"):
        array_view(truncated)


def test_layers_round_trip_in_name_order() -> None:
    record = from_layers(["b", "a"], [np.ones(2), np.zeros(3)])
    assert list(record.keys()) == ["b", "a"]
    a, b = to_layers(record, ["a", "b"])
    assert a.shape == (3,) and b.shape == (2,)


@pytest.mark.parametrize(
    "value",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array(7, np.int64),  # 0-d (a BatchNorm's num_batches_tracked) stays 0-d
        np.zeros((0, 3), np.float32),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.arange(8.0)[::2],
    ],
)
def test_npy_array_writes_what_flower_writes_and_keeps_the_shape(value: np.ndarray) -> None:

    from strategies.core.records import npy_array

    fast = npy_array(value)

    reference = Array(np.ascontiguousarray(value) if value.ndim else value)
    assert fast.data == reference.data and fast.shape == value.shape and fast.dtype == str(value.dtype)
    np.testing.assert_array_equal(fast.numpy(), value)


def test_array_view_reads_the_payload_in_place() -> None:
    array = Array(np.arange(100_000, dtype=np.float32))

    view = array_view(array)

    assert np.shares_memory(view, np.frombuffer(array.data, np.uint8))
    np.testing.assert_array_equal(view, np.arange(100_000, dtype=np.float32))
