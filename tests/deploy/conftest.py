"""Fixtures shared by the deployment tests (the ``deploy`` tier: pyproject.toml, tests/conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
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
