"""DP end to end: epsilon in metrics.json, user-level (DP-FedAvg) and sample-level (DP-SGD).

One SuperLink with 100 virtual SuperNodes serves both DP-FedAvg runs: a complete run
whose epsilon is recorded and grows every round, and a run whose ``dp-max-epsilon``
stops it early with the reason in metrics.json and the last model saved. The DP-SGD
run uses the session's 10-node SuperLink (2 workers) and checks each node's epsilon.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import LocalFlower, start_local_flower, stop_process_tree

ROUNDS = 3
DP_RUN = (
    "strategy='dp-fedavg' dataset='synthetic' synthetic-devices=100 "
    f"num-server-rounds={ROUNDS} local-epochs=1 batch-size=20 learning-rate=0.05 "
    "min-available-nodes=100 fraction-evaluate=0.05 min-evaluate-nodes=2 "
    "dp-sampling='poisson' dp-sampling-rate=0.1 dp-population=100 dp-noise-multiplier=1.0 "
    "dp-clip-norm=1.0 dp-weight-cap=40.0 dp-delta=1e-5 dp-noise-seed=-1"
)


def _run(flower: LocalFlower, out: Path, overrides: str) -> tuple[Path, dict, str]:
    proc = flower.run("--run-config", f"output-dir='{out}' {overrides}")
    log = proc.stdout + proc.stderr
    dirs = sorted(p.parent for p in out.glob("*/metrics.json"))
    assert len(dirs) == 1, f"expected one run directory under {out}\n{log}"
    return dirs[0], json.loads((dirs[0] / "metrics.json").read_text()), log


def test_dp_fedavg_records_growing_epsilon_and_max_epsilon_stops_early(tmp_path: Path) -> None:
    flower = start_local_flower(tmp_path / "home", num_supernodes=100)
    try:
        # Execute: a full run, then one with a budget between epsilon of rounds 1 and 2.
        _, full, full_log = _run(flower, tmp_path / "full", DP_RUN)
        rounds = {r["round"]: r for r in full["rounds"]}
        assert full["status"] == "completed", full_log
        budget = (rounds[1]["epsilon"] + rounds[2]["epsilon"]) / 2
        stopped_dir, stopped, stopped_log = _run(
            flower, tmp_path / "stopped", f"{DP_RUN} dp-max-epsilon={budget}"
        )
    finally:
        stop_process_tree(flower.pid)

    # Assert: epsilon in every round, strictly increasing; Poisson sample sizes recorded.
    assert sorted(rounds) == list(range(ROUNDS + 1))
    epsilons = [rounds[t]["epsilon"] for t in range(1, ROUNDS + 1)]
    assert all(e is not None and e > 0 for e in epsilons), epsilons
    assert all(a < b for a, b in zip(epsilons, epsilons[1:], strict=False)), epsilons
    assert rounds[0]["epsilon"] is None and all(rounds[t]["delta"] == 1e-5 for t in rounds)
    assert all(rounds[t]["sampled_clients"] == rounds[t]["sampled"] for t in range(1, ROUNDS + 1))
    assert "privacy: ε=" in full_log
    # The budgeted run stops before round 2, says why, and keeps round 1's model.
    assert stopped["status"] == "stopped", stopped_log
    assert any("dp-max-epsilon" in note and "stopped after round 1" in note for note in stopped["notes"])
    assert [r["round"] for r in stopped["rounds"]] == [0, 1]
    assert (stopped_dir / "model.safetensors").exists()


def test_dp_sgd_epsilon_of_every_node_covers_all_its_rounds_across_workers(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    """10 nodes on 2 simulation workers: each message goes to whichever worker is idle, so
    a node's rounds are split across processes; each node's ε must still be its own 4 rounds'."""
    from opacus.accountants import RDPAccountant

    from tasks.config import AppConfig
    from tasks.loading import client_data
    from tests.e2e.test_simulation import finished_run

    # Prepare: what each partition's DP-SGD does per round (Opacus: q = 1/batches, batches steps).
    overrides = {
        "num-server-rounds": 4,
        "local-epochs": 1,
        "batch-size": 10,
        "fraction-train": 1.0,
        "fraction-evaluate": 0.0,
        "dp-sgd-noise-multiplier": 1.0,
        "dp-sgd-delta": 1e-5,
    }
    cfg = AppConfig.from_run_config(overrides)
    expected = []
    for partition in range(10):
        batches = math.ceil(len(client_data(cfg, partition, 10).x_train) / 10)
        accountant = RDPAccountant()
        for _ in range(4 * batches):
            accountant.step(noise_multiplier=1.0, sample_rate=1 / batches)
        expected.append(accountant.get_epsilon(1e-5))

    # Execute
    _, metrics = finished_run(local_flower, tmp_path, " ".join(f"{k}={v}" for k, v in overrides.items()))

    # Assert: every node in every round; after round 4 each node's ε is its 4 rounds' ε.
    rounds = {r["round"]: r for r in metrics["rounds"]}
    for t in range(1, 5):
        by_node = rounds[t]["dp_sgd_epsilon_by_node"]
        assert len(by_node) == 10 and rounds[t]["dp_sgd_epsilon"] == max(by_node.values())
    final = rounds[4]["dp_sgd_epsilon_by_node"]
    assert sorted(final.values()) == pytest.approx(sorted(expected), rel=1e-9)
    for node in final:  # and it grew every round for every node
        per_round = [rounds[t]["dp_sgd_epsilon_by_node"][node] for t in range(1, 5)]
        assert all(a < b for a, b in zip(per_round, per_round[1:], strict=False)), (node, per_round)
