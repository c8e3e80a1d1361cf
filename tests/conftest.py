"""Shared fixtures: Flower message helpers and a real local SuperLink owned by PID."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, Metadata, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

# Process helpers live in harness/ (bench/ and scripts/ use them too); re-exported for tests.
from harness.processes import (  # noqa: F401
    BIN,
    REPO,
    LocalFlower,
    descendants,
    free_port,
    group_alive,
    process_groups,
    start_local_flower,
    stop_process_tree,
    write_flower_config,
)

#: Test tiers by folder (pyproject's ``addopts`` deselects every tier but the fast one; README
#: "Test" shows the command that runs them all). A test elsewhere that is too slow for the fast
#: tier carries ``@pytest.mark.slow`` itself.
TIER_BY_FOLDER = {"e2e": "e2e", "deploy": "deploy", "bench": "bench"}
TESTS = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test under ``tests/<folder>/`` with its folder's tier."""
    for item in items:
        parts = item.path.relative_to(TESTS).parts if item.path.is_relative_to(TESTS) else ()
        if len(parts) > 1 and parts[0] in TIER_BY_FOLDER:
            item.add_marker(TIER_BY_FOLDER[parts[0]])


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


#: DP settings of the in-process runs that combine DP with other features (tests/server_app/):
#: every node sampled (fixed size, rate 1), small noise, weights capped at 1.
DP_RUN_CONFIG = {
    "dp-sampling": "fixed-size",
    "dp-sampling-rate": 1.0,
    "dp-noise-multiplier": 0.1,
    "dp-clip-norm": 5.0,
    "dp-weight-cap": 1.0,
    "dp-delta": 1e-3,
}

#: The error reason a synchronous test double gives a message it did not answer.
NOT_ANSWERED = "no reply (the test grid's node did not answer)"


class SyncGrid:
    """A test double's ``push_messages`` / ``pull_messages`` over its ``send_and_receive``.

    The round driver pushes and pulls (``strategies.core.deadline.send_and_receive_within``);
    a test double answers synchronously in ``send_and_receive``, so a push delivers at once
    and the next pull returns every reply. A message it did not answer gets the error reply
    a SuperLink gives a message nobody answered before its TTL (else the driver would wait
    out the round's timeout for it). ``calls`` counts the Grid calls by name.
    """

    def __init__(self) -> None:
        self.pending: list[Message] = []
        self.calls: dict[str, int] = {}

    def count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def send_and_receive(self, messages, timeout: float | None = None) -> list[Message]:  # noqa: ANN001
        return []

    def push_messages(self, messages) -> list[str]:  # noqa: ANN001
        self.count("push_messages")
        messages = push(list(messages))
        replies = list(self.send_and_receive(messages))
        answered = {r.metadata.reply_to_message_id for r in replies}
        replies += [
            Message(Error(code=0, reason=NOT_ANSWERED), reply_to=m)
            for m in messages
            if m.metadata.message_id not in answered
        ]
        self.pending.extend(replies)
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, message_ids) -> list[Message]:  # noqa: ANN001
        self.count("pull_messages")
        replies, self.pending = self.pending, []
        return replies


class AppGrid(SyncGrid):
    """A Grid that delivers each message to the real ClientApp in this process.

    One ``Context`` per node (partition ``i`` of ``num_nodes``, state kept across
    rounds, ``run_config`` as Flower passes it), so the ServerApp's ``main`` and any
    strategy run here exactly the code they run under Flower, minus the transport. A
    ClientApp exception becomes an error reply, as Flower's runtime makes it.
    ``before_send(message)`` may raise to simulate the server dying mid-round.
    """

    _next_run_id = 10_000

    def __init__(self, num_nodes: int, run_config: dict | None = None, before_send=None) -> None:  # noqa: ANN001
        super().__init__()
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

        messages = list(messages)
        push([m for m in messages if not m.metadata.message_id])  # called directly: ids as a Grid gives
        replies = []
        for msg in messages:
            if self.before_send is not None:
                self.before_send(msg)
            self.sent.append(msg)
            try:
                replies.append(client_app(msg, self.contexts[msg.metadata.dst_node_id]))
            except Exception as exc:  # what Flower's runtime does with a ClientApp exception
                replies.append(Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg))
        return replies


class FakeGrid(SyncGrid):
    """Node discovery, for strategy unit tests; messages are inspected, not sent (no replies).

    A subclass answers messages by overriding ``send_and_receive`` (see :class:`SyncGrid`).
    """

    def __init__(self, node_ids: list[int]) -> None:
        super().__init__()
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


def config_record(**kwargs: object) -> ConfigRecord:
    return ConfigRecord({k.replace("_", "-"): v for k, v in kwargs.items()})  # type: ignore[arg-type]


# ------------------------------------------------------------------ real processes
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


@pytest.fixture(scope="session")
def local_flower(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFlower]:
    """One simulation SuperLink (10 virtual SuperNodes) for the session's e2e tests."""
    flower = start_local_flower(tmp_path_factory.mktemp("flwr-home"), num_supernodes=10)
    try:
        yield flower
    finally:
        stop_process_tree(flower.pid)
