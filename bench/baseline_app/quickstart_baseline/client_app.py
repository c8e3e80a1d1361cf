"""ClientApp in the style of Flower's quickstart-pytorch: nothing survives between calls."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from quickstart_baseline.task import load_partition
from tasks.models import build_model
from tasks.train import test, train

app = ClientApp()


def _setup(msg: Message, context: Context):  # noqa: ANN202
    cfg = context.run_config
    torch.set_num_threads(int(cfg["threads-per-client"]))
    pid, parts = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    data = load_partition(
        str(cfg["dataset"]), pid, parts, seed=int(cfg["seed"]), val_fraction=float(cfg["val-fraction"])
    )
    model = build_model(str(cfg["model"]), tuple(data[0].shape[1:]), 10)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return cfg, pid, data, model


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    cfg, pid, (x, y, _, _), model = _setup(msg, context)
    rnd = int(msg.content["config"].get("server-round", 0))
    result = train(
        model,
        x,
        y,
        epochs=int(cfg["local-epochs"]),
        batch_size=int(cfg["batch-size"]),
        learning_rate=float(cfg["learning-rate"]),
        seed=(int(cfg["seed"]) + pid) * 100_003 + rnd,
    )
    metrics = MetricRecord({"train-loss": result.loss, "num-examples": result.num_examples})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    _, _, (_, _, xv, yv), model = _setup(msg, context)
    result = test(model, xv, yv)
    metrics = {"loss": result.loss, "accuracy": result.accuracy or 0.0, "num-examples": result.num_examples}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
