"""Per-round phase timings: the reply sums, and what a run through the real apps records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flwr.app import Context, RecordDict

from server_app.app import main
from strategies.core import phases
from tasks import wire
from tests.conftest import AppGrid, make_reply


def test_reply_seconds_sums_the_key_over_replies_that_carry_a_valid_value() -> None:
    replies = [
        make_reply(1, {"w": np.zeros(1)}, {wire.HANDLER_SECONDS: 0.25, wire.NUM_EXAMPLES: 1}),
        make_reply(2, {"w": np.zeros(1)}, {wire.HANDLER_SECONDS: 0.5, wire.NUM_EXAMPLES: 1}),
        make_reply(3, {"w": np.zeros(1)}, {wire.HANDLER_SECONDS: -4.0, wire.NUM_EXAMPLES: 1}),
        make_reply(4, {"w": np.zeros(1)}, {wire.NUM_EXAMPLES: 1}),
        make_reply(5, error="crashed"),
    ]
    assert phases.reply_seconds(replies, wire.HANDLER_SECONDS) == 0.75


def test_handler_span_runs_from_the_first_handler_start_to_the_last_reply() -> None:
    replies = [
        make_reply(1, {"w": np.zeros(1)}, {wire.HANDLER_SECONDS: 0.5, wire.NUM_EXAMPLES: 1}),
        make_reply(2, {"w": np.zeros(1)}, {wire.HANDLER_SECONDS: 0.25, wire.NUM_EXAMPLES: 1}),
        make_reply(3, {"w": np.zeros(1)}, {wire.HANDLER_SECONDS: -1.0, wire.NUM_EXAMPLES: 1}),
        make_reply(4, {"w": np.zeros(1)}, {wire.NUM_EXAMPLES: 1}),
        make_reply(5, error="crashed"),
    ]
    for msg, made in zip(replies, (100.0, 101.0, 50.0, 200.0, 300.0), strict=True):
        msg.metadata.created_at = made  # when each handler returned

    # Node 1's handler started at 99.5; node 2's returned last, at 101. The others carry
    # no valid handler time (a boolean, none, an error) and say nothing.
    assert phases.handler_span(replies) == (99.5, 101.0)
    assert phases.handler_span(replies[2:]) is None


def test_replies_reporting_infinite_or_overflowing_times_leave_the_phases_finite() -> None:
    # Timings come from clients and are checked before validation: an absurd one must not
    # put a non-finite number into metrics.json (which holds finite numbers only).
    huge = make_reply(1, {"w": np.zeros(1)}, {wire.HANDLER_SECONDS: 1e308, wire.NUM_EXAMPLES: 1})
    infinite = make_reply(2, {"w": np.zeros(1)}, {wire.HANDLER_SECONDS: float("inf"), wire.NUM_EXAMPLES: 1})
    fine = make_reply(3, {"w": np.zeros(1)}, {wire.HANDLER_SECONDS: 0.5, wire.NUM_EXAMPLES: 1})

    assert phases.reply_seconds([infinite, fine], wire.HANDLER_SECONDS) == 0.5
    assert phases.handler_span([infinite]) is None
    recorded: dict[str, float] = {}
    phases.add(
        recorded, phases.CLIENT_HANDLER, phases.reply_seconds([huge, huge, fine], wire.HANDLER_SECONDS)
    )
    phases.add(recorded, phases.TRAIN_STAGE, 2.0)
    assert recorded == {phases.TRAIN_STAGE: 2.0}


def test_a_run_records_where_each_round_went(tmp_path: Path) -> None:
    # Prepare: separate evaluation, central evaluation and a checkpoint every round.
    config = {
        "output-dir": str(tmp_path),
        "num-server-rounds": 2,
        "local-epochs": 1,
        "min-available-nodes": 3,
    }
    grid = AppGrid(3, run_config=config)
    context = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)

    # Execute
    main(grid, context)  # type: ignore[arg-type]

    # Assert: every phase of a round is there; in this one process a stage contains its
    # replies' handlers, and a handler contains the training it reports.
    (metrics_file,) = tmp_path.glob("*/metrics.json")
    rows = json.loads(metrics_file.read_text())["rounds"]
    assert set(rows[0]["phases"]) == {phases.CENTRAL_EVAL}
    for row in rows[1:]:
        p = row["phases"]
        assert set(p) == {
            phases.TRAIN_STAGE,
            phases.AGGREGATE,
            phases.EVALUATE_STAGE,
            phases.CLIENT_HANDLER,
            phases.CLIENT_TRAIN,
            phases.CENTRAL_EVAL,
            phases.CHECKPOINT,
            phases.DISPATCH_FIRST,
            phases.RETURN_LAST,
        }
        assert p[phases.TRAIN_STAGE] + p[phases.EVALUATE_STAGE] >= p[phases.CLIENT_HANDLER]
        # One clock, one process: the waits before the first and after the last handler
        # are real, and fit into the stages with the handlers (which run one at a time).
        assert p[phases.DISPATCH_FIRST] >= 0 and p[phases.RETURN_LAST] >= 0
        stages = p[phases.TRAIN_STAGE] + p[phases.EVALUATE_STAGE]
        assert p[phases.DISPATCH_FIRST] + p[phases.RETURN_LAST] + p[phases.CLIENT_HANDLER] <= stages + 1e-3
        assert p[phases.CLIENT_HANDLER] >= p[phases.CLIENT_TRAIN] > 0
        assert row["seconds"] >= p[phases.TRAIN_STAGE] + p[phases.AGGREGATE] + p[phases.EVALUATE_STAGE]
