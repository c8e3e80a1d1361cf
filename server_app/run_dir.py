"""The run directory: every run's config, metrics, final model and curves.

``output-dir`` is resolved deliberately because the ServerApp may run from an
installed copy of the app, not from the user's project: an absolute path (or ``~``)
is used as is; a relative path is resolved against ``$EDGEBLOOM_OUTPUT_ROOT`` when
set, else against the ServerApp process's working directory (for ``flwr run`` with a
local SuperLink that is the directory the SuperLink was started from). The resolved
path is logged at the start and the end of the run.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

OUTPUT_ROOT_ENV = "EDGEBLOOM_OUTPUT_ROOT"

#: The files of a run directory that readers (the ``edgebloom`` command, ``experiments/``) open.
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
ERROR_FILE = "error.txt"

#: ``metrics.json``'s ``status``: ``running`` until the ServerApp ends the run one of the other ways
#: (``stopped``: a strategy ended training early on purpose, e.g. a privacy budget spent).
RUNNING, COMPLETED, STOPPED, FAILED = "running", "completed", "stopped", "failed"
STATUSES = (RUNNING, COMPLETED, STOPPED, FAILED)


def resolve_output_dir(output_dir: str) -> Path:
    """Absolute directory for ``output-dir`` (see the module docstring)."""
    path = Path(output_dir).expanduser()
    if not path.is_absolute():
        path = Path(os.environ.get(OUTPUT_ROOT_ENV) or os.getcwd()) / path
    return path.resolve()


def _slug(text: str) -> str:
    name = Path(text).stem if text.endswith(".npz") else text
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "data"


def fsync_dir(path: Path) -> None:
    """Flush ``path``'s directory entries to disk, so a rename into it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(tmp: Path, path: Path) -> None:
    """Move the written file ``tmp`` over ``path``: fsync it, rename, fsync the directory.

    A crash at any moment leaves either the old ``path`` or the new one, complete, never
    half a file; ``tmp`` is removed if anything fails.
    """
    try:
        with open(tmp, "rb+") as fh:  # the data must be on disk before the rename is
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON atomically (:func:`replace_atomically`): readers never see half a file."""
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"  # fails before touching disk
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    replace_atomically(tmp, path)


class RunDirectory:
    """``<output-dir>/<YYYYmmdd-HHMMSS>-<strategy>-<dataset>/`` and what goes in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rounds: list[dict[str, Any]] = []
        self.status = RUNNING
        self.notes: list[str] = []
        # Wall-clock (Unix) time this process made the directory; metrics.json also records when
        # it was last written, so readers get the run's wall time without trusting file mtimes.
        self.started_at = time.time()

    @classmethod
    def create(cls, output_dir: str, strategy: str, dataset: str) -> RunDirectory:
        root = resolve_output_dir(output_dir)
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(strategy)}-{_slug(dataset)}"
        for i in range(1, 1000):
            path = root / (stem if i == 1 else f"{stem}-{i}")
            try:
                path.mkdir(parents=True, exist_ok=False)
                return cls(path)
            except FileExistsError:
                continue
        raise RuntimeError(f"could not create a run directory under {root}")

    def write_config(self, config: Mapping[str, Any]) -> None:
        write_json_atomic(self.path / CONFIG_FILE, dict(config))

    def add_round(self, row: Mapping[str, Any]) -> None:
        """Record one round's metrics and rewrite metrics.json (nothing is lost on a crash).

        A run that checkpoints writes the checkpoint between the two steps instead
        (:class:`server_app.reporting.RoundReporter`): ``rounds.append``, checkpoint,
        :meth:`write_metrics`, so metrics.json never claims a round the checkpoint lacks.
        """
        self.rounds.append(dict(row))
        self.write_metrics()

    def write_metrics(self, **extra: Any) -> None:
        payload = {
            "status": self.status,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "notes": self.notes,
            "rounds": self.rounds,
            **extra,
        }
        write_json_atomic(self.path / METRICS_FILE, _finite(payload))

    def save_model(self, names: Sequence[str], layers: Sequence[np.ndarray]) -> Path:
        from safetensors.numpy import save_file

        path = self.path / "model.safetensors"
        tmp = path.with_name(".model.safetensors.tmp")
        # np.ascontiguousarray makes a 0-d array 1-d: BatchNorm's counter would no longer load.
        arrays = {n: np.ascontiguousarray(a).reshape(np.shape(a)) for n, a in zip(names, layers, strict=True)}
        save_file(arrays, str(tmp))
        replace_atomically(tmp, path)
        return path

    def fail(self, exc: BaseException) -> None:
        """Mark the run failed, keeping every round recorded so far."""
        self.status = FAILED
        self.notes.append(f"{type(exc).__name__}: {exc}")
        (self.path / ERROR_FILE).write_text("".join(traceback.format_exception(exc)))
        self.write_metrics()


def _finite(value: Any) -> Any:
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
