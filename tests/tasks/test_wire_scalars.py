"""Reading a scalar off the wire: ``as_float`` / ``as_int`` convert exactly as float() / int() do."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.wire import as_float, as_int


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (2.5, 2.5), ("0.25", 0.25), (b"4", 4.0), (np.float32(0.5), 0.5), (np.int64(7), 7)],
)
def test_as_float_converts_like_float(value: float | str | bytes, expected: float) -> None:
    assert as_float(value) == expected == float(value)


@pytest.mark.parametrize(("value", "expected"), [(3, 3), (2.9, 2), ("12", 12), (b"5", 5), (np.int64(7), 7)])
def test_as_int_converts_like_int(value: float | str | bytes, expected: int) -> None:
    assert as_int(value) == expected == int(value)


@pytest.mark.parametrize("value", [[1.0], [1, 2], None, {"a": 1}])
def test_a_list_or_other_non_scalar_is_a_type_error_naming_its_type(value: object) -> None:
    with pytest.raises(TypeError, match=f"got {type(value).__name__}"):
        as_float(value)
    with pytest.raises(TypeError, match=f"got {type(value).__name__}"):
        as_int(value)
