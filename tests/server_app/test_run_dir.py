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


def test_round_line_tells_a_secure_sum_not_unmasked_from_rejected_replies() -> None:
    row = {
        "round": 2,
        "sampled": 6,
        "succeeded": 0,
        "failed": 4,
        "rejected": {"secagg-below-threshold": 1},
        "secagg_survivors": 2,
        "secagg_dropped": 4,
        "seconds": 1.0,
    }

    line = format_round(row, 5)

    expected = (
        "clients 6 sampled, 0 ok, 4 failed, secure sum not unmasked: previous model kept "
        "(SecAgg+: 2 survivors, 4 dropped) |"
    )
    assert expected in line


# --------------------------------------------------------------------------- #
# Durable writes: temp file, fsync, rename, directory fsync; checkpoint first #
# --------------------------------------------------------------------------- #


def _spy_on_disk_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record ("fsync", path) and ("replace", destination) in the order they happen."""
    import os
    import stat

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file"
        events.append((kind, os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append(("replace", Path(str(dst)).name))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.parametrize("target", ["metrics.json", "model.safetensors", "checkpoint.npz"])
def test_outputs_are_fsynced_renamed_and_their_directory_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    from server_app.checkpoint import save_checkpoint

    # Prepare
    run = RunDirectory.create(str(tmp_path), "fedavg", "digits")
    events = _spy_on_disk_writes(monkeypatch)

    # Execute
    if target == "metrics.json":
        run.add_round({"round": 0})
    elif target == "model.safetensors":
        run.save_model(["w"], [np.ones(2, np.float32)])
    else:
        save_checkpoint(
            run.path,
            server_round=1,
            strategy="fedavg",
            model="linreg",
            names=["w"],
            arrays=[np.ones(2, np.float32)],
            strategy_state={},
            rounds=[{"round": 0}, {"round": 1}],
            config={},
        )

    # Assert: the data is on disk before the rename, and the rename before returning.
    assert events == [
        ("fsync-file", f".{target}.tmp"),
        ("replace", target),
        ("fsync-dir", run.path.name),
    ]
    assert sorted(p.name for p in run.path.iterdir()) == [target]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    # Prepare: metrics.json with round 0; the next rename fails (disk full, I/O error).
    run = RunDirectory.create(str(tmp_path), "fedavg", "digits")
    run.add_round({"round": 0})

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)

    # Execute
    with pytest.raises(OSError, match="no space"):
        run.add_round({"round": 1})

    # Assert
    assert [r["round"] for r in json.loads((run.path / "metrics.json").read_text())["rounds"]] == [0]
    assert sorted(p.name for p in run.path.iterdir()) == ["metrics.json"]


def test_the_checkpoint_is_written_before_metrics_json_claims_the_round(tmp_path: Path) -> None:
    from flwr.app import ArrayRecord

    from server_app.reporting import RoundReporter

    # Prepare: the checkpoint hook looks at metrics.json and at the rounds it would save.
    run = RunDirectory.create(str(tmp_path), "fedavg", "digits")
    seen: dict[str, list[int]] = {}

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        on_disk = json.loads((run.path / "metrics.json").read_text())["rounds"]
        seen["metrics.json"] = [r["round"] for r in on_disk]
        seen["checkpointed"] = [r["round"] for r in run.rounds]

    reporter = RoundReporter({}, run, None, 2, on_round_end=checkpoint)

    # Execute
    reporter(0, ArrayRecord())
    reporter(1, ArrayRecord())

    # Assert: the checkpoint holds round 1 while metrics.json does not list it yet; then it does.
    assert seen == {"metrics.json": [0], "checkpointed": [0, 1]}
    assert [r["round"] for r in json.loads((run.path / "metrics.json").read_text())["rounds"]] == [0, 1]


def test_a_round_whose_checkpoint_failed_is_not_in_metrics_json(tmp_path: Path) -> None:
    from flwr.app import ArrayRecord

    from server_app.reporting import RoundReporter

    # Prepare: writing the checkpoint of round 1 fails.
    run = RunDirectory.create(str(tmp_path), "fedavg", "digits")

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        raise OSError("disk full")

    reporter = RoundReporter({}, run, None, 2, on_round_end=checkpoint)
    reporter(0, ArrayRecord())

    # Execute: the round fails, and the ServerApp marks the run failed.
    with pytest.raises(OSError, match="disk full"):
        reporter(1, ArrayRecord())
    run.fail(OSError("disk full"))

    # Assert: metrics.json claims no round the checkpoint lacks.
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["status"] == "failed" and [r["round"] for r in metrics["rounds"]] == [0]


def test_saved_model_keeps_zero_dimensional_arrays_and_loads_into_a_batchnorm_model(tmp_path: Path) -> None:
    # Prepare: a model with BatchNorm, whose num_batches_tracked is a 0-d int64 tensor.
    import torch
    from safetensors.torch import load_file

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    names = list(model.state_dict())
    layers = [t.numpy() for t in model.state_dict().values()]
    run_dir = RunDirectory.create(str(tmp_path), "fedavg", "digits")

    # Execute
    path = run_dir.save_model(names, layers)

    # Assert: every shape as saved, and the file loads back into the same architecture.
    loaded = load_file(str(path))
    assert {k: tuple(v.shape) for k, v in loaded.items()} == {
        n: a.shape for n, a in zip(names, layers, strict=True)
    }
    assert loaded["1.num_batches_tracked"].shape == ()
    model.load_state_dict(loaded)
