"""Update compression, framework-free (numpy in, numpy out), for a wrapper on any strategy.

- 8-bit affine quantization per tensor (the uniform asymmetric scheme of Jacob et al.
  2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
  Only Inference", arXiv:1712.05877): ``scale = (max - min) / 255``,
  ``zero_point = round(-min / scale)``, ``q = clip(round(x / scale) + zero_point, 0, 255)``,
  ``x_hat = (q - zero_point) * scale``.
- Top-k sparsification with client-side error feedback (Stich et al. 2018, "Sparsified
  SGD with Memory", arXiv:1809.07599): send the k entries of largest magnitude of
  ``update + residual`` and keep what was not sent as the next residual.

Guarantees
----------
- Quantization error: ``|x - x_hat| <= scale / 2`` per element in exact arithmetic. The
  result is computed in float64 and cast back to the tensor's dtype, which adds at most
  half a unit in the last place of that dtype (visible only when the range spans a few
  ulps, e.g. float32 values that all lie in [1000, 1000.001]).
- Constant tensors are reconstructed exactly: ``q = 0``, ``scale = |c|``,
  ``zero_point = -sign(c)`` (``scale = 0`` for an all-zero tensor).
- ``zero_point`` is an unbounded integer (stored as int64), not clamped to [0, 255]: a
  tensor that does not straddle zero keeps its full 256 levels on [min, max]. The price
  is that 0.0 need not be exactly representable, which matters for integer-only
  inference kernels but not for transporting updates.
- Only for float64 tensors whose values agree to about 12 significant digits is the
  scale raised to ``max|x| * 2**-40``, so that ``(q - zero_point) * scale`` stays exact
  in float64; float16/float32 tensors never reach that floor.
- Error feedback: for every layer, the sum over rounds of the sent values plus the final
  residual equals the sum of the raw updates, up to floating-point addition.

Wire format (:func:`encode_quantized`, :func:`encode_sparse`)
-------------------------------------------------------------
One flat ``dict[str, np.ndarray]`` per layer, keys ``f"{name}/{field}"`` (PyTorch layer
names contain dots but never ``/``), ready to go into a Flower ``ArrayRecord``:

- ``{name}/q_data``: uint8, the tensor's shape: the levels ``q``;
- ``{name}/q_scale``: float64, shape (1,): ``scale``;
- ``{name}/q_zero_point``: int64, shape (1,): ``zero_point``;
- ``{name}/q_dtype``: empty array (0,) of the original dtype, a dtype tag;
- ``{name}/sp_indices``: int32 (int64 for tensors of 2**31 or more entries), shape (k,):
  strictly increasing flat indices;
- ``{name}/sp_values``: original dtype, shape (k,): the values at those indices;
- ``{name}/sp_shape``: int64, shape (ndim,): the dense shape.

The decoders check every field's dtype, shape and range before using it (indices
signed, all in range and strictly increasing, scale float64 finite and >= 0, zero
point int64) and raise ``ValueError`` only, so a server can drop a malformed reply.

:func:`encode_update` / :func:`decode_update` apply one scheme to every floating layer
of a model update (the client's ``local - global``); top-k keeps :func:`topk_count`
entries per layer. Layers of any other dtype (integer buffers such as BatchNorm's
``num_batches_tracked``) are not parameters: they are not sent at all (see
:func:`is_compressed`). ``strategies/wrappers/compressed.py`` and ``client_app/compression.py``
are the glue.

:func:`nbytes` counts what carries information about the values (data, indices, scale,
zero point); the shape and dtype tags are a few bytes per layer that the receiver
already knows from its model, and are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from strategies.core.buffers import is_parameter
from tasks import wire

_LEVELS = 255
# Keeps |zero_point| <= 2**40 < 2**53, so (q - zero_point) is exact in float64.
_MIN_RELATIVE_SCALE = 2.0**-40
_SCALE_BYTES = 8  # float64
_ZERO_POINT_BYTES = 8  # int64

QUANT_DATA, QUANT_SCALE, QUANT_ZERO_POINT, QUANT_DTYPE = "q_data", "q_scale", "q_zero_point", "q_dtype"
QUANT_FIELDS = (QUANT_DATA, QUANT_SCALE, QUANT_ZERO_POINT, QUANT_DTYPE)
SPARSE_INDICES, SPARSE_VALUES, SPARSE_SHAPE = "sp_indices", "sp_values", "sp_shape"


def array_key(name: str, field: str) -> str:
    """Key of ``field`` (e.g. ``QUANT_DATA``) of layer ``name`` in an encoded dict."""
    return f"{name}/{field}"


@dataclass(frozen=True)
class QuantizedTensor:
    """An 8-bit affine-quantized tensor: ``x_hat = (data - zero_point) * scale``.

    Attributes
    ----------
    data : np.ndarray
        uint8 array with the tensor's shape.
    scale : float
        Step between levels, finite and >= 0.
    zero_point : int
        Level that represents 0.0; any integer (see the module docstring).
    dtype : np.dtype
        Floating dtype of the original tensor, restored by :func:`dequantize`.
    """

    data: np.ndarray
    scale: float
    zero_point: int
    dtype: np.dtype

    def __post_init__(self) -> None:
        # Also reached through decode_quantized, i.e. with data from the network.
        if not (isinstance(self.data, np.ndarray) and self.data.dtype == np.uint8):
            raise ValueError(f"data must be a uint8 array, got {type(self.data).__name__}")
        # A complex or other non-real scale must not reach math.isfinite (TypeError) or float().
        # (np.timedelta64 subclasses np.signedinteger, hence the explicit exclusions.)
        if isinstance(self.scale, bool | np.timedelta64) or not isinstance(
            self.scale, float | int | np.floating | np.integer
        ):
            raise ValueError(f"scale must be a real number, got {type(self.scale).__name__}")
        if isinstance(self.zero_point, bool | np.timedelta64) or not isinstance(
            self.zero_point, int | np.integer
        ):
            raise ValueError(f"zero_point must be an integer, got {type(self.zero_point).__name__}")
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ValueError(f"scale must be finite and >= 0, got {self.scale!r}")
        if abs(self.zero_point) > 2**53:
            raise ValueError(f"zero_point must satisfy |zero_point| <= 2**53, got {self.zero_point}")
        if not np.issubdtype(self.dtype, np.floating):
            raise ValueError(f"dtype must be a floating dtype, got {self.dtype}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape


@dataclass(frozen=True)
class SparseTensor:
    """A tensor with only ``values`` at the flat ``indices`` nonzero.

    Attributes
    ----------
    indices : np.ndarray
        1-D integer array of strictly increasing flat indices into ``shape``.
    values : np.ndarray
        1-D array, one value per index, in the original dtype.
    shape : tuple of int
        Shape of the dense tensor.
    """

    indices: np.ndarray
    values: np.ndarray
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        # Also reached through decode_sparse: reject duplicates and out-of-range indices.
        size = math.prod(self.shape)
        # dtype kinds, not np.integer: timedelta64 counts as an np.integer but is no index.
        if self.indices.ndim != 1 or self.indices.dtype.kind not in "iu":
            raise ValueError(
                f"indices must be a 1-D integer array, got {self.indices.dtype} {self.indices.shape}"
            )
        if self.values.dtype.kind not in "fiu":
            raise ValueError(f"values must be a floating or integer array, got dtype {self.values.dtype}")
        if self.values.shape != self.indices.shape:
            raise ValueError(
                f"values must have shape {self.indices.shape} (as indices), got {self.values.shape}"
            )
        # Every index, not just the first and last: unsorted input would slip past those.
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= size):
            raise ValueError(f"indices must lie in [0, {size}) for shape {self.shape}")
        # Compared, not subtracted: np.diff of unsigned indices wraps around to large positives.
        if np.any(self.indices[1:] <= self.indices[:-1]):
            raise ValueError("indices must be strictly increasing (no duplicates)")
        if not np.all(np.isfinite(self.values)):
            raise ValueError("values contains non-finite values")

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype


# --------------------------------------------------------------------------- #
# Quantization                                                                #
# --------------------------------------------------------------------------- #


def quantize_uint8(x: np.ndarray) -> QuantizedTensor:
    """Quantize a floating tensor to 8 bits with its own scale and zero point.

    Parameters
    ----------
    x : np.ndarray
        Non-empty, finite, floating-point tensor.

    Returns
    -------
    QuantizedTensor
        ``scale = (max - min) / 255`` and ``zero_point = round(-min / scale)``, so that
        ``min`` maps to level 0 and ``max`` to level 255 (up to rounding).

    Raises
    ------
    ValueError
        If ``x`` is empty, not floating point, contains NaN/inf, or its range
        ``max - min`` overflows float64.
    """
    arr = np.asarray(x)
    _check_tensor(arr, "x")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"x must be a floating-point tensor, got dtype {arr.dtype}")
    x64 = arr.astype(np.float64)
    lo, hi = float(x64.min()), float(x64.max())
    if lo == hi:
        # Exact: (0 - (-sign c)) * |c| == c.
        return QuantizedTensor(np.zeros(arr.shape, np.uint8), abs(lo), -int(np.sign(lo)), arr.dtype)
    span = hi - lo
    if not math.isfinite(span):
        raise ValueError(f"x has range max - min = {hi} - ({lo}), which overflows float64")
    scale = max(span / _LEVELS, max(abs(lo), abs(hi)) * _MIN_RELATIVE_SCALE, np.finfo(np.float64).tiny)
    zero_point = round(-lo / scale)
    levels = np.rint(x64 / scale + zero_point)
    data = np.clip(levels, 0, _LEVELS).astype(np.uint8)
    return QuantizedTensor(data, scale, zero_point, arr.dtype)


def dequantize(q: QuantizedTensor) -> np.ndarray:
    """Reconstruct ``(data - zero_point) * scale`` in the original dtype.

    Parameters
    ----------
    q : QuantizedTensor
        Output of :func:`quantize_uint8` or :func:`decode_quantized`.

    Returns
    -------
    np.ndarray
        Tensor of shape ``q.shape`` and dtype ``q.dtype``.
    """
    x_hat = (q.data.astype(np.float64) - float(q.zero_point)) * q.scale
    # Half a step past float32's largest value would otherwise become inf.
    info = np.finfo(q.dtype)
    return np.clip(x_hat, float(info.min), float(info.max)).astype(q.dtype)


# --------------------------------------------------------------------------- #
# Top-k sparsification and error feedback                                     #
# --------------------------------------------------------------------------- #


def topk_sparsify(x: np.ndarray, *, k: int) -> SparseTensor:
    """Keep the ``k`` entries of ``x`` with the largest magnitude.

    Ties at the k-th magnitude go to the lowest flat indices, so the result is
    deterministic. Exactly ``k`` entries are kept, even if some of them are zero.

    Parameters
    ----------
    x : np.ndarray
        Non-empty, finite tensor (floating or integer).
    k : int
        Number of entries to keep, 1 <= k <= x.size.

    Returns
    -------
    SparseTensor
        Flat indices in increasing order (int32 when ``x.size < 2**31``, else int64),
        the values of ``x`` there, and ``x.shape``.

    Raises
    ------
    ValueError
        If ``x`` is empty, not numeric or non-finite, or ``k`` is out of range.
    """
    arr = np.asarray(x)
    _check_tensor(arr, "x")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"x must be a floating or integer tensor, got dtype {arr.dtype}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= arr.size:
        raise ValueError(f"k must be an integer in [1, {arr.size}] (x.size), got {k!r}")
    flat = arr.ravel()
    magnitude = np.abs(flat.astype(np.float64))
    if k == flat.size:
        kept = np.arange(flat.size)
    else:
        # O(n) selection instead of a full sort; then resolve ties at the threshold by index.
        threshold = np.partition(magnitude, flat.size - k)[flat.size - k]
        above = np.flatnonzero(magnitude > threshold)
        ties = np.flatnonzero(magnitude == threshold)[: k - above.size]
        kept = np.sort(np.concatenate([above, ties]))
    index_dtype = np.int32 if flat.size < 2**31 else np.int64
    return SparseTensor(kept.astype(index_dtype), flat[kept].copy(), arr.shape)


def densify(s: SparseTensor) -> np.ndarray:
    """Dense tensor of shape ``s.shape`` with ``s.values`` at ``s.indices`` and zeros elsewhere.

    Parameters
    ----------
    s : SparseTensor
        Output of :func:`topk_sparsify` or :func:`decode_sparse`.

    Returns
    -------
    np.ndarray
        Tensor of shape ``s.shape`` and dtype ``s.dtype``.
    """
    dense = np.zeros(math.prod(s.shape), dtype=s.dtype)
    dense[s.indices] = s.values
    return dense.reshape(s.shape)


class ErrorFeedback:
    """Client-side residual memory for top-k: what is not sent now is sent later.

    Each call adds the layer's residual to the update, sends the top-k of the sum and
    keeps the rest as the new residual, in the update's dtype. Persist the residuals
    between rounds (e.g. in the client's state) with :meth:`state_dict`.
    """

    def __init__(self) -> None:
        self._residuals: dict[str, np.ndarray] = {}

    def compress(self, name: str, update: np.ndarray, *, k: int) -> SparseTensor:
        """Sparsify ``update + residual[name]`` to k entries and store what was left out.

        Parameters
        ----------
        name : str
            Layer name; each layer has its own residual.
        update : np.ndarray
            This round's update for the layer (finite, non-empty).
        k : int
            Number of entries to send, 1 <= k <= update.size.

        Returns
        -------
        SparseTensor
            The entries to send.

        Raises
        ------
        ValueError
            If ``update`` is invalid (see :func:`topk_sparsify`) or its shape differs
            from the stored residual's. The residual is then left unchanged.
        """
        arr = np.asarray(update)
        residual = self._residuals.get(name)
        if residual is not None and residual.shape != arr.shape:
            raise ValueError(
                f"update for {name!r} has shape {arr.shape}, but its residual has shape {residual.shape}"
            )
        corrected = arr.copy() if residual is None else arr + residual
        sent = topk_sparsify(corrected, k=k)
        # Zeroing the sent entries (not subtracting them) makes sent + residual == corrected exactly.
        corrected.ravel()[sent.indices] = 0
        self._residuals[name] = corrected
        return sent

    def residual(self, name: str) -> np.ndarray | None:
        """Copy of the residual of layer ``name``, or ``None`` before its first round."""
        residual = self._residuals.get(name)
        return None if residual is None else residual.copy()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copy of all residuals, keyed by layer name."""
        return {name: r.copy() for name, r in self._residuals.items()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> ErrorFeedback:
        """Restore from :meth:`state_dict` output.

        Parameters
        ----------
        state : Mapping[str, np.ndarray]
            Residuals keyed by layer name; each must be finite.

        Returns
        -------
        ErrorFeedback
            A memory holding copies of those residuals.

        Raises
        ------
        ValueError
            If a residual contains non-finite values.
        """
        memory = cls()
        for name, r in state.items():
            arr = np.array(r)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"residual {name!r} contains non-finite values")
            memory._residuals[name] = arr
        return memory


# --------------------------------------------------------------------------- #
# Byte accounting and wire format                                             #
# --------------------------------------------------------------------------- #


def nbytes(compressed: QuantizedTensor | SparseTensor | np.ndarray) -> int:
    """Payload bytes sent for one tensor.

    Parameters
    ----------
    compressed : QuantizedTensor, SparseTensor or np.ndarray
        A compressed tensor, or a dense array (sent uncompressed).

    Returns
    -------
    int
        Quantized: ``data.nbytes + 8 + 8`` (float64 scale, int64 zero point). Sparse:
        ``indices.nbytes + values.nbytes``. Dense: ``nbytes``. Shape and dtype tags
        are not counted (see the module docstring).
    """
    if isinstance(compressed, QuantizedTensor):
        return int(compressed.data.nbytes) + _SCALE_BYTES + _ZERO_POINT_BYTES
    if isinstance(compressed, SparseTensor):
        return int(compressed.indices.nbytes + compressed.values.nbytes)
    if isinstance(compressed, np.ndarray):
        return int(compressed.nbytes)
    raise ValueError(
        f"compressed must be a QuantizedTensor, SparseTensor or ndarray, got {type(compressed).__name__}"
    )


def encode_quantized(name: str, q: QuantizedTensor) -> dict[str, np.ndarray]:
    """Encode ``q`` as arrays under ``f"{name}/q_*"`` keys (see the module docstring).

    Parameters
    ----------
    name : str
        Layer name, used as the key prefix.
    q : QuantizedTensor
        Tensor to encode.

    Returns
    -------
    dict[str, np.ndarray]
        Four arrays: data, scale, zero point and an empty dtype tag.
    """
    return {
        array_key(name, QUANT_DATA): q.data,
        array_key(name, QUANT_SCALE): np.array([q.scale], dtype=np.float64),
        array_key(name, QUANT_ZERO_POINT): np.array([q.zero_point], dtype=np.int64),
        array_key(name, QUANT_DTYPE): np.empty(0, dtype=q.dtype),
    }


def decode_quantized(name: str, arrays: Mapping[str, np.ndarray]) -> QuantizedTensor:
    """Inverse of :func:`encode_quantized`; other keys in ``arrays`` are ignored.

    Parameters
    ----------
    name : str
        Layer name used when encoding.
    arrays : Mapping[str, np.ndarray]
        Encoded arrays, possibly of several layers.

    Returns
    -------
    QuantizedTensor
        The decoded tensor.

    Raises
    ------
    ValueError
        If a key is missing or a field is malformed: data not uint8; scale not a
        float64 array of shape (1,), finite and >= 0; zero point not an int64 array of
        shape (1,) with ``|zero_point| <= 2**53``; dtype tag not an empty array of a
        floating dtype.
    """
    data, scale, zero_point, dtype_tag = _get(name, arrays, QUANT_FIELDS)
    # Exact wire dtypes: a complex scale would be silently cut to its real part, and a
    # timedelta64 zero point counts as np.integer.
    _check_field(name, QUANT_SCALE, scale, np.dtype(np.float64), (1,))
    _check_field(name, QUANT_ZERO_POINT, zero_point, np.dtype(np.int64), (1,))
    if dtype_tag.shape != (0,):
        raise ValueError(
            f"{name!r}: {QUANT_DTYPE} must be an empty array (a dtype tag), got shape {dtype_tag.shape}"
        )
    try:
        return QuantizedTensor(data, float(scale[0]), int(zero_point[0]), dtype_tag.dtype)
    except ValueError as exc:
        raise ValueError(f"{name!r}: {exc}") from None


def encode_sparse(name: str, s: SparseTensor) -> dict[str, np.ndarray]:
    """Encode ``s`` as arrays under ``f"{name}/sp_*"`` keys (see the module docstring).

    Parameters
    ----------
    name : str
        Layer name, used as the key prefix.
    s : SparseTensor
        Tensor to encode.

    Returns
    -------
    dict[str, np.ndarray]
        Three arrays: indices, values and the dense shape.
    """
    return {
        array_key(name, SPARSE_INDICES): s.indices,
        array_key(name, SPARSE_VALUES): s.values,
        array_key(name, SPARSE_SHAPE): np.array(s.shape, dtype=np.int64),
    }


def decode_sparse(name: str, arrays: Mapping[str, np.ndarray]) -> SparseTensor:
    """Inverse of :func:`encode_sparse`; other keys in ``arrays`` are ignored.

    Parameters
    ----------
    name : str
        Layer name used when encoding.
    arrays : Mapping[str, np.ndarray]
        Encoded arrays, possibly of several layers.

    Returns
    -------
    SparseTensor
        The decoded tensor.

    Raises
    ------
    ValueError
        If a key is missing, the shape is not a 1-D int64 array of values >= 0, the
        indices are not a 1-D int32 or int64 array, or they are out of range, not
        strictly increasing, or do not match the values.
    """
    indices, values, shape = _get(name, arrays, (SPARSE_INDICES, SPARSE_VALUES, SPARSE_SHAPE))
    if shape.ndim != 1 or shape.dtype != np.int64 or np.any(shape < 0):
        raise ValueError(f"{name!r}: {SPARSE_SHAPE} must be a 1-D int64 array of values >= 0, got {shape!r}")
    # Signed only: unsigned indices compare and subtract differently (and timedelta64 is
    # an np.integer); the encoder only ever writes these two.
    if indices.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise ValueError(f"{name!r}: {SPARSE_INDICES} must be int32 or int64, got {indices.dtype}")
    try:
        return SparseTensor(indices, values, tuple(int(d) for d in shape))
    except ValueError as exc:
        raise ValueError(f"{name!r}: {exc}") from None


# --------------------------------------------------------------------------- #
# Helpers                                                                     #
# --------------------------------------------------------------------------- #


def _check_tensor(arr: np.ndarray, name: str) -> None:
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")


def _get(name: str, arrays: Mapping[str, np.ndarray], fields: tuple[str, ...]) -> list[np.ndarray]:
    missing = [array_key(name, f) for f in fields if array_key(name, f) not in arrays]
    if missing:
        raise ValueError(f"encoded arrays are missing keys {missing}")
    values = [arrays[array_key(name, f)] for f in fields]
    for field, value in zip(fields, values, strict=True):
        if not isinstance(value, np.ndarray) or value.dtype.hasobject:
            raise ValueError(f"{name!r}: {field} must be a numeric numpy array, got {type(value).__name__}")
    return values


def _check_field(name: str, field: str, value: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` has exactly ``dtype`` and ``shape``."""
    if value.dtype != dtype or value.shape != shape:
        raise ValueError(
            f"{name!r}: {field} must be {dtype} of shape {shape}, got {value.dtype}{value.shape}"
        )


# --------------------------------------------------------------------------- #
# Whole-model updates: what a client sends, what the server decodes           #
# --------------------------------------------------------------------------- #

#: Values of the ``compression`` run-config key; ``none`` sends the full model.
SCHEMES = ("none", "int8", "topk")
#: Train-config keys the server sends, and the reply record holding the encoded update
#: instead of the model under ``arrays`` (declared once, in tasks.wire).
COMPRESSION_KEY = wire.COMPRESSION
TOPK_FRACTION_KEY = wire.TOPK_FRACTION
COMPRESSED_KEY = wire.COMPRESSED


def is_compressed(dtype: np.dtype | type) -> bool:
    """Whether layers of ``dtype`` are sent in a compressed update: floating dtypes only.

    Arrays of any other dtype (BatchNorm's int64 ``num_batches_tracked``, a bool mask)
    are buffers, not parameters: the server keeps the previous global model's values, so
    sending them would cost bytes for nothing, and quantizing or top-k selecting a
    counter is wrong (a step of 100 batches would win every top-k selection and sit in
    the error-feedback residual). The decoded reply carries the global model's values.
    This is the project's one rule for buffers (:func:`strategies.core.buffers.is_parameter`).
    """
    return is_parameter(dtype)


def topk_count(size: int, fraction: float) -> int:
    """Entries top-k keeps of a tensor with ``size`` entries: ``round(fraction * size)``, in [1, size]."""
    return max(1, min(size, round(fraction * size)))


def encode_update(
    names: list[str],
    deltas: list[np.ndarray],
    *,
    scheme: str,
    topk_fraction: float = 1.0,
    feedback: ErrorFeedback | None = None,
) -> dict[str, np.ndarray]:
    """Encode a model update ``deltas`` (one array per floating layer) in the wire format.

    Parameters
    ----------
    names : list of str
        Names of the model's floating layers (:func:`is_compressed`), in the order of
        ``deltas``; other layers are not sent.
    deltas : list of np.ndarray
        The update of each of those layers (local model − global model).
    scheme : str
        ``int8``: each layer quantized with its own scale and zero point. ``topk``:
        each layer sparsified to :func:`topk_count` entries, through ``feedback`` if given.
    topk_fraction : float, default 1.0
        Share of each layer's entries top-k sends, in (0, 1].
    feedback : ErrorFeedback, optional
        The client's residual memory (top-k only); updated in place.

    Returns
    -------
    dict[str, np.ndarray]
        The encoded arrays of every layer (see the module docstring).

    Raises
    ------
    ValueError
        On an unknown scheme, a fraction outside (0, 1], a layer that is not floating
        point, or an invalid tensor.
    """
    if scheme not in ("int8", "topk"):
        raise ValueError(f"scheme must be 'int8' or 'topk', got {scheme!r}")
    if not 0 < topk_fraction <= 1:
        raise ValueError(f"topk_fraction must be in (0, 1], got {topk_fraction!r}")
    encoded: dict[str, np.ndarray] = {}
    for name, delta in zip(names, deltas, strict=True):
        arr = np.asarray(delta)
        if not is_compressed(arr.dtype):
            raise ValueError(
                f"layer {name!r} has dtype {arr.dtype}: only floating layers are sent, leave it out"
            )
        if scheme == "int8":
            encoded.update(encode_quantized(name, quantize_uint8(arr)))
            continue
        k = topk_count(arr.size, topk_fraction)
        sparse = feedback.compress(name, arr, k=k) if feedback is not None else topk_sparsify(arr, k=k)
        encoded.update(encode_sparse(name, sparse))
    return encoded


def decode_update(
    arrays: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    *,
    scheme: str,
    topk_fraction: float = 1.0,
) -> dict[str, np.ndarray]:
    """Decode what :func:`encode_update` produced, checking it against the model.

    Every field is checked (dtype, shape, range) before it is used, so malformed input
    raises ``ValueError`` and nothing else, and no array larger than the model's layer is
    allocated.

    Parameters
    ----------
    arrays : Mapping[str, np.ndarray]
        The encoded arrays, as received.
    expected : Mapping[str, tuple]
        Layer name → (shape, dtype) of the whole global model, every dtype included.
    scheme : str
        The scheme the server asked for (``int8`` or ``topk``).
    topk_fraction : float, default 1.0
        The fraction the server asked for; each top-k layer must carry exactly
        :func:`topk_count` entries.

    Returns
    -------
    dict[str, np.ndarray]
        Layer name → dense update, with the expected shape and dtype, for every floating
        layer of ``expected``; layers of other dtypes are not sent and have no entry.

    Raises
    ------
    ValueError
        If keys are missing or extra, a field is malformed, or a layer's shape, dtype
        or number of top-k entries differs from what the server expects.
    """
    if scheme not in ("int8", "topk"):
        raise ValueError(f"scheme must be 'int8' or 'topk', got {scheme!r}")
    fields = (SPARSE_INDICES, SPARSE_VALUES, SPARSE_SHAPE) if scheme == "topk" else QUANT_FIELDS
    layers = {
        name: (tuple(shape), np.dtype(dtype))
        for name, (shape, dtype) in expected.items()
        if is_compressed(dtype)
    }
    wanted = {array_key(name, f) for name in layers for f in fields}
    extra = sorted(set(arrays) - wanted)
    if extra:
        raise ValueError(f"unexpected keys {extra[:5]} for compression={scheme!r}")
    deltas: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in layers.items():
        if scheme == "int8":
            quantized = decode_quantized(name, arrays)
            if quantized.shape != shape or quantized.dtype != dtype:
                raise ValueError(
                    f"{name!r}: quantized {quantized.dtype}{quantized.shape}, the model has {dtype}{shape}"
                )
            dense = dequantize(quantized)
        else:
            sparse = decode_sparse(name, arrays)
            # Checked before densify allocates the claimed shape.
            if sparse.shape != shape or sparse.dtype != dtype:
                raise ValueError(
                    f"{name!r}: sparse {sparse.dtype}{sparse.shape}, the model has {dtype}{shape}"
                )
            k = topk_count(math.prod(shape), topk_fraction)
            if sparse.indices.size != k:
                raise ValueError(f"{name!r}: {sparse.indices.size} top-k entries, expected k={k}")
            dense = densify(sparse)
        deltas[name] = dense
    return deltas
