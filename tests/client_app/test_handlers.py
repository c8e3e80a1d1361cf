"""The NumPyClient subclass, unchanged, driven through the ClientApp's Message handlers."""

import json
import subprocess
import sys

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from client_app.app import app
from strategies.core.records import from_layers, to_layers
from tasks.data import DatasetError
from tasks.models import build_model
from tasks.train import get_weights
from tests.conftest import DIGITS_TRAIN_CONFIG, REPO


def _message(message_type: str, config: dict) -> tuple[Message, list[str]]:
    model = build_model("digits-cnn", (1, 8, 8), 10)
    names = list(model.state_dict().keys())
    content = RecordDict({"arrays": from_layers(names, get_weights(model)), "config": ConfigRecord(config)})
    return Message(content, dst_node_id=7, message_type=message_type), names


def _context(partition_id: int = 0) -> Context:
    node_config = {"partition-id": partition_id, "num-partitions": 4}
    return Context(run_id=99, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def test_train_handler_replies_arrays_metrics_and_num_examples() -> None:
    msg, names = _message(MessageType.TRAIN, DIGITS_TRAIN_CONFIG)

    reply = app(msg, _context())

    assert not reply.has_error(), reply.error
    arrays = reply.content["arrays"]
    assert list(arrays.keys()) == names
    sent = to_layers(msg.content["arrays"], names)
    assert any(not np.array_equal(a, b) for a, b in zip(to_layers(arrays, names), sent, strict=True))
    metrics = reply.content["metrics"]
    # digits: 1437 training examples / 4 partitions ≈ 359, 10% held out for evaluation.
    assert metrics["num-examples"] in (323, 324) and metrics["train-loss"] > 0
    assert reply.content.config_records["info"]["device"] == "cpu"


def test_evaluate_handler_reports_loss_accuracy_and_num_examples() -> None:
    msg, _ = _message(MessageType.EVALUATE, {"model": "digits-cnn", "num-classes": 10})

    reply = app(msg, _context(partition_id=1))

    assert not reply.has_error(), reply.error
    metrics = reply.content["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["num-examples"] == 36 and metrics["loss"] > 0


def test_node_without_data_fails_naming_data_path() -> None:
    # Flower's runtime turns this exception into an error reply carrying the message.
    msg, _ = _message(MessageType.TRAIN, DIGITS_TRAIN_CONFIG)
    ctx = Context(run_id=98, node_id=7, node_config={}, state=RecordDict(), run_config={})

    with pytest.raises(DatasetError, match="data-path"):
        app(msg, ctx)


def test_device_file_is_used_whole(tmp_path) -> None:  # noqa: ANN001
    from tasks.data import digits_arrays

    x_tr, y_tr, x_te, y_te = digits_arrays(test_fraction=0.5, seed=0)
    path = tmp_path / "node.npz"
    np.savez(path, x_train=x_tr[:50], y_train=y_tr[:50], x_test=x_te[:20], y_test=y_te[:20])
    msg, _ = _message(MessageType.TRAIN, DIGITS_TRAIN_CONFIG)
    ctx = Context(
        run_id=97, node_id=7, node_config={"data-path": str(path)}, state=RecordDict(), run_config={}
    )

    reply = app(msg, ctx)

    assert not reply.has_error(), reply.error
    assert reply.content["metrics"]["num-examples"] == 50


def test_virtual_nodes_share_one_model_without_leaking_state_between_them() -> None:
    # Prepare: one global model; node 0 trains, then node 1, then node 0 again on the same input.
    from client_app.app import _RUNS

    msg, names = _message(MessageType.TRAIN, DIGITS_TRAIN_CONFIG)
    run = Context(run_id=96, node_id=7, node_config={}, state=RecordDict(), run_config={})

    def train_on(partition_id: int) -> list[np.ndarray]:
        ctx = _context(partition_id)
        ctx.run_id = run.run_id
        reply = app(msg, ctx)
        assert not reply.has_error(), reply.error
        return [np.array(a) for a in to_layers(reply.content["arrays"], names)]

    # Execute
    first = train_on(0)
    other = train_on(1)
    again = train_on(0)

    # Assert: one model object serves both nodes, and node 1's training did not change node 0's result.
    cached = _RUNS.peek(run.run_id)
    assert cached is not None and len(cached.nodes) == 2
    assert len({id(node.client.model) for node in cached.nodes.values()}) == 1
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_a_workers_first_message_on_the_default_partitioner_imports_no_optional_library() -> None:
    """Round 1 of every simulation waits for each worker's first message: what it imports counts.

    A fresh process (as a Ray actor is) answers one train message on the default (iid)
    partitioning; flwr-datasets (with its plotting stack) and Hugging Face ``datasets`` are
    for the label-skewed partitioners only, and the optional libraries stay unloaded.
    A Dirichlet split in the same kind of process does load flwr-datasets, so the check
    can tell the two apart.
    """
    script = """
import json, sys
from flwr.supercore.task_identity import TaskIdentity
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from client_app.app import app
from strategies.core.records import from_layers
from tasks.models import build_model
from tasks.train import get_weights
from tests.conftest import DIGITS_TRAIN_CONFIG
model = build_model("digits-cnn", (1, 8, 8), 10)
names = list(model.state_dict().keys())
arrays = from_layers(names, get_weights(model))
content = RecordDict({"arrays": arrays, "config": ConfigRecord(DIGITS_TRAIN_CONFIG)})
context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 4},
                  state=RecordDict(), run_config={"partitioner": sys.argv[1]})
reply = app(Message(content, dst_node_id=7, message_type=MessageType.TRAIN), context)
assert not reply.has_error(), reply.error
heavy = ("flwr_datasets", "datasets", "seaborn", "matplotlib", "opacus", "dp_accounting")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""

    def loaded(partitioner: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-c", script, partitioner],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    assert loaded("iid") == []
    assert {"flwr_datasets", "datasets"} <= set(loaded("dirichlet"))
