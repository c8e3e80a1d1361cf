"""Tests for harness.dropout: which partitions are lost after SecAgg+ key sharing, and the mod."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode

from harness.dropout import choose_dropped, dropout_mod, dropout_problem, is_dropped
from server_app.app import client_configs, prepare
from strategies.core.records import from_layers
from tasks import wire
from tasks.config import AppConfig, ConfigError
from tests.conftest import DIGITS_TRAIN_CONFIG

STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")


def test_choice_is_seeded_sized_and_nested() -> None:
    # Execute
    small, large = choose_dropped(10, count=2, seed=42), choose_dropped(10, count=5, seed=42)

    # Assert: the size asked for, the same for the same seed, a superset for a larger count.
    assert len(small) == 2 and len(large) == 5 and set(small) <= set(large)
    assert choose_dropped(10, count=2, seed=42) == small
    assert all(0 <= p < 10 for p in large) and large == sorted(large)
    assert choose_dropped(10, count=0, seed=42) == []
    assert choose_dropped(3, count=7, seed=1) == [0, 1, 2]
    others = {tuple(choose_dropped(10, count=2, seed=s)) for s in range(20)}
    assert len(others) > 5  # the seed chooses, not a fixed list
    assert choose_dropped(10, count=2, seed=-5) == choose_dropped(10, count=2, seed=-5)


def test_choice_spreads_evenly_over_partitions() -> None:
    counts = np.zeros(10)
    for seed in range(2000):
        for p in choose_dropped(10, count=2, seed=seed):
            counts[p] += 1

    assert counts.sum() == 4000
    np.testing.assert_allclose(counts / 2000, 0.2, atol=0.03)  # each partition with chance 2/10


@pytest.mark.parametrize(
    ("num_partitions", "count", "message"),
    [(0, 1, "num-partitions=0 must be >= 1"), (10, -1, "secagg-drop-after-share-keys=-1 must be >= 0")],
)
def test_choice_refuses_bad_arguments(num_partitions: int, count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_dropped(num_partitions, count=count, seed=0)


def test_only_chosen_simulated_partitions_drop() -> None:
    chosen = set(choose_dropped(10, count=3, seed=7))
    config = {wire.SECAGG_DROP_AFTER_SHARE_KEYS: 3, wire.SEED: 7}

    dropped = {p for p in range(10) if is_dropped(config, {"partition-id": p, "num-partitions": 10})}

    assert dropped == chosen
    assert not any(is_dropped({wire.SEED: 7}, {"partition-id": p, "num-partitions": 10}) for p in range(10))
    deployed = {"partition-id": min(chosen), "num-partitions": 10, "data-path": "/data/node.npz"}
    assert not is_dropped(config, deployed) and not is_dropped(config, {})


def test_dropping_needs_secure_aggregation() -> None:
    problem = dropout_problem(2, "none")

    assert problem is not None and "secure-aggregation='secagg+'" in problem
    assert dropout_problem(0, "none") is None and dropout_problem(2, "secagg+") is None


def test_the_server_refuses_dropouts_without_secure_aggregation_before_training() -> None:
    cfg = AppConfig.from_run_config({"secagg-drop-after-share-keys": 1})

    with pytest.raises(ConfigError, match="secure-aggregation='secagg\\+'"):
        prepare(cfg)


def test_the_key_is_declared_validated_and_sent_in_the_train_config() -> None:
    with pytest.raises(ConfigError, match="secagg-drop-after-share-keys=-1"):
        AppConfig.from_run_config({"secagg-drop-after-share-keys": -1})
    cfg = AppConfig.from_run_config({"secagg-drop-after-share-keys": 2, "seed": 5})

    train, _ = client_configs(cfg, "digits-cnn", 10)
    plain, _ = client_configs(AppConfig.from_run_config({}), "digits-cnn", 10)

    assert train[wire.SECAGG_DROP_AFTER_SHARE_KEYS] == 2 and train[wire.SEED] == 5
    assert wire.SECAGG_DROP_AFTER_SHARE_KEYS not in plain


# ------------------------------------------------------------------------ the mod
def stage_message(stage: str, train_config: dict | None = None) -> Message:
    content = RecordDict({wire.SECAGG_CONFIGS: ConfigRecord({wire.SECAGG_STAGE: stage})})
    if train_config is not None:
        content[wire.ARRAYS] = from_layers(["w"], [np.zeros(3, np.float32)])
        content[wire.CONFIG] = ConfigRecord(train_config)
    return Message(content, dst_node_id=3, message_type=MessageType.TRAIN)


def node(partition: int) -> Context:
    config = {"partition-id": partition, "num-partitions": 10}
    return Context(run_id=1, node_id=3, node_config=config, state=RecordDict(), run_config={})


def answering(calls: list[str]):  # noqa: ANN201
    """A stand-in for the inner mods and handler: records the stage it answers."""

    def call_next(msg: Message, ctx: Context) -> Message:
        stage = msg.content.config_records[wire.SECAGG_CONFIGS][wire.SECAGG_STAGE]
        calls.append(str(stage))
        return Message(RecordDict({wire.SECAGG_CONFIGS: ConfigRecord({"ok": 1})}), reply_to=msg)

    return call_next


def one_round(ctx: Context, config: dict, calls: list[str]) -> list[Message]:
    return [
        dropout_mod(
            stage_message(stage, config if stage == "collect_masked_vectors" else None), ctx, answering(calls)
        )
        for stage in STAGES
    ]


def test_a_chosen_node_answers_key_sharing_then_goes_silent_every_round() -> None:
    # Prepare: one chosen partition and one that stays.
    config = {**DIGITS_TRAIN_CONFIG, wire.SECAGG_DROP_AFTER_SHARE_KEYS: 2, wire.SEED: 42}
    lost, kept = (
        choose_dropped(10, count=2, seed=42)[0],
        next(p for p in range(10) if p not in choose_dropped(10, count=2, seed=42)),
    )
    lost_ctx, kept_ctx = node(lost), node(kept)
    lost_calls: list[str] = []
    kept_calls: list[str] = []

    # Execute: two rounds of the four stages on each node.
    lost_replies = one_round(lost_ctx, config, lost_calls) + one_round(lost_ctx, config, lost_calls)
    kept_replies = one_round(kept_ctx, config, kept_calls) + one_round(kept_ctx, config, kept_calls)

    # Assert: the lost node answered setup and share keys, then NODE_UNAVAILABLE, in both rounds.
    assert lost_calls == ["setup", "share_keys"] * 2
    assert [r.has_error() for r in lost_replies] == [False, False, True, True] * 2
    errors = [r.error for r in lost_replies if r.has_error()]
    assert all(e.code == ErrorCode.NODE_UNAVAILABLE and "after key sharing" in e.reason for e in errors)
    assert kept_calls == list(STAGES) * 2 and not any(r.has_error() for r in kept_replies)


def test_without_dropouts_or_outside_secagg_every_message_passes() -> None:
    ctx = node(choose_dropped(10, count=9, seed=42)[0])
    calls: list[str] = []

    replies = one_round(ctx, {**DIGITS_TRAIN_CONFIG, wire.SEED: 42}, calls)

    assert calls == list(STAGES) and not any(r.has_error() for r in replies)
    # A plain train message (no SecAgg+ stage) reaches the handler even on a chosen node.
    plain = Message(
        RecordDict(
            {wire.CONFIG: ConfigRecord({**DIGITS_TRAIN_CONFIG, wire.SECAGG_DROP_AFTER_SHARE_KEYS: 9})}
        ),
        dst_node_id=3,
        message_type=MessageType.TRAIN,
    )
    seen: list[Message] = []

    def handler(msg: Message, c: Context) -> Message:
        seen.append(msg)
        return Message(RecordDict(), reply_to=msg)

    assert not dropout_mod(plain, ctx, handler).has_error() and len(seen) == 1


# ------------------------------------------- with the real ServerApp and ClientApp (AppGrid)
def run_in_process(tmp_path: Path, drop: int) -> list[dict]:
    from server_app.app import main
    from tests.conftest import AppGrid

    config = {
        "output-dir": str(tmp_path),
        "num-server-rounds": 1,
        "local-epochs": 1,
        "fraction-evaluate": 0.0,
        "min-available-nodes": 5,
        "threads-per-client": 1,
        "secure-aggregation": "secagg+",
        "secagg-num-shares": 5,
        "secagg-reconstruction-threshold": 3,
        "secagg-drop-after-share-keys": drop,
    }
    grid = AppGrid(5, run_config=config)
    main(grid, Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config))  # type: ignore[arg-type]
    (metrics,) = tmp_path.glob("*/metrics.json")
    return json.loads(metrics.read_text())["rounds"]


def test_secagg_recovers_the_lost_nodes_masks_while_the_threshold_holds(tmp_path: Path) -> None:
    # Execute: 5 nodes, all neighbours of all, threshold 3: 2 lost after key sharing.
    rounds = run_in_process(tmp_path, drop=2)

    # Assert: the 3 survivors' sum was unmasked and released; the 2 lost nodes are counted.
    row = rounds[1]
    assert row["secagg_survivors"] == 3 and row["secagg_dropped"] == 2, row
    assert not row["kept_previous_model"] and row["central_accuracy"] > rounds[0]["central_accuracy"], row


def test_secagg_keeps_the_model_when_too_few_survive(tmp_path: Path) -> None:
    rounds = run_in_process(tmp_path, drop=3)

    row = rounds[1]
    assert row["secagg_survivors"] == 2 and row["secagg_dropped"] == 3, row
    assert row["kept_previous_model"] and "threshold" in row["secagg_kept_reason"], row
    assert row["central_accuracy"] == rounds[0]["central_accuracy"]
