"""CPU time per kind of simulation process: the classification and the per-round window (known values)."""

from __future__ import annotations

import os

import pytest

from bench.sim import CpuMeter, SimRun, cpu_per_round, process_kind


def test_processes_are_told_apart_by_name_and_command_line() -> None:
    assert process_kind("ray::ClientAppA", "ray::ClientAppActor.run") == "actor"
    assert process_kind("python", "/venv/bin/python /venv/bin/flwr-simulation --app x") == "simulation"
    raylet = "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet"
    assert process_kind("raylet", raylet) == "ray"
    assert process_kind("gcs_server", "gcs_server --port 0") == "ray"
    assert process_kind("ray::IDLE", "ray::IDLE") == "ray"
    assert process_kind("python", "/venv/bin/python /venv/bin/flower-superlink --simulation") == "superlink"


def test_cpu_per_round_scales_the_sampled_span_to_the_window() -> None:
    def c(actor: float, sim: float) -> dict[str, float]:
        return {"actor": actor, "simulation": sim}

    samples = [(9.0, c(0.0, 0.0)), (10.5, c(1.0, 0.25)), (12.5, c(3.0, 0.75)), (14.0, c(9.0, 9.0))]

    # Window 10..13 s, 3 rounds: the samples inside span 10.5..12.5 s (2 s) and used
    # 2.0 / 0.5 CPU s; scaled to the 3 s window that is 3.0 / 0.75, i.e. 1.0 / 0.25 per round.
    got = cpu_per_round(samples, 10.0, 13.0, 3)

    assert got is not None
    assert got["actor"] == pytest.approx(1.0) and got["simulation"] == pytest.approx(0.25)
    assert got["total"] == pytest.approx(1.25)
    # One sample in the window says nothing.
    assert cpu_per_round(samples, 10.0, 11.0, 1) is None


def test_the_meter_counts_this_process_and_keeps_what_it_saw() -> None:
    meter = CpuMeter(os.getpid())
    first = meter.sample()
    sum(i * i for i in range(2_000_000))  # burn some CPU in this process
    second = meter.sample()

    # pytest itself is neither an actor, the simulation nor Ray: "superlink" (everything else).
    assert second["superlink"] > first["superlink"] >= 0
    assert second["actor"] == second["simulation"] == second["ray"] == 0.0


def test_the_steady_window_runs_from_round_one_to_the_last_round_whatever_the_padding() -> None:
    lines = [
        (5.0, "INFO :      [round  0/12] initial model"),
        (13.0, "INFO :      [round  1/12] clients 10 sampled"),
        (14.0, "INFO :      [round 11/12] clients 10 sampled"),
        (24.0, "INFO :      [round 12/12] clients 10 sampled"),
    ]
    samples = [(t, {"actor": t, "simulation": 0.0}) for t in (13.0, 18.0, 24.0)]
    run = SimRun(0, 25.0, lines, {}, {}, cpu_samples=samples)

    # 13 → 24 s: 11 rounds, 11 actor CPU seconds.
    steady = run.steady_cpu(12)
    assert steady is not None and steady["actor"] == pytest.approx(1.0)
