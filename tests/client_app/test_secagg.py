"""The SecAgg+ client mod: stage order, refusals that protect the node, and the real apps end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from client_app.app import TRAIN_MODS
from client_app.compression import compression_mod
from client_app.dp import dp_clipping_mod
from client_app.secagg import NodeState, ProtocolError, secagg_mod, setup, share_keys, unmask
from harness.dropout import dropout_mod
from tasks import wire
from tests.conftest import AppGrid

SETUP = {
    wire.SECAGG_STAGE: wire.SECAGG_SETUP,
    wire.SECAGG_SAMPLE_NUMBER: 3,
    wire.SECAGG_SHARE_NUMBER: 3,
    wire.SECAGG_THRESHOLD: 2,
    wire.SECAGG_CLIPPING_RANGE: 1.0,
    wire.SECAGG_TARGET_RANGE: 2**16,
    wire.SECAGG_MOD_RANGE: 2**40,
    wire.SECAGG_MAX_WEIGHT: 100,
}


def stage_message(node: int, config: dict) -> Message:
    content = RecordDict({wire.SECAGG_CONFIGS: ConfigRecord(config)})
    return Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN)


def context(node: int) -> Context:
    return Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})


def never(msg: Message, ctx: Context) -> Message:
    raise AssertionError("a stage other than collect must not train")


def three_nodes_after_setup() -> dict[int, NodeState]:
    return {n: setup(SETUP, n)[0] for n in (11, 22, 33)}


def keys_of(states: dict[int, NodeState]) -> dict[str, list[bytes]]:
    return {str(n): [s.pk1, s.pk2] for n, s in states.items()}


def test_a_train_message_without_the_secagg_record_passes_through_untouched() -> None:
    msg = Message(content=RecordDict(), dst_node_id=5, message_type=MessageType.TRAIN)
    reply = Message(content=RecordDict(), reply_to=msg)
    ctx = context(5)

    out = secagg_mod(msg, ctx, lambda m, c: reply)

    assert out is reply
    assert wire.SECAGG_STATE not in ctx.state.config_records


def test_the_mod_wraps_every_reply_changing_mod_so_clipping_happens_before_masking() -> None:
    # Only the simulated dropout (harness.dropout) sits outside it: it must see stage messages
    # to stop answering after key sharing, and it never changes a reply it lets through.
    assert TRAIN_MODS[:2] == [dropout_mod, secagg_mod]
    assert TRAIN_MODS.index(dp_clipping_mod) > 1 and TRAIN_MODS.index(compression_mod) > 1


def test_setup_replies_two_public_keys_and_keeps_its_state_in_the_context() -> None:
    ctx = context(7)

    reply = secagg_mod(stage_message(7, SETUP), ctx, never)

    config = reply.content.config_records[wire.SECAGG_CONFIGS]
    assert config[wire.SECAGG_STAGE] == wire.SECAGG_SETUP
    assert isinstance(config[wire.SECAGG_PUBLIC_KEY_1], bytes) and isinstance(
        config[wire.SECAGG_PUBLIC_KEY_2], bytes
    )
    state = NodeState.from_record(ctx.state.config_records[wire.SECAGG_STATE])
    assert (state.stage, state.nid, state.pk1) == (wire.SECAGG_SETUP, 7, config[wire.SECAGG_PUBLIC_KEY_1])


@pytest.mark.parametrize("stage", [wire.SECAGG_SHARE_KEYS, wire.SECAGG_COLLECT, wire.SECAGG_UNMASK, "bogus"])
def test_a_stage_out_of_protocol_order_is_refused(stage: str) -> None:
    with pytest.raises(ProtocolError, match="stage"):
        secagg_mod(stage_message(7, {wire.SECAGG_STAGE: stage}), context(7), never)


def test_setup_refuses_a_threshold_an_honest_server_would_not_send() -> None:
    with pytest.raises(ProtocolError, match="threshold"):
        setup({**SETUP, wire.SECAGG_THRESHOLD: 1}, 7)
    with pytest.raises(ProtocolError, match="mod_range"):
        setup({**SETUP, wire.SECAGG_MOD_RANGE: 1000}, 7)
    with pytest.raises(ProtocolError, match="must be a int"):
        setup({**SETUP, wire.SECAGG_THRESHOLD: True}, 7)


def test_share_keys_encrypts_one_share_pair_per_neighbour_and_publishes_digests() -> None:
    states = three_nodes_after_setup()

    result = share_keys(states[11], {wire.SECAGG_STAGE: wire.SECAGG_SHARE_KEYS, **keys_of(states)})

    assert sorted(result[wire.SECAGG_DESTINATION_LIST]) == [22, 33]
    assert result[wire.SECAGG_HOLDER_LIST] == [11, 22, 33]
    assert all(
        len(d) == 32 for d in result[wire.SECAGG_SEED_SHARE_DIGESTS] + result[wire.SECAGG_KEY_SHARE_DIGESTS]
    )
    # The ciphertexts do not contain the shares in the clear.
    own = states[11].seed_shares[11]
    assert all(own not in c for c in result[wire.SECAGG_CIPHERTEXT_LIST])


def test_share_keys_refuses_altered_own_keys_and_duplicates() -> None:
    states = three_nodes_after_setup()
    keys = keys_of(states)
    with pytest.raises(ProtocolError, match="own public keys"):
        share_keys(states[11], {**keys, "11": [states[22].pk1, states[11].pk2]})
    with pytest.raises(ProtocolError, match="identical"):
        share_keys(states[11], {**keys, "33": [states[22].pk1, states[22].pk2]})
    with pytest.raises(ProtocolError, match="neighbours"):
        share_keys(states[11], {"11": keys["11"]})


def shared_states() -> dict[int, NodeState]:
    states = three_nodes_after_setup()
    keys = keys_of(states)
    for state in states.values():
        share_keys(state, {wire.SECAGG_STAGE: wire.SECAGG_SHARE_KEYS, **keys})
        state.seed_shares.update({n: b"s" for n in states})
        state.key_shares.update({n: b"k" for n in states})
    return states


def test_unmask_never_reveals_both_secrets_of_a_node_nor_its_own_key() -> None:
    state = shared_states()[11]
    with pytest.raises(ProtocolError, match="both"):
        unmask(state, {wire.SECAGG_ACTIVE_NODE_ID_LIST: [11, 22], wire.SECAGG_DEAD_NODE_ID_LIST: [22]})
    with pytest.raises(ProtocolError, match="survivor"):
        unmask(state, {wire.SECAGG_ACTIVE_NODE_ID_LIST: [22, 33], wire.SECAGG_DEAD_NODE_ID_LIST: [11]})
    with pytest.raises(ProtocolError, match="fewer than threshold"):
        unmask(state, {wire.SECAGG_ACTIVE_NODE_ID_LIST: [11], wire.SECAGG_DEAD_NODE_ID_LIST: [22, 33]})
    with pytest.raises(ProtocolError, match="no shares held"):
        unmask(state, {wire.SECAGG_ACTIVE_NODE_ID_LIST: [11, 44], wire.SECAGG_DEAD_NODE_ID_LIST: []})

    result = unmask(state, {wire.SECAGG_ACTIVE_NODE_ID_LIST: [11, 22], wire.SECAGG_DEAD_NODE_ID_LIST: [33]})

    assert result == {wire.SECAGG_NODE_ID_LIST: [11, 22, 33], wire.SECAGG_SHARE_LIST: [b"s", b"s", b"k"]}


def test_a_node_forgets_its_secrets_once_it_has_unmasked() -> None:
    state = shared_states()[11]
    state.stage = wire.SECAGG_COLLECT
    ctx = context(11)
    ctx.state.config_records[wire.SECAGG_STATE] = state.to_record()
    config = {
        wire.SECAGG_STAGE: wire.SECAGG_UNMASK,
        wire.SECAGG_ACTIVE_NODE_ID_LIST: [11, 22],
        wire.SECAGG_DEAD_NODE_ID_LIST: [33],
    }

    secagg_mod(stage_message(11, config), ctx, never)

    kept = NodeState.from_record(ctx.state.config_records[wire.SECAGG_STATE])
    assert kept.stage == wire.SECAGG_UNMASK
    assert (kept.sk1, kept.sk2, kept.seed, kept.seed_shares, kept.key_shares) == (b"", b"", b"", {}, {})


def test_a_tampered_share_is_refused_at_collect() -> None:
    states = three_nodes_after_setup()
    ctxs = {n: context(n) for n in states}
    for node, state in states.items():
        state.stage = wire.SECAGG_SHARE_KEYS
        ctxs[node].state.config_records[wire.SECAGG_STATE] = state.to_record()
    config = {
        wire.SECAGG_STAGE: wire.SECAGG_COLLECT,
        wire.SECAGG_CIPHERTEXT_LIST: [b"gAAAAAnot-a-fernet-token"],
        wire.SECAGG_SOURCE_LIST: [22],
    }
    states[11].public_keys = {n: (s.pk1, s.pk2) for n, s in states.items()}
    ctxs[11].state.config_records[wire.SECAGG_STATE] = states[11].to_record()

    with pytest.raises(ProtocolError, match="does not decrypt"):
        secagg_mod(stage_message(11, config), ctxs[11], never)


# ------------------------------------------------------------------ the real apps
def test_the_real_server_and_client_apps_train_under_secagg_and_report_it(tmp_path: Path) -> None:
    # Prepare: the real ServerApp and ClientApp in this process, one round of linear regression on 4 nodes.
    from server_app.app import main

    config = {
        "dataset": "linreg",
        "num-server-rounds": 1,
        "min-available-nodes": 4,
        "min-train-nodes": 4,
        "fraction-evaluate": 0.0,
        "output-dir": str(tmp_path),
        "secure-aggregation": "secagg+",
        "secagg-num-shares": 3,
        "secagg-reconstruction-threshold": 2,
        "secagg-clipping-range": 4.0,
    }
    grid = AppGrid(4, run_config=config)
    ctx = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)

    # Execute
    main(grid, ctx)  # type: ignore[arg-type]

    # Assert: every round unmasked the sum of the 4 nodes, and the model learned.
    (metrics_path,) = tmp_path.glob("*/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["status"] == "completed"
    rounds = [r for r in metrics["rounds"] if r["round"] >= 1]
    assert [r["secagg_survivors"] for r in rounds] == [4]
    assert all(r["secagg_dropped"] == 0 and r["secagg_kept_reason"] is None for r in rounds)
    assert all(not r["kept_previous_model"] and r["succeeded"] == 4 for r in rounds)
    assert all(np.isfinite(r["train_loss"]) for r in rounds)
    assert rounds[-1]["central_loss"] < metrics["rounds"][0]["central_loss"]
    # Every train message a node received was a SecAgg+ stage; none of its replies carried a model.
    assert all(
        wire.SECAGG_CONFIGS in m.content.config_records
        for m in grid.sent
        if m.metadata.message_type == "train"
    )


def test_real_clients_under_secagg_give_plain_fedavgs_model_within_the_bound() -> None:
    # Prepare: the same round of the real ClientApp (deterministic local training) twice.
    from flwr.app import ConfigRecord

    from strategies.core.loop import with_ttl
    from strategies.core.records import from_layers, to_layers
    from strategies.core.registry import build_strategy
    from strategies.numeric.secagg import mean_error_bound
    from tasks.config import AppConfig
    from tasks.models import build_model

    model = build_model("linreg", (5,), 0)
    initial = from_layers(list(model.state_dict()), [t.numpy() for t in model.state_dict().values()])
    train = {"model": "linreg", "num-classes": 0, "local-epochs": 1, "batch-size": 10, "learning-rate": 0.1}
    train.update({"momentum": 0.0, "weight-decay": 0.0, "server-round": 1})
    released = {}
    for mode in ("none", "secagg+"):
        config = {
            "dataset": "linreg",
            "min-available-nodes": 4,
            "secure-aggregation": mode,
            "secagg-num-shares": 3,
            "secagg-reconstruction-threshold": 2,
        }
        strategy = build_strategy(AppConfig.from_run_config(config))
        grid = AppGrid(4, run_config=config)

        # Execute
        messages = with_ttl(strategy.configure_train(1, initial, ConfigRecord(train), grid), 600)  # type: ignore[arg-type]
        arrays, _ = strategy.aggregate_train(1, strategy.train_exchange(grid, 1, messages, 600))  # type: ignore[attr-defined]
        released[mode] = [np.asarray(a, np.float64) for a in to_layers(arrays)]

    # Assert: per coordinate within 2c/R (plus float32 rounding of O(1) weights).
    bound = mean_error_bound(clipping_range=8.0, quantization_range=4194304) + 1e-6
    for plain, secure in zip(released["none"], released["secagg+"], strict=True):
        assert np.max(np.abs(plain - secure)) <= bound
    assert any(
        not np.array_equal(a, np.asarray(b))
        for a, b in zip(released["none"], to_layers(initial), strict=True)
    )
