"""Experiment tracking: each round's metrics to TensorBoard, MLflow and W&B, offline by default.

The run-config key ``tracking`` (:class:`TrackingConfig`) names the backends: ``none``
(default) or a comma list of ``tensorboard``, ``mlflow`` and ``wandb``. Every backend is one
small class behind the :class:`Tracker` protocol (hyperparameters once, a round's scalars at
step = round, the final model as an artifact, close), and :class:`Tracking` fans a call
out to all of them. The ServerApp's reporter (``server_app/reporting.py``) calls it after
metrics.json is written; metrics.json stays the source of truth.

Where things go, offline unless the user configured a service:

- TensorBoard: event files in ``<run_dir>/tensorboard/``.
- MLflow: a file store in ``<output-dir>/mlruns`` (experiment ``edgebloom``, run name = the
  run directory's name), unless ``MLFLOW_TRACKING_URI`` is set. MLflow 3 refuses its file
  store unless ``MLFLOW_ALLOW_FILE_STORE`` is true, so this module sets that default for its
  own store (a user who set the variable keeps their value).
- W&B: offline mode, files in ``<run_dir>/wandb/`` (``wandb sync`` uploads them later),
  unless ``WANDB_MODE`` or ``WANDB_API_KEY`` is set: then W&B does what the user configured.

The libraries are an optional extra (``pip install -e ".[tracking]"``):
:func:`require_libraries` fails before training, with that command, when one is missing. A
backend that raises during the run (a full disk, a service error) is logged once as a warning
and switched off; training and metrics.json go on.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from logging import WARNING
from pathlib import Path
from typing import Any, Protocol

from flwr.supercore import log

from tasks.config import ConfigError, Scalar, Section, declare

#: The backends ``tracking`` may name, in the order they are opened.
TRACKERS = ("tensorboard", "mlflow", "wandb")
#: The module each backend needs (``torch.utils.tensorboard`` needs the ``tensorboard`` package).
REQUIRED_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
INSTALL_HINT = 'pip install -e ".[tracking]"'
#: MLflow experiment and W&B project of every run.
PROJECT = "edgebloom"
#: Row keys that are not metrics (the step itself).
_NOT_SCALARS = frozenset({"round"})


def parse_tracking(value: str) -> tuple[str, ...]:
    """The backends named by a ``tracking`` value, in the order given.

    Parameters
    ----------
    value : str
        ``none`` (or empty) or a comma list of :data:`TRACKERS`; spaces around names are ignored.

    Returns
    -------
    tuple of str
        The backend names; ``()`` for ``none``.

    Raises
    ------
    ValueError
        For an unknown name, a name given twice, ``none`` mixed with backends, or an empty
        item; the message lists the valid names.
    """
    names = [part.strip().lower() for part in value.split(",")]
    if names in ([""], ["none"]):
        return ()
    valid = f"use none or a comma list of {', '.join(TRACKERS)}"
    if "" in names:
        raise ValueError(f"an empty name in the list; {valid}")
    if "none" in names:
        raise ValueError(f"'none' cannot be combined with backends; {valid}")
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"unknown backend {', '.join(map(repr, unknown))}; {valid}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{', '.join(map(repr, twice))} given twice; {valid}")
    return tuple(names)


def _check_tracking(value: str) -> str | None:
    try:
        parse_tracking(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class TrackingConfig(Section):
    """The ``tracking`` key (README "Experiments"): which trackers the ServerApp writes to."""

    tracking: str = declare(
        "none",
        f"experiment trackers: none or a comma list of {', '.join(TRACKERS)} (pip extra [tracking])",
        _check_tracking,
    )

    @property
    def backends(self) -> tuple[str, ...]:
        """The backend names, in the order given (validated when the config was built)."""
        return parse_tracking(self.tracking)


def require_libraries(backends: Sequence[str]) -> None:
    """Import each backend's library now, so a missing one fails before any round.

    Raises
    ------
    ConfigError
        Naming the backends whose library is missing and the install command.
    """
    missing = []
    for name in backends:
        try:
            importlib.import_module(REQUIRED_MODULES[name])
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"run config: tracking asks for {', '.join(missing)}, but "
            f"{'its library is' if len(missing) == 1 else 'their libraries are'} not installed; "
            f"install the tracking extra with `{INSTALL_HINT}` (or set tracking='none')"
        )


# ------------------------------------------------------------------ what is logged
def round_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one metrics.json row, by their row key, for the trackers.

    Every finite int, float or bool at the top level (central and federated loss and
    accuracy, train loss, sampled/succeeded/failed/dropped, ε, bytes, seconds, and whatever
    a strategy adds), and ``rejected`` as the number of rejected replies. Missing values
    (``None``), lists and other mappings (per-node details) are left to metrics.json.
    """
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in _NOT_SCALARS:
            continue
        if key == "rejected" and isinstance(value, Mapping):
            value = sum(v for v in value.values() if isinstance(v, int | float))
        if isinstance(value, bool | int | float) and math.isfinite(value):
            out[key] = float(value)
    return out


def flat_params(config: Mapping[str, Any]) -> dict[str, Scalar]:
    """The resolved config as hyperparameters: scalars as they are, anything else as text."""
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in config.items()}


# ------------------------------------------------------------------ the backends
class Tracker(Protocol):
    """One tracking backend: what the ServerApp tells every tracker, in this order."""

    name: str

    def log_params(self, params: Mapping[str, Scalar]) -> None:
        """Record the resolved run config, once, before round 0."""

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record one round's numbers at ``step`` = the round."""

    def log_model(self, path: Path) -> None:
        """Record the final model file as an artifact."""

    def close(self, status: str) -> None:
        """Flush and finish; ``status`` is the run's (completed, stopped, failed)."""


class TensorBoardTracker:
    """Event files in ``<run_dir>/tensorboard`` (``tensorboard --logdir <run_dir>/tensorboard``)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_params(self, params: Mapping[str, Scalar]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # The hparams summaries written into this run's own event file (add_hparams would
        # open a second run in a sub-directory), and a readable table for the Text tab.
        file_writer = self.writer.file_writer  # typed Optional; SummaryWriter opens it in __init__
        if file_writer is not None:
            for summary in hparams(dict(params), {}):
                file_writer.add_summary(summary)
        table = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("config", f"| key | value |\n|---|---|\n{table}", global_step=0)
        self.writer.flush()

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # a crash loses no round already in metrics.json

    def log_model(self, path: Path) -> None:
        """TensorBoard has no artifacts; the model stays in the run directory."""

    def close(self, status: str) -> None:
        self.writer.close()


#: MLflow's limits per log_batch call.
_MLFLOW_MAX_PARAMS = 100
_MLFLOW_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "failed": "FAILED"}


def mlflow_tracking_uri(output_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when the user set it, else the file store ``<output_dir>/mlruns``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (output_dir / "mlruns").as_uri()


class MlflowTracker:
    """One MLflow run per run directory, in experiment ``edgebloom`` (see the module docstring)."""

    name = "mlflow"

    def __init__(self, output_dir: Path, run_name: str) -> None:
        self.tracking_uri = mlflow_tracking_uri(output_dir)
        if self.tracking_uri.startswith("file:"):
            # MLflow 3 keeps its file store behind this opt-in; the store is the offline default here.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = self.client.get_experiment_by_name(PROJECT)
        experiment_id = (
            experiment.experiment_id if experiment is not None else self.client.create_experiment(PROJECT)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_params(self, params: Mapping[str, Scalar]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), _MLFLOW_MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[start : start + _MLFLOW_MAX_PARAMS])

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def log_model(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS.get(status, "FINISHED"))


def wandb_user_configured() -> bool:
    """Whether the user configured W&B (``WANDB_MODE`` or ``WANDB_API_KEY``): then it is not made offline."""
    return bool(os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"))


class WandbTracker:
    """A W&B run in project ``edgebloom``, offline under ``<run_dir>/wandb`` unless configured."""

    name = "wandb"

    def __init__(self, run_dir: Path, run_name: str) -> None:
        import wandb

        self.run = wandb.init(
            project=PROJECT,
            name=run_name,
            dir=str(run_dir),
            mode=None if wandb_user_configured() else "offline",
            reinit="create_new",  # one process may run several ServerApps (tests, in-process grids)
            settings=wandb.Settings(
                silent=True,
                console="off",  # Flower's log already goes to the terminal
                save_code=False,
                disable_git=True,
                # No system metrics or machine probes: they are not this run's results, and
                # some of them query cloud metadata endpoints, which must not happen offline.
                x_disable_stats=True,
                x_disable_meta=True,
                x_disable_machine_info=True,
            ),
        )

    def log_params(self, params: Mapping[str, Scalar]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def log_model(self, path: Path) -> None:
        import wandb

        artifact = wandb.Artifact("model", type="model")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self, status: str) -> None:
        import wandb

        self.run.finish(exit_code=1 if status == "failed" else 0)
        # finish() returns before wandb-core has written the run's .wandb file (seen with
        # wandb 0.31: the file still held its 7-byte header); teardown waits for the service
        # to exit, so the files are complete when the ServerApp returns and Flower ends it.
        wandb.teardown()


# ------------------------------------------------------------------ the fan-out
class Tracking:
    """Every configured :class:`Tracker`; a backend that raises is warned about once and dropped.

    Tracking must never cost the run: each call goes to every live backend in turn, an
    exception is logged once, naming the backend, and that backend gets no further calls
    (its files keep what it wrote before). ``Tracking([])`` does nothing.
    """

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)
        self.failed: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        """The backends still live."""
        return [t.name for t in self.trackers]

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as exc:  # any backend error: warn once, keep training
                self._drop(tracker, what, exc)

    def _drop(self, tracker: Tracker, what: str, exc: BaseException) -> None:
        self.trackers.remove(tracker)
        self.failed[tracker.name] = f"{type(exc).__name__}: {exc}"
        log(
            WARNING,
            "edgebloom: tracking backend %s failed to %s (%s: %s); it is off for the rest of "
            "the run, training goes on and metrics.json has every round",
            tracker.name,
            what,
            type(exc).__name__,
            exc,
        )
        try:  # keep what it wrote so far readable
            tracker.close("failed")
        except Exception:  # already warned about this backend
            pass

    def log_params(self, params: Mapping[str, Scalar]) -> None:
        self._each("log the config", lambda t: t.log_params(params))

    def log_row(self, row: Mapping[str, Any]) -> None:
        """Log one metrics.json row at step = its round."""
        step, scalars = int(row["round"]), round_scalars(row)
        self._each(f"log round {step}", lambda t: t.log_round(step, scalars))

    def log_model(self, path: Path) -> None:
        self._each("log the model", lambda t: t.log_model(path))

    def close(self, status: str) -> None:
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.close(status)
            except Exception as exc:  # closing is best effort; warned below
                self.failed[tracker.name] = f"{type(exc).__name__}: {exc}"
                log(WARNING, "edgebloom: tracking backend %s failed to close (%s)", tracker.name, exc)


def open_tracking(
    backends: Sequence[str],
    *,
    run_dir: Path,
    output_dir: Path,
    params: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]] = (),
) -> Tracking:
    """Open each backend, log the config and any rounds already run (a resumed run's).

    Parameters
    ----------
    backends : sequence of str
        Names from :data:`TRACKERS` (``TrackingConfig.backends``); libraries checked by
        :func:`require_libraries` before.
    run_dir : Path
        The run directory; its name is the MLflow and W&B run name.
    output_dir : Path
        The resolved ``output-dir`` (MLflow's file store goes in ``mlruns`` there).
    params : Mapping
        The resolved config, logged as hyperparameters.
    rounds : sequence of Mapping
        Rows already in metrics.json (a resumed run carries its earlier rounds).

    Returns
    -------
    Tracking
        The fan-out; a backend that fails to open is warned about and left out.
    """
    factories: dict[str, Callable[[], Tracker]] = {
        "tensorboard": lambda: TensorBoardTracker(run_dir),
        "mlflow": lambda: MlflowTracker(output_dir, run_dir.name),
        "wandb": lambda: WandbTracker(run_dir, run_dir.name),
    }
    trackers: list[Tracker] = []
    failed: dict[str, str] = {}
    for name in backends:
        try:
            trackers.append(factories[name]())
        except Exception as exc:  # a tracker that cannot start must not stop the run
            failed[name] = f"{type(exc).__name__}: {exc}"
            log(
                WARNING,
                "edgebloom: tracking backend %s could not start (%s: %s); going on without it",
                name,
                type(exc).__name__,
                exc,
            )
    tracking = Tracking(trackers)
    tracking.failed.update(failed)
    tracking.log_params(flat_params(params))
    for row in rounds:
        tracking.log_row(row)
    return tracking
