"""Where a round's time goes: per-phase timings a strategy records in its round ledger.

Measured from the strategy's own hooks, so every synchronous strategy and wrapper built
on :class:`strategies.algorithms.fedavg.FedAvg` reports them without a change to the
round driver: the train stage runs from the round's train messages being made to their
replies reaching validation, aggregation from there to the round's finish, the evaluate
stage from the evaluate messages to their aggregation. The ClientApp reports its handler
time (``tasks.wire.HANDLER_SECONDS``) and training time (``TRAIN_SECONDS``) in each reply,
summed here over the round's replies. What a stage took beyond its replies' handler time
(divided by the workers that ran them in parallel) is the engine's: message transport,
(de)serialization, scheduling, polling. ``bench/breakdown.py`` turns these into the
overhead table of BENCHMARKS.md.

Two more phases split the engine's share of a stage by when the handlers ran: each reply
is made when its handler returns (``metadata.created_at``, wall clock), so its handler
started ``HANDLER_SECONDS`` before that. ``dispatch_first`` runs from the stage's messages
being made to the first handler starting (the message waiting to be picked up, its
submission to a worker; in round 1 also the worker's own start-up) and ``return_last``
from the last handler returning to its reply being validated here (the reply's way
back and the Grid's pull). What remains of the engine's share happened between
handlers. Both compare the ClientApp's clock with the ServerApp's, so they mean what they
say where both run on one machine (the simulation engine); across machines they include
the clocks' offset.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, MutableMapping
from typing import TypeGuard

from flwr.app import Message

from tasks import wire

#: Phase names (metrics.json ``phases`` keys).
TRAIN_STAGE = "train_stage"
AGGREGATE = "aggregate"
EVALUATE_STAGE = "evaluate_stage"
CLIENT_HANDLER = "client_handler"
CLIENT_TRAIN = "client_train"
CENTRAL_EVAL = "central_eval"
CHECKPOINT = "checkpoint"
DISPATCH_FIRST = "dispatch_first"
RETURN_LAST = "return_last"


def now() -> float:
    """The clock every phase is measured on."""
    return time.perf_counter()


def _valid_seconds(value: object) -> TypeGuard[int | float]:
    """A reply's reported seconds: a finite number >= 0 (a client may send anything)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf


def wall() -> float:
    """Wall-clock seconds, the clock of a message's ``created_at`` (for :func:`handler_span`)."""
    return time.time()


def handler_span(replies: Iterable[Message]) -> tuple[float, float] | None:
    """Wall-clock (first handler start, last handler end) of the replies, or ``None``.

    A reply is made when its handler returns (``metadata.created_at``); its handler
    started ``HANDLER_SECONDS`` earlier. Replies without a valid handler time are skipped.
    """
    starts, ends = [], []
    for msg in replies:
        if msg.has_error():
            continue
        metrics = msg.content.metric_records.get(wire.METRICS)
        seconds = None if metrics is None else metrics.get(wire.HANDLER_SECONDS)
        if not _valid_seconds(seconds):
            continue
        end = float(msg.metadata.created_at)
        starts.append(end - float(seconds))
        ends.append(end)
    return (min(starts), max(ends)) if starts else None


def reply_seconds(replies: Iterable[Message], key: str) -> float:
    """The sum of the numeric metric ``key`` over replies that carry it (malformed values skipped)."""
    total = 0.0
    for msg in replies:
        if msg.has_error():
            continue
        metrics = msg.content.metric_records.get(wire.METRICS)
        value = None if metrics is None else metrics.get(key)
        if _valid_seconds(value):
            total += float(value)
    return total


def add(phases: MutableMapping[str, float], name: str, seconds: float) -> None:
    """Add ``seconds`` to phase ``name`` (a phase may be measured in several batches).

    A sum that is not finite (replies reporting absurd times) is not recorded: phases are
    a report, and metrics.json holds finite numbers only.
    """
    total = phases.get(name, 0.0) + seconds
    if math.isfinite(total):
        phases[name] = total
