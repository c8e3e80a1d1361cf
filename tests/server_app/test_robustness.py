"""Robust aggregation under attack, on digits, with 20% of the clients Byzantine.

The real ServerApp and the real ClientApp run in this process (:class:`AppGrid`): the
attack is the ClientApp's own (run config ``attack``), the defence the registered
strategy's. The attack must be real (FedAvg loses at least 10 accuracy points) and the
robust aggregators must shrug it off (within 3 points of the clean FedAvg run and of
their own clean run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from harness.attacks import choose_attacked
from server_app.app import main
from tests.conftest import AppGrid

#: Twelve ServerApp runs of 10 clients (minutes): the attack needs this size to be real, so
#: the test runs in the ``slow`` tier rather than on smaller, weaker data.
pytestmark = pytest.mark.slow

NUM_CLIENTS = 10
SETTINGS = {
    "num-server-rounds": 4,
    "local-epochs": 5,
    "threads-per-client": 1,
    "fraction-evaluate": 0.0,
    "min-available-nodes": NUM_CLIENTS,
    "robust-num-byzantine": 2,
    "trimmed-mean-beta": 0.2,
    "attack-fraction": 0.2,
}
ROBUST = ("median", "trimmed-mean", "multi-krum")
ATTACKS = {
    "sign-flip": {"attack": "sign-flip", "attack-scale": 4.0},
    "scale": {"attack": "scale", "attack-scale": 20.0},
}


def run(out: Path, overrides: dict) -> tuple[float, Path]:
    config = {"output-dir": str(out), **SETTINGS, **overrides}
    grid = AppGrid(NUM_CLIENTS, run_config=config)
    context = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    main(grid, context)  # type: ignore[arg-type]
    (run_dir,) = [p.parent for p in out.glob("*/metrics.json")]
    rounds = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    return float(rounds[-1]["central_accuracy"]), run_dir


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    out = tmp_path_factory.mktemp("clean")
    return {name: run(out / name, {"strategy": name})[0] for name in ("fedavg", *ROBUST)}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_fedavg_is_hurt_and_robust_aggregators_are_not(
    attack: str, clean: dict[str, float], tmp_path: Path
) -> None:
    # Execute: the same runs with 2 of 10 clients attacking.
    attacked, dirs = {}, {}
    for name in ("fedavg", *ROBUST):
        attacked[name], dirs[name] = run(tmp_path / name, {"strategy": name, **ATTACKS[attack]})

    # Assert: the attack is real, and the defences hold.
    assert clean["fedavg"] >= 0.85, clean
    assert attacked["fedavg"] <= clean["fedavg"] - 0.10, (attacked, clean)
    for name in ROBUST:
        assert attacked[name] >= clean["fedavg"] - 0.03, (name, attacked, clean)
        assert attacked[name] >= clean[name] - 0.03, (name, attacked, clean)

    # The attackers are the partitions the seed chose, recorded in the run directory,
    # and every round says how many attackers' replies it accepted.
    record = json.loads((dirs["fedavg"] / "attack.json").read_text())
    expected = choose_attacked(NUM_CLIENTS, fraction=0.2, seed=42)
    assert record["attack"] == attack and record["attacked-partitions"] == expected
    assert sorted(record["attacker-nodes"].values()) == expected
    assert len(record["honest-nodes"]) == NUM_CLIENTS - len(expected)
    rounds = json.loads((dirs["fedavg"] / "metrics.json").read_text())["rounds"]
    assert all(r["attackers"] == len(expected) for r in rounds[1:])
