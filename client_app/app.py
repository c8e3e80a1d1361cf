"""The ClientApp: Message-API handlers around the ``TorchClient`` NumPyClient, plus mods.

Flower's Message-API strategies send an ``ArrayRecord`` under ``arrays`` and a
``ConfigRecord`` under ``config``; a bare NumPyClient cannot read those. The
``@app.train()`` / ``@app.evaluate()`` handlers below convert records to NumPy (in the
model's state_dict order), call ``fit`` / ``evaluate``, and reply with the arrays,
a ``MetricRecord`` that carries ``num-examples`` (training examples), and a small
``info`` record (device kind) for the server's per-node table.

Cross-cutting steps are Flower mods around the train handler (:data:`TRAIN_MODS`,
outermost first); each acts only when the server's train config asks for it. Outermost
of all, :func:`harness.dropout.dropout_mod` makes a simulated node lost after SecAgg+ key
sharing stop answering (``secagg-drop-after-share-keys``; simulation only): it must see
each secure-aggregation stage before the secure-aggregation mod answers it. Then:

0. :func:`client_app.secagg.secagg_mod`: SecAgg+ stage messages (``secure-aggregation``)
   are answered here; at the masked-vector stage the rest of the chain trains and this
   mod masks the (clipped) update, so no update leaves the node unmasked;
1. :func:`client_app.compression.compression_mod`: the reply's model becomes its
   compressed update (``compression``), the top-k residual kept in ``context.state``;
2. :func:`harness.client_attack.attack_mod`: a simulated attacker replaces its update
   (``attack``; simulation only);
3. :func:`client_app.dp.dp_clipping_mod`: the node clips its own update (``dp-clip-norm``);
4. :func:`harness.slowdown.slowdown_mod`: a simulated slow device sleeps after training
   (``device-slowdown``; simulation only).

A reply passes through them innermost first, so the handler's model is slowed down,
then clipped, then attacked, then compressed (or, under secure aggregation, masked):
the order the train handler applied them in before they became mods. The mods are per
handler (``@app.train(mods=...)``): evaluation replies carry no model to transform.

Where settings come from: every algorithm parameter (local epochs, batch size, learning
rate, momentum, weight decay, proximal-mu, DP clipping and DP-SGD, attacks, slow-down,
compression) is read from the server's message, never from this app's run config, so a
client whose run config disagrees still does what the server asked. The run config only
sets up the node's data and process: dataset, partitioner and the seed of its splits and
of local shuffling, val-fraction, device and threads-per-client.

Fused evaluation: a train config with ``fused-evaluate`` asks the node to evaluate the
received model on its held-out data before training; the train reply's metrics then
carry ``fused-eval-loss``, ``fused-eval-accuracy`` and ``fused-eval-num-examples`` too
(``strategies/core/fused.py`` on the server), and no evaluate message comes.

Data: a deployed SuperNode passes ``--node-config "data-path='/path/file.npz'"`` and
trains on its own file whole; in simulation each virtual node gets partition
``partition-id`` of ``num-partitions`` of the configured dataset.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client_app.cache import LRUCache
from client_app.client import TorchClient
from client_app.compression import compression_mod
from client_app.dp import DPSGDSettings, dp_clipping_mod, make_client
from client_app.secagg import secagg_mod
from harness.client_attack import AttackSettings, attack_mod, flips_labels, poison_data
from harness.dropout import dropout_mod
from harness.ray_worker import ray_worker
from harness.slowdown import slowdown_mod
from strategies.core.records import from_layers, to_layers
from tasks import wire
from tasks.config import AppConfig
from tasks.data import DatasetError
from tasks.loading import ClientData, client_data, device_file_data
from tasks.models import build_model
from tasks.train import device_kind, pick_device

#: The train handler's mods, outermost first (see the module docstring for the order).
TRAIN_MODS: list[Mod] = [
    dropout_mod,
    secagg_mod,
    compression_mod,
    attack_mod,
    dp_clipping_mod,
    slowdown_mod,
]

app = ClientApp()

#: Runs whose data and models a process keeps. A simulation worker (or a deployed node's
#: app process) outlives runs and is never told that one ended; it serves one run at a
#: time, and a second slot covers the last replies of one run overlapping the next.
MAX_RUNS = 2
#: Nodes per run whose data and client a process keeps. A simulation worker serves many
#: virtual nodes, one at a time, and keeps the recently served ones so that a node's
#: evaluate (and its next round) does not gather its data again; a worker with more nodes
#: than this rebuilds the least recently used one's (its per-node state is in
#: ``context.state``, so nothing is lost). A constant, not a share of the population: with
#: 10,000 virtual nodes a worker holds at most this many nodes' examples (gathering them
#: again is cheap: the dataset and the model stay cached per run).
MAX_NODES_PER_RUN = 256


@dataclass(frozen=True)
class Training:
    """How the server's train message asks this node to train (what the client is built for).

    Parameters
    ----------
    flip_labels : bool
        The node is a simulated label-flip attacker.
    dp_sgd : DPSGDSettings or None
        Sample-level DP-SGD, or ``None``.
    """

    flip_labels: bool = False
    dp_sgd: DPSGDSettings | None = None

    @classmethod
    def from_message(cls, config: Mapping[str, Any], node_config: Mapping[str, Any]) -> Training:
        """Read from the train config (and the node's partition, for attacks)."""
        attack = AttackSettings.from_config(config)
        return cls(flips_labels(attack, node_config), DPSGDSettings.from_config(config))


@dataclass
class _Node:
    """What a process keeps for one node of a run: its data and a client built for ``training``."""

    data: ClientData  # honest data; a label-flip client trains on a poisoned copy
    num_classes: int
    model: torch.nn.Module
    device: torch.device
    seed: int
    training: Training
    names: list[str] = field(init=False)
    client: TorchClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = self._make_client()
        self.names = list(self.client.model.state_dict().keys())

    def train_as(self, training: Training) -> None:
        """Rebuild the client if the server asks for another kind of training (not the data)."""
        if training != self.training:
            self.training = training
            self.client = self._make_client()

    def _make_client(self) -> TorchClient:
        data = poison_data(self.data, self.num_classes) if self.training.flip_labels else self.data
        return make_client(self.training.dp_sgd, self.model, data, self.device, self.seed)


@dataclass
class _Run:
    """What a process keeps for one run."""

    config: AppConfig
    # One model object per architecture, shared by the run's virtual nodes: they run one
    # at a time and every call first overwrites all parameters and buffers with the
    # received global model. A model per node would hold 1000 copies of the weights (and
    # their gradients) in each worker with 1000 virtual nodes.
    models: dict[tuple, torch.nn.Module] = field(default_factory=dict)
    nodes: LRUCache[tuple, _Node] = field(default_factory=lambda: LRUCache(MAX_NODES_PER_RUN))


_RUNS: LRUCache[int, _Run] = LRUCache(MAX_RUNS)


def clear_caches() -> None:
    """Forget every run's data and models, as a fresh ClientApp process starts."""
    _RUNS.clear()


def _run(context: Context) -> _Run:
    return _RUNS.get_or_create(context.run_id, lambda: _Run(AppConfig.from_run_config(context.run_config)))


def _data_source(node_config: Mapping[str, Any]) -> tuple[Any, ...]:
    data_path = str(node_config.get(wire.DATA_PATH, "") or "")
    if data_path:
        return ("file", data_path)
    if wire.PARTITION_ID in node_config and wire.NUM_PARTITIONS in node_config:
        return ("partition", int(node_config[wire.PARTITION_ID]), int(node_config[wire.NUM_PARTITIONS]))
    raise DatasetError(
        "this SuperNode has no data: start it with --node-config \"data-path='/path/file.npz'\" "
        "(deployment) or run in the simulation engine (partition-id/num-partitions)"
    )


def _node(context: Context, config: Mapping[str, Any], training: Training | None) -> _Node:
    """The node's cached data and client, built for ``training`` (``None``: any, for evaluation)."""
    run = _run(context)
    cfg = run.config
    model_name, num_classes = str(config[wire.MODEL]), int(config[wire.NUM_CLASSES])
    source = _data_source(context.node_config)

    def load() -> _Node:
        if cfg.threads_per_client > 0:
            torch.set_num_threads(cfg.threads_per_client)
        data = device_file_data(source[1]) if source[0] == "file" else client_data(cfg, source[1], source[2])
        shape = tuple(data.x_train.shape[1:])
        model_key = (model_name, shape, num_classes)
        if model_key not in run.models:
            run.models[model_key] = build_model(model_name, shape, num_classes)
        seed = cfg.seed + (source[1] if source[0] == "partition" else 0)
        device = pick_device(cfg.device)
        return _Node(data, num_classes, run.models[model_key], device, seed, training or Training())

    node = run.nodes.get_or_create((source, model_name, num_classes), load)
    if training is not None:
        # e.g. evaluation came first and built a plain client: rebuild it, keep the data.
        node.train_as(training)
    return node


@app.train(mods=TRAIN_MODS)
def train(msg: Message, context: Context) -> Message:
    """Train the NumPyClient on the received global model; reply with the new one."""
    began = time.perf_counter()
    config = msg.content.config_records[wire.CONFIG]
    node = _node(context, config, Training.from_message(config, context.node_config))
    params = to_layers(msg.content.array_records[wire.ARRAYS], node.names)
    # Fused evaluation: the received model (the previous round's) on the held-out data,
    # before training changes the model's weights; one round trip does both.
    fused = fused_evaluation(node.client, params, config) if config.get(wire.FUSED_EVALUATE) else {}
    # A DP-SGD node's privacy history lives in context.state, not in this process's cache.
    new_params, num_examples, metrics = node.client.fit_on_node(params, dict(config), context.state)
    reply = RecordDict(
        {
            wire.ARRAYS: from_layers(node.names, new_params),
            wire.METRICS: MetricRecord(
                {
                    **metrics,
                    **fused,
                    wire.NUM_EXAMPLES: num_examples,
                    wire.HANDLER_SECONDS: time.perf_counter() - began,
                }
            ),
            wire.INFO: ConfigRecord({wire.DEVICE: device_kind(node.device), **_worker_info()}),
        }
    )
    return Message(content=reply, reply_to=msg)


def fused_evaluation(client: TorchClient, params: list, config: Mapping[str, Any]) -> dict[str, Any]:
    """The fused-evaluation metrics of ``params`` on the client's held-out data (reply keys)."""
    loss, num_examples, metrics = client.evaluate(params, dict(config))
    fused: dict[str, Any] = {wire.FUSED_LOSS: loss, wire.FUSED_NUM_EXAMPLES: num_examples}
    if wire.ACCURACY in metrics:
        fused[wire.FUSED_ACCURACY] = metrics[wire.ACCURACY]
    return fused


def _worker_info() -> dict[str, str]:
    """``{WORKER: "ray:<node id>"}`` on Flower's Ray backend (docs/scaling.md), else nothing."""
    worker = ray_worker()
    return {} if worker is None else {wire.WORKER: worker}


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the node's held-out data."""
    began = time.perf_counter()
    config = msg.content.config_records[wire.CONFIG]
    # Any client of the node will do: every kind evaluates the same model on the same
    # honest held-out data (label flipping touches training labels only).
    node = _node(context, config, None)
    params = to_layers(msg.content.array_records[wire.ARRAYS], node.names)
    loss, num_examples, metrics = node.client.evaluate(params, dict(config))
    reply = RecordDict(
        {
            wire.METRICS: MetricRecord(
                {
                    wire.LOSS: loss,
                    **metrics,
                    wire.NUM_EXAMPLES: num_examples,
                    wire.HANDLER_SECONDS: time.perf_counter() - began,
                }
            )
        }
    )
    return Message(content=reply, reply_to=msg)
