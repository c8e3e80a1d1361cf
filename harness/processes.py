"""Local Flower processes owned by PID: a simulation SuperLink, and clean process-tree teardown.

Shared by the test suite, the benchmarks (``bench/``) and ``scripts/``: each starts
Flower's own ``flower-superlink`` with an isolated ``FLWR_HOME`` and free ports, keeps its
PID, and stops every process group below it (the SuperLink starts ``flower-superexec``
in a new session, which runs the simulation and Ray there), never by process name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalFlower:
    """An isolated FLWR_HOME and a simulation SuperLink this test session started."""

    home: Path
    env: dict[str, str]
    pid: int

    def run(self, *args: str, timeout: float = 420, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
        """``flwr run . local <args> --stream``; stdout and stderr together."""
        return subprocess.run(
            [str(BIN / "flwr"), "run", ".", "local", "--stream", *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def write_flower_config(home: Path, num_supernodes: int) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
        f"options.num-supernodes = {num_supernodes}\n"
        "options.backend.client-resources.num-cpus = 1\n"
    )


def start_local_flower(home: Path, num_supernodes: int) -> LocalFlower:
    """Start the same simulation SuperLink ``flwr run`` would, but keep its PID.

    ``flwr run`` with a ``:local:`` connection finds it on the ports below and uses
    it instead of spawning an untracked one.
    """
    write_flower_config(home, num_supernodes)
    http_port, control_port = free_port(), free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    log = home / "superlink.log"
    proc = subprocess.Popen(
        [
            str(BIN / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--control-api-address",
            f"127.0.0.1:{control_port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(http_port),
            "--database",
            str(home / "state.db"),
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown ends its children too
    )
    deadline = time.monotonic() + 60
    import httpx

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=0.5).is_success:
                return LocalFlower(home, env, proc.pid)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_process_tree(proc.pid)
    raise RuntimeError("flower-superlink did not become healthy within 60 s")


def _process_table() -> list[tuple[int, int, int, str]]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        pid, ppid, pgid, stat = line.split()[:4]
        rows.append((int(pid), int(ppid), int(pgid), stat))
    return rows


def process_groups(pid: int) -> set[int]:
    """Process groups of ``pid`` and all its descendants.

    The SuperLink starts ``flower-superexec`` in a new session, which runs the
    simulation and Ray in that session: killing only the SuperLink's group would leave
    them running.
    """
    tree = {pid, *descendants(pid)}
    return {pgid for p, _, pgid, _ in _process_table() if p in tree} | {pid}


def descendants(root: int) -> list[int]:
    """Every process below ``root`` in the process tree (children first)."""
    table = _process_table()
    tree: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for child, ppid, _, _ in table:
            if ppid == parent and child not in tree:
                tree.append(child)
                frontier.append(child)
    return tree


def stop_process_tree(pid: int, timeout: float = 20) -> None:
    """SIGTERM every process group under ``pid`` (its own first), then SIGKILL what is left."""
    groups = process_groups(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(group_alive(g) for g in groups):
            time.sleep(0.2)
        if not any(group_alive(g) for g in groups):
            return


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process of group ``pgid`` exists."""
    return any(g == pgid and not stat.startswith("Z") for _, _, g, stat in _process_table())
