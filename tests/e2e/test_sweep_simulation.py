"""``edgebloom sweep`` end to end: real ``flwr run``s through Flower's simulation engine.

The sweep runs as the user runs it (``python -m experiments``, the ``edgebloom`` console
script's module) against the session's SuperLink (``local_flower``), and the tests read
what the runs wrote: every run's metrics, the manifest and the summary, never only exit
codes. The second sweep reuses the first one's directory; the last test presses Ctrl-C in
a sweep and resumes it.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from experiments.runs import find_run_dirs, read_run
from tests.conftest import BIN, REPO, LocalFlower, descendants, stop_process_tree

GRID = ["--grid", "strategy=fedavg,fedprox proximal-mu=0.01,0.1", "--seeds", "2"]
FIXED = ["--run-config", "num-server-rounds=2 local-epochs=1", "--target", "0.15"]


def sweep(flower: LocalFlower, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "experiments", "sweep", *args, "--connection", "local", "--out", str(out)],
        cwd=REPO,
        env=flower.env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def grid_sweep(
    local_flower: LocalFlower, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("sweep") / "fedprox-mu"
    return out, sweep(local_flower, out, *GRID, *FIXED)


def test_a_2x2_sweep_with_2_seeds_runs_8_flwr_runs_and_summarizes_mean_and_std(
    grid_sweep: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, proc = grid_sweep
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output

    # Every combination × seed ran to completion, each in its own run directory, with its seed.
    runs = [read_run(p) for p in find_run_dirs(out / "runs")]
    assert len(runs) == 8 and all(r.status == "completed" and r.last_round == 2 for r in runs), output
    assert sorted((r.strategy, r.config["proximal-mu"], r.config["seed"]) for r in runs) == sorted(
        (s, mu, seed) for s in ("fedavg", "fedprox") for mu in (0.01, 0.1) for seed in (42, 43)
    )
    assert all(r.rounds[-1]["succeeded"] == 10 and r.rounds[-1]["central_accuracy"] is not None for r in runs)
    # The summary: one row per combination, mean and std over the 2 seeds.
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["strategy"], r["proximal-mu"]) for r in rows] == [
        ("fedavg", "0.01"),
        ("fedavg", "0.1"),
        ("fedprox", "0.01"),
        ("fedprox", "0.1"),
    ]
    for row in rows:
        assert row["finished"] == "2" and row["failed"] == "0"
        assert 0 < float(row["final_mean"]) <= 1 and float(row["final_std"]) >= 0 and row["best_std"] != ""
    assert " ± " in (out / "summary.md").read_text()
    with Image.open(out / "compare.png") as img:
        assert img.format == "PNG" and img.size[0] > 400
    assert "[8/8]" in proc.stdout and "ETA" in proc.stdout


def test_running_the_sweep_again_starts_no_flwr_run(
    grid_sweep: tuple[Path, subprocess.CompletedProcess[str]], local_flower: LocalFlower
) -> None:
    out, first = grid_sweep
    assert first.returncode == 0, first.stdout + first.stderr
    logs = sorted(out.rglob("flwr.log"))
    written = {p: p.stat().st_mtime_ns for p in [*logs, *out.rglob("metrics.json")]}

    proc = sweep(local_flower, out, *GRID, *FIXED)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 finished before, 0 to run" in proc.stdout
    assert len(logs) == 8 and len(find_run_dirs(out / "runs")) == 8
    assert {p: p.stat().st_mtime_ns for p in written} == written  # no run wrote anything
    manifest = json.loads((out / "sweep.json").read_text())
    assert [e["attempts"] for e in manifest["runs"].values()] == [1] * 8


def restore_sigint() -> None:
    """A shell's background job (CI) ignores SIGINT, and children inherit that; a terminal's does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_text(path: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s")


def test_ctrl_c_stops_the_run_and_the_resumed_sweep_records_a_failing_combination(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    # median with f = 2 needs n > 4 sampled clients; the federation config gives the runs 4 nodes,
    # which the sweep cannot know in advance: the ServerApp refuses it at run time.
    out = tmp_path / "sweep"
    args = [
        "--grid",
        "strategy=fedavg,median",
        "--run-config",
        "num-server-rounds=1 local-epochs=1 robust-num-byzantine=2",
        "--federation-config",
        "num-supernodes=4 client-resources-num-cpus=1",
    ]
    # Prepare: start the sweep, press Ctrl-C once its first run is on the SuperLink.
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments", "sweep", *args, "--connection", "local", "--out", str(out)],
        cwd=REPO,
        env=local_flower.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=restore_sigint,
    )
    try:
        log = wait_for_text(
            out / "runs" / "strategy-fedavg" / "seed-42" / "flwr.log", "Successfully started run", 300
        )
        match = re.search(r"Successfully started run (\d+)", log)
        assert match is not None
        run_id = match.group(1)
        started = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            stop_process_tree(proc.pid)

    # Assert: the sweep stopped, its flwr run and the run on the SuperLink with it; resumable.
    assert proc.returncode == 130, output
    assert "run the same command again to resume" in output
    assert started and not any(Path(f"/proc/{pid}").exists() for pid in started)
    listed = subprocess.run(
        [str(BIN / "flwr"), "ls", "local", "--format", "json"],
        cwd=REPO,
        env=local_flower.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    (run,) = [r for r in json.loads(listed.stdout)["runs"] if r["run-id"] == run_id]
    assert run["status"] == "finished:stopped", run
    assert (
        json.loads((out / "sweep.json").read_text())["runs"]["strategy-fedavg/seed-42"]["status"]
        == "interrupted"
    )

    # Execute: the same sweep again.
    again = sweep(local_flower, out, *args)

    # Assert: the interrupted run ran again and finished; median failed, recorded with its reason.
    assert again.returncode == 1, again.stdout + again.stderr
    manifest = json.loads((out / "sweep.json").read_text())["runs"]
    ok, failed = manifest["strategy-fedavg/seed-42"], manifest["strategy-median/seed-42"]
    assert ok["status"] == "completed" and ok["attempts"] == 2, ok
    finished = [r for r in map(read_run, find_run_dirs(out / "runs" / "strategy-fedavg")) if r.finished]
    assert len(finished) == 1 and finished[0].rounds[-1]["sampled"] == 4  # the federation config reached it
    assert failed["status"] == "failed" and isinstance(failed["exit_code"], int)
    assert "4 sampled clients" in (failed["reason"] or "") + (failed["log_tail"] or ""), failed
    summary = (out / "summary.md").read_text()
    assert "## Failed runs" in summary and "strategy=median seed=42: failed" in summary
