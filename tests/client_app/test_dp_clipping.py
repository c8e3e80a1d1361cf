"""Client-side DP clipping: the reply is global + clip(local − global, C) and reports its bit."""

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from client_app.app import app
from client_app.dp import CLIP_NORM_KEY, UNCLIPPED_KEY, clip_own_update
from strategies.core.records import from_layers, to_layers
from tasks.models import build_model
from tasks.train import get_weights
from tests.conftest import DIGITS_TRAIN_CONFIG


def _norm(layers: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(a, np.float64) ** 2) for a in layers)))


def test_clip_own_update_scales_a_long_update_to_the_norm_and_keeps_direction() -> None:
    rng = np.random.default_rng(0)
    old = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    delta = [rng.normal(size=(3, 4)) * 10, rng.normal(size=5) * 10]
    new = [(o + d).astype(np.float32) for o, d in zip(old, delta, strict=True)]

    out, unclipped = clip_own_update(old, new, clip_norm=2.0)

    sent = [np.asarray(n, np.float64) - o for n, o in zip(out, old, strict=True)]
    assert not unclipped
    assert abs(_norm(sent) - 2.0) < 1e-4
    cosine = sum(np.sum(s * d) for s, d in zip(sent, delta, strict=True)) / (_norm(sent) * _norm(delta))
    assert cosine > 1 - 1e-5
    assert [a.dtype for a in out] == [np.float32, np.float32]


def test_clip_own_update_leaves_a_short_update_alone() -> None:
    old = [np.zeros(4, np.float32)]
    new = [np.array([0.1, 0.0, 0.0, 0.0], np.float32)]

    out, unclipped = clip_own_update(old, new, clip_norm=1.0)

    assert unclipped
    np.testing.assert_array_equal(out[0], new[0])


def _train(config: dict, run_id: int) -> tuple[Message, list[np.ndarray], list[str]]:
    model = build_model("digits-cnn", (1, 8, 8), 10)
    names = list(model.state_dict().keys())
    global_layers = get_weights(model)
    msg = Message(
        RecordDict({"arrays": from_layers(names, global_layers), "config": ConfigRecord(config)}),
        dst_node_id=3,
        message_type=MessageType.TRAIN,
    )
    ctx = Context(
        run_id=run_id,
        node_id=3,
        node_config={"partition-id": 1, "num-partitions": 4},
        state=RecordDict(),
        run_config={},
    )
    return app(msg, ctx), global_layers, names


def test_train_handler_clips_its_own_update_when_the_server_asks() -> None:
    # A norm far below one epoch's update on digits forces clipping.
    reply, global_layers, names = _train({**DIGITS_TRAIN_CONFIG, CLIP_NORM_KEY: 0.05}, run_id=9101)

    assert not reply.has_error(), reply.error
    sent = to_layers(reply.content["arrays"], names)
    update = [np.asarray(s, np.float64) - g for s, g in zip(sent, global_layers, strict=True)]
    assert abs(_norm(update) - 0.05) < 1e-3
    assert reply.content["metrics"][UNCLIPPED_KEY] == 0


def test_train_handler_without_dp_sends_the_raw_update_and_no_bit() -> None:
    reply, global_layers, names = _train(dict(DIGITS_TRAIN_CONFIG), run_id=9102)

    assert not reply.has_error(), reply.error
    sent = to_layers(reply.content["arrays"], names)
    update = [np.asarray(s, np.float64) - g for s, g in zip(sent, global_layers, strict=True)]
    assert _norm(update) > 0.05  # the same training as above is not clipped
    assert UNCLIPPED_KEY not in reply.content["metrics"]
