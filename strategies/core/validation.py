"""Reply validation: the one place every strategy checks what clients send back.

Flower 1.41 checks only the structure of replies. Here a train reply must carry
exactly the records the strategy expects (one ``ArrayRecord``, one ``MetricRecord``),
exactly the global model's array names, shapes and dtypes, only finite values, an
integer ``num-examples`` in 1..``max-num-examples``, and finite metrics. The checks
themselves are framework-free (``strategies.core.reply_checks``); this module converts
records at the edge and returns the decoded arrays of accepted replies.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from strategies.core.records import ARRAYS_KEY, METRICS_KEY, NUM_EXAMPLES, array_view
from strategies.core.reply_checks import (
    MALFORMED_ARRAY,
    MISSING_RECORDS,
    ArraySpec,
    Rejection,
    check_metrics,
    check_num_examples,
    check_train_reply,
)


def _records(content: RecordDict, *, need_arrays: bool) -> Rejection | None:
    arrays_ok = set(content.array_records) == {ARRAYS_KEY} if need_arrays else not content.array_records
    if not arrays_ok or set(content.metric_records) != {METRICS_KEY}:
        return Rejection(
            MISSING_RECORDS,
            f"expected {'one ArrayRecord ' + repr(ARRAYS_KEY) + ' and ' if need_arrays else ''}"
            f"one MetricRecord {METRICS_KEY!r}, got arrays={sorted(content.array_records)} "
            f"metrics={sorted(content.metric_records)}",
        )
    return None


def validate_train_reply(
    content: RecordDict, spec: ArraySpec, *, max_num_examples: int
) -> tuple[dict[str, np.ndarray], Rejection | None]:
    """Decode and check one train reply; return (arrays, None) or ({}, rejection)."""
    rejection = _records(content, need_arrays=True)
    if rejection:
        return {}, rejection
    try:
        arrays = {name: array_view(arr) for name, arr in content.array_records[ARRAYS_KEY].items()}
    except ValueError as exc:
        return {}, Rejection(MALFORMED_ARRAY, str(exc))
    metrics: Mapping[str, object] = dict(content.metric_records[METRICS_KEY])
    rejection = check_train_reply(arrays, metrics, spec=spec, max_num_examples=max_num_examples)
    return (arrays, None) if rejection is None else ({}, rejection)


def validate_evaluate_reply(content: RecordDict, *, max_num_examples: int) -> Rejection | None:
    """Check one evaluate reply's records, ``num-examples`` and metrics."""
    rejection = _records(content, need_arrays=False)
    if rejection:
        return rejection
    metrics = dict(content.metric_records[METRICS_KEY])
    return check_num_examples(metrics.get(NUM_EXAMPLES), max_num_examples=max_num_examples) or check_metrics(
        metrics
    )


def spec_of_record(record: ArrayRecord) -> ArraySpec:
    """Name → (shape, dtype) of the global model's ``ArrayRecord`` (from metadata)."""
    return {name: (tuple(arr.shape), np.dtype(arr.dtype)) for name, arr in record.items()}
