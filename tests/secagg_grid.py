"""A Grid that runs the real SecAgg+ client mod around a fake train step with known updates.

Every node's message goes through :func:`client_app.secagg.secagg_mod` (the code a device
runs) with its own ``Context``; the "training" behind it returns ``global + Δ_k`` with
``n_k`` examples and train loss ``loss_k`` chosen by the test, so the exact plain
aggregate is known. A test can drop a node at a stage (no reply, as a lost device),
rewrite a reply (a malformed or malicious one) and read every reply the server received.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from client_app.secagg import secagg_mod
from strategies.core.records import from_layers, to_layers
from tasks import wire
from tests.conftest import push

#: The model: two float layers and an integer buffer (BatchNorm's counter kind).
NAMES = ["w", "b", "count"]


def global_model(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(4, 3)).astype(np.float32),
        rng.normal(size=3).astype(np.float32),
        np.array(7, dtype=np.int64),
    ]


@dataclass
class Client:
    """What one node's fake training returns: its update of the float layers, n_k and its loss."""

    delta: list[np.ndarray]
    num_examples: int
    train_loss: float


def make_clients(num: int, *, seed: int = 1, scale: float = 0.1) -> dict[int, Client]:
    rng = np.random.default_rng(seed)
    return {
        1_000_003 * (i + 1): Client(
            [rng.normal(scale=scale, size=(4, 3)), rng.normal(scale=scale, size=3)],
            int(rng.integers(10, 200)),
            float(rng.uniform(0.5, 2.5)),
        )
        for i in range(num)
    }


Tamper = Callable[[str, int, Message], Message]


@dataclass
class ProtocolGrid:
    """Delivers messages to ``secagg_mod`` around ``inner`` (default: the fake training)."""

    clients: dict[int, Client]
    drop: dict[str, set[int]] = field(default_factory=dict)
    tamper: Tamper | None = None
    inner: Callable[[Message, Context], Message] | None = None
    received: list[Message] = field(default_factory=list)
    contexts: dict[int, Context] = field(init=False)

    def __post_init__(self) -> None:
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})
            for node in self.clients
        }

    def get_node_ids(self) -> list[int]:
        return list(self.clients)

    def train(self, msg: Message, context: Context) -> Message:
        """The fake train handler: ``global + Δ_k`` for the float layers, buffers unchanged."""
        client = self.clients[int(msg.metadata.dst_node_id)]
        record = msg.content.array_records[wire.ARRAYS]
        names = list(record.keys())
        layers = to_layers(record)
        deltas = iter(client.delta)
        local = [
            (np.asarray(g, np.float64) + next(deltas)).astype(g.dtype) if g.dtype.kind == "f" else np.array(g)
            for g in layers
        ]
        content = RecordDict(
            {
                wire.ARRAYS: from_layers(names, local),
                wire.METRICS: MetricRecord(
                    {wire.NUM_EXAMPLES: client.num_examples, wire.TRAIN_LOSS: client.train_loss}
                ),
            }
        )
        return Message(content=content, reply_to=msg)

    def send_and_receive(self, messages, timeout: float | None = None) -> list[Message]:  # noqa: ANN001
        replies = []
        for msg in push(list(messages)):
            node = int(msg.metadata.dst_node_id)
            stage = str(msg.content.config_records[wire.SECAGG_CONFIGS][wire.SECAGG_STAGE])
            if node in self.drop.get(stage, set()):
                continue  # a lost device: no reply at all
            try:
                reply = secagg_mod(msg, self.contexts[node], self.inner or self.train)
            except Exception as exc:  # what Flower's runtime does with a ClientApp exception
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            if self.tamper is not None:
                reply = self.tamper(stage, node, reply)
            replies.append(reply)
        self.received.extend(replies)
        return replies


def global_record(seed: int = 0) -> ArrayRecord:
    return from_layers(NAMES, global_model(seed))


def train_config() -> ConfigRecord:
    return ConfigRecord({wire.LEARNING_RATE: 0.1})


def local_models(clients: dict[int, Client], seed: int = 0) -> dict[int, list[np.ndarray]]:
    """Each client's full local model, as the fake training produces it."""
    base = global_model(seed)
    return {
        node: [
            (np.asarray(base[0], np.float64) + c.delta[0]).astype(np.float32),
            (np.asarray(base[1], np.float64) + c.delta[1]).astype(np.float32),
            base[2],
        ]
        for node, c in clients.items()
    }
