"""Tracking end to end: ``flwr run`` through Flower's simulation engine with two trackers on.

The ServerApp runs in Flower's own process, so this is the path a user takes: the
TensorBoard event files and the MLflow file store must hold what metrics.json holds, and
metrics.json must be what the same run writes without tracking.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LocalFlower
from tests.e2e.test_simulation import finished_run

#: Every node evaluates: which half Flower samples for evaluation is not seeded.
SETTINGS = "num-server-rounds=2 local-epochs=1 fraction-evaluate=1.0 seed=7"


#: Values two runs never share: wall-clock times per run (run_dir) and per round (reporting,
#: phases), and the Ray node ids each run's simulation gets (``workers``: replies per node).
RUN_CLOCK = {"rounds", "started_at", "updated_at"}
ROUND_CLOCK = {"seconds", "phases", "workers"}


def comparable(rows: list[dict]) -> list[dict]:
    """metrics.json rows without their wall-clock timings and Ray node ids."""
    return [{k: v for k, v in row.items() if k not in ROUND_CLOCK} for row in rows]


def test_tensorboard_and_mlflow_hold_what_metrics_json_has_and_change_nothing_else(
    local_flower: LocalFlower, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Execute: the same seeded run without and with tracking.
    plain_dir, plain = finished_run(local_flower, tmp_path / "plain", SETTINGS)
    out = tmp_path / "tracked"
    run_dir, tracked = finished_run(local_flower, out, f"{SETTINGS} tracking='tensorboard,mlflow'")

    # Assert: metrics.json is unchanged by tracking (same rows, same values; timings aside).
    rows = tracked["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["succeeded"] == 10 and r["federated_accuracy"] is not None for r in rows[1:])
    assert {k: v for k, v in tracked.items() if k not in RUN_CLOCK} == {
        k: v for k, v in plain.items() if k not in RUN_CLOCK
    }
    for row, other in zip(rows, plain["rounds"], strict=True):
        assert row["phases"].keys() == other["phases"].keys()
        assert sorted(row.get("workers", {}).values()) == sorted(other.get("workers", {}).values())
    for with_tracking, without in zip(comparable(rows), comparable(plain["rounds"]), strict=True):
        assert with_tracking.keys() == without.keys()
        for key, value in with_tracking.items():
            if isinstance(value, float):
                assert np.isclose(value, without[key], rtol=1e-5), (key, value, without[key])
            else:
                assert value == without[key], key
    assert not (plain_dir / "tensorboard").exists() and not (tmp_path / "plain" / "mlruns").exists()

    # TensorBoard: event files in the run directory, every round at step = round.
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    for key in ("central_accuracy", "train_loss", "federated_accuracy", "succeeded"):
        want = [(r["round"], r[key]) for r in rows if r.get(key) is not None]
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert np.allclose([v for _, v in got], [v for _, v in want], rtol=1e-6), key

    # MLflow: one run in output-dir/mlruns, named after the run directory, with the model.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in to read its file store
    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("edgebloom")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert run.data.params["seed"] == "7" and run.data.params["tracking"] == "tensorboard,mlflow"
    history = sorted(
        (m.step, m.value) for m in client.get_metric_history(run.info.run_id, "central_accuracy")
    )
    assert [s for s, _ in history] == [0, 1, 2]
    assert np.allclose([v for _, v in history], [r["central_accuracy"] for r in rows])
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.safetensors"]
    assert json.loads((run_dir / "config.json").read_text())["tracking"] == "tensorboard,mlflow"
