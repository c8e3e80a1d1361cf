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
from typing import Any

import numpy as np
import torch

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
    """Write ``run_dir/checkpoint.npz`` atomically (temporary file, fsync, rename)."""
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
    with open(tmp, "wb") as fh:
        np.savez(fh, **payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(resume: str) -> Checkpoint:
    """Read the checkpoint of the run directory ``resume`` (or of the file itself).

    Raises
    ------
    ConfigError
        If there is no checkpoint there, or it is unreadable, naming the path and the fix.
    """
    from server_app.run_dir import resolve_output_dir

    where = resolve_output_dir(resume)
    path = where if where.is_file() else where / CHECKPOINT_NAME
    if not path.is_file():
        hint = (
            "the directory does not exist"
            if not where.exists()
            else "no round completed in that run, so there is nothing to resume; start a fresh run"
        )
        raise ConfigError(
            f"run config: resume={resume!r}: no checkpoint at {path} ({hint}). "
            "Set resume to the run directory of an earlier run (it holds checkpoint.npz)."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')!r}, this edgebloom reads {FORMAT_VERSION}")
            arrays = [np.array(data[f"model/{i}"]) for i in range(len(meta["names"]))]
            state_arrays = {
                int(k.split("/", 1)[1]): np.array(data[k]) for k in data.files if k.startswith("state/")
            }
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"run config: resume={resume!r}: {path} is not a readable edgebloom checkpoint ({exc}). "
            "Point resume at another run directory or start a fresh run."
        ) from exc
    return Checkpoint(
        round=int(meta["round"]),
        strategy=str(meta["strategy"]),
        model=str(meta["model"]),
        names=list(meta["names"]),
        arrays=arrays,
        strategy_state=_join_arrays(meta["strategy_state"], state_arrays),
        rounds=list(meta["rounds"]),
        config=dict(meta["config"]),
        rng=_join_arrays(meta["rng"], state_arrays),
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
