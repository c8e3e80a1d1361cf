"""DP-SGD on the client (Opacus): its epsilon, and plain state_dict names in replies."""

import math

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from client_app.app import app, clear_caches
from client_app.dpsgd import (
    EPSILON_KEY,
    HISTORY_KEY,
    DPSGDClient,
    load_privacy_history,
    store_privacy_history,
)
from server_app.app import client_configs
from strategies.core.records import from_layers, to_layers
from tasks.config import AppConfig
from tasks.loading import ClientData
from tasks.models import build_model
from tasks.train import get_weights
from tests.conftest import DIGITS_TRAIN_CONFIG

#: The DP-SGD settings as the ServerApp sends them in the train config.
_SERVER_TRAIN_CONFIG, _ = client_configs(
    AppConfig.from_run_config({"dp-sgd-noise-multiplier": 1.0}), "digits-cnn", 10
)
DP_SGD_CONFIG = {k: v for k, v in _SERVER_TRAIN_CONFIG.items() if k.startswith("dp-")}


def _train_message(
    server_round: int, arrays: dict | None = None, dp_sgd: dict | None = None
) -> tuple[Message, list[str]]:
    model = build_model("digits-cnn", (1, 8, 8), 10)
    names = list(model.state_dict().keys())
    record = arrays or from_layers(names, get_weights(model))
    extra = DP_SGD_CONFIG if dp_sgd is None else dp_sgd
    config = ConfigRecord({**DIGITS_TRAIN_CONFIG, **extra, "server-round": server_round})
    return Message(
        RecordDict({"arrays": record, "config": config}), dst_node_id=7, message_type=MessageType.TRAIN
    ), names


def test_dp_sgd_client_reports_growing_epsilon_through_the_train_handler() -> None:
    # Prepare: the server's train config turns on DP-SGD (the node's run config does not).
    ctx = Context(
        run_id=4242,
        node_id=7,
        node_config={"partition-id": 0, "num-partitions": 4},
        state=RecordDict(),
        run_config={},
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


# ------------------------------------------- issue 12: the node's whole history, in context.state
def _logreg_client(num_examples: int = 100, delta: float = 1e-5, **kwargs: object) -> DPSGDClient:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_examples, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=num_examples)
    return DPSGDClient(
        build_model("logreg", (4,), 3),
        ClientData(x, y, x[:10], y[:10]),
        torch.device("cpu"),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        delta=delta,
        **kwargs,  # type: ignore[arg-type]
    )


def test_epsilon_covers_every_round_of_the_node_when_a_fresh_process_serves_it() -> None:
    # Prepare: one node's context; between rounds the per-process caches are dropped, as when
    # another simulation worker or a fresh ClientApp process serves the node's next message.
    from opacus.accountants import RDPAccountant

    ctx = Context(
        run_id=4343,
        node_id=7,
        node_config={"partition-id": 1, "num-partitions": 4},
        state=RecordDict(),
        run_config={},
    )
    replies = []

    # Execute: three rounds, each in a "fresh process".
    for server_round in (1, 2, 3):
        clear_caches()
        message, _ = _train_message(server_round)
        replies.append(app(message, ctx))

    # Assert: each reply's epsilon is the accountant's over all of the node's rounds so far.
    history = load_privacy_history(ctx.state)
    (z, q, steps_per_round_x3) = history[0]
    assert len(history) == 1 and z == 1.0 and steps_per_round_x3 % 3 == 0
    for server_round, reply in enumerate(replies, start=1):
        assert not reply.has_error(), reply.error
        reference = RDPAccountant()
        for _ in range(steps_per_round_x3 // 3 * server_round):
            reference.step(noise_multiplier=z, sample_rate=q)
        assert reply.content["metrics"][EPSILON_KEY] == pytest.approx(reference.get_epsilon(1e-5))


def test_privacy_history_round_trips_through_the_state_and_a_broken_one_is_refused() -> None:
    state = RecordDict()
    assert load_privacy_history(state) == []
    store_privacy_history(state, [(1.0, 0.1, 20), (0.8, 0.05, 40)])
    assert load_privacy_history(state) == [(1.0, 0.1, 20), (0.8, 0.05, 40)]

    state[HISTORY_KEY] = ConfigRecord({"noise-multiplier": [1.0], "sample-rate": [0.1, 0.2], "steps": [3]})
    with pytest.raises(ValueError, match="history is lost"):
        load_privacy_history(state)


def test_a_privacy_history_column_that_is_not_a_list_is_refused() -> None:
    # Bytes iterate as small ints: b"\x01" read as z = 1, q = 1, one step would pass for a
    # history. Each column must be the list store_privacy_history writes.
    state = RecordDict()
    state[HISTORY_KEY] = ConfigRecord({"noise-multiplier": b"\x01", "sample-rate": b"\x01", "steps": b"\x01"})
    with pytest.raises(ValueError, match="'noise-multiplier' is a bytes, not a list.*history is lost"):
        load_privacy_history(state)


def test_fit_on_node_ignores_what_the_process_remembers_and_uses_the_state() -> None:
    # Prepare: this process's trainer already holds 3 unrelated rounds; the node's state has one.
    client = _logreg_client()
    client.trainer.restore_privacy_state([(1.0, 0.1, 30)])
    state = RecordDict()
    store_privacy_history(state, [(1.0, 0.1, 10)])
    config = {"local-epochs": 1, "batch-size": 10, "learning-rate": 0.1}

    # Execute
    _, _, metrics = client.fit_on_node(get_weights(client.model), config, state)

    # Assert: 10 + 10 steps at q = 0.1, from the state, and stored back.
    from opacus.accountants import RDPAccountant

    reference = RDPAccountant()
    reference.history = [(1.0, 0.1, 20)]
    assert load_privacy_history(state) == [(1.0, 0.1, 20)]
    assert metrics[EPSILON_KEY] == pytest.approx(reference.get_epsilon(1e-5))


def test_dp_sgd_delta_must_be_below_one_over_the_clients_examples() -> None:
    with pytest.raises(ValueError, match=r"dp-sgd-delta=0.02 must be < 1/n = 1/100"):
        _logreg_client(num_examples=100, delta=0.02)
    assert _logreg_client(num_examples=100, delta=0.009).trainer.delta == 0.009


def test_secure_mode_trains_with_opacus_secure_noise() -> None:
    client = _logreg_client(secure_mode=True)
    config = {"local-epochs": 1, "batch-size": 10, "learning-rate": 0.1}

    params, _, metrics = client.fit(get_weights(client.model), config)

    assert client.trainer.engine.secure_mode and client.trainer.engine.secure_rng is not None
    assert all(np.isfinite(p).all() for p in params) and metrics[EPSILON_KEY] > 0


def test_dp_secure_noise_reaches_the_client() -> None:
    # Prepare: the setting travels in the server's train config.
    from client_app.dp import DPSGDSettings, make_client

    cfg = AppConfig.from_run_config({"dp-sgd-noise-multiplier": 1.0, "dp-secure-noise": True})
    train_config, _ = client_configs(cfg, "logreg", 3)
    data = ClientData(*(np.zeros((20, 4), np.float32), np.zeros(20, np.int64)) * 2)

    # Execute
    client = make_client(
        DPSGDSettings.from_config(train_config), build_model("logreg", (4,), 3), data, torch.device("cpu"), 0
    )

    # Assert
    assert isinstance(client, DPSGDClient) and client.trainer.engine.secure_mode


def test_a_client_trains_with_dp_sgd_after_evaluating_its_model() -> None:
    # Prepare: evaluation leaves the (shared) model in eval mode, which Opacus refuses to train.
    client = _logreg_client()
    client.evaluate(get_weights(client.model), {})
    assert not client.model.training
    config = {"local-epochs": 1, "batch-size": 10, "learning-rate": 0.1}

    # Execute
    params, num_examples, metrics = client.fit(get_weights(client.model), config)

    # Assert
    assert num_examples == 100 and metrics[EPSILON_KEY] > 0 and all(np.isfinite(p).all() for p in params)


def test_the_server_sends_dp_sgd_only_when_it_is_on() -> None:
    from client_app.dp import DPSGDSettings

    cfg = AppConfig.from_run_config(
        {"dp-sgd-noise-multiplier": 0.8, "dp-sgd-max-grad-norm": 2.0, "dp-sgd-delta": 1e-6}
    )
    train_config, eval_config = client_configs(cfg, "digits-cnn", 10)
    plain, _ = client_configs(AppConfig.from_run_config({}), "digits-cnn", 10)

    assert DPSGDSettings.from_config(train_config) == DPSGDSettings(0.8, 2.0, 1e-6, False)
    assert DPSGDSettings.from_config(plain) is None
    assert not any(k.startswith("dp-") for k in [*plain.keys(), *eval_config.keys()])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"dp-sgd-noise-multiplier": -1.0}, "dp-sgd-noise-multiplier=-1.0 must be >= 0"),
        ({"dp-sgd-noise-multiplier": 1.0, "dp-sgd-delta": 1e-5}, "no dp-sgd-max-grad-norm, dp-secure-noise"),
    ],
)
def test_a_dp_sgd_message_without_every_setting_is_refused_naming_the_key(config: dict, message: str) -> None:
    from client_app.dp import DPSGDSettings

    with pytest.raises(ValueError, match=message):
        DPSGDSettings.from_config(config)
