"""The ClientApp's mods one at a time (a message in, the transformed reply out), then composed.

A stand-in handler replies with a fixed "trained" model, so each mod's transformation
is checked on known arrays; the composed tests run the real ClientApp.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict

from client_app.app import TRAIN_MODS, app
from client_app.compression import RESIDUAL_KEY, compression_mod
from client_app.dp import dp_clipping_mod
from harness.attacks import choose_attacked
from server_app.app import client_configs
from strategies.core.records import from_layers, to_layers
from strategies.numeric.compression import decode_update
from tasks import wire
from tasks.config import AppConfig
from tasks.models import build_model
from tasks.train import get_weights
from tests.conftest import DIGITS_TRAIN_CONFIG

NAMES = ["w", "b"]
GLOBAL = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]
# A "trained" model whose update has norm 5 (3-4-5 in the first entries).
LOCAL = [np.array([[3, 0, 0], [0, 0, 0]], np.float32), np.array([4, 0, 0, 0], np.float32)]


def message(config: dict, layers: list[np.ndarray] | None = None) -> Message:
    content = RecordDict(
        {wire.ARRAYS: from_layers(NAMES, layers or GLOBAL), wire.CONFIG: ConfigRecord(config)}
    )
    return Message(content, dst_node_id=3, message_type=MessageType.TRAIN)


def context(node_config: dict | None = None) -> Context:
    node = {"partition-id": 0, "num-partitions": 4} if node_config is None else node_config
    return Context(run_id=1, node_id=3, node_config=node, state=RecordDict(), run_config={})


def handler(local: list[np.ndarray] = LOCAL, seconds: float = 2.0):  # noqa: ANN201
    """A train handler that replies with ``local``, as the real one replies with the trained model."""
    calls: list[Message] = []

    def call_next(msg: Message, ctx: Context) -> Message:
        calls.append(msg)
        content = RecordDict(
            {
                wire.ARRAYS: from_layers(NAMES, local),
                wire.METRICS: MetricRecord({wire.TRAIN_SECONDS: seconds, wire.NUM_EXAMPLES: 10}),
                wire.INFO: ConfigRecord({wire.DEVICE: "cpu"}),
            }
        )
        return Message(content=content, reply_to=msg)

    call_next.calls = calls  # type: ignore[attr-defined]
    return call_next


def sent(reply: Message) -> list[np.ndarray]:
    return [np.array(a) for a in to_layers(reply.content[wire.ARRAYS], NAMES)]


def norm(layers: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(a, np.float64) ** 2) for a in layers)))


# ------------------------------------------------------------------------- dp_clipping_mod
def test_dp_clipping_mod_scales_the_update_to_the_norm_and_reports_the_bit() -> None:
    reply = dp_clipping_mod(message({wire.CLIP_NORM: 2.5}), context(), handler())

    # Update (3, 4) of norm 5 clipped to 2.5: (1.5, 2).
    assert sent(reply)[0][0, 0] == pytest.approx(1.5) and sent(reply)[1][0] == pytest.approx(2.0)
    assert norm(sent(reply)) == pytest.approx(2.5)
    assert reply.content[wire.METRICS][wire.UNCLIPPED] == 0
    assert reply.content[wire.METRICS][wire.NUM_EXAMPLES] == 10  # the handler's metrics are kept


def test_dp_clipping_mod_reports_an_unclipped_update_and_leaves_it_alone() -> None:
    reply = dp_clipping_mod(message({wire.CLIP_NORM: 10.0}), context(), handler())

    assert all(np.array_equal(a, b) for a, b in zip(sent(reply), LOCAL, strict=True))
    assert reply.content[wire.METRICS][wire.UNCLIPPED] == 1


def test_dp_clipping_mod_without_a_clip_norm_passes_the_reply_through() -> None:
    reply = dp_clipping_mod(message({}), context(), handler())

    assert all(np.array_equal(a, b) for a, b in zip(sent(reply), LOCAL, strict=True))
    assert wire.UNCLIPPED not in reply.content[wire.METRICS]


def test_dp_clipping_mod_refuses_a_bad_norm_before_training() -> None:
    call_next = handler()

    with pytest.raises(ValueError, match="dp-clip-norm=-1.0 must be > 0"):
        dp_clipping_mod(message({wire.CLIP_NORM: -1.0}), context(), call_next)
    assert call_next.calls == []  # type: ignore[attr-defined]


def test_mods_pass_an_error_reply_through() -> None:
    def failing(msg: Message, ctx: Context) -> Message:
        return Message(Error(code=0, reason="boom"), reply_to=msg)

    config = {
        wire.CLIP_NORM: 1.0,
        wire.COMPRESSION: "int8",
        wire.DEVICE_SLOWDOWN: "uniform",
        **{wire.ATTACK: "sign-flip", wire.ATTACK_FRACTION: 1.0, wire.ATTACK_SCALE: 2.0, wire.SEED: 0},
    }
    for mod in TRAIN_MODS:
        assert mod(message(config), context(), failing).error.reason == "boom"


# ------------------------------------------------------------------------- compression_mod
def test_compression_mod_sends_the_encoded_update_instead_of_the_model() -> None:
    ctx = context()
    reply = compression_mod(message({wire.COMPRESSION: "int8"}), ctx, handler())

    assert wire.ARRAYS not in reply.content.array_records
    record = reply.content[wire.COMPRESSED]
    encoded = dict(zip(record.keys(), to_layers(record), strict=True))
    expected = {n: (g.shape, g.dtype) for n, g in zip(NAMES, GLOBAL, strict=True)}
    decoded = decode_update(encoded, expected, scheme="int8")
    for name, local in zip(NAMES, LOCAL, strict=True):
        np.testing.assert_allclose(decoded[name], local, atol=5 / 255)  # delta = local − 0
    assert reply.content[wire.METRICS][wire.NUM_EXAMPLES] == 10 and RESIDUAL_KEY not in ctx.state


def test_compression_mod_keeps_the_topk_residual_in_context_state() -> None:
    ctx = context()
    local = [np.array([[3, 1, 0], [0, 0, 0]], np.float32), LOCAL[1]]
    config = {wire.COMPRESSION: "topk", wire.TOPK_FRACTION: 0.2}

    reply = compression_mod(message(config), ctx, handler(local))

    residual = dict(zip(ctx.state[RESIDUAL_KEY].keys(), to_layers(ctx.state[RESIDUAL_KEY]), strict=True))
    assert wire.COMPRESSED in reply.content.array_records
    # Top-1 of the 6 entries of "w" sends the 3 and keeps the 1; "b" sends its only non-zero.
    np.testing.assert_array_equal(residual["w"], [[0, 1, 0], [0, 0, 0]])
    assert not np.any(residual["b"])


def test_compression_mod_without_compression_sends_the_model() -> None:
    reply = compression_mod(message({}), context(), handler())

    assert wire.COMPRESSED not in reply.content.array_records
    assert all(np.array_equal(a, b) for a, b in zip(sent(reply), LOCAL, strict=True))


# ------------------------------------------------------------------- composed in the ClientApp
NUM_PARTITIONS = 10
ATTACKER = choose_attacked(NUM_PARTITIONS, fraction=0.3, seed=42)[0]
_run_ids = iter(range(70_000, 80_000))


def digits_message(extra: dict) -> tuple[Message, list[str], list[np.ndarray]]:
    torch.manual_seed(0)  # the same global model in every call
    model = build_model("digits-cnn", (1, 8, 8), 10)
    names, layers = list(model.state_dict()), get_weights(model)
    content = RecordDict(
        {wire.ARRAYS: from_layers(names, layers), wire.CONFIG: ConfigRecord({**DIGITS_TRAIN_CONFIG, **extra})}
    )
    return Message(content, dst_node_id=5, message_type=MessageType.TRAIN), names, layers


def node_context(partition: int, run_config: dict | None = None) -> Context:
    node = {"partition-id": partition, "num-partitions": NUM_PARTITIONS}
    return Context(
        run_id=next(_run_ids), node_id=5, node_config=node, state=RecordDict(), run_config=run_config or {}
    )


def update(layers: list[np.ndarray], global_layers: list[np.ndarray]) -> list[np.ndarray]:
    return [
        np.asarray(a, np.float64) - np.asarray(g, np.float64)
        for a, g in zip(layers, global_layers, strict=True)
    ]


def test_an_attacker_clips_then_attacks_then_compresses() -> None:
    # Prepare: the attack as the ServerApp sends it, a clipping norm far below one epoch's
    # update, and int8 compression.
    attack, _ = client_configs(
        AppConfig.from_run_config({"attack": "sign-flip", "attack-fraction": 0.3, "attack-scale": 3.0}),
        "digits-cnn",
        10,
    )
    clip = {wire.CLIP_NORM: 0.05}
    honest_msg, names, global_layers = digits_message(clip)
    attacked_msg, _, _ = digits_message({**dict(attack), **clip, wire.COMPRESSION: "int8"})
    attacked_msg.content[wire.CONFIG].update(DIGITS_TRAIN_CONFIG)  # one local epoch, as the honest one

    # Execute: the same node and round, honest (clipped) and attacking (clipped, flipped, compressed).
    honest = app(honest_msg, node_context(ATTACKER))
    attacked = app(attacked_msg, node_context(ATTACKER))

    # Assert: the attacker sends −3 × its clipped update (so it attacked after clipping: clipping
    # after the attack would bring the norm back to 0.05), encoded as int8.
    assert not honest.has_error() and not attacked.has_error(), (honest.error, attacked.error)
    clipped = update(to_layers(honest.content[wire.ARRAYS], names), global_layers)
    assert norm(clipped) == pytest.approx(0.05, rel=1e-3)
    record = attacked.content[wire.COMPRESSED]
    expected = {n: (g.shape, g.dtype) for n, g in zip(names, global_layers, strict=True)}
    decoded = decode_update(dict(zip(record.keys(), to_layers(record), strict=True)), expected, scheme="int8")
    for name, want in zip(names, clipped, strict=True):
        step = float(np.ptp(-3 * want)) / 255
        np.testing.assert_allclose(decoded[name], -3 * want, rtol=0, atol=step / 2 + 1e-7)
    assert attacked.content[wire.INFO]["attacker"] is True
    assert attacked.content[wire.METRICS][wire.UNCLIPPED] == 0


def test_a_client_follows_the_server_message_not_its_own_run_config() -> None:
    # Prepare: the server asks for one plain local epoch; the node's run config says five
    # epochs, every node attacking, DP-SGD and slow devices.
    run_config = {
        "local-epochs": 5,
        "attack": "sign-flip",
        "attack-fraction": 1.0,
        "dp-sgd-noise-multiplier": 1.0,
        "device-slowdown": "uniform",
        "device-slowdown-max": 1000.0,
    }
    msg, names, _ = digits_message({})

    # Execute
    plain = app(msg, node_context(ATTACKER))
    disagreeing = app(msg, node_context(ATTACKER, run_config))

    # Assert: the same model as a node without those settings, and no trace of them.
    assert not disagreeing.has_error(), disagreeing.error
    for a, b in zip(
        to_layers(plain.content[wire.ARRAYS], names),
        to_layers(disagreeing.content[wire.ARRAYS], names),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    metrics, info = disagreeing.content[wire.METRICS], disagreeing.content[wire.INFO]
    assert wire.DP_SGD_EPSILON not in metrics and wire.SLOWDOWN_FACTOR not in metrics
    assert wire.ATTACKER not in info


def test_a_node_evaluated_first_still_trains_as_the_server_asks() -> None:
    # Prepare: a fresh process answers an evaluate message for the node first (a plain client).
    ctx = node_context(2)
    sent_config, eval_config = client_configs(
        AppConfig.from_run_config({"dp-sgd-noise-multiplier": 1.0}), "digits-cnn", 10
    )
    evaluate_msg, _, _ = digits_message({})
    evaluate_msg = Message(
        RecordDict({wire.ARRAYS: evaluate_msg.content[wire.ARRAYS], wire.CONFIG: eval_config}),
        dst_node_id=5,
        message_type=MessageType.EVALUATE,
    )
    train_msg, _, _ = digits_message({k: v for k, v in sent_config.items() if k.startswith("dp-")})

    # Execute
    evaluated = app(evaluate_msg, ctx)
    trained = app(train_msg, ctx)

    # Assert: the train message's DP-SGD is used (the client was rebuilt for it).
    assert not evaluated.has_error() and not trained.has_error(), (evaluated.error, trained.error)
    assert trained.content[wire.METRICS][wire.DP_SGD_EPSILON] > 0
