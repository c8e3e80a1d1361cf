"""Conversions between Flower records and NumPy, done once at the edge.

``array_view`` reads an ``Array``'s ``.npy`` payload as a read-only NumPy view
without copying it (Flower's ``Array.numpy()`` decodes into a fresh copy), and
checks that the payload agrees with the array's declared dtype and shape.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
INFO_KEY = "info"
NUM_EXAMPLES = "num-examples"
#: Train-reply metric of a DP-SGD client: its own cumulative ε (client_app/dpsgd.py).
DP_SGD_EPSILON_KEY = "dp-sgd-epsilon"


def array_view(array: Array) -> np.ndarray:
    """Zero-copy, read-only NumPy view of an ``Array`` serialized as ``.npy``.

    Raises ``ValueError`` if the payload is not a plain ``.npy`` array or does not
    match the declared dtype/shape.
    """
    buf = memoryview(array.data)
    stream = io.BytesIO(buf)  # BytesIO over a memoryview shares the buffer
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(stream)
    except Exception as exc:  # malformed header bytes
        raise ValueError(f"array payload is not a valid .npy array: {exc}") from exc
    if dtype.hasobject:
        raise ValueError("object arrays are not accepted")
    count = int(np.prod(shape, dtype=np.int64))
    offset = stream.tell()
    if len(buf) - offset != count * dtype.itemsize:
        raise ValueError("array payload size does not match its header")
    view = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    view = view.reshape(shape, order="F" if fortran else "C")
    if str(dtype) != array.dtype or tuple(shape) != tuple(array.shape):
        raise ValueError(
            f"array header says {dtype}{tuple(shape)} but metadata says {array.dtype}{tuple(array.shape)}"
        )
    return view


def to_layers(record: ArrayRecord, names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Arrays of ``record`` as NumPy views, in ``names`` order (default: record order)."""
    keys = list(record.keys()) if names is None else list(names)
    return [array_view(record[k]) for k in keys]


def from_layers(names: Sequence[str], layers: Sequence[np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` mapping ``names`` to ``layers`` (order kept)."""
    if len(names) != len(layers):
        raise ValueError(f"{len(names)} names but {len(layers)} arrays")
    return ArrayRecord(
        OrderedDict((n, Array(np.ascontiguousarray(a))) for n, a in zip(names, layers, strict=True))
    )


def spec_of(record: ArrayRecord) -> Mapping[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype) of every array in ``record``."""
    return {k: (tuple(v.shape), v.dtype) for k, v in record.items()}
