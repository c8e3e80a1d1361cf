"""A local cluster from deploy/local-cluster.sh, as the deploy tests drive it.

``Cluster`` runs the script, the ``flwr`` CLI and ``flwr run`` against one cluster
directory; the helpers below find and end the processes a cluster or a test started.
The ``make_cluster`` fixture (tests/deploy/conftest.py) builds clusters and stops each
one afterwards.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.processes import stop_process_tree

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
# Small and single-threaded so three ClientApps and the ServerApp share two cores.
FAST = "local-epochs=1 threads-per-client=1"
RUN_TIMEOUT = 540


def ports_free(first: int, count: int) -> bool:
    for port in range(first, first + count):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_block(count: int) -> int:
    for _ in range(200):
        first = random.randrange(20000, 40000)
        if ports_free(first, count):
            return first
    raise RuntimeError("no free block of loopback ports")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True
    ).stdout.strip()
    return bool(stat) and not stat.startswith("Z")


def wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    return not pid_alive(pid)


def kill_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL: for processes the scripts or a test started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not pid_alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        wait_dead(pid, 15)


def flower_children(parents: Iterable[int]) -> list[int]:
    """Processes Flower started with ``--parent-pid`` of one of ``parents`` (SuperExec, apps)."""
    table = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    found, frontier = [], {str(p) for p in parents}
    while frontier:
        layer = [
            int(pid)
            for pid, args in (line.strip().split(" ", 1) for line in table.splitlines() if line.strip())
            if (m := re.search(r"--parent-pid (\d+)", args)) and m.group(1) in frontier
        ]
        found += layer
        frontier = {str(p) for p in layer}
    return found


def processes_mentioning(*needles: str) -> list[int]:
    """Live processes (not ``ps`` itself) whose command line contains one of ``needles``."""
    table = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    found = []
    for line in table.splitlines():
        pid, stat, args = line.strip().split(None, 2)
        if not stat.startswith("Z") and int(pid) != os.getpid() and any(n in args for n in needles):
            found.append(int(pid))
    return found


@dataclass
class Cluster:
    """A cluster directory of ``deploy/local-cluster.sh`` and the processes a test started beside it."""

    dir: Path
    port: int
    env: dict[str, str]
    started: list[subprocess.Popen] = field(default_factory=list)

    def script(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DEPLOY / "local-cluster.sh"), *args, "--dir", str(self.dir)],
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def pids(self) -> dict[str, int]:
        path = self.dir / "pids"
        if not path.exists():
            return {}
        return {
            name: int(pid) for name, pid in (line.split() for line in path.read_text().splitlines() if line)
        }

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    def flwr_json(self, *args: str) -> dict:
        proc = self.flwr(*args, "local-cluster", "--format", "json")
        return json.loads(proc.stdout[proc.stdout.index("{") :])

    def node_id(self, name: str) -> int:
        match = re.search(r"SuperNode ID: (\d+)", (self.dir / "logs" / f"{name}.log").read_text())
        assert match, f"{name} never got a node ID"
        return int(match.group(1))

    def popen(self, cmd: list[str], log: Path) -> subprocess.Popen:
        """Start a process owned by this test; teardown stops its process tree.

        Its own process group: a SuperNode started here starts flower-superexec and
        ClientApps in its group, and stopping only its PID would leave them running.
        """
        proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        self.started.append(proc)
        return proc

    def stop_started(self) -> None:
        """Stop every process this test started with :meth:`popen`, with its process groups."""
        for proc in self.started:
            stop_process_tree(proc.pid)
            proc.wait(timeout=30)

    def run_app(self, out: Path, overrides: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        proc = self.flwr(
            "run",
            str(REPO),
            "local-cluster",
            "--stream",
            "--run-config",
            f"output-dir='{out}' {FAST} {overrides}",
            timeout=RUN_TIMEOUT,
        )
        return proc, read_metrics(out, proc)


def read_metrics(out: Path, proc: subprocess.CompletedProcess[str] | None = None) -> dict:
    files = sorted(out.glob("*/metrics.json"))
    log = f"\n{proc.stdout}\n{proc.stderr}" if proc else ""
    assert len(files) == 1, f"expected one metrics.json under {out}{log}"
    metrics = json.loads(files[0].read_text())
    assert metrics["status"] == "completed", log
    return metrics


def run_id_of(proc: subprocess.CompletedProcess[str]) -> int:
    match = re.search(r"Successfully started run (\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    return int(match.group(1))


def central_accuracy(metrics: dict) -> dict[int, float]:
    return {r["round"]: r["central_accuracy"] for r in metrics["rounds"]}


def logs_of(cluster: Cluster) -> str:
    return "".join(
        f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((cluster.dir / "logs").glob("*.log"))
    )


def group_members(pgids: Iterable[int]) -> list[int]:
    """Live processes in one of the process groups ``pgids`` (never this pytest's own group).

    ``local-cluster.sh up`` makes each daemon the leader of its own group (PGID = its PID),
    which its flower-superexec and ClientApps join; what is left there after ``down``
    escaped it.
    """
    wanted = set(pgids) - {os.getpgrp()}
    table = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True).stdout
    return [
        int(pid)
        for pid, pgid, stat in (line.split()[:3] for line in table.splitlines() if line.strip())
        if int(pgid) in wanted and not stat.startswith("Z")
    ]
