"""Conversions between Flower records and NumPy, done once at the edge.

``array_view`` reads an ``Array``'s ``.npy`` payload as a read-only NumPy view
without copying it (Flower's ``Array.numpy()`` decodes into a fresh copy), and
checks that the payload agrees with the array's declared dtype and shape.
"""

from __future__ import annotations

import functools
import io
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

from tasks import wire

# Record and metric names are defined once, in tasks.wire (shared with the ClientApp).
ARRAYS_KEY = wire.ARRAYS
CONFIG_KEY = wire.CONFIG
METRICS_KEY = wire.METRICS
INFO_KEY = wire.INFO
NUM_EXAMPLES = wire.NUM_EXAMPLES
#: Train-reply metric of a DP-SGD client: its own cumulative ε (client_app/dpsgd.py).
DP_SGD_EPSILON_KEY = wire.DP_SGD_EPSILON


def array_view(array: Array) -> np.ndarray:
    """Zero-copy, read-only NumPy view of an ``Array`` serialized as ``.npy``.

    Raises ``ValueError`` if the payload is not a plain ``.npy`` array or does not
    match the declared dtype/shape.
    """
    buf = memoryview(array.data)
    # Layout: magic (6 bytes), version (2), header length (2 bytes in v1, 4 in v2/v3), header.
    # Only the header is copied (io.BytesIO over the payload would copy all of it).
    prefix = bytes(buf[:12])
    size_bytes = 2 if prefix[6:7] == b"\x01" else 4
    header_len = int.from_bytes(prefix[8 : 8 + size_bytes], "little") if len(prefix) >= 8 + size_bytes else 0
    shape, fortran, dtype, offset, count, dtype_name = _npy_header(bytes(buf[: 8 + size_bytes + header_len]))
    if dtype.hasobject:
        raise ValueError("object arrays are not accepted")
    if len(buf) - offset != count * dtype.itemsize:
        raise ValueError("array payload size does not match its header")
    view = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    view = view.reshape(shape, order="F" if fortran else "C")
    if dtype_name != array.dtype or shape != tuple(array.shape):
        raise ValueError(
            f"array header says {dtype}{tuple(shape)} but metadata says {array.dtype}{tuple(array.shape)}"
        )
    return view


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int, int, str]:
    """(shape, fortran order, dtype, data offset, element count, dtype name) of a ``.npy`` header.

    Cached: every reply of a round repeats the global model's headers, and NumPy parses
    each with ``ast.literal_eval``, which costs more than viewing the array.
    """
    stream = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(stream)
    except Exception as exc:  # malformed header bytes
        raise ValueError(f"array payload is not a valid .npy array: {exc}") from exc
    count = int(np.prod(shape, dtype=np.int64))
    return tuple(shape), bool(fortran), dtype, stream.tell(), count, str(dtype)


def to_layers(record: ArrayRecord, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Arrays of ``record`` as NumPy views, in ``names`` order (default: record order)."""
    keys = list(record.keys()) if names is None else list(names)
    return [array_view(record[k]) for k in keys]


def from_layers(names: Sequence[str], layers: Sequence[np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` mapping ``names`` to ``layers`` (order kept)."""
    if len(names) != len(layers):
        raise ValueError(f"{len(names)} names but {len(layers)} arrays")
    return ArrayRecord(OrderedDict((n, npy_array(a)) for n, a in zip(names, layers, strict=True)))


def npy_array(value: np.ndarray) -> Array:
    """An ``Array`` holding ``value`` as ``.npy`` bytes, written with one copy.

    The payload is byte-for-byte what ``Array(value)`` stores (``np.save``'s format), but
    ``np.save`` into a ``BytesIO`` copies the data three times; joining the header and a
    view of the data copies it once.
    """
    arr = np.asarray(value)
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would also turn 0-d arrays into 1-d)
        arr = np.ascontiguousarray(arr)
    if arr.dtype.hasobject:
        raise ValueError("object arrays are not accepted")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(arr))
    data = b"".join((header.getvalue(), arr.reshape(-1).data.cast("B") if arr.size else b""))
    return Array(
        dtype=str(arr.dtype), shape=tuple(int(d) for d in arr.shape), stype="numpy.ndarray", data=data
    )


def spec_of(record: ArrayRecord) -> Mapping[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype) of every array in ``record``."""
    return {k: (tuple(v.shape), v.dtype) for k, v in record.items()}
