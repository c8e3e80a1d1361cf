"""Validation of a client's train reply against the global model, framework-free.

A server must not trust what clients send back: a faulty or malicious client can
return missing or extra arrays, wrong shapes or dtypes, NaN/inf values, or a
``num-examples`` that hijacks example-weighted averaging (FedAvg weights client k
by n_k / n; McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks
from Decentralized Data", arXiv:1602.05629). These checks take plain Python/numpy
values (the Flower glue converts records at the edge) and return ``None`` when the
content is acceptable, or a ``Rejection`` with a machine-friendly reason code (one
of the constants below) and a human-readable detail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tasks import wire

# Reason codes: the one place they are defined.
MISSING_ARRAYS = "missing-arrays"
EXTRA_ARRAYS = "extra-arrays"
WRONG_SHAPE = "wrong-shape"
WRONG_DTYPE = "wrong-dtype"
NON_FINITE = "non-finite"
EMPTY_ARRAY = "empty-array"
NUM_EXAMPLES_MISSING = "num-examples-missing"
NUM_EXAMPLES_NOT_INTEGER = "num-examples-not-integer"
NUM_EXAMPLES_NON_POSITIVE = "num-examples-non-positive"
NUM_EXAMPLES_TOO_LARGE = "num-examples-too-large"
NON_FINITE_METRIC = "non-finite-metric"
INVALID_METRIC_TYPE = "invalid-metric-type"
# Set by the Flower glue (strategies/core/validation.py), which sees records, not arrays.
MISSING_RECORDS = "missing-records"
MALFORMED_ARRAY = "malformed-array"
# Set by the compression wrapper (strategies/wrappers/compressed.py): the compressed update cannot be decoded.
MALFORMED_COMPRESSED = "malformed-compressed"
# Set by secure aggregation (strategies/wrappers/secagg.py): a SecAgg+ stage reply dropped.
SECAGG_MALFORMED_REPLY = "secagg-malformed-reply"
SECAGG_MALFORMED_MASKED = "secagg-malformed-masked-vector"
SECAGG_BAD_SHARE = "secagg-bad-share"
SECAGG_TOO_FEW_NEIGHBOURS = "secagg-too-few-neighbours"
# Not a reply: the round's secure sum could not be unmasked (the previous model is kept).
SECAGG_BELOW_THRESHOLD = "secagg-below-threshold"

ARRAY_REASONS = (
    MISSING_ARRAYS,
    EXTRA_ARRAYS,
    WRONG_SHAPE,
    WRONG_DTYPE,
    NON_FINITE,
    EMPTY_ARRAY,
)
NUM_EXAMPLES_REASONS = (
    NUM_EXAMPLES_MISSING,
    NUM_EXAMPLES_NOT_INTEGER,
    NUM_EXAMPLES_NON_POSITIVE,
    NUM_EXAMPLES_TOO_LARGE,
)
METRIC_REASONS = (NON_FINITE_METRIC, INVALID_METRIC_TYPE)
RECORD_REASONS = (MISSING_RECORDS, MALFORMED_ARRAY, MALFORMED_COMPRESSED)
SECAGG_REASONS = (
    SECAGG_MALFORMED_REPLY,
    SECAGG_MALFORMED_MASKED,
    SECAGG_BAD_SHARE,
    SECAGG_TOO_FEW_NEIGHBOURS,
)
REASONS = ARRAY_REASONS + NUM_EXAMPLES_REASONS + METRIC_REASONS + RECORD_REASONS + SECAGG_REASONS

# Flower's convention for the example count in a train reply's metrics.
NUM_EXAMPLES_KEY = wire.NUM_EXAMPLES

ArraySpec = Mapping[str, tuple[tuple[int, ...], np.dtype]]
"""Expected arrays: name -> (shape, dtype)."""

_MAX_NAMES_SHOWN = 5


@dataclass(frozen=True)
class Rejection:
    """Why a reply was rejected.

    Attributes
    ----------
    reason : str
        One of the reason-code constants of this module (``REASONS``).
    detail : str
        Human-readable explanation naming the offending key and values.
    """

    reason: str
    detail: str

    def __str__(self) -> str:
        """Return ``"<reason>: <detail>"``, e.g. for a log line."""
        return f"{self.reason}: {self.detail}"


def _names(names: set[str]) -> str:
    shown = sorted(names)[:_MAX_NAMES_SHOWN]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more else "")


def spec_from_arrays(
    arrays: Mapping[str, np.ndarray],
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Build the spec every reply must match from the global model's arrays.

    Parameters
    ----------
    arrays : Mapping[str, np.ndarray]
        The global model, name -> array.

    Returns
    -------
    dict
        name -> (shape, dtype).
    """
    return {name: (a.shape, a.dtype) for name, a in arrays.items()}


def check_arrays(arrays: Mapping[str, object], spec: ArraySpec) -> Rejection | None:
    """Check a reply's arrays against the global model's spec.

    Checks, first failure wins: ``missing-arrays`` (a spec name absent),
    ``extra-arrays`` (a name not in the spec), then for each array in spec order:
    ``wrong-dtype`` (also for a value that is not an ``np.ndarray``),
    ``empty-array`` (no elements where the spec expects some), ``wrong-shape``,
    ``non-finite`` (NaN or +/-inf in a float or complex array).

    Parameters
    ----------
    arrays : Mapping[str, object]
        The reply's arrays, name -> np.ndarray.
    spec : ArraySpec
        name -> (shape, dtype), e.g. from ``spec_from_arrays(global_arrays)``.

    Returns
    -------
    Rejection or None
        None if every array matches the spec.
    """
    missing = set(spec) - set(arrays)
    if missing:
        return Rejection(MISSING_ARRAYS, f"missing {len(missing)} of {len(spec)}: {_names(missing)}")
    extra = set(arrays) - set(spec)
    if extra:
        return Rejection(EXTRA_ARRAYS, f"unexpected {len(extra)}: {_names(extra)}")
    for name, (shape, dtype) in spec.items():
        value = arrays[name]
        if not isinstance(value, np.ndarray):
            return Rejection(
                WRONG_DTYPE,
                f"{name}: expected numpy.ndarray, got {type(value).__name__}",
            )
        if value.dtype != np.dtype(dtype):
            return Rejection(WRONG_DTYPE, f"{name}: expected {np.dtype(dtype)}, got {value.dtype}")
        if value.size == 0 and math.prod(shape) != 0:
            return Rejection(EMPTY_ARRAY, f"{name}: no elements, expected shape {tuple(shape)}")
        if value.shape != tuple(shape):
            return Rejection(WRONG_SHAPE, f"{name}: expected {tuple(shape)}, got {value.shape}")
        if np.issubdtype(value.dtype, np.inexact) and not _all_finite(value):
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            return Rejection(NON_FINITE, f"{name}: {bad} NaN/inf values")
    return None


def _all_finite(value: np.ndarray) -> bool:
    """True if ``value`` holds no NaN or ±inf.

    Fast path: a NaN or inf anywhere makes ``value·value`` NaN or inf, so a finite dot
    product proves every value finite; BLAS reads the array once at memory speed with no
    temporary (``np.isfinite(value).all()`` writes and rereads a boolean array). A
    non-finite dot product of finite values (overflow) falls back to the exact check.
    """
    if value.dtype in (np.float32, np.float64) and value.flags.c_contiguous and value.size:
        flat = value.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.dot(flat, flat)):
                return True
    return bool(np.all(np.isfinite(value)))


def check_num_examples(value: object, *, max_num_examples: int | None = None) -> Rejection | None:
    """Check the number of training examples a client reports.

    Only true integers are accepted (``int`` or a numpy integer): Flower's
    ``MetricRecord`` keeps an ``int`` an ``int``, so a float, even an integral one
    such as 3.0, means the client did not follow the protocol. ``bool`` is a
    subclass of ``int`` and is rejected explicitly.

    Parameters
    ----------
    value : object
        The reported count; None when the key is absent.
    max_num_examples : int or None, default None
        Upper bound, e.g. the size of the largest partition; None for no bound.

    Returns
    -------
    Rejection or None
        None if ``value`` is an integer in [1, max_num_examples].
    """
    if max_num_examples is not None and (
        isinstance(max_num_examples, bool) or not isinstance(max_num_examples, int) or max_num_examples < 1
    ):
        raise ValueError(f"max_num_examples must be an integer >= 1 or None, got {max_num_examples!r}")
    if value is None:
        return Rejection(NUM_EXAMPLES_MISSING, "no num-examples in the reply")
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        return Rejection(
            NUM_EXAMPLES_NOT_INTEGER,
            f"expected an integer, got {type(value).__name__} {value!r}",
        )
    if value <= 0:
        return Rejection(NUM_EXAMPLES_NON_POSITIVE, f"expected >= 1, got {value}")
    if max_num_examples is not None and value > max_num_examples:
        return Rejection(NUM_EXAMPLES_TOO_LARGE, f"expected <= {max_num_examples}, got {value}")
    return None


def _check_metric_value(key: str, value: object) -> Rejection | None:
    if isinstance(value, int | np.integer):  # bool included: it is an int
        return None
    if isinstance(value, float | np.floating):
        if math.isfinite(value):
            return None
        return Rejection(NON_FINITE_METRIC, f"{key}: {value}")
    return Rejection(
        INVALID_METRIC_TYPE,
        f"{key}: expected int, float or a list of them, got {type(value).__name__}",
    )


def check_metrics(metrics: Mapping[str, object]) -> Rejection | None:
    """Check that every metric is an int, a finite float, or a list of those.

    These are the value types of Flower's ``MetricRecord``; NaN or inf in a metric
    (``non-finite-metric``) would poison any averaged metric.

    Parameters
    ----------
    metrics : Mapping[str, object]
        The reply's metrics, name -> value.

    Returns
    -------
    Rejection or None
        None if every value is acceptable.
    """
    for key, value in metrics.items():
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            rejection = _check_metric_value(key, item)
            if rejection is not None:
                return rejection
    return None


def check_train_reply(
    arrays: Mapping[str, object],
    metrics: Mapping[str, object],
    *,
    spec: ArraySpec,
    max_num_examples: int | None = None,
    num_examples_key: str = NUM_EXAMPLES_KEY,
) -> Rejection | None:
    """Run ``check_arrays``, ``check_num_examples`` and ``check_metrics`` in turn.

    Parameters
    ----------
    arrays : Mapping[str, object]
        The reply's arrays, name -> np.ndarray.
    metrics : Mapping[str, object]
        The reply's metrics, including the example count.
    spec : ArraySpec
        name -> (shape, dtype) of the global model.
    max_num_examples : int or None, default None
        Upper bound on the example count; None for no bound.
    num_examples_key : str, default "num-examples"
        Metrics key of the example count.

    Returns
    -------
    Rejection or None
        The first rejection, or None if the reply is acceptable.
    """
    return (
        check_arrays(arrays, spec)
        or check_num_examples(metrics.get(num_examples_key), max_num_examples=max_num_examples)
        or check_metrics(metrics)
    )
