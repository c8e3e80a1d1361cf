"""``python -m bench --quick`` runs every section end to end and writes sane results.

The quick configs are tiny (a few rounds, 10 clients, K=10 replies), so the figures
themselves mean little; what is checked is that each section measured what it claims:
positive finite times and ratios, the machine it ran on, and consistency between numbers
that must agree (a ratio is its two times divided, a floor is below what beats it).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), out


def test_machine_info_is_recorded(quick: tuple[dict, Path]) -> None:
    results, _ = quick
    machine = results["machine"]
    assert results["mode"] == "quick"
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch_threads"] >= 1
    assert machine["flwr"].startswith("1.41") and machine["torch"]
    assert len(machine["load_average"]) == 3


def test_overhead_compares_the_simulation_with_plain_pytorch(quick: tuple[dict, Path]) -> None:
    results, _ = quick
    configs = results["overhead"]["configs"]
    assert configs and all("error" not in c for c in configs), configs
    for c in configs:
        assert len(c["sim_round_seconds"]) == c["rounds"] == len(c["plain_round_seconds"])
        assert _positive(c["sim_steady_s"]) and _positive(c["plain_steady_s"])
        assert c["ratio"] == pytest.approx(c["sim_steady_s"] / c["plain_steady_s"])
        assert _positive(c["ratio"])
        startup = c["startup"]
        assert _positive(startup["cli_submit_s"]) and _positive(startup["serverapp_ready_s"])
        # Round 1 starts Ray and the actor: always slower than a steady round.
        assert _positive(startup["first_round_extra_s"]) and startup["total_s"] > startup["serverapp_ready_s"]
        baseline = c["baseline"]
        assert _positive(baseline["ratio"]) and _positive(baseline["startup"]["total_s"])
        assert len(baseline["sim_round_seconds"]) == c["rounds"]


def test_overhead_breaks_each_round_down_and_runs_fused_evaluate(quick: tuple[dict, Path]) -> None:
    results, out = quick
    for c in results["overhead"]["configs"]:
        # The run's own phase timings: the stages hold the handlers, which hold the training,
        # and the parts add up to the round (rest: what no phase covers, never most of it).
        b = c["breakdown"]
        assert b["phases"] and b["round_s"] == pytest.approx(c["sim_steady_s"])
        assert b["stages_s"] >= b["handler_s"] >= b["client_train_s"] > 0
        assert 0 <= b["engine_s"] <= b["stages_s"]
        assert b["messages"] == 2 * c["per_round"] and abs(b["rest_s"]) < 0.5 * b["round_s"]
        # The fused variant: one message per sampled client and round, same reference.
        fused = c["fused"]
        assert "error" not in fused, fused
        assert _positive(fused["ratio"]) and fused["breakdown"]["messages"] == c["per_round"]
        assert len(fused["sim_round_seconds"]) == c["rounds"]
        # The engine's share, split by the replies' timestamps: the waits before the first
        # and after the last handler are inside it, and what is between them is the rest.
        assert 0 <= b["first_wait_s"] and 0 <= b["last_return_s"]
        assert b["first_wait_s"] + b["last_return_s"] <= b["engine_s"] + 1e-3
        assert b["between_s"] == pytest.approx(b["engine_s"] - b["first_wait_s"] - b["last_return_s"])
        # Round 1's extra time: the worker starting and the handlers' first calls are in it.
        r1 = c["startup"]["round1"]
        assert r1["extra_s"] == pytest.approx(c["startup"]["first_round_extra_s"])
        assert r1["worker_start_s"] > 0 and r1["first_calls_s"] > 0
        assert r1["worker_start_s"] + r1["first_calls_s"] < r1["extra_s"] + 0.5
        # Where the cores went in the steady rounds: the actor trained, the simulation
        # process ran the ServerApp and the engine, and the plain reference used its own CPU.
        cpu = c["cpu"]
        assert cpu["actor"] > 0 and cpu["simulation"] > 0 and _positive(c["plain_cpu_s"])
        assert cpu["total"] == pytest.approx(sum(v for k, v in cpu.items() if k != "total"))
        # One actor per core, against plain PyTorch with as many torch threads.
        cores = results["machine"]["cores"]
        if cores == 1:  # nothing to run in parallel
            assert "parallel" not in c
            continue
        wide = c["parallel"]
        assert "error" not in wide, wide
        assert wide["actors"] == cores and wide["plain_threads"] == cores
        assert wide["ratio"] == pytest.approx(wide["sim_steady_s"] / wide["plain_steady_s"])
    markdown = (out / "BENCHMARKS.md").read_text()
    assert "### Overhead breakdown" in markdown and "fused-evaluate" in markdown


def test_aggregation_is_measured_against_the_floor_and_flower(quick: tuple[dict, Path]) -> None:
    results, _ = quick
    agg = results["aggregation"]
    assert agg["params"] == 1_663_370 and _positive(agg["copy_bandwidth_gib_s"])
    kernels = {r["name"]: r for r in agg["rows"] if r["kind"] == "kernel"}
    assert {"edgebloom weighted_average", "flwr aggregate_arrayrecords"} <= set(kernels)
    for r in kernels.values():
        assert _positive(r["seconds"]) and _positive(r["floor_seconds"]) and _positive(r["ratio_to_floor"])
        assert r["ratio_to_floor"] == pytest.approx(r["seconds"] / r["floor_seconds"])
        assert r["peak_extra_models"] >= 0.9  # every kernel at least writes its output model
    # Both kernels computed the same average.
    assert kernels["edgebloom weighted_average"]["max_abs_diff_vs_flwr"] < 1e-5
    strategies = {r["name"]: r for r in agg["rows"] if r["kind"] == "strategy"}
    assert {"fedavg", "fedprox", "median"} <= set(strategies)
    assert _positive(strategies["fedavg"]["ratio_to_floor"]) and strategies["fedavg"]["replies"] == 10


def test_scale_compares_populations_with_memory_of_all_simulation_processes(quick: tuple[dict, Path]) -> None:
    results, _ = quick
    scale = results["scale"]
    rows = scale["rows"]
    assert rows and all("error" not in r for r in rows), rows
    assert sorted(r["nodes"] for r in rows) == [20, 200]
    for r in rows:
        mem = r["peak_memory"]
        # SuperLink, SuperExec, the simulation process, Ray's processes and at least one actor.
        assert mem["processes"] >= 5
        assert _positive(mem["rss_mib"]) and 0 < mem["pss_mib"] <= mem["rss_mib"]
        # Every round trained the sampled clients, 14 examples each (13 train + 1 held out: 13).
        assert r["succeeded"] == [r["per_round"]] * r["rounds"]
        assert r["train_examples"] == [r["per_round"] * 13] * r["rounds"]
        assert r["ms_per_example"] == pytest.approx(1000 * r["sim_steady_s"] / r["steady_examples"])
    (pair,) = scale["pairs"]
    small, large = sorted(rows, key=lambda r: r["nodes"])
    assert pair["nodes"] == [20, 200]
    assert pair["round_time_ratio"] == pytest.approx(large["sim_steady_s"] / small["sim_steady_s"])
    assert scale["peak_rss_mib"] == max(r["peak_memory"]["rss_mib"] for r in rows)
    # Flower's message extractor timed alone: every case swept every registered node.
    sweeps = scale["engine_sweeps"]
    assert [(w["nodes"], w["messages"]) for w in sweeps] == [(20, 10), (200, 10)]
    assert all(_positive(w["delivering_s"]) and _positive(w["delivered_s"]) for w in sweeps)


def test_efficiency_has_a_curve_per_strategy_and_a_plot(quick: tuple[dict, Path]) -> None:
    results, out = quick
    rows = results["efficiency"]["rows"]
    assert {r["name"].split()[0] for r in rows} == {"fedavg", "fedprox"}
    for r in rows:
        assert "error" not in r, r
        assert r["status"] == "completed" and len(r["accuracy"]) == r["config"]["num-server-rounds"]
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"])
        if r["rounds_to_target"] is not None:
            assert r["accuracy"][r["rounds_to_target"] - 1] >= r["target"]
    assert (out / results["efficiency"]["plot"]).stat().st_size > 10_000


def test_secagg_is_measured_side_by_side_with_plain_fedavg(quick: tuple[dict, Path]) -> None:
    results, _ = quick
    rows = results["secagg"]["rows"]
    assert rows
    for r in rows:
        plain, secure = r["plain"], r["secagg"]
        k = r["clients"]
        # Both runs trained every client every round; SecAgg+ unmasked all of them.
        for run in (plain, secure):
            assert run["status"] == "completed" and run["kept_previous_model"] == 0, run
            assert run["succeeded"] == [k] * r["rounds"] and len(run["round_seconds"]) == r["rounds"]
            assert _positive(run["steady_s"]) and _positive(run["bytes_per_client"]["down"])
        assert secure["survivors"] == [k] * r["rounds"]
        assert r["time_ratio"] == pytest.approx(secure["steady_s"] / plain["steady_s"])
        pb, sb = plain["bytes_per_client"], secure["bytes_per_client"]
        assert r["up_ratio"] == pytest.approx(sb["up"] / pb["up"])
        # The same global model goes down; the masked update goes up as int64, twice float32's bytes.
        assert sb["down_model"] == pytest.approx(pb["down_model"], rel=0.01)
        assert 1.9 <= sb["up_model"] / pb["up_model"] <= 2.1
        # Only SecAgg+ has protocol traffic, in each of its four stages, both ways.
        assert "down_protocol" not in pb and _positive(sb["down_protocol"]) and _positive(sb["up_protocol"])
        assert set(sb["by_stage"]) == {"setup", "share_keys", "collect_masked_vectors", "unmask"}
        assert set(pb["by_stage"]) == {"train"}


def test_markdown_report_has_every_section(quick: tuple[dict, Path]) -> None:
    _, out = quick
    text = (out / "BENCHMARKS.md").read_text()
    headings = ("## Machine", "## Simulation overhead", "## Aggregation", "## Scale", "## Efficiency")
    for heading in (*headings, "## Secure aggregation"):
        assert heading in text


def test_report_only_renders_separately_run_benchmarks(quick: tuple[dict, Path], tmp_path: Path) -> None:
    # Arrange: the quick results, plus async_vs_sync.json as its benchmark writes it
    from bench.async_vs_sync import markdown, time_to_target

    results, out = quick
    (tmp_path / "results.json").write_text((out / "results.json").read_text())
    rounds = [
        {"round": 0, "seconds": 0.0, "succeeded": 0, "central_accuracy": 0.1},
        {"round": 1, "seconds": 50.0, "succeeded": 5, "central_accuracy": 0.5},
        {"round": 2, "seconds": 2.0, "succeeded": 5, "central_accuracy": 0.93},
    ]
    row = {
        "strategy": "fedbuff",
        "run_config": {
            "device-slowdown": "lognormal",
            "device-slowdown-sigma": 1.0,
            "device-slowdown-max": 10.0,
        },
        "to_target": time_to_target(rounds, 0.9),
        "to_target_after_round_1": time_to_target(rounds, 0.9, skip_first=True),
        "median_round_seconds": 2.0,
        "best_accuracy": 0.93,
        "rounds_run": 2,
        "staleness_mean": 1.25,
    }
    settings = {"concurrency": 10, "buffer_size": 5, "slowdown": "lognormal", "slowdown_max": 10.0}
    payload = {
        "target_accuracy": 0.9,
        "date": "2026-11-23",
        "settings": {**settings, "slowdown_sigma": 1.0, "seed": 42},
        "rows": [row],
        "table": markdown([row], 0.9),
    }
    (tmp_path / "async_vs_sync.json").write_text(json.dumps(payload))
    published = (REPO / "BENCHMARKS.md").read_text()

    # Execute
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--report-only", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Assert: its own section with its table, after the sections of the main run
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Asynchronous FedBuff against synchronous FedAvg" in text
    assert "| fedbuff | lognormal (σ 1, max 10) | 2.0 s | 52.0 s | 2 / 10 |" in text
    assert text.index("## Aggregation") < text.index("## Asynchronous FedBuff")
    # A quick run's report never replaces the published BENCHMARKS.md.
    assert results["mode"] == "quick" and (REPO / "BENCHMARKS.md").read_text() == published


def test_update_replaces_only_the_rerun_sections_and_stamps_them(quick: tuple[dict, Path]) -> None:
    # Arrange: the quick run stands for the published results; a fresh aggregation run
    from bench.__main__ import updated
    from bench.report import render

    published, _ = quick
    published = json.loads(json.dumps(published))
    overhead_before = json.dumps(published["overhead"])
    fresh = {
        "started": "2026-11-23 12:00:00 UTC",
        "machine": {**published["machine"], "cpu": "Fresh CPU"},
        "aggregation": {**published["aggregation"], "copy_bandwidth_gib_s": 123.0},
    }

    # Execute
    merged = updated(published, fresh, ["aggregation"])
    text = render(merged)

    # Assert: aggregation replaced and stamped, the rest untouched
    assert merged["aggregation"]["copy_bandwidth_gib_s"] == 123.0
    assert merged["aggregation"]["measured_separately"]["cpu"] == "Fresh CPU"
    assert json.dumps(merged["overhead"]) == overhead_before
    aggregation = text[text.index("## Aggregation") : text.index("## Scale")]
    assert "Re-measured separately" in aggregation and "Fresh CPU" in aggregation
    assert "123.0 GiB/s" in aggregation
    assert "Re-measured separately" not in text[: text.index("## Aggregation")]


def test_update_without_only_is_refused_with_the_fix() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--update"], cwd=REPO, capture_output=True, text=True, timeout=120
    )

    assert proc.returncode == 2
    assert "--update needs --only SECTION" in proc.stderr
