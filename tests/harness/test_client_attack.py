"""Simulated attackers, through the real ClientApp (its train handler and attack mod).

The attack reaches the client as the ServerApp sends it, in the train config.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from client_app.app import app
from harness.attacks import choose_attacked
from harness.client_attack import AttackSettings, attack_mod
from server_app.app import client_configs
from strategies.core.records import from_layers, to_layers
from tasks.config import AppConfig, ConfigError
from tasks.models import build_model
from tasks.train import get_weights
from tests.conftest import DIGITS_TRAIN_CONFIG

NUM_PARTITIONS = 10
ATTACKED = choose_attacked(NUM_PARTITIONS, fraction=0.3, seed=42)
HONEST = next(p for p in range(NUM_PARTITIONS) if p not in ATTACKED)
TRAIN_CONFIG = {**DIGITS_TRAIN_CONFIG, "server-round": 3}
_run_ids = iter(range(50_000, 60_000))


def train(
    partition: int, server: dict, node_config: dict | None = None, run_config: dict | None = None
) -> tuple[list, list, Message]:
    """One train call with the attack the ServerApp sends for run config ``server``; (global, sent, reply).

    ``run_config`` is the node's own run config (the client must not read attacks from it).
    """
    torch.manual_seed(0)  # the same global model in every call
    model = build_model("digits-cnn", (1, 8, 8), 10)
    names = list(model.state_dict())
    global_layers = get_weights(model)
    sent_config, _ = client_configs(AppConfig.from_run_config(server), "digits-cnn", 10)
    config = ConfigRecord({**sent_config, **TRAIN_CONFIG})  # one local epoch, as the other tests
    content = RecordDict({"arrays": from_layers(names, global_layers), "config": config})
    msg = Message(content, dst_node_id=5, message_type=MessageType.TRAIN)
    node = node_config or {"partition-id": partition, "num-partitions": NUM_PARTITIONS}
    ctx = Context(
        run_id=next(_run_ids), node_id=5, node_config=node, state=RecordDict(), run_config=run_config or {}
    )
    reply = app(msg, ctx)
    assert not reply.has_error(), reply.error
    return global_layers, to_layers(reply.content["arrays"], names), reply


def delta(a: list, b: list) -> list[np.ndarray]:
    return [np.asarray(y, np.float64) - np.asarray(x, np.float64) for x, y in zip(a, b, strict=True)]


@pytest.mark.parametrize(("attack", "factor"), [("sign-flip", -3.0), ("scale", 3.0)])
def test_an_attacker_sends_its_honest_update_times_the_attack_factor(attack: str, factor: float) -> None:
    victim = ATTACKED[0]
    g, honest, _ = train(victim, {})
    _, sent, reply = train(victim, {"attack": attack, "attack-fraction": 0.3, "attack-scale": 3.0})

    for d_honest, d_sent in zip(delta(g, honest), delta(g, sent), strict=True):
        np.testing.assert_allclose(d_sent, factor * d_honest, rtol=1e-4, atol=1e-6)
    info = reply.content.config_records["info"]
    assert info["attacker"] is True and info["partition-id"] == victim and info["num-partitions"] == 10


def test_honest_partitions_are_untouched_and_say_so() -> None:
    g, honest, _ = train(HONEST, {})
    _, sent, reply = train(HONEST, {"attack": "sign-flip", "attack-fraction": 0.3})

    for a, b in zip(honest, sent, strict=True):
        np.testing.assert_array_equal(a, b)
    assert reply.content.config_records["info"]["attacker"] is False


def test_gaussian_attackers_send_seeded_noise_of_the_configured_std() -> None:
    config = {"attack": "gaussian", "attack-fraction": 0.3, "attack-scale": 0.5}
    g, sent, _ = train(ATTACKED[0], config)
    _, again, _ = train(ATTACKED[0], config)
    _, other, _ = train(ATTACKED[1], config)

    noise = np.concatenate([d.ravel() for d in delta(g, sent)])
    assert abs(noise.std() - 0.5) < 0.02 and abs(noise.mean()) < 0.02
    np.testing.assert_array_equal(
        np.concatenate([a.ravel() for a in again]), np.concatenate([a.ravel() for a in sent])
    )
    assert not np.array_equal(sent[0], other[0])  # each attacker draws its own noise


def test_label_flip_trains_on_flipped_labels() -> None:
    victim = ATTACKED[0]
    g, honest, honest_reply = train(victim, {})
    _, flipped, reply = train(victim, {"attack": "label-flip", "attack-fraction": 0.3})

    assert reply.content.config_records["info"]["attacker"] is True
    assert reply.content["metrics"]["num-examples"] == honest_reply.content["metrics"]["num-examples"]
    assert any(not np.allclose(a, b) for a, b in zip(honest, flipped, strict=True))


def test_a_deployed_node_never_attacks(tmp_path) -> None:  # noqa: ANN001
    from tasks.data import digits_arrays

    x_tr, y_tr, x_te, y_te = digits_arrays(test_fraction=0.5, seed=0)
    path = tmp_path / "node.npz"
    np.savez(path, x_train=x_tr[:50], y_train=y_tr[:50], x_test=x_te[:20], y_test=y_te[:20])
    config = {"attack": "sign-flip", "attack-fraction": 1.0}

    g, honest, _ = train(0, {}, node_config={"data-path": str(path)})
    _, sent, reply = train(0, config, node_config={"data-path": str(path)})

    for a, b in zip(honest, sent, strict=True):
        np.testing.assert_array_equal(a, b)
    assert "attacker" not in reply.content.config_records["info"]


@pytest.mark.parametrize(
    ("key", "value"), [("attack", "flip"), ("attack-fraction", 1.5), ("attack-scale", 0.0)]
)
def test_bad_attack_settings_are_rejected_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        AppConfig.from_run_config({key: value})


# ---------------------------------------------------------------- the attack mod, on its own
def _mod_call(config: dict, node_config: dict) -> tuple[Message, list[np.ndarray]]:
    """``attack_mod`` around a handler whose "trained" model is the global one plus 1 everywhere."""
    names = ["w", "b"]
    global_layers = [np.zeros((2, 2), np.float32), np.zeros(3, np.float32)]
    content = RecordDict({"arrays": from_layers(names, global_layers), "config": ConfigRecord(config)})
    msg = Message(content, dst_node_id=5, message_type=MessageType.TRAIN)

    def handler(m: Message, ctx: Context) -> Message:
        local = [g + 1 for g in global_layers]
        reply = RecordDict({"arrays": from_layers(names, local), "info": ConfigRecord({"device": "cpu"})})
        return Message(content=reply, reply_to=m)

    ctx = Context(run_id=1, node_id=5, node_config=node_config, state=RecordDict(), run_config={})
    reply = attack_mod(msg, ctx, handler)
    return reply, [np.array(a) for a in to_layers(reply.content["arrays"], names)]


SIGN_FLIP = {"attack": "sign-flip", "attack-fraction": 0.3, "attack-scale": 2.0, "seed": 42}


def test_attack_mod_flips_an_attackers_update_and_says_so() -> None:
    reply, sent = _mod_call(SIGN_FLIP, {"partition-id": ATTACKED[0], "num-partitions": NUM_PARTITIONS})

    assert all(np.array_equal(s, np.full_like(s, -2.0)) for s in sent)  # 0 − 2·(+1)
    info = reply.content["info"]
    assert info["device"] == "cpu" and info["attacker"] is True and info["partition-id"] == ATTACKED[0]


def test_attack_mod_leaves_an_honest_node_and_a_run_without_attack_alone() -> None:
    honest, sent = _mod_call(SIGN_FLIP, {"partition-id": HONEST, "num-partitions": NUM_PARTITIONS})
    plain, plain_sent = _mod_call({}, {"partition-id": ATTACKED[0], "num-partitions": NUM_PARTITIONS})

    assert all(np.array_equal(s, np.ones_like(s)) for s in sent + plain_sent)
    assert honest.content["info"]["attacker"] is False
    assert "attacker" not in plain.content["info"]


@pytest.mark.parametrize("node_config", [{}, {"data-path": "/data/node.npz"}])
def test_a_deployed_node_ignores_an_attack_request(node_config: dict) -> None:
    # Even with every partition attacking, a node without a simulated partition sends its update.
    reply, sent = _mod_call({**SIGN_FLIP, "attack-fraction": 1.0}, node_config)

    assert all(np.array_equal(s, np.ones_like(s)) for s in sent)
    assert "attacker" not in reply.content["info"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**SIGN_FLIP, "attack": "flip"}, "attack='flip' must be one of none, sign-flip"),
        ({**SIGN_FLIP, "attack-fraction": 1.5}, "attack-fraction=1.5 must be in"),
        ({**SIGN_FLIP, "attack-scale": 0.0}, "attack-scale=0.0 must be > 0"),
        ({"attack": "scale"}, "no attack-fraction, attack-scale, seed"),
    ],
)
def test_bad_attack_settings_in_the_message_are_refused_naming_the_key(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AttackSettings.from_config(config)


def test_the_server_sends_the_attack_in_the_train_config_only_when_one_is_configured() -> None:
    run_config = {"attack": "gaussian", "attack-fraction": 0.4, "attack-scale": 0.5, "seed": 7}
    cfg = AppConfig.from_run_config(run_config)

    train_config, eval_config = client_configs(cfg, "digits-cnn", 10)
    plain, _ = client_configs(AppConfig.from_run_config({}), "digits-cnn", 10)

    assert AttackSettings.from_config(train_config) == AttackSettings("gaussian", 0.4, 0.5, 7)
    assert "attack" not in eval_config and "attack" not in plain
    assert AttackSettings.from_config(plain) is None
