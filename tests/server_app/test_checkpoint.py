"""Checkpoint and resume: the file itself, the checks, and the ServerApp resuming in process.

The ServerApp's ``main`` runs here against :class:`tests.conftest.AppGrid`, which hands
every message to the real ClientApp: the same code as under Flower, minus transport.
The engine-level kill-and-resume is in tests/e2e/test_resume_simulation.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from safetensors.numpy import load_file

from server_app.app import main
from server_app.checkpoint import (
    CHECKPOINT_NAME,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
)
from tasks.config import ConfigError
from tests.conftest import AppGrid


def _save(tmp_path: Path, server_round: int = 3, **overrides: object) -> Path:
    kwargs = {
        "server_round": server_round,
        "strategy": "fedadam",
        "model": "digits-cnn",
        "names": ["w", "b"],
        "arrays": [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5, -1.0], np.float32)],
        "strategy_state": {
            "opt": {"m": [np.ones(3), np.zeros((2, 2))], "step": server_round},
            "rng": {"state": {"state": 2**100 + 7, "inc": 3}},
            "none": None,
        },
        "rounds": [{"round": r, "central_accuracy": 0.1 * r} for r in range(server_round + 1)],
        "config": {"strategy": "fedadam", "seed": 1, "num-server-rounds": 5},
    }
    kwargs.update(overrides)
    return save_checkpoint(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_checkpoint_round_trips_model_state_metrics_and_rng(tmp_path: Path) -> None:
    _save(tmp_path)

    ckpt = load_checkpoint(str(tmp_path))

    assert ckpt.round == 3 and ckpt.strategy == "fedadam" and ckpt.names == ["w", "b"]
    np.testing.assert_array_equal(ckpt.arrays[0], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert ckpt.arrays[1].dtype == np.float32
    m = ckpt.strategy_state["opt"]["m"]
    assert m[0].dtype == np.float64 and m[1].shape == (2, 2) and ckpt.strategy_state["opt"]["step"] == 3
    assert ckpt.strategy_state["rng"]["state"]["state"] == 2**100 + 7  # 128-bit PCG64 state survives
    assert ckpt.strategy_state["none"] is None
    assert [r["round"] for r in ckpt.rounds] == [0, 1, 2, 3]
    assert "torch" in ckpt.rng and "numpy" in ckpt.rng


def test_checkpoint_is_replaced_atomically_and_leaves_no_temporary(tmp_path: Path) -> None:
    _save(tmp_path, server_round=1)
    _save(tmp_path, server_round=2)

    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    assert load_checkpoint(str(tmp_path)).round == 2


def test_a_torn_or_foreign_file_is_refused_with_the_path(tmp_path: Path) -> None:
    path = _save(tmp_path)
    path.write_bytes(path.read_bytes()[:100])  # what a non-atomic writer could leave behind

    with pytest.raises(ConfigError, match="not a readable edgebloom checkpoint"):
        load_checkpoint(str(tmp_path))


def test_missing_checkpoint_names_the_directory_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory does not exist"):
        load_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no round completed"):
        load_checkpoint(str(tmp_path))


def test_state_that_json_cannot_hold_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="set"):
        _save(tmp_path, strategy_state={"bad": {1, 2}})
    assert not (tmp_path / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": "median"}, "written by strategy='fedadam'"),
        ({"model": "mnist-cnn"}, "holds a 'digits-cnn' model"),
        ({"arrays": [np.zeros((3, 3), np.float32), np.zeros(2, np.float32)]}, r"w: float32\[2, 3\] vs"),
        ({"arrays": [np.zeros((2, 3), np.float64), np.zeros(2, np.float32)]}, "different shape"),
        ({"names": ["w", "bias"]}, "array names"),
        ({"num_rounds": 2}, "num-server-rounds >= 3"),
    ],
)
def test_resuming_a_different_model_or_strategy_is_refused(
    tmp_path: Path, change: dict, message: str
) -> None:
    _save(tmp_path)
    ckpt = load_checkpoint(str(tmp_path))
    kwargs = {
        "strategy": "fedadam",
        "model": "digits-cnn",
        "names": ["w", "b"],
        "arrays": [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)],
        "num_rounds": 5,
        "config": ckpt.config,
        **change,
    }

    with pytest.raises(ConfigError, match=message):
        check_resumable(ckpt, **kwargs)  # type: ignore[arg-type]


def test_changed_settings_other_than_rounds_and_paths_are_reported(tmp_path: Path) -> None:
    _save(tmp_path)
    ckpt = load_checkpoint(str(tmp_path))
    arrays = [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)]
    config = {**ckpt.config, "num-server-rounds": 9, "seed": 2, "output-dir": "elsewhere"}

    changed = check_resumable(
        ckpt,
        strategy="fedadam",
        model="digits-cnn",
        names=["w", "b"],
        arrays=arrays,
        num_rounds=9,
        config=config,
    )

    assert changed == ["seed"]


# --------------------------------------------------------------------------- #
# The ServerApp, in process                                                   #
# --------------------------------------------------------------------------- #


class ServerDied(Exception):
    """Stands in for the ServerApp process being killed."""


def run_server(out: Path, run_config: dict, *, die_in_round: int | None = None) -> Path:
    """Run the ServerApp's main on 4 in-process nodes; return its run directory."""
    config = {"output-dir": str(out), "min-available-nodes": 2, "local-epochs": 1, **run_config}

    def before_send(msg) -> None:  # noqa: ANN001
        if die_in_round is not None and int(msg.content["config"].get("server-round", 0)) == die_in_round:
            raise ServerDied(f"killed in round {die_in_round}")

    grid = AppGrid(4, run_config=config, before_send=before_send)
    context = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    before = set(out.glob("*/config.json"))
    try:
        main(grid, context)  # type: ignore[arg-type]
    except ServerDied:
        pass
    (run_dir,) = {p.parent for p in set(out.glob("*/config.json")) - before}
    return run_dir


#: Strategies whose state must survive a resume. Plain FedAvg (no state) is killed and resumed
#: end to end through Flower's engine in tests/e2e/test_resume_simulation.py: one such test.
RESUMABLE = {
    "fedadam": {"strategy": "fedadam", "server-learning-rate": 0.05},
    "trimmed-mean": {"strategy": "trimmed-mean", "trimmed-mean-beta": 0.25},
    "dp-fedavg": {
        "strategy": "dp-fedavg",
        "dp-sampling": "fixed-size",
        "dp-sampling-rate": 0.75,
        "dp-noise-multiplier": 0.05,
        "dp-noise-seed": 3,
        "dp-adaptive-clipping": True,
    },
}


#: Three ServerApp runs per strategy: the fast tier resumes the one with the most state (the
#: adaptive clipping norm, the accountant's rounds, the sampling and noise generators); the
#: others run in the ``slow`` tier.
FAST_TIER_RESUME = "dp-fedavg"


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[] if n == FAST_TIER_RESUME else [pytest.mark.slow]) for n in RESUMABLE],
)
def test_server_killed_mid_round_and_resumed_ends_with_the_uninterrupted_model(
    name: str, tmp_path: Path
) -> None:
    # Prepare: 4 rounds straight, and a run whose server dies while sending round 3.
    run_config = {"num-server-rounds": 4, **RESUMABLE[name]}
    straight = run_server(tmp_path / "straight", run_config)
    killed = run_server(tmp_path / "killed", run_config, die_in_round=3)
    killed_metrics = json.loads((killed / "metrics.json").read_text())
    assert killed_metrics["status"] == "failed" and [r["round"] for r in killed_metrics["rounds"]] == [
        0,
        1,
        2,
    ]
    assert load_checkpoint(str(killed)).round == 2

    # Execute: resume the killed run.
    resumed = run_server(tmp_path / "resumed", {**run_config, "resume": str(killed)})

    # Assert: bit-identical final model, the same metrics for every round, and provenance.
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    rounds_a = json.loads((straight / "metrics.json").read_text())["rounds"]
    metrics_b = json.loads((resumed / "metrics.json").read_text())
    assert metrics_b["status"] == "completed"
    rounds_b = metrics_b["rounds"]
    assert [r["round"] for r in rounds_b] == [0, 1, 2, 3, 4]
    for ra, rb in zip(rounds_a, rounds_b, strict=True):
        assert ra.get("central_accuracy") == rb.get("central_accuracy"), (ra, rb)
        assert ra.get("epsilon") == rb.get("epsilon")
    assert json.loads((resumed / "config.json").read_text())["resumed-from"] == str(killed)
    assert load_checkpoint(str(resumed)).round == 4


def test_resume_with_another_strategy_fails_before_training(tmp_path: Path) -> None:
    first = run_server(tmp_path / "a", {"num-server-rounds": 1})

    with pytest.raises(ConfigError, match="written by strategy='fedavg'.*strategy='median'"):
        run_server(tmp_path / "b", {"num-server-rounds": 2, "strategy": "median", "resume": str(first)})
