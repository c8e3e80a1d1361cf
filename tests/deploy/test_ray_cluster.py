"""Simulation past one machine: Flower's Ray backend on an existing Ray cluster (docs/scaling.md).

A Ray head and a second Ray node start on loopback as separate processes (``ray start
--block``, each in its own process group, temp dir and ports, each with one CPU and its
own custom resource), a simulation SuperLink starts with ``RAY_ADDRESS`` pointing at
the head, and ``flwr run`` trains digits on 6 virtual nodes for 2 rounds with the
connection docs/scaling.md shows. Each train reply names the Ray node its ClientApp ran
on, and metrics.json counts them per round: both Ray nodes must appear. Everything
started is stopped by process group, and no Ray process of this test may survive
(``ray stop`` is never called: it would stop every Ray cluster on the machine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.processes import BIN, REPO, free_port, start_local_flower, stop_process_tree

DOC = REPO / "docs" / "scaling.md"
#: Ray needs at least 75 MiB of object store; the model and messages here are tiny.
OBJECT_STORE_BYTES = 100_000_000


@dataclass
class RayNode:
    """One ``ray start --block`` process (its own process group) and what it was given."""

    name: str
    proc: subprocess.Popen[bytes]
    temp_dir: Path
    log: Path


def _ray_env(temp_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {
        **env,
        "RAY_TMPDIR": str(temp_dir),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(REPO),  # the Ray workers import the ClientApp from this checkout
    }


def start_ray_node(name: str, *, head_port: int, head: bool, root: Path) -> RayNode:
    """``ray start`` (head or joining the head) with one CPU, a resource named after it, own ports."""
    temp_dir = root / name
    temp_dir.mkdir()
    log = root / f"{name}.log"
    cmd = [
        str(BIN / "ray"),
        "start",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        f'--resources={{"edgebloom-{name}": 1}}',
        f"--temp-dir={temp_dir}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--disable-usage-stats",
        # Explicit free ports: another Ray on this machine must not collide with this one.
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]
    if head:
        cmd += [
            "--head",
            f"--port={head_port}",
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
        ]
    else:
        cmd += [f"--address=127.0.0.1:{head_port}"]
    proc = subprocess.Popen(
        cmd,
        env=_ray_env(temp_dir),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: gcs_server, raylet and workers with it
    )
    return RayNode(name, proc, temp_dir, log)


def cluster_nodes(address: str, expected: int, timeout: float = 120) -> dict[str, dict[str, float]]:
    """Alive Ray node id → its resources, once ``expected`` nodes have joined (a driver asks the head)."""
    probe = (
        "import json, ray\n"
        f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
        "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))\n"
    )
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(
            [sys.executable, "-c", probe],
            env=_ray_env(Path(tempfile.gettempdir())),
            capture_output=True,
            text=True,
            timeout=120,
        )
        last = proc.stdout + proc.stderr
        if proc.returncode == 0:
            nodes = json.loads(proc.stdout.strip().splitlines()[-1])
            if len(nodes) >= expected:
                return nodes
        time.sleep(2)
    raise AssertionError(f"the Ray cluster at {address} did not reach {expected} nodes:\n{last[-3000:]}")


def ours_alive(marker: str) -> list[str]:
    """Command lines of live (non-zombie) processes whose command line names ``marker``."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            alive.append(cmdline[:200])
    return alive


def doc_connection() -> str:
    """The ``$FLWR_HOME/config.toml`` connection docs/scaling.md tells users to write."""
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.S)
    cluster = [b for b in blocks if "[superlink.ray-cluster]" in b]
    assert cluster, "docs/scaling.md lost its [superlink.ray-cluster] config.toml block"
    return cluster[0]


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, list[RayNode]]]:
    """A head and a second Ray node on loopback; stopped by process group afterwards."""
    # Short root: Ray's Unix socket paths under --temp-dir must stay below ~107 characters.
    root = Path(tempfile.mkdtemp(prefix="ebray-", dir="/tmp"))
    port = free_port()
    nodes: list[RayNode] = []
    try:
        nodes.append(start_ray_node("head", head_port=port, head=True, root=root))
        cluster_nodes(f"127.0.0.1:{port}", expected=1)
        nodes.append(start_ray_node("second", head_port=port, head=False, root=root))
        yield f"127.0.0.1:{port}", nodes
    finally:
        for node in reversed(nodes):
            stop_process_tree(node.proc.pid)
            node.proc.wait(timeout=30)
        survivors = ours_alive(str(root))
        shutil.rmtree(root, ignore_errors=True)
        # gcs_server, raylet, workers: each names the node's temp dir on its command line.
        assert not survivors, f"Ray processes of this test survived teardown: {survivors}"


def test_the_documented_connection_is_one_flower_parses() -> None:
    from flwr.cli.flower_config import parse_superlink_connection

    conn = tomllib.loads(doc_connection())["superlink"]["ray-cluster"]

    parsed = parse_superlink_connection(conn, "ray-cluster")

    assert parsed.options is not None and parsed.options.backend is not None
    backend = parsed.options.backend
    assert backend.client_resources is not None and backend.client_resources.num_cpus == 1
    # Ray refuses num-cpus/num-gpus when it joins an existing cluster: the doc must not set them.
    assert backend.init_args is None or (
        backend.init_args.num_cpus is None and backend.init_args.num_gpus is None
    )


def test_clientapp_workers_run_on_both_ray_nodes(
    ray_cluster: tuple[str, list[RayNode]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: both Ray nodes joined; a SuperLink whose simulation connects to the head
    address, nodes = ray_cluster
    ray_nodes = cluster_nodes(address, expected=2)
    by_resource = {
        name: nid for nid, res in ray_nodes.items() for name in res if name.startswith("edgebloom-")
    }
    assert set(by_resource) == {"edgebloom-head", "edgebloom-second"}, ray_nodes
    monkeypatch.setenv("RAY_ADDRESS", address)  # inherited by SuperExec and flwr-simulation
    flower = start_local_flower(tmp_path / "flwr-home", num_supernodes=6)
    try:
        # The connection exactly as docs/scaling.md writes it, with this test's 6 nodes.
        connection = re.sub(r"options\.num-supernodes = \d+", "options.num-supernodes = 6", doc_connection())
        (flower.home / "config.toml").write_text(connection)
        out = tmp_path / "outputs"
        run_config = (
            "num-server-rounds=2 local-epochs=1 min-available-nodes=6 fraction-train=1.0 "
            f"fraction-evaluate=0.0 threads-per-client=1 output-dir='{out}'"
        )

        # Execute
        proc = subprocess.run(
            [str(BIN / "flwr"), "run", ".", "ray-cluster", "--stream", "--run-config", run_config],
            cwd=REPO,
            env=flower.env,
            capture_output=True,
            text=True,
            timeout=420,
        )
    finally:
        stop_process_tree(flower.pid)

    # Assert: the run completed, and train replies came from ClientApp workers on both Ray nodes
    log = proc.stdout[-4000:] + proc.stderr[-2000:]
    metrics_files = list(out.glob("*/metrics.json"))
    assert proc.returncode == 0 and len(metrics_files) == 1, log
    metrics = json.loads(metrics_files[0].read_text())
    assert metrics["status"] == "completed", log
    rounds = [r for r in metrics["rounds"] if r["round"] > 0]
    assert [r["succeeded"] for r in rounds] == [6, 6], log
    workers: dict[str, int] = {}
    for r in rounds:
        for worker, count in r.get("workers", {}).items():
            workers[worker] = workers.get(worker, 0) + count
    assert set(workers) == {
        f"ray:{by_resource['edgebloom-head']}",
        f"ray:{by_resource['edgebloom-second']}",
    }, (
        workers,
        log,
    )
    assert sum(workers.values()) == 12
