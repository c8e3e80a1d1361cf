"""A damaged checkpoint is refused at load: one clear error naming the file and the problem,
raised before the resumed run creates anything.

Each case damages a real checkpoint the way a disk, a tool or a person could (missing
keys, wrong types, bad metrics rows, a bad RNG state, non-finite values, an unreadable
path, optimizer state of another model) and resumes it with the ServerApp's ``main``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from server_app.app import main
from server_app.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointProblem,
    check_finite,
    check_meta,
    check_rng_state,
    check_rounds,
    load_checkpoint,
    rng_states,
)
from tasks.config import ConfigError
from tests.conftest import AppGrid
from tests.server_app.test_checkpoint import _save, run_server

Payload = dict[str, np.ndarray]


def rewrite(path: Path, damage: Callable[[dict[str, Any], Payload], None]) -> None:
    """Rewrite the checkpoint at ``path`` after ``damage(meta, arrays)`` changed it in place."""
    with np.load(path) as data:
        payload = {k: np.array(data[k]) for k in data.files}
    meta = json.loads(bytes(payload.pop("meta")).decode())
    damage(meta, payload)
    payload["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **payload)


def _set(meta: dict[str, Any], key: str, value: Any) -> None:
    meta[key] = value


def _first_state_array(meta: dict[str, Any], section: str) -> str:
    """The ``state/<j>`` key of the first array referenced in ``meta[section]``."""
    text = json.dumps(meta[section])
    j = int(text.split('{"__array__": ', 1)[1].split("}", 1)[0])
    return f"state/{j}"


def _foreign_optimizer_state(meta: dict[str, Any], arrays: Payload) -> None:
    """Adam moments that agree with each other (one (3,) layer) but not with the model."""
    arrays["state/999"] = np.zeros(3)
    ref = {"__array__": 999}
    meta["strategy_state"]["server-optimizer"] = {"name": "fedadam", "m": [ref], "v": [ref], "step": 1}


#: name -> (damage, reason code expected in the error)
DAMAGE: dict[str, tuple[Callable[[dict[str, Any], Payload], None], str]] = {
    "missing-keys": (lambda m, a: m.pop("rounds"), "missing-keys: meta lacks ['rounds']"),
    "round-as-string": (lambda m, a: _set(m, "round", "1"), "wrong-type: meta['round']"),
    "names-not-a-list": (lambda m, a: _set(m, "names", "w"), "wrong-type: meta['names']"),
    "state-not-an-object": (
        lambda m, a: _set(m, "strategy_state", [1]),
        "wrong-type: meta['strategy_state']",
    ),
    "row-not-an-object": (lambda m, a: m["rounds"].__setitem__(0, "oops"), "bad-metrics-row: rounds[0]"),
    "row-without-round": (lambda m, a: m["rounds"][-1].pop("round"), "bad-metrics-row"),
    "rows-ahead-of-checkpoint": (
        lambda m, a: m["rounds"].append({"round": m["round"] + 1}),
        "bad-metrics-row",
    ),
    "torch-rng-truncated": (lambda m, a: _set(m["rng"], "torch", [1, 2, 3]), "bad-rng-state: rng['torch']"),
    "numpy-rng-unknown": (
        lambda m, a: _set(m["rng"]["numpy"], "bit_generator", "Nope"),
        "bad-rng-state: rng['numpy']",
    ),
    "rng-missing": (lambda m, a: m["rng"].pop("numpy"), "bad-rng-state: rng lacks ['numpy']"),
    "model-nan": (lambda m, a: a["model/0"].flat.__setitem__(0, np.nan), "non-finite: model array"),
    "state-inf": (
        lambda m, a: a[_first_state_array(m, "strategy_state")].flat.__setitem__(0, np.inf),
        "non-finite: strategy_state['server-optimizer']['m'][0]",
    ),
    "model-array-missing": (lambda m, a: a.pop("model/1"), "missing-array: model array 1"),
}


# --------------------------------------------------------------------------- #
# The pure checks, on known values                                            #
# --------------------------------------------------------------------------- #


def test_the_checks_pass_what_save_writes_and_name_each_problem() -> None:
    meta = {
        "format": 1,
        "round": 2,
        "strategy": "fedavg",
        "model": "linreg",
        "names": ["w"],
        "strategy_state": {},
        "rounds": [{"round": 0}, {"round": 1}, {"round": 2}],
        "config": {},
        "rng": {},
    }
    assert check_meta(meta) is None
    assert check_rounds(meta["rounds"], 2) is None
    assert check_rng_state(rng_states()) is None
    assert check_finite({"w": np.ones(2), "steps": np.array([3])}) is None

    assert check_meta([]) == CheckpointProblem("wrong-type", "meta is a JSON list, not an object")
    assert check_meta({**meta, "round": True}).reason == "wrong-type"  # type: ignore[union-attr]
    assert check_meta({**meta, "round": 0}).reason == "wrong-type"  # type: ignore[union-attr]
    assert check_meta({**meta, "names": ["w", "w"]}).reason == "wrong-type"  # type: ignore[union-attr]
    assert check_meta({**meta, "format": 0}).reason == "bad-format"  # type: ignore[union-attr]
    assert check_rounds([{"round": 0}, {"round": 0}], 0).reason == "bad-metrics-row"  # type: ignore[union-attr]
    assert check_rounds([{"round": 0}], 2).reason == "bad-metrics-row"  # type: ignore[union-attr]
    problem = check_finite({"a": np.ones(2), "b": np.array([1.0, np.nan, -np.inf])})
    assert problem == CheckpointProblem("non-finite", "b holds 2 NaN/Inf value(s)")


# --------------------------------------------------------------------------- #
# load_checkpoint                                                             #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("case", list(DAMAGE))
def test_load_refuses_a_damaged_checkpoint_naming_file_and_problem(tmp_path: Path, case: str) -> None:
    # Prepare: a sound checkpoint with optimizer moments, then the damage.
    path = _save(tmp_path, strategy_state={"server-optimizer": {"m": [np.ones(3)], "v": [], "step": 1}})
    damage, expected = DAMAGE[case]
    rewrite(path, damage)

    # Execute
    with pytest.raises(ConfigError) as info:
        load_checkpoint(str(tmp_path))

    # Assert: a ConfigError (never a raw KeyError/TypeError), naming the file and the problem.
    message = str(info.value)
    assert str(path) in message and expected in message, message
    assert "start a fresh run" in message


def test_a_checkpoint_that_is_a_broken_link_is_named_as_such(tmp_path: Path) -> None:
    # Prepare: the run directory's checkpoint entry points nowhere.
    (tmp_path / CHECKPOINT_NAME).symlink_to(tmp_path / "gone.npz")

    # Execute / Assert: not "no round completed", which would send the user the wrong way.
    with pytest.raises(ConfigError, match="is a broken symbolic link"):
        load_checkpoint(str(tmp_path))


def test_an_unreadable_resume_path_is_a_config_error_not_an_oserror(tmp_path: Path) -> None:
    # A path the OS refuses to look at (tests run as root, where chmod 000 blocks nothing;
    # a name longer than NAME_MAX fails the same way, with an OSError from stat).
    unreadable = tmp_path / ("x" * (os.pathconf(tmp_path, "PC_NAME_MAX") + 1))

    with pytest.raises(ConfigError, match="cannot read .*File name too long"):
        load_checkpoint(str(unreadable))


# --------------------------------------------------------------------------- #
# The ServerApp: refused before anything is created                           #
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def fedadam_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of one real fedadam round (its checkpoint holds Adam moments)."""
    out = tmp_path_factory.mktemp("fedadam")
    return run_server(out, {"num-server-rounds": 1, "strategy": "fedadam"})


def resume_into(out: Path, resume: Path) -> None:
    """Run the ServerApp's main resuming ``resume``, with its outputs under ``out``."""
    config = {
        "output-dir": str(out),
        "min-available-nodes": 2,
        "local-epochs": 1,
        "num-server-rounds": 2,
        "strategy": "fedadam",
        "resume": str(resume),
    }
    grid = AppGrid(4, run_config=config)
    context = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    main(grid, context)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", [*DAMAGE, "foreign-optimizer-state", "broken-link", "unreadable"])
def test_resuming_a_damaged_checkpoint_fails_before_creating_a_run_directory(
    fedadam_run: Path, tmp_path: Path, case: str
) -> None:
    # Prepare: a copy of the real run, damaged.
    run_dir = tmp_path / "run"
    shutil.copytree(fedadam_run, run_dir)
    path = run_dir / CHECKPOINT_NAME
    if case == "foreign-optimizer-state":
        rewrite(path, _foreign_optimizer_state)
        expected = "fedadam state 'm' has layer shapes [(3,)]"
    elif case == "broken-link":
        path.unlink()
        path.symlink_to(run_dir / "gone.npz")
        expected = "broken symbolic link"
    elif case == "unreadable":
        run_dir = run_dir / ("x" * (os.pathconf(tmp_path, "PC_NAME_MAX") + 1))
        path = run_dir
        expected = "cannot read"
    else:
        damage, expected = DAMAGE[case]
        rewrite(path, damage)
    out = tmp_path / "outputs"

    # Execute
    with pytest.raises(ConfigError) as info:
        resume_into(out, run_dir)

    # Assert: one clear error naming the file and the problem, and nothing created.
    message = str(info.value)
    assert str(path) in message and expected in message, message
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------- #
# A stalled SuperLink fails the run in time, results and checkpoint kept       #
# --------------------------------------------------------------------------- #


class SuperLinkStallsInRound2:
    """Round 1 gets no replies (its round times out); in round 2 the SuperLink stops answering."""

    def __init__(self, release: Any) -> None:
        self.release = release

    def get_node_ids(self) -> list[int]:
        return [11, 22, 33]

    def push_messages(self, messages: Any) -> list[str]:
        messages = list(messages)
        if messages and int(messages[0].content["config"]["server-round"]) >= 2:
            self.release.wait(5.0)  # "forever", bounded so that the code as it was fails, not hangs
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Any) -> list[Any]:
        return []


def test_a_stalled_superlink_fails_the_run_keeping_rounds_and_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from strategies.core import deadline

    # Prepare: round-timeout 0.5 s and a 0.2 s grace.
    monkeypatch.setattr(deadline, "MIN_GRACE_S", 0.2)
    release = threading.Event()
    config = {"output-dir": str(tmp_path), "num-server-rounds": 3, "round-timeout": 0.5}
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config)

    # Execute
    try:
        with pytest.raises(deadline.GridTimeout, match="SuperLink did not answer Grid.push_messages"):
            main(SuperLinkStallsInRound2(release), context)  # type: ignore[arg-type]
    finally:
        release.set()

    # Assert: failed with the reason, round 1 kept, and resumable from its checkpoint.
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "round-timeout=0.5s" in metrics["notes"][-1]
    assert [r["round"] for r in metrics["rounds"]] == [0, 1]
    assert load_checkpoint(str(run_dir)).round == 1
