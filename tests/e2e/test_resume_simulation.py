"""Reliability through Flower's simulation engine: kill and resume, bounded waits, failed runs.

Each run goes through ``flwr run`` against the session's real SuperLink; the
interruption is Flower's own ``flwr stop`` on a run in progress, not a flag of ours.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from server_app.checkpoint import CHECKPOINT_NAME, load_checkpoint
from tests.conftest import BIN, REPO, LocalFlower, descendants

ROUNDS = 6
#: All 10 nodes train each round: the kill lands in round 3, with rounds 3-6 still to run.
SETTINGS = f"num-server-rounds={ROUNDS} local-epochs=1 fraction-evaluate=0.0"


def flwr(flower: LocalFlower, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [str(BIN / "flwr"), *args],
        cwd=REPO,
        env=flower.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.stdout + proc.stderr


def one_run_dir(out: Path) -> Path:
    dirs = sorted(p.parent for p in out.glob("*/config.json"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill_server_app(flower: LocalFlower) -> None:
    """SIGKILL the run's ``flwr-simulation`` process (the ServerApp) and everything it started."""
    (sim,) = [p for p in descendants(flower.pid) if "flwr-simulation" in cmdline(p)]
    victims = [sim, *descendants(sim)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in victims):
        assert time.monotonic() < deadline, "the ServerApp did not die"
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def run_status(flower: LocalFlower, run_id: str) -> str:
    """The status column ``flwr ls`` prints for ``run_id`` (e.g. ``finished:failed``)."""
    listing = flwr(flower, "ls", "local", "--format", "json")
    runs = json.loads(listing[listing.index("{") :])["runs"]
    (run,) = [r for r in runs if str(r["run-id"]) == run_id]
    return str(run["status"])


def test_run_stopped_mid_training_and_resumed_ends_with_the_uninterrupted_model(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    # Prepare: the uninterrupted run.
    local_flower.run("--run-config", f"output-dir='{tmp_path / 'straight'}' {SETTINGS}")
    straight = one_run_dir(tmp_path / "straight")
    assert json.loads((straight / "metrics.json").read_text())["status"] == "completed"

    # Execute: the same run, its ServerApp killed once round 2 is checkpointed ...
    out = flwr(
        local_flower, "run", ".", "local", "--run-config", f"output-dir='{tmp_path / 'killed'}' {SETTINGS}"
    )
    run_id = re.search(r"run (\d+)", out, re.IGNORECASE)
    assert run_id, out
    deadline = time.monotonic() + 300
    checkpoint = tmp_path / "killed"
    while time.monotonic() < deadline:
        found = list(checkpoint.glob(f"*/{CHECKPOINT_NAME}"))
        if found and load_checkpoint(str(found[0])).round >= 2:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the run never checkpointed round 2")
    kill_server_app(local_flower)  # SIGKILL mid-round: no handler, no cleanup runs
    flwr(local_flower, "stop", run_id.group(1), "local")  # let the SuperLink take the next run
    deadline = time.monotonic() + 120
    while not run_status(local_flower, run_id.group(1)).startswith("finished"):
        assert time.monotonic() < deadline, "flwr stop did not end the run"
        time.sleep(0.5)
    killed = one_run_dir(tmp_path / "killed")
    stopped_after = load_checkpoint(str(killed)).round
    assert 2 <= stopped_after < ROUNDS, "the stop came too late to interrupt the run"
    assert json.loads((killed / "metrics.json").read_text())["status"] == "running"  # it never got to say

    # ... and resumed from its run directory.
    local_flower.run("--run-config", f"output-dir='{tmp_path / 'resumed'}' resume='{killed}' {SETTINGS}")
    resumed = one_run_dir(tmp_path / "resumed")

    # Assert: the same final model, bit for bit, and every round's metrics.
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert [r["round"] for r in metrics["rounds"]] == list(range(ROUNDS + 1))
    straight_rounds = json.loads((straight / "metrics.json").read_text())["rounds"]
    assert [r["central_accuracy"] for r in metrics["rounds"]] == [
        r["central_accuracy"] for r in straight_rounds
    ]
    assert any(f"resumed after round {stopped_after}" in n for n in metrics["notes"])


def test_too_few_nodes_fails_within_the_wait_bound_and_flwr_ls_shows_it(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    # Execute: 10 SuperNodes, 12 required, a 5 s bound.
    start = time.monotonic()
    proc = local_flower.run(
        "--run-config",
        f"output-dir='{tmp_path}' min-available-nodes=12 wait-for-nodes-timeout=5.0 num-server-rounds=2",
    )
    elapsed = time.monotonic() - start

    # Assert: it gave up with the reason, well before any round could run; the run
    # directory says why, and Flower's own run list marks the run failed.
    output = proc.stdout + proc.stderr
    assert "only 10 node(s) connected after waiting 5s" in output, output[-3000:]
    assert elapsed < 90, elapsed
    run_dir = one_run_dir(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert any("wait-for-nodes-timeout" in n for n in metrics["notes"]), metrics["notes"]
    assert "12" in (run_dir / "error.txt").read_text()
    assert [r["round"] for r in metrics["rounds"]] == [0]
    run_id = re.search(r"run (\d+)", output, re.IGNORECASE)
    assert run_id, output[-3000:]
    assert run_status(local_flower, run_id.group(1)) == "finished:failed"
