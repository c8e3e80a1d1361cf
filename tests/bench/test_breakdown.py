"""The overhead breakdown on hand-made metrics.json rows (known values)."""

from __future__ import annotations

import pytest

from bench.breakdown import first_round, of_run


def row(rnd: int, seconds: float, **phases: float) -> dict:
    return {
        "round": rnd,
        "seconds": seconds,
        "sampled": 10,
        "dropped": 0,
        "eval_sampled": 5,
        "phases": phases,
    }


def test_breakdown_of_steady_rounds() -> None:
    # Round 1 (start-up) is left out; rounds 2 and 3 are identical, so the medians are theirs.
    steady = dict(
        train_stage=1.0,
        evaluate_stage=0.5,
        client_handler=1.2,
        client_train=0.9,
        aggregate=0.1,
        checkpoint=0.05,
    )
    rounds = [
        {"round": 0, "seconds": 0.1, "phases": {}},
        row(1, 9.0, **steady),
        row(2, 1.8, **steady),
        row(3, 1.8, **steady),
    ]

    b = of_run(rounds, plain_round_s=1.0)

    assert b["phases"] and b["messages"] == 15
    assert b["round_s"] == 1.8 and b["overhead_s"] == pytest.approx(0.8)
    assert b["stages_s"] == 1.5 and b["handler_s"] == 1.2 and b["client_train_s"] == 0.9
    assert b["handler_beyond_plain_s"] == pytest.approx(0.2)
    assert b["engine_s"] == pytest.approx(0.3) and b["engine_per_message_ms"] == pytest.approx(20.0)
    assert (b["aggregate_s"], b["central_eval_s"], b["checkpoint_s"]) == (0.1, 0.0, 0.05)
    # 1.8 − (1.5 + 0.1 + 0.0 + 0.05)
    assert b["rest_s"] == pytest.approx(0.15)


def test_the_engine_share_splits_into_first_wait_between_handlers_and_last_return() -> None:
    # Two stages, 15 messages: the engine's 0.3 s is 0.12 before the first handlers,
    # 0.03 after the last ones, and 0.15 s between handlers over 15 − 2 gaps.
    steady = dict(
        train_stage=1.0,
        evaluate_stage=0.5,
        client_handler=1.2,
        dispatch_first=0.12,
        return_last=0.03,
    )
    rounds = [
        {"round": 0, "seconds": 0.1, "phases": {}},
        row(1, 9.0, **{**steady, "dispatch_first": 5.12, "client_handler": 3.2}),
        row(2, 1.8, **steady),
        row(3, 1.8, **steady),
    ]

    b = of_run(rounds, plain_round_s=1.0)
    first = first_round(rounds, b)

    assert b["first_wait_s"] == 0.12 and b["last_return_s"] == 0.03
    assert b["between_s"] == pytest.approx(0.15)
    assert b["between_per_message_ms"] == pytest.approx(150 / 13)
    # Round 1: 7.2 s extra = 5.0 s more waiting for the first handler (the worker
    # starting) + 2.0 s more in the handlers (first calls) + 0.2 s elsewhere.
    assert first is not None
    assert first["extra_s"] == pytest.approx(7.2) and first["worker_start_s"] == pytest.approx(5.0)
    assert first["first_calls_s"] == pytest.approx(2.0) and first["other_s"] == pytest.approx(0.2)


def test_a_run_without_handler_timestamps_has_no_split() -> None:
    steady = dict(train_stage=1.0, client_handler=0.8)
    rounds = [row(1, 5.0, **steady), row(2, 1.2, **steady), row(3, 1.2, **steady)]
    b = of_run(rounds, plain_round_s=1.0)
    assert "first_wait_s" not in b and first_round(rounds, b) is None


def test_a_run_without_phase_timings_gives_its_round_time_only() -> None:
    rounds = [{"round": r, "seconds": s} for r, s in ((0, 0.1), (1, 5.0), (2, 2.0), (3, 4.0))]
    assert of_run(rounds, plain_round_s=1.5) == {"round_s": 3.0, "plain_s": 1.5, "phases": False}


def test_engine_targets_say_which_config_meets_which_target() -> None:
    from bench.report import engine_targets

    def cfg(name: str, ratio: float, total: float, fused_ratio: float, fused_total: float) -> dict:
        return {
            "name": name,
            "ratio": ratio,
            "startup": {"total_s": total},
            "fused": {"ratio": fused_ratio, "startup": {"total_s": fused_total}},
        }

    one = cfg("a", 1.3, 14.0, 1.19, 15.5)
    wide = {**cfg("b", 1.25, 13.0, 1.1, 13.5), "parallel": {"ratio": 1.05, "startup": {"total_s": 16.0}}}
    text = engine_targets({"overhead": {"configs": [one, wide]}})

    assert text.splitlines()[1] == (
        "- a: separate evaluation: ratio 1.30 (not met), start-up 14.0 s (met); "
        "fused-evaluate: ratio 1.19 (met), start-up 15.5 s (not met)"
    )
    assert text.splitlines()[2].endswith(
        "; one actor per core, separate evaluation: ratio 1.05 (met), start-up 16.0 s (not met)"
    )
