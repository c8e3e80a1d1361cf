"""Tests for strategies.core.reply_checks: one test (at least) per reason code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strategies.core.reply_checks import (
    EMPTY_ARRAY,
    EXTRA_ARRAYS,
    INVALID_METRIC_TYPE,
    MISSING_ARRAYS,
    NON_FINITE,
    NON_FINITE_METRIC,
    NUM_EXAMPLES_MISSING,
    NUM_EXAMPLES_NON_POSITIVE,
    NUM_EXAMPLES_NOT_INTEGER,
    NUM_EXAMPLES_TOO_LARGE,
    REASONS,
    WRONG_DTYPE,
    WRONG_SHAPE,
    Rejection,
    check_arrays,
    check_metrics,
    check_num_examples,
    check_train_reply,
    spec_from_arrays,
)


def global_arrays() -> dict[str, np.ndarray]:
    return {
        "conv.weight": np.zeros((2, 1, 3, 3), dtype=np.float32),
        "fc.bias": np.zeros(4, dtype=np.float32),
        "bn.num_batches_tracked": np.zeros((), dtype=np.int64),
    }


SPEC = spec_from_arrays(global_arrays())


def good_arrays() -> dict[str, np.ndarray]:
    return {
        "conv.weight": np.ones((2, 1, 3, 3), dtype=np.float32),
        "fc.bias": np.full(4, 0.5, dtype=np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }


def with_array(name: str, value: object) -> dict[str, object]:
    arrays: dict[str, object] = dict(good_arrays())
    arrays[name] = value
    return arrays


def test_reason_codes_are_distinct_kebab_case_strings() -> None:
    assert len(set(REASONS)) == len(REASONS) == 19
    assert all(code == code.lower() and " " not in code for code in REASONS)


def test_spec_from_arrays_records_shape_and_dtype() -> None:
    assert SPEC["conv.weight"] == ((2, 1, 3, 3), np.dtype(np.float32))
    assert SPEC["bn.num_batches_tracked"] == ((), np.dtype(np.int64))


def test_rejection_str_has_reason_then_detail() -> None:
    assert str(Rejection(WRONG_SHAPE, "fc.bias: x")) == "wrong-shape: fc.bias: x"


# --------------------------------------------------------------------------- #
# Arrays                                                                      #
# --------------------------------------------------------------------------- #


def test_check_arrays_accepts_a_matching_reply() -> None:
    assert check_arrays(good_arrays(), SPEC) is None


def test_check_arrays_reports_missing_arrays_by_name() -> None:
    arrays = good_arrays()
    del arrays["fc.bias"]

    rejection = check_arrays(arrays, SPEC)

    assert rejection is not None
    assert rejection.reason == MISSING_ARRAYS
    assert "fc.bias" in rejection.detail
    assert "1 of 3" in rejection.detail


def test_check_arrays_treats_an_empty_reply_as_missing_arrays() -> None:
    rejection = check_arrays({}, SPEC)

    assert rejection is not None
    assert rejection.reason == MISSING_ARRAYS


def test_check_arrays_reports_extra_arrays_by_name() -> None:
    rejection = check_arrays(with_array("backdoor", np.zeros(1)), SPEC)

    assert rejection is not None
    assert rejection.reason == EXTRA_ARRAYS
    assert "backdoor" in rejection.detail


def test_check_arrays_truncates_long_name_lists() -> None:
    arrays: dict[str, object] = dict(good_arrays())
    arrays.update({f"extra{k}": np.zeros(1) for k in range(8)})

    rejection = check_arrays(arrays, SPEC)

    assert rejection is not None
    assert rejection.detail.endswith("(+3 more)")


def test_check_arrays_reports_wrong_shape() -> None:
    rejection = check_arrays(with_array("fc.bias", np.zeros(5, np.float32)), SPEC)

    assert rejection == Rejection(WRONG_SHAPE, "fc.bias: expected (4,), got (5,)")


def test_check_arrays_reports_wrong_dtype() -> None:
    rejection = check_arrays(with_array("fc.bias", np.zeros(4, np.float64)), SPEC)

    assert rejection == Rejection(WRONG_DTYPE, "fc.bias: expected float32, got float64")


def test_check_arrays_reports_a_non_array_value_as_wrong_dtype() -> None:
    rejection = check_arrays(with_array("fc.bias", [0.0, 0.0, 0.0, 0.0]), SPEC)

    assert rejection is not None
    assert rejection.reason == WRONG_DTYPE
    assert "got list" in rejection.detail


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_arrays_reports_non_finite_values(bad: float) -> None:
    values = np.ones((2, 1, 3, 3), dtype=np.float32)
    values[1, 0, 2, 2] = bad

    rejection = check_arrays(with_array("conv.weight", values), SPEC)

    assert rejection == Rejection(NON_FINITE, "conv.weight: 1 NaN/inf values")


def test_check_arrays_reports_an_empty_array() -> None:
    rejection = check_arrays(with_array("fc.bias", np.zeros(0, np.float32)), SPEC)

    assert rejection is not None
    assert rejection.reason == EMPTY_ARRAY


def test_check_arrays_accepts_an_empty_array_the_spec_expects() -> None:
    spec = {"unused": ((0, 3), np.dtype(np.float32))}

    assert check_arrays({"unused": np.zeros((0, 3), np.float32)}, spec) is None


# --------------------------------------------------------------------------- #
# num-examples                                                                #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("value", [1, 500, 1000, np.int64(20)])
def test_check_num_examples_accepts_positive_integers_up_to_the_bound(
    value: int,
) -> None:
    assert check_num_examples(value, max_num_examples=1000) is None


def test_check_num_examples_without_bound_accepts_large_counts() -> None:
    assert check_num_examples(10**12) is None


def test_check_num_examples_reports_missing() -> None:
    rejection = check_num_examples(None, max_num_examples=1000)

    assert rejection is not None
    assert rejection.reason == NUM_EXAMPLES_MISSING


@pytest.mark.parametrize("value", [3.5, 3.0, True, False, np.True_, "12", [12], math.nan])
def test_check_num_examples_rejects_non_integers(value: object) -> None:
    # bool is an int subclass and 3.0 is integral: both are still rejected.
    rejection = check_num_examples(value, max_num_examples=1000)

    assert rejection is not None
    assert rejection.reason == NUM_EXAMPLES_NOT_INTEGER


@pytest.mark.parametrize("value", [0, -1, np.int32(-5)])
def test_check_num_examples_rejects_non_positive(value: int) -> None:
    rejection = check_num_examples(value, max_num_examples=1000)

    assert rejection is not None
    assert rejection.reason == NUM_EXAMPLES_NON_POSITIVE


def test_check_num_examples_rejects_more_than_the_bound() -> None:
    rejection = check_num_examples(1001, max_num_examples=1000)

    assert rejection == Rejection(NUM_EXAMPLES_TOO_LARGE, "expected <= 1000, got 1001")


@pytest.mark.parametrize("bound", [0, -3, 10.0, True])
def test_check_num_examples_rejects_an_invalid_bound(bound: object) -> None:
    with pytest.raises(ValueError, match=r"max_num_examples must be an integer >= 1"):
        check_num_examples(5, max_num_examples=bound)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# Metrics                                                                     #
# --------------------------------------------------------------------------- #


def test_check_metrics_accepts_ints_floats_and_lists() -> None:
    metrics = {
        "num-examples": 12,
        "train-loss": 0.25,
        "per-epoch-loss": [0.5, 0.25],
        "counts": [1, 2],
        "f32": np.float32(1.5),
    }

    assert check_metrics(metrics) is None


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan"), [0.5, math.inf]])
def test_check_metrics_reports_non_finite_metrics(value: object) -> None:
    rejection = check_metrics({"num-examples": 12, "train-loss": value})

    assert rejection is not None
    assert rejection.reason == NON_FINITE_METRIC
    assert rejection.detail.startswith("train-loss:")


@pytest.mark.parametrize("value", ["0.5", None, {"a": 1}, [[0.5]]])
def test_check_metrics_reports_invalid_metric_types(value: object) -> None:
    rejection = check_metrics({"train-loss": value})

    assert rejection is not None
    assert rejection.reason == INVALID_METRIC_TYPE


# --------------------------------------------------------------------------- #
# Whole reply                                                                 #
# --------------------------------------------------------------------------- #


def test_check_train_reply_accepts_a_good_reply() -> None:
    metrics = {"num-examples": 40, "train-loss": 0.3}

    assert check_train_reply(good_arrays(), metrics, spec=SPEC, max_num_examples=100) is None


@pytest.mark.parametrize(
    ("arrays", "metrics", "reason"),
    [
        ({}, {"num-examples": 40}, MISSING_ARRAYS),
        (None, {"train-loss": 0.3}, NUM_EXAMPLES_MISSING),
        (None, {"num-examples": 400}, NUM_EXAMPLES_TOO_LARGE),
        (None, {"num-examples": 40, "train-loss": math.nan}, NON_FINITE_METRIC),
        # Arrays are checked first, then num-examples, then the other metrics.
        ({}, {"num-examples": 0, "train-loss": math.nan}, MISSING_ARRAYS),
        (None, {"num-examples": 0, "train-loss": math.nan}, NUM_EXAMPLES_NON_POSITIVE),
    ],
)
def test_check_train_reply_returns_the_first_rejection(
    arrays: dict[str, np.ndarray] | None, metrics: dict[str, object], reason: str
) -> None:
    reply_arrays = good_arrays() if arrays is None else arrays

    rejection = check_train_reply(reply_arrays, metrics, spec=SPEC, max_num_examples=100)

    assert rejection is not None
    assert rejection.reason == reason


def test_check_train_reply_reads_the_configured_num_examples_key() -> None:
    metrics = {"examples": 40}

    rejection = check_train_reply(good_arrays(), metrics, spec=SPEC, num_examples_key="examples")

    assert rejection is None


@pytest.mark.parametrize(
    ("values", "finite"),
    [
        (np.ones(1000, np.float32), True),
        (np.full(1000, 3e38, np.float32), True),  # the dot product overflows: the exact check decides
        (np.array([1.0, np.nan, 2.0], np.float32), False),
        (np.array([1.0, np.inf, -np.inf], np.float64), False),
        (np.array([[1.0, -np.inf]], np.float32), False),
        (np.zeros((0,), np.float32), True),
        (np.asfortranarray(np.array([[1.0, np.nan], [2.0, 3.0]])), False),
    ],
)
def test_all_finite_matches_numpy(values: np.ndarray, finite: bool) -> None:
    from strategies.core.reply_checks import _all_finite

    assert _all_finite(values) is finite
    assert bool(np.all(np.isfinite(values))) is finite
