"""DP-SGD on the client (Opacus): its epsilon, and plain state_dict names in replies."""

import math

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from client_app.app import app
from client_app.dpsgd import EPSILON_KEY, DPSGDClient
from strategies.records import from_layers, to_layers
from tasks.loading import ClientData
from tasks.models import build_model
from tasks.train import get_weights
from tests.conftest import DIGITS_TRAIN_CONFIG


def _train_message(server_round: int, arrays: dict | None = None) -> tuple[Message, list[str]]:
    model = build_model("digits-cnn", (1, 8, 8), 10)
    names = list(model.state_dict().keys())
    record = arrays or from_layers(names, get_weights(model))
    config = ConfigRecord({**DIGITS_TRAIN_CONFIG, "server-round": server_round})
    return Message(
        RecordDict({"arrays": record, "config": config}), dst_node_id=7, message_type=MessageType.TRAIN
    ), names


def test_dp_sgd_client_reports_growing_epsilon_through_the_train_handler() -> None:
    # Prepare: a run whose config turns on DP-SGD.
    ctx = Context(
        run_id=4242,
        node_id=7,
        node_config={"partition-id": 0, "num-partitions": 4},
        state=RecordDict(),
        run_config={"dp-sgd-noise-multiplier": 1.0},
    )
    first, names = _train_message(1)

    # Execute: two rounds, the second starting from the first's reply.
    reply1 = app(first, ctx)
    second, _ = _train_message(2, reply1.content["arrays"])
    reply2 = app(second, ctx)

    # Assert
    for reply in (reply1, reply2):
        assert not reply.has_error(), reply.error
        assert list(reply.content["arrays"].keys()) == names  # no "_module." prefix
    eps1, eps2 = reply1.content["metrics"][EPSILON_KEY], reply2.content["metrics"][EPSILON_KEY]
    assert math.isfinite(eps1) and 0 < eps1 < eps2
    model = build_model("digits-cnn", (1, 8, 8), 10)
    shapes = [tuple(t.shape) for t in model.state_dict().values()]
    assert [a.shape for a in to_layers(reply2.content["arrays"], names)] == shapes


def test_dp_sgd_epsilon_matches_the_accountant_for_the_steps_taken() -> None:
    # 100 examples, expected batch 10 -> q = 0.1 and 10 steps per epoch, 2 epochs.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=100)
    data = ClientData(x, y, x[:10], y[:10])
    model = build_model("logreg", (4,), 3)
    client = DPSGDClient(
        model, data, torch.device("cpu"), noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5
    )
    config = {"local-epochs": 2, "batch-size": 10, "learning-rate": 0.1}

    params, num_examples, metrics = client.fit(get_weights(model), config)

    from opacus.accountants import RDPAccountant

    reference = RDPAccountant()
    for _ in range(20):
        reference.step(noise_multiplier=1.0, sample_rate=0.1)
    assert num_examples == 100 and client.trainer.privacy_state() == [(1.0, 0.1, 20)]
    assert metrics[EPSILON_KEY] == pytest.approx(reference.get_epsilon(1e-5))
    assert list(model.state_dict()) == ["linear.weight", "linear.bias"] and params[0].shape == (3, 4)


def test_invalid_dp_sgd_settings_name_the_key() -> None:
    data = ClientData(*(np.zeros((4, 2), np.float32), np.zeros(4, np.int64)) * 2)
    with pytest.raises(ValueError, match="dp-sgd-noise-multiplier"):
        DPSGDClient(
            build_model("logreg", (2,), 2),
            data,
            torch.device("cpu"),
            noise_multiplier=0.0,
            max_grad_norm=1.0,
            delta=1e-5,
        )
