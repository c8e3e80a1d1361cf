"""End to end through Flower's simulation engine: ``flwr run`` against a real SuperLink.

These assert on the run directory's contents (metrics the strategy aggregated from
real client replies), never only on exit codes: a NumPyClient that is not adapted to
the Message API makes every reply an error while ``flwr run`` still exits 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import LocalFlower


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/metrics.json"))


def finished_run(flower: LocalFlower, out: Path, overrides: str) -> tuple[Path, dict]:
    proc = flower.run("--run-config", f"output-dir='{out}' {overrides}")
    dirs = run_dirs(out)
    assert len(dirs) == 1, f"expected one run directory under {out}\n{proc.stdout}\n{proc.stderr}"
    metrics = json.loads((dirs[0] / "metrics.json").read_text())
    assert metrics["status"] == "completed", proc.stdout + proc.stderr
    return dirs[0], metrics


def test_default_run_reaches_90_percent_on_digits_and_writes_outputs(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    run_dir, metrics = finished_run(local_flower, tmp_path, "")

    rounds = {r["round"]: r for r in metrics["rounds"]}
    assert sorted(rounds) == list(range(0, 11))
    for rnd in range(1, 11):
        assert rounds[rnd]["sampled"] == 10 and rounds[rnd]["succeeded"] == 10 and rounds[rnd]["failed"] == 0
        assert rounds[rnd]["train_loss"] is not None and rounds[rnd]["federated_accuracy"] is not None
    assert max(rounds[r]["central_accuracy"] for r in range(1, 11)) >= 0.90
    assert rounds[10]["central_accuracy"] > rounds[0]["central_accuracy"] + 0.5
    config = json.loads((run_dir / "config.json").read_text())
    assert config["strategy"] == "fedavg" and config["num-server-rounds"] == 10
    from safetensors.numpy import load_file

    model = load_file(str(run_dir / "model.safetensors"))
    assert "features.0.weight" in model and model["features.0.weight"].shape == (16, 1, 3, 3)
    with Image.open(run_dir / "curves.png") as img:
        assert img.size[0] > 500 and img.size[1] > 200


def test_fedprox_with_dirichlet_and_stragglers_aggregates_partial_work(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    _, metrics = finished_run(
        local_flower,
        tmp_path,
        "strategy='fedprox' proximal-mu=0.1 num-server-rounds=3 partitioner='dirichlet' "
        "dirichlet-alpha=0.3 straggler-fraction=0.5",
    )

    rounds = [r for r in metrics["rounds"] if r["round"] > 0]
    assert len(rounds) == 3
    # FedProx keeps stragglers: all 10 sampled clients reply and are aggregated.
    assert all(r["succeeded"] == 10 and r["dropped"] == 0 for r in rounds)
    assert rounds[-1]["central_accuracy"] > metrics["rounds"][0]["central_accuracy"]


def test_fedavg_drops_the_same_stragglers(local_flower: LocalFlower, tmp_path: Path) -> None:
    _, metrics = finished_run(local_flower, tmp_path, "num-server-rounds=2 straggler-fraction=0.5")

    rounds = [r for r in metrics["rounds"] if r["round"] > 0]
    assert all(r["sampled"] == 10 and r["dropped"] == 5 and r["succeeded"] == 5 for r in rounds)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("strategy='nope'", "known strategies: dp-fedavg, dp-fedprox, fed"),
        ("proximal-mu=-1.0", "proximal-mu=-1.0 is invalid"),
        ("dataset='/nonexistent/data.npz'", "does not exist"),
    ],
)
def test_bad_config_fails_before_training_with_the_reason(
    local_flower: LocalFlower, tmp_path: Path, override: str, expected: str
) -> None:
    proc = local_flower.run("--run-config", f"output-dir='{tmp_path}' {override}")

    output = proc.stdout + proc.stderr
    assert expected in output
    assert "[round 1/" not in output
    assert run_dirs(tmp_path) == []


def test_teardown_stops_superlink_simulation_and_ray(tmp_path: Path) -> None:
    from tests.conftest import group_alive, process_groups, start_local_flower, stop_process_tree

    flower = start_local_flower(tmp_path / "home", num_supernodes=2)
    try:
        proc = flower.run("--run-config", f"output-dir='{tmp_path / 'out'}' num-server-rounds=1")
        assert "[round 1/1]" in proc.stdout + proc.stderr
        groups = process_groups(flower.pid)
    finally:
        stop_process_tree(flower.pid)
    assert not any(group_alive(g) for g in groups)
