"""Checkpoints: after every round, everything a resumed run needs, in one atomic file.

``<run dir>/checkpoint.npz`` holds the global model after the last complete round, the
round number, the strategy's ``state_dict()`` (server-optimizer moments, the DP clipping
norm and accountant, seeded noise RNG), the server's RNG states, the metrics of every
round so far and the run config. It is written to a temporary file in the same
directory, flushed to disk and renamed over the previous checkpoint, so a run killed at
any moment leaves either the previous complete checkpoint or the new one, never half a
file.

``--run-config "resume='<run dir>'"`` loads it (:func:`load_checkpoint`), checks that the
new run builds the same model and strategy (:func:`check_resumable`), and continues at
the next round in a new run directory; everything random on the server is a function
of (seed, round) or lives in the saved state, and clients seed their shuffling from the
round number, so the resumed run ends with the model an uninterrupted run ends with.

Everything is validated when it is loaded, before the resumed run creates anything
(:func:`load_checkpoint`): the layout and the type of every field, the metrics rows,
the RNG states, that every array is there and finite. A problem raises one
:class:`~tasks.config.ConfigError` naming the file and the problem
(:class:`CheckpointProblem`); the strategy then checks its own restored state against
the model (:class:`ChecksState`).

Format: a NumPy ``.npz`` (no pickle): ``model/<i>`` for the i-th model array,
``state/<j>`` for NumPy arrays inside the strategy state, and ``meta``, UTF-8 JSON
holding everything else; arrays in the state are replaced by ``{"__array__": j}``.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeGuard, runtime_checkable

import numpy as np
import torch

from server_app.run_dir import fsync_dir, resolve_output_dir
from tasks.config import ConfigError

CHECKPOINT_NAME = "checkpoint.npz"
#: Bumped when the layout changes; older files are refused with the reason.
FORMAT_VERSION = 1
#: Run-config keys that may differ between a run and its resumption.
MAY_CHANGE = frozenset(
    {"num-server-rounds", "resume", "output-dir", "round-timeout", "wait-for-nodes-timeout"}
)


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read back."""

    round: int
    strategy: str
    model: str
    names: list[str]
    arrays: list[np.ndarray]
    strategy_state: dict[str, Any]
    rounds: list[dict[str, Any]]
    config: dict[str, Any]
    rng: dict[str, Any]
    path: Path


def _split_arrays(value: Any, arrays: list[np.ndarray]) -> Any:
    """JSON-able copy of ``value`` with NumPy arrays moved to ``arrays``."""
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {"__array__": len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"strategy state keys must be strings, got {k!r}")
            out[k] = _split_arrays(v, arrays)
        return out
    if isinstance(value, list | tuple):
        return [_split_arrays(v, arrays) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"strategy state holds a {type(value).__name__}; use JSON values or NumPy arrays")


def _join_arrays(value: Any, arrays: Mapping[int, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[int(value["__array__"])]
        return {k: _join_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays) for v in value]
    return value


def rng_states() -> dict[str, Any]:
    """The server process's global RNG states (torch, NumPy legacy), JSON-able."""
    np_state = np.random.get_state(legacy=False)
    return {"torch": torch.get_rng_state().tolist(), "numpy": np_state}


def restore_rng_states(state: Mapping[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "numpy" in state:
        np.random.set_state(dict(state["numpy"]))


def save_checkpoint(
    run_dir: Path,
    *,
    server_round: int,
    strategy: str,
    model: str,
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    strategy_state: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
) -> Path:
    """Write ``run_dir/checkpoint.npz`` atomically (temporary file, fsync, rename, directory fsync)."""
    state_arrays: list[np.ndarray] = []
    meta = {
        "format": FORMAT_VERSION,
        "round": int(server_round),
        "strategy": strategy,
        "model": model,
        "names": list(names),
        "strategy_state": _split_arrays(dict(strategy_state), state_arrays),
        "rounds": _split_arrays(list(rounds), []),
        "config": dict(config),
        "rng": _split_arrays(rng_states(), state_arrays),
    }
    payload: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta, allow_nan=True).encode(), dtype=np.uint8)
    }
    payload.update({f"model/{i}": np.asarray(a) for i, a in enumerate(arrays)})
    payload.update({f"state/{j}": a for j, a in enumerate(state_arrays)})
    path = run_dir / CHECKPOINT_NAME
    tmp = run_dir / f".{CHECKPOINT_NAME}.tmp"
    try:
        with open(tmp, "wb") as fh:
            # The keys are "meta", "model/i", "state/j", never savez's ``allow_pickle`` (numpy >= 2.1;
            # passing it by name would store an array called so under numpy 1.26, which we support).
            np.savez(fh, **payload)  # type: ignore[arg-type]  # numpy stubs: a **dict might fill allow_pickle
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(run_dir)  # the rename itself survives a power cut
    return path


# ------------------------------------------------------------------ validation
#: Top-level fields of ``meta`` and the JSON type each must have.
META_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "round": int,
    "strategy": str,
    "model": str,
    "names": list,
    "strategy_state": dict,
    "rounds": list,
    "config": dict,
    "rng": dict,
}


@dataclass(frozen=True)
class CheckpointProblem:
    """Why a checkpoint cannot be resumed: a reason code and the details.

    Reasons: ``bad-format`` (another layout or version), ``missing-keys``,
    ``wrong-type``, ``missing-array``, ``non-finite``, ``bad-metrics-row``,
    ``bad-rng-state``.
    """

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_meta(meta: Any) -> CheckpointProblem | None:
    """Check the layout and types of a checkpoint's ``meta`` JSON; None if it is sound."""
    if not isinstance(meta, dict):
        return CheckpointProblem("wrong-type", f"meta is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT_VERSION:
        return CheckpointProblem(
            "bad-format", f"format {meta.get('format')!r}, this edgebloom reads {FORMAT_VERSION}"
        )
    missing = [key for key in META_FIELDS if key not in meta]
    if missing:
        return CheckpointProblem("missing-keys", f"meta lacks {missing}")
    for key, kind in META_FIELDS.items():
        value = meta[key]
        if not isinstance(value, kind) or (kind is int and not _is_int(value)):
            return CheckpointProblem(
                "wrong-type", f"meta[{key!r}] is {value!r:.60}, expected a {getattr(kind, '__name__', kind)}"
            )
    if meta["round"] < 1:
        return CheckpointProblem("wrong-type", f"meta['round'] is {meta['round']}, expected >= 1")
    if not meta["strategy"] or not meta["model"]:
        return CheckpointProblem("wrong-type", "meta['strategy'] and meta['model'] must not be empty")
    names = meta["names"]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        return CheckpointProblem("wrong-type", "meta['names'] must be distinct strings, one per model array")
    return None


def check_rounds(rows: Sequence[Any], last_round: int) -> CheckpointProblem | None:
    """Check the checkpoint's metrics rows: objects with rising integer rounds ending at ``last_round``."""
    previous = -1
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            return CheckpointProblem(
                "bad-metrics-row", f"rounds[{i}] is a {type(row).__name__}, not an object"
            )
        number = row.get("round")
        if not _is_int(number) or not previous < number <= last_round:
            return CheckpointProblem(
                "bad-metrics-row",
                f"rounds[{i}] has round={number!r}; expected an integer after {previous} and "
                f"<= the checkpoint's round {last_round}",
            )
        previous = number
    if previous != last_round:
        return CheckpointProblem(
            "bad-metrics-row",
            f"the metrics rows end at round {previous}, the checkpoint is after {last_round}",
        )
    return None


def check_rng_state(rng: Mapping[str, Any]) -> CheckpointProblem | None:
    """Check that the saved torch and NumPy RNG states can be restored (on throwaway generators)."""
    missing = sorted({"torch", "numpy"} - set(rng))
    if missing:
        return CheckpointProblem("bad-rng-state", f"rng lacks {missing}")
    try:
        torch.Generator().set_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        return CheckpointProblem("bad-rng-state", f"rng['torch'] is not a torch RNG state ({exc})")
    try:
        if not isinstance(rng["numpy"], dict):
            raise TypeError(f"a {type(rng['numpy']).__name__}, not an object")
        np.random.RandomState().set_state(dict(rng["numpy"]))
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        return CheckpointProblem("bad-rng-state", f"rng['numpy'] is not a NumPy RNG state ({exc})")
    return None


def check_finite(named: Mapping[str, np.ndarray]) -> CheckpointProblem | None:
    """The first array (by name) holding NaN or Inf, as a problem; None if all are finite."""
    for name, array in named.items():
        if array.dtype.kind not in "fc":  # integers, booleans: always finite
            continue
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            return CheckpointProblem("non-finite", f"{name} holds {bad} NaN/Inf value(s)")
    return None


def _array_refs(value: Any, where: str) -> list[tuple[str, Any]]:
    """``(path, index)`` of every ``{"__array__": index}`` placeholder inside ``value``."""
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return [(where, value["__array__"])]
        return [ref for k, v in value.items() for ref in _array_refs(v, f"{where}[{k!r}]")]
    if isinstance(value, list):
        return [ref for i, v in enumerate(value) for ref in _array_refs(v, f"{where}[{i}]")]
    return []


def _read_arrays(
    meta: dict[str, Any], data: Any
) -> tuple[CheckpointProblem | None, list[np.ndarray], dict[int, np.ndarray]]:
    """The model arrays and the state arrays ``meta`` refers to; a problem if one is missing or non-finite."""
    named: dict[str, np.ndarray] = {}
    model: list[np.ndarray] = []
    for i, name in enumerate(meta["names"]):
        if f"model/{i}" not in data.files:
            return (
                CheckpointProblem("missing-array", f"model array {i} ({name!r}) is not in the file"),
                [],
                {},
            )
        model.append(np.array(data[f"model/{i}"]))
        named[f"model array {name!r}"] = model[-1]
    state: dict[int, np.ndarray] = {}
    for key in ("strategy_state", "rng"):
        for where, index in _array_refs(meta[key], key):
            if not _is_int(index) or f"state/{index}" not in data.files:
                problem = CheckpointProblem(
                    "missing-array", f"{where} refers to array {index!r}, not in the file"
                )
                return problem, [], {}
            state[index] = np.array(data[f"state/{index}"])
            named[where] = state[index]
    return check_finite(named), model, state


@runtime_checkable
class ChecksState(Protocol):
    """A strategy whose restored state must fit the model (a server optimizer's moments)."""

    def check_state(self, names: Sequence[str], arrays: Sequence[np.ndarray]) -> str | None:
        """Why the state restored by ``load_state_dict`` does not fit the model, or None."""


def load_checkpoint(resume: str) -> Checkpoint:
    """Read and validate the checkpoint of the run directory ``resume`` (or of the file itself).

    Nothing is created or changed: a resumed run calls this before its run directory exists.

    Raises
    ------
    ConfigError
        If there is no checkpoint there, it is unreadable, or anything in it is
        missing, of the wrong type or non-finite: one message naming the file, the
        problem (:class:`CheckpointProblem`) and the fix.
    """
    where = resolve_output_dir(resume)
    fix = "Point resume at another run directory or start a fresh run."
    path = where
    try:
        path = where if where.is_file() else where / CHECKPOINT_NAME
        if not path.is_file():
            if os.path.lexists(path):  # there, but not a regular file
                kind = "a broken symbolic link" if path.is_symlink() else "not a regular file"
                hint = f"{path} is {kind}"
            elif not where.exists():
                hint = "the directory does not exist"
            else:
                hint = "no round completed in that run, so there is nothing to resume; start a fresh run"
            raise ConfigError(
                f"run config: resume={resume!r}: no checkpoint at {path} ({hint}). "
                "Set resume to the run directory of an earlier run (it holds checkpoint.npz)."
            )
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            problem = check_meta(meta)
            if problem is None:
                problem, arrays, state_arrays = _read_arrays(meta, data)
    except ConfigError:
        raise
    except OSError as exc:  # permissions, a name too long, I/O errors
        raise ConfigError(f"run config: resume={resume!r}: cannot read {path} ({exc}). {fix}") from exc
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"run config: resume={resume!r}: {path} is not a readable edgebloom checkpoint ({exc}). {fix}"
        ) from exc
    if problem is None:
        problem = check_rounds(meta["rounds"], meta["round"])
    if problem is None:
        rng = _join_arrays(meta["rng"], state_arrays)
        problem = check_rng_state(rng)
    if problem is not None:
        raise ConfigError(f"run config: resume={resume!r}: {path} cannot be resumed: {problem}. {fix}")
    return Checkpoint(
        round=meta["round"],
        strategy=meta["strategy"],
        model=meta["model"],
        names=list(meta["names"]),
        arrays=arrays,
        strategy_state=_join_arrays(meta["strategy_state"], state_arrays),
        rounds=[dict(row) for row in meta["rounds"]],
        config=dict(meta["config"]),
        rng=rng,
        path=path,
    )


def check_resumable(
    ckpt: Checkpoint,
    *,
    strategy: str,
    model: str,
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    num_rounds: int,
    config: Mapping[str, Any],
) -> list[str]:
    """Refuse a resumption that cannot continue the checkpointed run.

    Returns
    -------
    list of str
        Run-config keys whose values differ from the checkpointed run's (other than
        :data:`MAY_CHANGE`): allowed, but the result is then not the uninterrupted run's.

    Raises
    ------
    ConfigError
        Another strategy or model, other array names, shapes or dtypes, or
        ``num-server-rounds`` below the checkpoint's round.
    """
    where = f"run config: resume={str(ckpt.path.parent)!r}"
    if ckpt.strategy != strategy:
        raise ConfigError(
            f"{where}: the checkpoint was written by strategy={ckpt.strategy!r}, this run asks for "
            f"strategy={strategy!r}. Resume with strategy='{ckpt.strategy}' or start a fresh run."
        )
    if ckpt.model != model:
        raise ConfigError(
            f"{where}: the checkpoint holds a {ckpt.model!r} model, this run builds {model!r}. "
            f"Resume with the same model, dataset and partitioning, or start a fresh run."
        )
    problems = []
    if list(ckpt.names) != list(names):
        problems.append(f"array names {ckpt.names} vs {list(names)}")
    else:
        for name, saved, built in zip(names, ckpt.arrays, arrays, strict=True):
            if saved.shape != built.shape or saved.dtype != built.dtype:
                problems.append(
                    f"{name}: {saved.dtype}{list(saved.shape)} vs {built.dtype}{list(built.shape)}"
                )
    if problems:
        raise ConfigError(
            f"{where}: the checkpointed model has a different shape than this run's: "
            f"{'; '.join(problems[:5])}. Resume with the run's dataset and model, or start a fresh run."
        )
    if num_rounds < ckpt.round:
        raise ConfigError(
            f"{where}: the checkpoint is after round {ckpt.round} but num-server-rounds={num_rounds}. "
            f"Set num-server-rounds >= {ckpt.round}."
        )
    return sorted(
        key
        for key in set(ckpt.config) | set(config)
        if key not in MAY_CHANGE and ckpt.config.get(key) != config.get(key)
    )
