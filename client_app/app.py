"""The ClientApp: Message-API handlers around the ``TorchClient`` NumPyClient.

Flower's Message-API strategies send an ``ArrayRecord`` under ``arrays`` and a
``ConfigRecord`` under ``config``; a bare NumPyClient cannot read those. The
``@app.train()`` / ``@app.evaluate()`` handlers below convert records to NumPy (in the
model's state_dict order), call ``fit`` / ``evaluate``, and reply with the arrays,
a ``MetricRecord`` that carries ``num-examples`` (training examples), and a small
``info`` record (device kind) for the server's per-node table.

Data: a deployed SuperNode passes ``--node-config "data-path='/path/file.npz'"`` and
trains on its own file whole; in simulation each virtual node gets partition
``partition-id`` of ``num-partitions`` of the configured dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client_app.client import TorchClient
from client_app.compression import reply_arrays
from client_app.dp import CLIP_NORM_KEY, UNCLIPPED_KEY, clip_own_update, fit_client, make_client
from harness.client_attack import attack_info, is_attacker, poison_data, poison_update
from harness.slowdown import slow_down
from strategies.core.records import (
    ARRAYS_KEY,
    CONFIG_KEY,
    INFO_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    to_layers,
)
from tasks.config import AppConfig
from tasks.data import DatasetError
from tasks.loading import client_data, device_file_data
from tasks.models import build_model
from tasks.train import device_kind, pick_device

app = ClientApp()


@dataclass
class _Cached:
    client: TorchClient
    names: list[str]
    device: str


# One entry per (run, data source, model): a simulation worker serves many virtual
# nodes, and each should load its data and build its model once, not per message.
_CACHE: dict[tuple, _Cached] = {}
_CONFIGS: dict[int, AppConfig] = {}


def _config(context: Context) -> AppConfig:
    if context.run_id not in _CONFIGS:
        _CONFIGS[context.run_id] = AppConfig.from_run_config(context.run_config)
    return _CONFIGS[context.run_id]


# One model object per (run, architecture) in a worker, shared by its virtual nodes: they
# run one at a time and every call first overwrites all parameters and buffers with the
# received global model. A model per node would hold 1000 copies of the weights (and
# their gradients) in each worker with 1000 virtual nodes.
_MODELS: dict[tuple, torch.nn.Module] = {}


def _shared_model(
    run_id: int, model_name: str, input_shape: tuple[int, ...], num_classes: int
) -> torch.nn.Module:
    key = (run_id, model_name, input_shape, num_classes)
    if key not in _MODELS:
        _MODELS[key] = build_model(model_name, input_shape, num_classes)
    return _MODELS[key]


def _client(context: Context, config: ConfigRecord) -> _Cached:
    cfg = _config(context)
    model_name, num_classes = str(config["model"]), int(config["num-classes"])
    node = context.node_config
    data_path = str(node.get("data-path", "") or "")
    source: tuple[Any, ...]
    if data_path:
        source = ("file", data_path)
    elif "partition-id" in node and "num-partitions" in node:
        source = ("partition", int(node["partition-id"]), int(node["num-partitions"]))
    else:
        raise DatasetError(
            "this SuperNode has no data: start it with --node-config \"data-path='/path/file.npz'\" "
            "(deployment) or run in the simulation engine (partition-id/num-partitions)"
        )
    key = (context.run_id, source, model_name, num_classes)
    if key not in _CACHE:
        if cfg.threads_per_client > 0:
            torch.set_num_threads(cfg.threads_per_client)
        data = device_file_data(data_path) if data_path else client_data(cfg, source[1], source[2])
        if is_attacker(cfg, node):  # label-flip attackers train on flipped labels
            data = poison_data(cfg, data, num_classes)
        device = pick_device(cfg.device)
        model = _shared_model(context.run_id, model_name, tuple(data.x_train.shape[1:]), num_classes)
        seed = cfg.seed + (source[1] if source[0] == "partition" else 0)
        client = make_client(cfg, model, data, device, seed)
        _CACHE[key] = _Cached(client, list(client.model.state_dict().keys()), device_kind(device))
    return _CACHE[key]


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the NumPyClient on the received global model; reply with the new one."""
    config = msg.content[CONFIG_KEY]
    cached = _client(context, config)
    params = to_layers(msg.content[ARRAYS_KEY], cached.names)
    # A DP-SGD node's privacy history lives in context.state, not in this process's cache.
    new_params, num_examples, metrics = fit_client(
        _config(context), cached.client, params, dict(config), context.state
    )
    metrics.update(slow_down(config, context.node_config, float(metrics["train-seconds"])))
    if CLIP_NORM_KEY in config:  # client-side DP clipping: the server never sees the raw update
        new_params, unclipped = clip_own_update(params, new_params, float(config[CLIP_NORM_KEY]))
        metrics[UNCLIPPED_KEY] = int(unclipped)
    cfg = _config(context)
    if is_attacker(cfg, context.node_config):  # simulated Byzantine client (run config `attack`)
        partition, server_round = int(context.node_config["partition-id"]), int(config.get("server-round", 0))
        new_params = poison_update(cfg, params, new_params, (cfg.seed, partition, server_round))
    # The model under "arrays", or its compressed update when the config asks for compression.
    arrays_key, arrays = reply_arrays(cached.names, params, new_params, config, context.state)
    reply = RecordDict(
        {
            arrays_key: arrays,
            METRICS_KEY: MetricRecord({**metrics, NUM_EXAMPLES: num_examples}),
            INFO_KEY: ConfigRecord(
                {"device": cached.device, **attack_info(_config(context), context.node_config)}
            ),
        }
    )
    return Message(content=reply, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the node's held-out data."""
    config = msg.content[CONFIG_KEY]
    cached = _client(context, config)
    params = to_layers(msg.content[ARRAYS_KEY], cached.names)
    loss, num_examples, metrics = cached.client.evaluate(params, dict(config))
    reply = RecordDict({METRICS_KEY: MetricRecord({"loss": loss, **metrics, NUM_EXAMPLES: num_examples})})
    return Message(content=reply, reply_to=msg)
