"""fused-evaluate through the real ServerApp and ClientApp in this process (:class:`AppGrid`).

A fused round must report what a separate evaluate stage of the same model on the same
nodes reports, in one round trip; every strategy and wrapper with a train stage must carry
the evaluation through (DP's clipping mod, compression's encoding and decoding), and
FedBuff must refuse it before any training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

from server_app.app import client_configs, main, prepare
from strategies.core.records import from_layers
from strategies.core.registry import build_strategy
from tasks import wire
from tasks.config import AppConfig, ConfigError
from tasks.train import get_weights
from tests.conftest import DP_RUN_CONFIG, AppGrid

NODES = 4
BASE: dict[str, Any] = {
    "num-server-rounds": 2,
    "local-epochs": 1,
    "fraction-train": 0.75,
    "fraction-evaluate": 0.5,
    "min-available-nodes": NODES,
    "min-train-nodes": 2,
    "threads-per-client": 1,
    "central-eval": False,
    "robust-num-byzantine": 0,
}


def run_strategy(run_config: dict[str, Any]) -> tuple[AppGrid, Any, dict[int, ArrayRecord], ConfigRecord]:
    """Two rounds of the configured strategy over the real ClientApp; the model after each round."""
    cfg = AppConfig.from_run_config(run_config)
    bundle, model_name, model = prepare(cfg)
    strategy = build_strategy(cfg)
    grid = AppGrid(NODES, run_config=run_config)
    train_config, eval_config = client_configs(cfg, model_name, bundle.num_classes)
    models: dict[int, ArrayRecord] = {}

    def keep(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        models[server_round] = arrays
        return None

    names = list(model.state_dict().keys())
    strategy.start(
        grid=grid,
        initial_arrays=from_layers(names, get_weights(model)),
        num_rounds=cfg.num_server_rounds,
        train_config=train_config,
        evaluate_config=eval_config,
        evaluate_fn=keep,
    )
    return grid, strategy, models, eval_config


def separate_evaluation(grid: AppGrid, arrays: ArrayRecord, nodes: list[int], config: ConfigRecord) -> dict:
    """What an evaluate stage of ``arrays`` on ``nodes`` reports: example-weighted loss and accuracy."""
    messages = [
        Message(
            RecordDict({wire.ARRAYS: arrays, wire.CONFIG: ConfigRecord(dict(config))}),
            message_type=MessageType.EVALUATE,
            dst_node_id=node,
        )
        for node in nodes
    ]
    metrics = [r.content[wire.METRICS] for r in grid.send_and_receive(messages)]
    total = sum(m[wire.NUM_EXAMPLES] for m in metrics)
    return {
        "loss": sum(m[wire.NUM_EXAMPLES] * m[wire.LOSS] for m in metrics) / total,
        "accuracy": sum(m[wire.NUM_EXAMPLES] * m[wire.ACCURACY] for m in metrics) / total,
    }


def train_nodes(grid: AppGrid, server_round: int) -> list[int]:
    return [
        m.metadata.dst_node_id
        for m in grid.sent
        if m.metadata.message_type == MessageType.TRAIN
        and m.content[wire.CONFIG][wire.SERVER_ROUND] == server_round
    ]


def test_a_fused_round_reports_a_separate_evaluate_of_the_previous_model_on_its_nodes() -> None:
    # Prepare / Execute: two fused rounds.
    grid, strategy, models, eval_config = run_strategy({**BASE, "fused-evaluate": True})

    # Assert: round r's fused figures are those of evaluating round r-1's model (round 0:
    # the initial model) on round r's train nodes, done separately afterwards.
    for server_round in (1, 2):
        nodes = train_nodes(grid, server_round)
        stats = strategy.stats[server_round]
        want = separate_evaluation(grid, models[server_round - 1], nodes, eval_config)
        assert stats.fused_eval_sampled == stats.fused_eval_succeeded == len(nodes) == 3
        assert stats.fused_federated_loss == pytest.approx(want["loss"], rel=1e-9)
        assert stats.fused_federated_accuracy == pytest.approx(want["accuracy"], rel=1e-9)
        assert stats.eval_sampled == 0 and stats.federated_loss is None


def test_fused_rounds_make_one_round_trip_each_and_separate_ones_two() -> None:
    fused_grid, _, _, _ = run_strategy({**BASE, "fused-evaluate": True})
    separate_grid, _, _, _ = run_strategy({**BASE, "fused-evaluate": False})

    # One push per round (and no evaluate message at all) against a push per stage.
    assert fused_grid.calls["push_messages"] == 2
    assert {m.metadata.message_type for m in fused_grid.sent} == {MessageType.TRAIN}
    assert separate_grid.calls["push_messages"] == 4


COMBINATIONS = {
    "fedavg-int8": {"strategy": "fedavg", "compression": "int8"},
    "fedprox": {"strategy": "fedprox", "proximal-mu": 0.01},
    "median": {"strategy": "median"},
    "multikrum-topk": {"strategy": "multi-krum", "compression": "topk", "topk-fraction": 0.1},
    "fedadam": {"strategy": "fedadam"},
    "dpfedavg-client-clipping-topk": {
        "strategy": "dp-fedavg",
        "dp-clipping": "client",
        "compression": "topk",
        "topk-fraction": 0.1,
        **DP_RUN_CONFIG,
    },
    "dpfedprox-int8": {"strategy": "dp-fedprox", "proximal-mu": 0.01, "compression": "int8", **DP_RUN_CONFIG},
}


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_fused_evaluation_composes_with_every_train_stage(name: str, tmp_path: Path) -> None:
    # Prepare
    config = {**BASE, **COMBINATIONS[name], "fused-evaluate": True, "output-dir": str(tmp_path)}
    grid = AppGrid(NODES, run_config=config)
    context = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)

    # Execute
    main(grid, context)  # type: ignore[arg-type]

    # Assert: each round's row names the model it evaluated, every train node's evaluation
    # counted (none dropped by a wrapper), one round trip per round, nothing rejected.
    (metrics_file,) = tmp_path.glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "completed"
    rows = [r for r in metrics["rounds"] if r["round"] > 0]
    assert [r["fused_eval_of_round"] for r in rows] == [0, 1]
    for row in rows:
        assert row["fused_eval_succeeded"] == row["fused_eval_sampled"] == row["succeeded"] > 0
        assert 0.0 <= row["fused_federated_accuracy"] <= 1.0 and row["fused_federated_loss"] > 0
        assert row["federated_accuracy"] is None and row["rejected"] == {}
        assert row["train_loss"] is not None
    assert grid.calls["push_messages"] == 2


def test_fedbuff_refuses_fused_evaluation_before_training(tmp_path: Path) -> None:
    config = {**BASE, "strategy": "fedbuff", "fused-evaluate": True, "output-dir": str(tmp_path)}
    with pytest.raises(ConfigError, match="fused-evaluate=true cannot be combined with strategy='fedbuff'"):
        build_strategy(AppConfig.from_run_config(config))
    grid = AppGrid(NODES, run_config=config)
    context = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    with pytest.raises(ConfigError, match="different model versions"):
        main(grid, context)  # type: ignore[arg-type]
    assert grid.sent == [] and not list(tmp_path.glob("*/metrics.json"))
