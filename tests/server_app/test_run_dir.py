import json
from pathlib import Path

import numpy as np
import pytest

from server_app.plots import plot_curves
from server_app.reporting import format_round
from server_app.run_dir import RunDirectory, resolve_output_dir


def test_output_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEBLOOM_OUTPUT_ROOT", raising=False)
    assert resolve_output_dir("outputs") == tmp_path / "outputs"
    assert resolve_output_dir(str(tmp_path / "abs")) == tmp_path / "abs"
    monkeypatch.setenv("EDGEBLOOM_OUTPUT_ROOT", str(tmp_path / "root"))
    assert resolve_output_dir("outputs") == tmp_path / "root" / "outputs"


def test_run_directory_names_and_never_overwrites(tmp_path: Path) -> None:
    a = RunDirectory.create(str(tmp_path), "fedavg", "/data/my set.npz")
    b = RunDirectory.create(str(tmp_path), "fedavg", "/data/my set.npz")
    assert a.path != b.path and a.path.name.endswith("-fedavg-my-set")


def test_failure_keeps_recorded_rounds(tmp_path: Path) -> None:
    run = RunDirectory.create(str(tmp_path), "fedavg", "digits")
    run.add_round({"round": 0, "central_accuracy": 0.1})
    run.add_round({"round": 1, "central_accuracy": float("nan")})

    run.fail(RuntimeError("node went away"))

    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "node went away" in metrics["notes"][0]
    assert [r["round"] for r in metrics["rounds"]] == [0, 1] and metrics["rounds"][1][
        "central_accuracy"
    ] is None
    assert "RuntimeError" in (run.path / "error.txt").read_text()


def test_model_is_saved_as_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    run = RunDirectory.create(str(tmp_path), "fedavg", "digits")
    run.save_model(["a", "b"], [np.ones((2, 2), np.float32), np.arange(3)])
    loaded = load_file(str(run.path / "model.safetensors"))
    np.testing.assert_array_equal(loaded["b"], np.arange(3))


def test_curves_png_is_written(tmp_path: Path) -> None:
    rounds = [
        {"round": 0, "central_accuracy": 0.1, "central_loss": 2.3},
        {
            "round": 1,
            "central_accuracy": 0.8,
            "federated_accuracy": 0.7,
            "train_loss": 1.0,
            "central_loss": 0.6,
        },
    ]
    plot_curves(rounds, tmp_path / "curves.png", "t")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_round_line_has_every_field() -> None:
    line = format_round(
        {
            "round": 3,
            "sampled": 10,
            "succeeded": 9,
            "failed": 1,
            "dropped": 0,
            "train_loss": 0.5,
            "federated_accuracy": 0.9,
            "central_accuracy": 0.91,
            "seconds": 2.25,
        },
        10,
    )
    assert line == (
        "[round  3/10] clients 10 sampled, 9 ok, 1 failed | train loss 0.5000 | fed acc 0.9000 | "
        "central acc 0.9100 | 2.2s"
    )


def test_round_line_tells_a_refused_aggregate_from_rejected_replies() -> None:
    row = {
        "round": 2,
        "sampled": 3,
        "succeeded": 3,
        "failed": 0,
        "rejected": {"non-finite": 1, "non-finite-model": 1},
        "seconds": 1.0,
    }

    line = format_round(row, 5)

    expected = "clients 3 sampled, 3 ok, 0 failed, 1 rejected, aggregate not finite: previous model kept |"
    assert expected in line
