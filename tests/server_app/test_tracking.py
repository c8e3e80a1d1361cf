"""Experiment tracking: each backend's files read back with the library's own reader.

The rows come from the real :class:`RoundReporter` (real ``RoundStats``, real metrics.json),
and the files from the real libraries (TensorBoard, MLflow's file store, W&B offline); what
is read back is compared with metrics.json, the source of truth. The ETA of the round log
line is tested as pure functions.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, RecordDict

import server_app.reporting as reporting_module
import server_app.tracking as tracking_module
from server_app.reporting import RoundReporter, estimate_eta, format_duration, format_round
from server_app.run_dir import RunDirectory
from server_app.tracking import (
    INSTALL_HINT,
    TRACKERS,
    TensorBoardTracker,
    Tracking,
    TrackingConfig,
    open_tracking,
    parse_tracking,
    require_libraries,
    round_scalars,
)
from strategies.algorithms.fedavg import RoundStats
from strategies.core.records import from_layers
from tasks.config import AppConfig, ConfigError

NUM_ROUNDS = 2
PARAMS = {"strategy": "fedavg", "num-server-rounds": NUM_ROUNDS, "learning-rate": 0.1, "central-eval": True}


@pytest.fixture(autouse=True)
def offline_trackers(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user configuration of MLflow or W&B: the offline defaults under test."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    # Set then delete, so that monkeypatch restores the variable the MLflow backend sets itself.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")


def run_reporter(
    out: Path, backends: tuple[str, ...], *, tracking: Tracking | None = None
) -> tuple[RunDirectory, list[dict[str, Any]]]:
    """Two rounds through the real reporter (central eval, stats, ε), then the final model.

    Returns the run directory and metrics.json's rows.
    """
    run_dir = RunDirectory.create(str(out), "fedavg", "digits")
    stats = {
        1: RoundStats(
            sampled=4,
            succeeded=3,
            failed=1,
            failed_nodes=[9],
            rejected={"non-finite": 1},
            train_loss=0.9,
            federated_loss=0.8,
            federated_accuracy=0.6,
        ),
        2: RoundStats(
            sampled=4,
            succeeded=4,
            train_loss=0.5,
            federated_loss=0.4,
            federated_accuracy=0.8,
            dp_sgd_epsilon=1.5,
            dp_sgd_epsilon_by_node={7: 1.5},
        ),
    }
    accuracy = iter([0.1, 0.55, 0.85])
    if tracking is None:
        tracking = open_tracking(backends, run_dir=run_dir.path, output_dir=out, params=PARAMS)
    reporter = RoundReporter(
        stats,
        run_dir,
        lambda arrays: (1.0 - 0.1 * len(run_dir.rounds), next(accuracy)),
        NUM_ROUNDS,
        extra_metrics=lambda rnd: {"epsilon": 0.5 * rnd, "delta": 1e-5} if rnd else {},
        tracking=tracking,
    )
    arrays = from_layers(["w"], [np.zeros(3, dtype=np.float32)])
    for rnd in range(NUM_ROUNDS + 1):
        reporter(rnd, arrays)
    run_dir.status = "completed"
    model = run_dir.save_model(["w"], [np.ones(3, dtype=np.float32)])
    run_dir.write_metrics()
    reporter.finish(run_dir.status, model)
    return run_dir, json.loads((run_dir.path / "metrics.json").read_text())["rounds"]


def expected(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, value) of ``key`` in metrics.json's rows, where the row has it."""
    return [(r["round"], float(r[key])) for r in rows if r.get(key) is not None]


def assert_logged(logged: list[tuple[int, float]], rows: list[dict[str, Any]], key: str) -> None:
    """``logged`` has ``key``'s value of every row that has one, at step = round (float32 precision)."""
    want = expected(rows, key)
    assert want, f"metrics.json has no {key}: nothing to compare"
    assert [step for step, _ in logged] == [step for step, _ in want], key
    assert np.allclose([v for _, v in logged], [v for _, v in want], rtol=1e-6), key


# ------------------------------------------------------------------ the key
@pytest.mark.parametrize(
    ("value", "backends"),
    [
        ("none", ()),
        ("", ()),
        ("tensorboard", ("tensorboard",)),
        ("mlflow, wandb", ("mlflow", "wandb")),
        ("wandb,TensorBoard,mlflow", ("wandb", "tensorboard", "mlflow")),
    ],
)
def test_tracking_values_name_the_backends_in_order(value: str, backends: tuple[str, ...]) -> None:
    assert parse_tracking(value) == backends
    assert AppConfig.from_run_config({"tracking": value}).section(TrackingConfig).backends == backends


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("tensorbord", "unknown backend 'tensorbord'"),
        ("mlflow,comet", "unknown backend 'comet'"),
        ("mlflow,mlflow", "'mlflow' given twice"),
        ("none,wandb", "'none' cannot be combined"),
        ("mlflow,", "empty name"),
    ],
)
def test_bad_tracking_values_fail_the_config_listing_the_valid_backends(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        AppConfig.from_run_config({"tracking": value})

    message = str(err.value)
    assert f"tracking={value!r}" in message and problem in message
    assert "none or a comma list of tensorboard, mlflow, wandb" in message


def test_the_default_is_no_tracking_and_writes_nothing(tmp_path: Path) -> None:
    assert AppConfig.from_run_config({}).section(TrackingConfig).backends == ()

    run_dir, rows = run_reporter(tmp_path, ())

    assert [r["round"] for r in rows] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.path.name]
    assert {p.name for p in run_dir.path.iterdir()} == {"metrics.json", "model.safetensors"}


# ------------------------------------------------------------------ what is logged
def test_round_scalars_are_the_rows_numbers_with_rejections_counted() -> None:
    row = {
        "round": 3,
        "sampled": 5,
        "succeeded": 3,
        "failed": 1,
        "rejected": {"non-finite": 1, "too-many-examples": 2},
        "kept_previous_model": False,
        "train_loss": 0.25,
        "federated_accuracy": None,
        "central_accuracy": float("nan"),
        "epsilon": 1.2,
        "dp_sgd_epsilon": 3.4,
        "bytes_up": 1024,
        "seconds": 2.5,
        "failed_nodes": [4],
        "dp_sgd_epsilon_by_node": {"4": 3.4},
    }

    assert round_scalars(row) == {
        "sampled": 5.0,
        "succeeded": 3.0,
        "failed": 1.0,
        "rejected": 3.0,
        "kept_previous_model": 0.0,
        "train_loss": 0.25,
        "epsilon": 1.2,
        "dp_sgd_epsilon": 3.4,
        "bytes_up": 1024.0,
        "seconds": 2.5,
    }


# ------------------------------------------------------------------ each backend reads back
def test_tensorboard_event_files_hold_every_rounds_scalars_at_step_round(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Execute
    run_dir, rows = run_reporter(tmp_path, ("tensorboard",))

    # Assert: the event files are in the run directory; each metric at step = round.
    events = EventAccumulator(str(run_dir.path / "tensorboard"))
    events.Reload()
    for key in (
        "central_accuracy",
        "central_loss",
        "train_loss",
        "federated_accuracy",
        "sampled",
        "failed",
        "epsilon",
        "dp_sgd_epsilon",
        "seconds",
    ):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert_logged(logged, rows, key)
    assert [(e.step, e.value) for e in events.Scalars("rejected")] == [(1, 1.0), (2, 0.0)]
    assert "config/text_summary" in events.Tags()["tensors"]  # the resolved config, readable


def test_mlflow_file_store_run_has_the_params_metric_history_and_model(tmp_path: Path) -> None:
    # Execute
    run_dir, rows = run_reporter(tmp_path, ("mlflow",))

    # Assert: one run under output-dir/mlruns, named after the run directory, finished.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("edgebloom")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_dir.path.name and run.info.status == "FINISHED"
    assert run.data.params["strategy"] == "fedavg" and run.data.params["num-server-rounds"] == "2"
    for key in ("central_accuracy", "train_loss", "federated_loss", "succeeded", "epsilon", "seconds"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert_logged(history, rows, key)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.safetensors"]
    local = Path(client.download_artifacts(run.info.run_id, "model.safetensors", str(tmp_path)))
    assert local.read_bytes() == (run_dir.path / "model.safetensors").read_bytes()


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a W&B ``.wandb`` file: a 7-byte header, then LevelDB-log blocks."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending = path.read_bytes(), 32_768, 7, b""
    assert data[:4] == b":W&B", data[:7]
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding up to the next block
            pos += block - pos % block if pos % block else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # full / first, or middle / last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_wandb_offline_run_in_the_run_directory_has_the_history_config_and_model(tmp_path: Path) -> None:
    # Execute
    run_dir, rows = run_reporter(tmp_path, ("wandb",))

    # Assert: an offline run under <run_dir>/wandb, nothing configured, nothing online.
    (offline,) = (run_dir.path / "wandb").glob("offline-run-*")
    (log_file,) = offline.glob("run-*.wandb")
    history: dict[int, dict[str, float]] = {}
    config: dict[str, Any] = {}
    artifacts = []
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            history[record.history.step.num] = items
        elif kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            config.update({u.key: json.loads(u.value_json) for u in updates if u.key})
        elif kind == "artifact":
            artifacts.append((record.artifact.name, record.artifact.type))
    assert sorted(history) == [0, 1, 2]
    for key in ("central_accuracy", "train_loss", "federated_accuracy", "sampled", "epsilon", "seconds"):
        logged = [(step, history[step][key]) for step in sorted(history) if key in history[step]]
        assert_logged(logged, rows, key)
    assert config["strategy"] == "fedavg" and config["num-server-rounds"] == NUM_ROUNDS
    assert ("model", "model") in artifacts


# ------------------------------------------------------------------ failures
@pytest.mark.parametrize("backend", TRACKERS)
def test_a_missing_library_fails_with_the_install_command(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, tracking_module.REQUIRED_MODULES[backend], None)

    with pytest.raises(ConfigError) as err:
        require_libraries(("tensorboard", "mlflow", "wandb"))

    assert backend in str(err.value) and INSTALL_HINT in str(err.value)
    assert INSTALL_HINT == 'pip install -e ".[tracking]"'


def test_serverapp_with_a_missing_tracker_library_fails_before_any_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server_app.app import main
    from tests.conftest import AppGrid

    # Prepare
    monkeypatch.setitem(sys.modules, "mlflow", None)
    config = {"output-dir": str(tmp_path), "num-server-rounds": 1, "tracking": "tensorboard,mlflow"}
    grid = AppGrid(2, run_config=config)
    context = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)

    # Execute
    with pytest.raises(ConfigError, match=r"mlflow.*pip install -e \"\.\[tracking\]\""):
        main(grid, context)  # type: ignore[arg-type]

    # Assert: nothing trained, nothing written
    assert grid.sent == [] and list(tmp_path.iterdir()) == []


class FailsInRound:
    """A backend whose ``log_round`` raises in one round (a full disk, a service error)."""

    name = "flaky"

    def __init__(self, failing_round: int) -> None:
        self.failing_round = failing_round
        self.steps: list[int] = []
        self.closed: list[str] = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        if step == self.failing_round:
            raise OSError(28, "No space left on device")
        self.steps.append(step)

    def log_model(self, path: Path) -> None:
        raise AssertionError("a dropped backend gets no further calls")

    def close(self, status: str) -> None:
        self.closed.append(status)


def test_a_backend_raising_mid_run_is_warned_about_once_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a real TensorBoard writer next to a backend that fails in round 1.
    warnings: list[str] = []
    monkeypatch.setattr(tracking_module, "log", lambda level, msg, *args: warnings.append(msg % args))
    flaky = FailsInRound(failing_round=1)
    tracking = Tracking([flaky, TensorBoardTracker(tmp_path)])

    # Execute
    _, rows = run_reporter(tmp_path / "out", (), tracking=tracking)

    # Assert: every round in metrics.json, the healthy backend has them all, one warning.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert [r["round"] for r in rows] == [0, 1, 2]
    assert flaky.steps == [0] and flaky.closed == ["failed"]
    (warning,) = warnings
    assert "flaky" in warning and "No space left on device" in warning and "metrics.json" in warning
    assert list(tracking.failed) == ["flaky"]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("central_accuracy")] == [0, 1, 2]


def test_a_backend_that_cannot_start_is_left_out_and_the_others_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: where TensorBoard's directory should go there is a file (it cannot create it).
    warnings: list[str] = []
    monkeypatch.setattr(tracking_module, "log", lambda level, msg, *args: warnings.append(msg % args))
    run_dir = RunDirectory.create(str(tmp_path), "fedavg", "digits")
    (run_dir.path / "tensorboard").write_text("in the way")

    # Execute
    tracking = open_tracking(
        ("tensorboard", "mlflow"), run_dir=run_dir.path, output_dir=tmp_path, params=PARAMS
    )
    tracking.log_row({"round": 1, "central_accuracy": 0.5})
    tracking.close("completed")

    # Assert
    assert "tensorboard" in tracking.failed and len(warnings) == 1 and "could not start" in warnings[0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("edgebloom").experiment_id])
    assert run.data.metrics == {"central_accuracy": 0.5}


def test_a_resumed_runs_earlier_rounds_are_logged_when_tracking_opens(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    earlier = [{"round": 0, "central_accuracy": 0.1}, {"round": 1, "central_accuracy": 0.4, "seconds": 2.0}]

    tracking = open_tracking(
        ("tensorboard",), run_dir=tmp_path, output_dir=tmp_path, params=PARAMS, rounds=earlier
    )
    tracking.log_row({"round": 2, "central_accuracy": 0.7})
    tracking.close("completed")

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("central_accuracy")] == [
        (0, 0.1),
        (1, 0.4),
        (2, 0.7),
    ]


# ------------------------------------------------------------------ the whole ServerApp
def test_serverapp_dp_run_killed_and_resumed_keeps_both_runs_tracked(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.server_app.test_checkpoint import RESUMABLE, run_server

    # Prepare: DP-FedAvg (ε per round) with both file trackers, 3 rounds.
    out = tmp_path / "out"
    config = {"num-server-rounds": 3, "tracking": "tensorboard,mlflow", **RESUMABLE["dp-fedavg"]}

    # Execute: the server dies while sending round 3, then the run is resumed.
    killed = run_server(out, config, die_in_round=3)
    resumed = run_server(out, {**config, "resume": str(killed)})

    # Assert: the killed run's tracking is closed as failed with rounds 0-2; the resumed run's
    # trackers hold every round (the checkpoint's rounds too), ε at each round ≥ 1.
    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    runs = {
        r.info.run_name: r
        for r in client.search_runs([client.get_experiment_by_name("edgebloom").experiment_id])
    }
    assert runs[killed.name].info.status == "FAILED" and runs[resumed.name].info.status == "FINISHED"
    rows = json.loads((resumed / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    history = sorted(
        (m.step, m.value) for m in client.get_metric_history(runs[resumed.name].info.run_id, "epsilon")
    )
    assert_logged(history, rows, "epsilon")
    final = runs[resumed.name]
    assert final.data.params["tracking"] == "tensorboard,mlflow" and final.data.params["resume"] == str(
        killed
    )
    assert final.data.params["resolved-model"] == "digits-cnn"
    assert [a.path for a in client.list_artifacts(final.info.run_id)] == ["model.safetensors"]
    assert client.list_artifacts(runs[killed.name].info.run_id) == []  # no final model when it failed
    events = EventAccumulator(str(resumed / "tensorboard"))
    events.Reload()
    assert_logged([(e.step, e.value) for e in events.Scalars("central_accuracy")], rows, "central_accuracy")
    killed_events = EventAccumulator(str(killed / "tensorboard"))
    killed_events.Reload()
    assert [e.step for e in killed_events.Scalars("central_accuracy")] == [0, 1, 2]


# ------------------------------------------------------------------ the ETA
def test_eta_is_the_mean_round_time_times_the_rounds_left() -> None:
    assert estimate_eta([2.0, 4.0], rounds_left=3) == pytest.approx(9.0)
    assert estimate_eta([10.0], rounds_left=1) == pytest.approx(10.0)
    assert estimate_eta([2.0, 4.0], rounds_left=0) == 0.0
    assert estimate_eta([], rounds_left=5) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (59.4, "59s"),
        (61, "1m 01s"),
        (3599, "59m 59s"),
        (3600, "1h 00m"),
        (7_620, "2h 07m"),
        (90_061, "1d 01h"),
    ],
)
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_round_line_ends_with_the_eta_when_given() -> None:
    row = {"round": 2, "sampled": 3, "succeeded": 3, "failed": 0, "seconds": 1.25}

    assert format_round(row, 10, eta=200.0).endswith("| 1.2s | ETA 3m 20s")
    assert "ETA" not in format_round(row, 10)


def test_the_reporters_round_lines_count_down_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    monkeypatch.setattr(reporting_module, "log", lambda level, msg, *args: lines.append(msg % args))
    clock = iter([0.0, 1.0, 3.0, 5.0, 7.0])  # construction, then the end of rounds 0, 1, 2, 3
    monkeypatch.setattr(reporting_module.time, "perf_counter", lambda: next(clock))
    run_dir = RunDirectory.create(str(tmp_path), "fedavg", "digits")
    reporter = RoundReporter({}, run_dir, None, 3)

    for rnd in range(4):
        reporter(rnd, ArrayRecord())

    assert "ETA" not in lines[0]  # round 0: nothing timed yet
    assert lines[1].endswith("ETA 4s") and lines[2].endswith("ETA 2s") and lines[3].endswith("ETA 0s")
