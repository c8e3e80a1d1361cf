import numpy as np
import pytest
from flwr.app import Array

from strategies.records import array_view, from_layers, to_layers


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
