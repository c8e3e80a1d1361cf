"""Fixtures shared by the deployment tests (the ``deploy`` tier: pyproject.toml, tests/conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy.cluster import (
    Cluster,
    flower_children,
    free_port_block,
    group_members,
    kill_pid,
    logs_of,
    pid_alive,
    processes_mentioning,
)

BIN = Path(sys.executable).parent


#: Programs a deploy test starts, itself or through Flower and Ray (matched by file name).
FLOWER_AND_RAY = frozenset(
    {
        "flower-superlink",
        "flower-supernode",
        "flower-superexec",
        "flwr-serverapp",
        "flwr-clientapp",
        "flwr-simulation",
        "raylet",
        "gcs_server",
    }
)
#: Set in this pytest's environment for the tier: every process it starts inherits it.
SESSION_MARK = "EDGEBLOOM_DEPLOY_TEST_SESSION"
#: Flower's apps exit a few seconds after their parent does (they poll for it): wait that long.
LEAK_GRACE_S = 20


def flower_and_ray_processes() -> dict[int, str]:
    """Live (not zombie) Flower and Ray processes on this machine: PID → command line."""
    table = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    found = {}
    for line in table.splitlines():
        pid, stat, args = [*line.split(None, 2), "", ""][:3]
        # `python .../bin/flwr-clientapp ...` or `.../ray/raylet/raylet ...`
        if not stat.startswith("Z") and any(Path(w).name in FLOWER_AND_RAY for w in args.split()[:2]):
            found[int(pid)] = args
    return found


def started_by_this_session(pid: int, mark: str) -> bool:
    """Whether ``pid`` inherited this session's mark (where there is no /proc: assume it did)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self/environ").exists()  # it exited, unless there is no /proc
    except PermissionError:
        return False  # another user's process
    return f"{SESSION_MARK}={mark}".encode() in environ.split(b"\0")


@pytest.fixture(scope="session", autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail the tier if a Flower or Ray process this pytest started outlives its tests.

    Session-scoped and autouse: set up before, and torn down after, every other fixture of
    the tier (each module's clusters included), so whatever is left then has no owner.
    Ignored: processes alive before the tier, and any without this session's mark in its
    environment (another pytest or a benchmark on the same machine). A leak is killed by
    PID, then reported.
    """
    before = set(flower_and_ray_processes())
    mark = uuid.uuid4().hex
    os.environ[SESSION_MARK] = mark
    try:
        yield
    finally:
        del os.environ[SESSION_MARK]
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        leaked = {
            pid: args
            for pid, args in flower_and_ray_processes().items()
            if pid not in before and started_by_this_session(pid, mark)
        }
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for pid in leaked:
        kill_pid(pid)
    if leaked:
        listing = "\n".join(f"  {pid}: {args[:300]}" for pid, args in leaked.items())
        pytest.fail(f"Flower/Ray processes the deploy tests started outlived them (killed now):\n{listing}")


def _tool_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        # The scripts find flower-superlink & co. (and the SuperLink finds
        # flower-superexec) on PATH: use the ones next to this interpreter.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_BIN_DIR": str(BIN),
        "PYTHON": sys.executable,
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@pytest.fixture(scope="session")
def tool_env() -> Callable[..., dict[str, str]]:
    """``tool_env(**extra)``: environment for the scripts and Flower CLIs, no network calls."""
    return _tool_env


@pytest.fixture(scope="session")
def cli_flags() -> Callable[..., frozenset[str]]:
    """``cli_flags("flwr", "run")``: every ``--flag`` the installed CLI's ``--help`` lists."""
    cache: dict[tuple[str, ...], frozenset[str]] = {}
    home = tempfile.mkdtemp(prefix="flwr-help-")

    def flags(*command: str) -> frozenset[str]:
        if command not in cache:
            proc = subprocess.run(
                [str(BIN / command[0]), *command[1:], "--help"],
                env=_tool_env(FLWR_HOME=home),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            cache[command] = frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", proc.stdout))
        return cache[command]

    return flags


# ------------------------------------------------------------------ local clusters
@pytest.fixture(scope="module")
def make_cluster(tmp_path_factory: pytest.TempPathFactory, tool_env) -> Iterator[Callable[..., Cluster]]:  # noqa: ANN001
    """``make_cluster(*up_flags, nodes=N)``: a cluster that is always stopped afterwards.

    Teardown stops what the tests started (by process group), runs ``down``, and fails if
    a process of the cluster survived it: a recorded PID, a Flower child found by
    ``--parent-pid``, anything naming the cluster's directory or SuperLink port, or a
    member of a daemon's process group.
    """
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
            cluster.stop_started()
            try:
                down = cluster.script("down", timeout=240)
                print(down.stdout, down.stderr)
            finally:
                # Anything still naming this cluster's directory or ports, or still in a
                # daemon's process group, escaped `down`.
                strays = processes_mentioning(str(cluster.dir), f"127.0.0.1:{cluster.port}")
                grouped = group_members(recorded)
                leftovers = [*recorded, *children, *flower_children(recorded), *strays, *grouped]
                survivors += strays + grouped
                for pid in leftovers:
                    kill_pid(pid)  # no-op unless `down` failed
                survivors += [pid for pid in leftovers if pid_alive(pid)]
        assert not survivors
