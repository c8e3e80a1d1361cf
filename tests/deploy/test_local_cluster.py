"""Real Flower processes on loopback, driven through deploy/local-cluster.sh.

Each cluster is stopped by ``local-cluster.sh down`` in its fixture's teardown, and
every PID it recorded (plus every process a test started itself) is checked dead or
killed afterwards. Assertions read the run's ``metrics.json`` and Flower's own
``flwr ls`` / ``flwr supernode list`` JSON, not only exit codes.
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy

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
        """Start a process owned by this test; teardown kills it by PID."""
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=self.dir
        )
        self.started.append(proc)
        return proc

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


@pytest.fixture(scope="module")
def make_cluster(tmp_path_factory: pytest.TempPathFactory, tool_env) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(*up_flags, nodes=N)``: a cluster that is always stopped afterwards."""
    clusters: list[Cluster] = []

    def make(*flags: str, nodes: int) -> Cluster:
        root = tmp_path_factory.mktemp("cluster")
        port = free_port_block(nodes + 12)
        cluster = Cluster(
            root, port, tool_env(FLWR_HOME=str(root / "flwr-home"), EDGEBLOOM_OUTPUT_ROOT=str(root))
        )
        clusters.append(cluster)
        up = cluster.script("up", "--nodes", str(nodes), "--port", str(port), *flags)
        assert up.returncode == 0, up.stdout + up.stderr + logs_of(cluster)
        return cluster

    try:
        yield make
    finally:
        survivors = []
        for cluster in clusters:
            recorded = list(cluster.pids().values())  # read before `down` removes the file
            children = flower_children(recorded)
            for proc in cluster.started:
                kill_pid(proc.pid)
                proc.wait(timeout=30)
            try:
                down = cluster.script("down", timeout=240)
                print(down.stdout, down.stderr)
            finally:
                # Anything still naming this cluster's directory or ports escaped the pids file.
                strays = processes_mentioning(str(cluster.dir), f"127.0.0.1:{cluster.port}")
                leftovers = [*recorded, *children, *flower_children(recorded), *strays]
                survivors += strays
                for pid in leftovers:
                    kill_pid(pid)  # no-op unless `down` failed
                survivors += [pid for pid in leftovers if pid_alive(pid)]
        assert not survivors


def logs_of(cluster: Cluster) -> str:
    return "".join(
        f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((cluster.dir / "logs").glob("*.log"))
    )


# ------------------------------------------------------------------ insecure
@pytest.fixture(scope="module")
def insecure_cluster(make_cluster) -> Cluster:
    return make_cluster(nodes=3)


def test_insecure_cluster_runs_three_rounds_and_accuracy_improves(insecure_cluster: Cluster) -> None:
    cluster = insecure_cluster
    status = cluster.script("status")
    assert status.returncode == 0, status.stdout
    assert set(cluster.pids()) == {"superlink", "node-0", "node-1", "node-2"}

    proc, metrics = cluster.run_app(cluster.dir / "out-a", "num-server-rounds=3 round-timeout=120")

    accuracy = central_accuracy(metrics)
    assert sorted(accuracy) == [0, 1, 2, 3]
    assert accuracy[3] > accuracy[0] + 0.1, accuracy
    assert all(r["succeeded"] == 3 and r["failed"] == 0 for r in metrics["rounds"] if r["round"] > 0)
    run = cluster.flwr_json("ls", "--run-id", str(run_id_of(proc)))["runs"][0]
    assert run["status"] == "finished:completed"
    # Each device trained on its own file; the ServerApp's per-node table names all three.
    for name in ("node-0", "node-1", "node-2"):
        assert str(cluster.node_id(name)) in proc.stdout


def test_killed_supernode_does_not_stall_the_run(insecure_cluster: Cluster) -> None:
    cluster = insecure_cluster
    victim = cluster.node_id("node-2")
    out = cluster.dir / "out-c"
    log = cluster.dir / "run-c.log"
    start = time.monotonic()
    run = cluster.popen(
        [
            str(BIN / "flwr"),
            "run",
            str(REPO),
            "local-cluster",
            "--stream",
            "--run-config",
            f"output-dir='{out}' {FAST} num-server-rounds=2 round-timeout=60",
        ],
        log,
    )

    # Kill node-2 once round 1 is under way (its ClientApp may be mid-training).
    deadline = time.monotonic() + 300
    while "[ROUND 1/2]" not in log.read_text() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.5)
    assert "[ROUND 1/2]" in log.read_text(), log.read_text()
    time.sleep(3)
    os.kill(cluster.pids()["node-2"], signal.SIGKILL)
    run.wait(timeout=RUN_TIMEOUT)
    elapsed = time.monotonic() - start

    text = log.read_text()
    metrics = read_metrics(out)
    rounds = {r["round"]: r for r in metrics["rounds"]}
    assert sorted(rounds) == [0, 1, 2], text
    assert victim in rounds[1]["failed_nodes"]
    assert rounds[1]["succeeded"] == 2 and rounds[2]["succeeded"] == 2
    assert str(victim) in text  # the log names the failed node
    # The end-of-run node table lists it, marked (lost once the SuperLink dropped it).
    assert re.search(rf"{victim}\s+(lost|failed) in round 1\b", text), text
    assert elapsed < 400
    status = cluster.script("status")
    assert status.returncode == 3 and re.search(r"node-2 .* stopped", status.stdout)


# ------------------------------------------------------------- TLS + node auth
@pytest.fixture(scope="module")
def tls_cluster(make_cluster) -> Cluster:
    return make_cluster("--auth", "--database", nodes=2)


@pytest.fixture(scope="module")
def tls_run(tls_cluster: Cluster) -> tuple[int, dict]:
    proc, metrics = tls_cluster.run_app(tls_cluster.dir / "out-b", "num-server-rounds=3 round-timeout=120")
    return run_id_of(proc), metrics


def test_tls_auth_cluster_runs_with_registered_nodes_only(
    tls_cluster: Cluster, tls_run: tuple[int, dict]
) -> None:
    cluster = tls_cluster
    config = (cluster.dir / "flwr-home" / "config.toml").read_text()
    assert "root-certificates" in config and "insecure" not in config
    run_id, metrics = tls_run

    accuracy = central_accuracy(metrics)
    assert accuracy[3] > accuracy[0] + 0.1, accuracy
    assert all(r["sampled"] == 2 and r["succeeded"] == 2 for r in metrics["rounds"] if r["round"] > 0)
    assert cluster.flwr_json("ls", "--run-id", str(run_id))["runs"][0]["status"] == "finished:completed"


def test_supernode_with_unregistered_key_is_refused(tls_cluster: Cluster) -> None:
    cluster = tls_cluster
    gen = subprocess.run(
        [str(DEPLOY / "gen-certs.sh"), "--out", str(cluster.dir / "certs"), "--node", "intruder"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gen.returncode == 0, gen.stderr
    before = {n["node-id"] for n in cluster.flwr_json("supernode", "list")["nodes"]}

    intruder = cluster.popen(
        [
            str(DEPLOY / "start-supernode.sh"),
            "--superlink",
            f"127.0.0.1:{cluster.port}",
            "--ca",
            str(cluster.dir / "certs" / "ca.crt"),
            "--auth-key",
            str(cluster.dir / "certs" / "nodes" / "intruder.key"),
            "--data-path",
            str(cluster.dir / "data" / "partition-0.npz"),
            "--port",
            str(cluster.port + 10),
        ],
        cluster.dir / "intruder.log",
    )
    code = intruder.wait(timeout=90)

    log = (cluster.dir / "intruder.log").read_text()
    assert code != 0
    assert "Failed to activate SuperNode" in log
    assert "SuperNode ID" not in log  # it never got a node ID, so no message can name it
    after = {n["node-id"] for n in cluster.flwr_json("supernode", "list")["nodes"]}
    assert after == before and len(after) == 2


def test_clients_without_the_ca_certificate_cannot_connect(tls_cluster: Cluster, tmp_path: Path) -> None:
    cluster = tls_cluster
    key = cluster.dir / "certs" / "nodes" / "node-0.key"
    no_ca = cluster.popen(
        [
            str(BIN / "flower-supernode"),
            "--superlink",
            f"127.0.0.1:{cluster.port}",
            "--auth-supernode-private-key",
            str(key),
            "--port",
            str(cluster.port + 11),
            "--max-retries",
            "1",
            "--max-wait-time",
            "20",
        ],
        cluster.dir / "no-ca.log",
    )
    code = no_ca.wait(timeout=90)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "no-ca"\n\n[superlink.no-ca]\naddress = "127.0.0.1:{cluster.port}"\n'
    )
    cli = subprocess.run(
        [str(BIN / "flwr"), "ls", "no-ca"],
        env={**cluster.env, "FLWR_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert code != 0
    assert "CERTIFICATE_VERIFY_FAILED" in (cluster.dir / "no-ca.log").read_text()
    assert cli.returncode != 0
    assert "run-id" not in cli.stdout.lower()


def test_restarted_superlink_keeps_registered_nodes_and_finished_runs(
    tls_cluster: Cluster, tls_run: tuple[int, dict]
) -> None:
    cluster = tls_cluster
    run_id, _ = tls_run
    nodes_before = {n["node-id"] for n in cluster.flwr_json("supernode", "list")["nodes"]}
    old = cluster.pids()["superlink"]
    nodes_pids = {k: v for k, v in cluster.pids().items() if k != "superlink"}
    assert set(nodes_pids) == {"node-0", "node-1"}

    os.kill(old, signal.SIGTERM)
    assert wait_dead(old, 30)
    # `up` starts only what is not running: here, the SuperLink on the same database;
    # it returns once both SuperNodes are online again.
    up = cluster.script("up")

    assert up.returncode == 0, up.stdout + up.stderr + logs_of(cluster)
    assert "skipped    node-0: already registered" in up.stdout
    pids = cluster.pids()
    assert pids["superlink"] != old
    assert {k: v for k, v in pids.items() if k != "superlink"} == nodes_pids  # nodes kept running
    nodes_after = {n["node-id"]: n["status"] for n in cluster.flwr_json("supernode", "list")["nodes"]}
    assert set(nodes_after) == nodes_before
    assert set(nodes_after.values()) == {"online"}
    runs = {int(r["run-id"]): r["status"] for r in cluster.flwr_json("ls")["runs"]}
    assert runs[run_id] == "finished:completed"
