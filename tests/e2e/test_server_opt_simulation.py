"""A server optimizer end to end: ``flwr run`` with ``strategy='fedadam'`` on the simulation engine.

Asserts on the run directory the ServerApp wrote from real client replies, and that the
FedProx client term travels with it (``proximal-mu`` in the run config reaches clients).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import LocalFlower


def test_fedadam_with_a_proximal_term_trains_on_digits(local_flower: LocalFlower, tmp_path: Path) -> None:
    # Execute
    proc = local_flower.run(
        "--run-config",
        f"output-dir='{tmp_path}' strategy='fedadam' num-server-rounds=3 local-epochs=2 "
        "server-learning-rate=0.1 server-tau=0.001 proximal-mu=0.01",
    )

    # Assert
    log = proc.stdout + proc.stderr
    dirs = sorted(p.parent for p in tmp_path.glob("*/metrics.json"))
    assert len(dirs) == 1, log
    metrics = json.loads((dirs[0] / "metrics.json").read_text())
    config = json.loads((dirs[0] / "config.json").read_text())
    assert metrics["status"] == "completed", log
    rounds = {r["round"]: r for r in metrics["rounds"]}
    assert sorted(rounds) == [0, 1, 2, 3]
    assert all(rounds[t]["succeeded"] == 10 and rounds[t]["failed"] == 0 for t in (1, 2, 3))
    assert rounds[3]["central_accuracy"] >= rounds[0]["central_accuracy"] + 0.3
    assert config["strategy"] == "fedadam" and config["server-beta2"] == 0.99
    assert "Server optimizer fedadam" in log and "proximal-mu = 0.01" in log


def test_an_out_of_range_server_optimizer_key_fails_before_training(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    proc = local_flower.run("--run-config", f"output-dir='{tmp_path}' strategy='fedyogi' server-beta1=1.0")

    log = proc.stdout + proc.stderr
    assert "server-beta1=1.0 is invalid: must be in [0, 1)" in log
    assert "[round 1/" not in log
    assert not list(tmp_path.glob("*/metrics.json"))
