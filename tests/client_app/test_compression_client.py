"""Update compression through the real ClientApp train handler (local training on digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from torch import nn

from client_app.app import app
from client_app.compression import RESIDUAL_KEY, reply_arrays
from server_app.app import client_configs
from strategies.algorithms.fedavg import FedAvg
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import build_strategy
from strategies.numeric.compression import COMPRESSED_KEY, topk_count
from strategies.wrappers.compressed import CompressedStrategy
from tasks.config import AppConfig
from tasks.models import build_model
from tasks.train import get_weights, train
from tests.conftest import DIGITS_TRAIN_CONFIG, AppGrid, FakeGrid, make_reply


def initial_model() -> tuple[list[str], list[np.ndarray]]:
    torch.manual_seed(0)
    model = build_model("digits-cnn", (1, 8, 8), 10)
    return list(model.state_dict().keys()), get_weights(model)


def train_message(names: list[str], layers: list[np.ndarray], rnd: int, **extra: object) -> Message:
    config = ConfigRecord({**DIGITS_TRAIN_CONFIG, "server-round": rnd, **extra})  # type: ignore[dict-item]
    content = RecordDict({"arrays": from_layers(names, layers), "config": config})
    return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)


def context(run_id: int) -> Context:
    node_config = {"partition-id": 0, "num-partitions": 4}
    return Context(run_id=run_id, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def sent_update(reply: Message, names: list[str], shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """The dense top-k update a reply carries."""
    arrays = reply.content[COMPRESSED_KEY]
    out = []
    for name, shape in zip(names, shapes, strict=True):
        dense = np.zeros(int(np.prod(shape)), np.float32)
        dense[to_layers(arrays, [f"{name}/sp_indices"])[0]] = to_layers(arrays, [f"{name}/sp_values"])[0]
        out.append(dense.reshape(shape))
    return out


def test_topk_handler_sends_k_entries_and_keeps_the_rest_in_context_state_across_rounds() -> None:
    names, global1 = initial_model()
    shapes = [g.shape for g in global1]
    # The same training without compression gives the local model (seeded, deterministic on CPU).
    plain = app(train_message(names, global1, 1), context(run_id=4401))
    delta1 = [a - g for a, g in zip(to_layers(plain.content["arrays"], names), global1, strict=True)]
    ctx = context(run_id=4401)
    fraction = 0.1

    reply1 = app(train_message(names, global1, 1, compression="topk", **{"topk-fraction": fraction}), ctx)

    assert not reply1.has_error(), reply1.error
    assert "arrays" not in reply1.content.array_records
    sent1 = sent_update(reply1, names, shapes)
    residual1 = [r.copy() for r in to_layers(ctx.state[RESIDUAL_KEY], names)]
    for s, r, d in zip(sent1, residual1, delta1, strict=True):
        assert np.count_nonzero(s) == topk_count(d.size, fraction)
        np.testing.assert_allclose(s + r, d, rtol=0, atol=1e-7)  # sent + kept == the update
        assert np.all((s == 0) | (r == 0))

    # Round 2 from a new global model: the residual is added to the new update before top-k.
    global2 = [g + s for g, s in zip(global1, sent1, strict=True)]
    plain2 = app(train_message(names, global2, 2), context(run_id=4401))
    delta2 = [a - g for a, g in zip(to_layers(plain2.content["arrays"], names), global2, strict=True)]
    reply2 = app(train_message(names, global2, 2, compression="topk", **{"topk-fraction": fraction}), ctx)

    sent2 = sent_update(reply2, names, shapes)
    residual2 = to_layers(ctx.state[RESIDUAL_KEY], names)
    for s, r, d, r1 in zip(sent2, residual2, delta2, residual1, strict=True):
        np.testing.assert_allclose(s + r, d + r1, rtol=0, atol=1e-6)
    assert any(np.any((s != 0) & (r1 != 0)) for s, r1 in zip(sent2, residual1, strict=True))


def test_int8_handler_reply_decodes_within_half_a_step_of_the_trained_model() -> None:
    names, global1 = initial_model()
    plain = app(train_message(names, global1, 1), context(run_id=4402))
    local = to_layers(plain.content["arrays"], names)
    cfg = AppConfig.from_run_config({"min-available-nodes": 1, "min-train-nodes": 1, "local-epochs": 1})
    strategy = CompressedStrategy(build_strategy(cfg), scheme="int8")
    (msg,) = [
        m
        for m in strategy.configure_train(
            1, from_layers(names, global1), ConfigRecord(DIGITS_TRAIN_CONFIG), GridOf([7])
        )
        if m.metadata.dst_node_id == 7
    ]

    reply = app(msg, context(run_id=4402))
    (decoded,), malformed = strategy.decode_replies(1, [reply])

    assert malformed == [] and "compression" in msg.content["config"]
    for got, want, g in zip(to_layers(decoded.content["arrays"], names), local, global1, strict=True):
        scale = float(np.ptp(want - g)) / 255
        assert np.abs(got.astype(np.float64) - want).max() <= scale / 2 + 1e-6


class GridOf:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def test_topk_rounds_over_real_clients_count_exactly_the_bytes_they_send() -> None:
    run_config = {"compression": "topk", "topk-fraction": 0.1, "local-epochs": 1, "fraction-evaluate": 0.0}
    cfg = AppConfig.from_run_config(run_config)
    strategy = build_strategy(cfg)
    names, layers = initial_model()
    grid = AppGrid(3, run_config=run_config)
    train_config, eval_config = client_configs(cfg, "digits-cnn", 10)

    strategy.start(
        grid=grid,  # type: ignore[arg-type]
        initial_arrays=from_layers(names, layers),
        num_rounds=2,
        train_config=train_config,
        evaluate_config=eval_config,
    )

    # Per layer: k int32 indices + k float32 values + the int64 shape, each array with a
    # 128-byte .npy header; the model itself is every weight in float32 plus one header each.
    per_client = sum(topk_count(a.size, 0.1) * 8 + a.ndim * 8 + 3 * 128 for a in layers)
    model = sum(a.size * 4 + 128 for a in layers)
    for rnd in (1, 2):
        metrics = strategy.round_metrics(rnd)  # type: ignore[attr-defined]
        assert strategy.stats[rnd].succeeded == 3  # type: ignore[attr-defined]
        assert metrics["bytes_up"] == 3 * per_client
        assert metrics["bytes_down"] == metrics["bytes_up_uncompressed"] == 3 * model
    # 8 bytes per kept entry (index and value) instead of 4 per entry, plus headers: ~25%.
    assert metrics["bytes_up"] < 0.3 * metrics["bytes_up_uncompressed"]
    assert all(RESIDUAL_KEY in c.state.array_records for c in grid.contexts.values())


# ----------------------------------------------------------------------- BatchNorm buffers
def batchnorm_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )


@pytest.mark.parametrize("scheme", ["int8", "topk"])
def test_batchnorm_counter_is_not_compressed_and_the_server_keeps_the_global_value(scheme: str) -> None:
    # Prepare: a global model whose counter says 7 batches, trained locally on 100 more.
    model = batchnorm_model()
    model.get_submodule("1").num_batches_tracked.fill_(7)
    names = list(model.state_dict())
    global_layers = get_weights(model)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, 1, 8, 8, generator=generator), torch.randint(0, 10, (200,), generator=generator)
    train(model, x, y, epochs=1, batch_size=2, learning_rate=0.05)
    local = get_weights(model)
    counter = "1.num_batches_tracked"
    assert local[names.index(counter)] == 107 and global_layers[names.index(counter)].dtype == np.int64
    floating = [n for n, a in zip(names, global_layers, strict=True) if a.dtype != np.int64]

    strategy = CompressedStrategy(
        FedAvg(min_train_nodes=1, min_available_nodes=1), scheme=scheme, topk_fraction=0.5
    )
    (msg,) = strategy.configure_train(1, from_layers(names, global_layers), ConfigRecord(), FakeGrid([1]))
    state = RecordDict()

    # Execute: the client's reply, decoded and aggregated by the server.
    key, encoded = reply_arrays(names, global_layers, local, msg.content["config"], state)
    reply = make_reply(1, metrics={"num-examples": 200}, extra={key: encoded})
    (decoded,), malformed = strategy.decode_replies(1, [reply])
    released, _ = strategy.aggregate_train(1, [reply])

    # Assert: nothing of the counter is sent, quantized, selected or kept as a residual ...
    assert key == COMPRESSED_KEY and not any(k.startswith(counter + "/") for k in encoded)
    assert {k.split("/")[0] for k in encoded} == set(floating)
    if scheme == "topk":
        assert list(state[RESIDUAL_KEY]) == floating
    # ... yet the decoded reply carries every array with its dtype and shape, so it validates.
    assert malformed == []
    got = dict(zip(names, to_layers(decoded.content["arrays"], names), strict=True))
    for name, g, loc in zip(names, global_layers, local, strict=True):
        assert got[name].dtype == g.dtype and got[name].shape == g.shape
        if name in floating:
            assert np.abs(got[name] - loc).max() <= np.abs(loc - g).max() + 1e-6  # an update was applied
    assert got[counter] == 7  # the global model's counter, not the client's 107
    assert strategy.stats[1].succeeded == 1 and strategy.stats[1].rejected == {}
    assert released is not None
    assert to_layers(released, [counter])[0] == 7
    assert not np.array_equal(to_layers(released, ["0.weight"])[0], global_layers[0])  # it trained
