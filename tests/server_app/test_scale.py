"""A large population through the real ServerApp and ClientApp (in process): what a round keeps grows
with the sampled clients, not with the population (docs/scaling.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

import client_app.app as client_module
from server_app.app import main
from tests.conftest import AppGrid

POPULATION = 2_000
PER_ROUND = 10


def run_server(out: Path, run_config: dict) -> dict:
    grid = AppGrid(POPULATION, run_config=run_config)
    context = Context(
        run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    main(grid, context)  # type: ignore[arg-type]
    (metrics,) = out.glob("*/metrics.json")
    return json.loads(metrics.read_text()) | {"run_id": grid.run_id}


@pytest.mark.slow  # 15-35 s each on 2 shared cores: plots, checkpoints and Synthetic's large devices
@pytest.mark.parametrize(
    ("data", "examples_per_client"),
    [
        ({"dataset": "digits", "partitioner": "sampled", "partition-size": 14}, 13),
        ({"dataset": "synthetic", "synthetic-devices": POPULATION}, None),
    ],
)
def test_a_population_larger_than_the_dataset_trains_and_rounds_stay_per_sampled_client(
    data: dict, examples_per_client: int | None, tmp_path: Path
) -> None:
    # Prepare: 2,000 virtual nodes (more than digits' 1,437 training images), 10 per round
    run_config = {
        **data,
        "num-server-rounds": 2,
        "fraction-train": PER_ROUND / POPULATION,
        "fraction-evaluate": PER_ROUND / POPULATION,
        "min-train-nodes": PER_ROUND,
        "min-evaluate-nodes": PER_ROUND,
        "min-available-nodes": POPULATION,
        "local-epochs": 1,
        "central-eval": False,
        "output-dir": str(tmp_path),
    }
    client_module.clear_caches()

    # Execute
    metrics = run_server(tmp_path, run_config)

    # Assert: every round trained and evaluated the sampled clients only
    assert metrics["status"] == "completed"
    rounds = [r for r in metrics["rounds"] if r["round"] >= 1]
    for row in rounds:
        assert (row["sampled"], row["succeeded"], row["eval_succeeded"]) == (PER_ROUND, PER_ROUND, PER_ROUND)
        assert row["failed_nodes"] == [] and "workers" not in row  # nothing per node, not on Ray
        if examples_per_client is not None:
            assert row["train_examples"] == PER_ROUND * examples_per_client
        else:
            assert row["train_examples"] > 0
    # The worker kept only the nodes it served (at most 2 rounds × 10 train + 10 evaluate).
    run = client_module._RUNS.peek(metrics["run_id"])
    assert run is not None and 0 < len(run.nodes) <= 2 * 2 * PER_ROUND
