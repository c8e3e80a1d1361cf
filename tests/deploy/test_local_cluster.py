"""Real Flower processes on loopback, driven through deploy/local-cluster.sh.

Each cluster comes from the ``make_cluster`` fixture (tests/deploy/conftest.py), which
stops it with ``local-cluster.sh down`` and checks every PID it recorded, every member of
its daemons' process groups and every process a test started itself dead or killed
afterwards. Assertions read the run's ``metrics.json`` and Flower's own ``flwr ls`` /
``flwr supernode list`` JSON, not only exit codes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy.cluster import (
    BIN,
    DEPLOY,
    FAST,
    REPO,
    RUN_TIMEOUT,
    Cluster,
    central_accuracy,
    group_members,
    logs_of,
    read_metrics,
    run_id_of,
    wait_dead,
)

pytestmark = pytest.mark.deploy


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


# ------------------------------------------------------------ down after a crash
def test_down_ends_a_clientapp_its_killed_supernode_left_behind(make_cluster) -> None:  # noqa: ANN001
    # Prepare: a real ClientApp in the SuperNode's process group, where its superexec starts
    # them, whose Runtime API is gone. Flower's HTTP retry has no limit, and one that was
    # starting up as its SuperNode died has no parent left to watch: it retries forever.
    cluster = make_cluster(nodes=1)
    node = cluster.pids()["node-0"]
    log = cluster.dir / "stranded-clientapp.log"
    stranded = subprocess.Popen(
        [
            str(BIN / "flwr-clientapp"),
            "--runtime-api-address",
            f"127.0.0.1:{cluster.port + 12}",  # in the cluster's free port block, never bound
            "--token",
            "stranded",
            "--insecure",
        ],
        env=cluster.env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        process_group=node,
    )
    cluster.started.append(stranded)  # stopped by the fixture if this test fails
    os.kill(node, signal.SIGKILL)
    time.sleep(5)
    assert stranded.poll() is None, log.read_text()

    # Execute
    down = cluster.script("down")

    # Assert: `down` ended the node's whole process group, the stranded ClientApp with it.
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"node-0 (pid {node}) is not running" in down.stdout
    stranded.wait(timeout=5)  # raises TimeoutExpired if `down` left it running
    assert not group_members([node])


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
