"""Shared fixtures: Flower message helpers and a real local SuperLink owned by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, Metadata, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Messages built outside a Flower process need a task identity to exist."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def make_reply(
    src_node_id: int,
    arrays: dict[str, np.ndarray] | None = None,
    metrics: dict[str, float | int] | None = None,
    *,
    error: str | None = None,
    message_type: str = "train",
    extra: dict[str, object] | None = None,
    reply_to: str = "q",
) -> Message:
    """A reply as a strategy receives it from node ``src_node_id``, answering message ``reply_to``."""
    metadata = Metadata(
        run_id=1,
        message_id=f"m{src_node_id}",
        src_node_id=src_node_id,
        dst_node_id=0,
        reply_to_message_id=reply_to,
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    if error is not None:
        return Message(metadata=metadata, error=Error(code=0, reason=error))  # type: ignore[call-arg]
    content = RecordDict()
    if arrays is not None:
        content["arrays"] = ArrayRecord({k: _array(v) for k, v in arrays.items()})
    if metrics is not None:
        content["metrics"] = MetricRecord(metrics)
    for key, value in (extra or {}).items():
        content[key] = value  # type: ignore[assignment]
    return Message(metadata=metadata, content=content)  # type: ignore[call-arg]


def push(messages: list[Message]) -> list[Message]:
    """Give ``messages`` ids as a Grid does when it pushes them (Flower's InMemoryGrid: a uuid)."""
    for msg in messages:
        msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
    return messages


def _array(value: np.ndarray):  # noqa: ANN202
    from flwr.app import Array

    return Array(np.asarray(value))


class AppGrid:
    """A Grid that delivers each message to the real ClientApp in this process.

    One ``Context`` per node (partition ``i`` of ``num_nodes``, state kept across
    rounds, ``run_config`` as Flower passes it), so the ServerApp's ``main`` and any
    strategy run here exactly the code they run under Flower, minus the transport. A
    ClientApp exception becomes an error reply, as Flower's runtime makes it.
    ``before_send(message)`` may raise to simulate the server dying mid-round.
    """

    _next_run_id = 10_000

    def __init__(self, num_nodes: int, run_config: dict | None = None, before_send=None) -> None:  # noqa: ANN001
        AppGrid._next_run_id += 1
        self.run_id = AppGrid._next_run_id  # the ClientApp caches per run id
        # Messages built outside a Flower process need a task identity (also in module fixtures).
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.node_ids = [1_000_003 * (i + 1) for i in range(num_nodes)]
        self.contexts = {
            node: Context(
                run_id=self.run_id,
                node_id=node,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i, node in enumerate(self.node_ids)
        }
        self.before_send = before_send
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def send_and_receive(self, messages, timeout: float | None = None) -> list[Message]:  # noqa: ANN001
        from client_app.app import app as client_app

        replies = []
        for msg in push(list(messages)):
            if self.before_send is not None:
                self.before_send(msg)
            self.sent.append(msg)
            try:
                replies.append(client_app(msg, self.contexts[msg.metadata.dst_node_id]))
            except Exception as exc:  # what Flower's runtime does with a ClientApp exception
                replies.append(Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg))
        return replies


class FakeGrid:
    """Only node discovery, for strategy unit tests; messages are inspected, not sent."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


def config_record(**kwargs: object) -> ConfigRecord:
    return ConfigRecord({k.replace("_", "-"): v for k, v in kwargs.items()})  # type: ignore[arg-type]


# ------------------------------------------------------------------ real processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The train config a ServerApp sends for one local epoch of the digits CNN; the
#: client tests add or override keys (``{**DIGITS_TRAIN_CONFIG, "server-round": 3}``).
DIGITS_TRAIN_CONFIG: dict[str, int | float | str] = {
    "model": "digits-cnn",
    "num-classes": 10,
    "local-epochs": 1,
    "batch-size": 10,
    "learning-rate": 0.1,
    "momentum": 0.0,
    "weight-decay": 0.0,
    "server-round": 1,
}


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


@pytest.fixture(scope="session")
def local_flower(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFlower]:
    """One simulation SuperLink (10 virtual SuperNodes) for the session's e2e tests."""
    flower = start_local_flower(tmp_path_factory.mktemp("flwr-home"), num_supernodes=10)
    try:
        yield flower
    finally:
        stop_process_tree(flower.pid)
