"""Reading run directories as the ServerApp writes them (``server_app/run_dir.py``).

A run directory holds ``config.json`` (the resolved run config) and ``metrics.json``
(``status``, ``started_at``/``updated_at`` Unix times, ``notes`` and one row per round:
``round``, ``central_accuracy``, ``seconds``, ...). Files come from disk and may be partial,
damaged or from an older version, so they are checked here by pure functions that return a
reason, never by a traceback: a run that cannot be read is still listed, with its status
saying why (``unreadable: metrics.json: ...``).

Per-metric figures (:func:`metric_summary`): the final and best value, the first round
that reaches a target and the seconds to it, summing each round's ``seconds`` up to that
round (round 0, the initial model's evaluation, included).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from server_app.run_dir import COMPLETED, CONFIG_FILE, ERROR_FILE, METRICS_FILE, RUNNING, STATUSES, STOPPED


class ExperimentError(ValueError):
    """Bad input to the ``edgebloom`` command; the message names the problem and the fix."""


#: A run whose metrics say one of these ran to its end (``stopped``: ended early on purpose,
#: e.g. its privacy budget was spent); it is not re-run by a sweep.
FINISHED = (COMPLETED, STOPPED)
#: A run with a config but no metrics yet, or an empty run directory.
INCOMPLETE = "incomplete"
UNREADABLE = "unreadable"
#: Names ``RunDirectory.create`` gives: ``YYYYmmdd-HHMMSS-<strategy>-<dataset>[-N]``.
RUN_NAME = re.compile(r"^\d{8}-\d{6}-")


def is_number(value: Any) -> TypeGuard[int | float]:
    """True for a finite int or float (JSON ``null`` for NaN/Inf, and booleans, are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_metrics(payload: Any) -> str | None:
    """Why ``payload`` (parsed metrics.json) is not usable, or None.

    Parameters
    ----------
    payload : Any
        The parsed JSON.

    Returns
    -------
    str or None
        A reason naming the field (``rounds[2]: 'round' is not an integer``), or None.
    """
    if not isinstance(payload, dict):
        return f"expected a JSON object, got {type(payload).__name__}"
    status = payload.get("status")
    if status not in STATUSES:
        return f"'status' is {status!r}, not one of {', '.join(STATUSES)}"
    rounds = payload.get("rounds")
    if not isinstance(rounds, list):
        return "'rounds' is missing or not a list"
    previous = -1
    for i, row in enumerate(rounds):
        if not isinstance(row, dict):
            return f"rounds[{i}] is not an object"
        number = row.get("round")
        if not isinstance(number, int) or isinstance(number, bool):
            return f"rounds[{i}]: 'round' is not an integer"
        if number <= previous:
            return f"rounds[{i}]: round {number} does not follow round {previous}"
        previous = number
    for name in ("started_at", "updated_at"):
        if name in payload and payload[name] is not None and not is_number(payload[name]):
            return f"{name!r} is not a number"
    return None


@dataclass(frozen=True)
class RunRecord:
    """One run directory as read from disk; ``status`` says what could be read.

    Attributes
    ----------
    path : Path
        The run directory.
    status : str
        ``completed``, ``stopped``, ``failed`` or ``running`` (from metrics.json),
        ``incomplete`` (no metrics.json yet) or ``unreadable: <why>``.
    config : Mapping[str, Any]
        config.json (empty if missing or unreadable).
    rounds : tuple of Mapping
        metrics.json's rows, by rising round (empty unless readable).
    notes : tuple of str
        metrics.json's notes (why a run failed or stopped).
    started_at, updated_at : float or None
        Unix times from metrics.json (None for runs written before they were recorded).
    """

    path: Path
    status: str
    config: Mapping[str, Any] = field(default_factory=dict)
    rounds: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    started_at: float | None = None
    updated_at: float | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def finished(self) -> bool:
        """True when the metrics show the run ended normally (:data:`FINISHED`)."""
        return self.status in FINISHED

    @property
    def strategy(self) -> str:
        return str(self.config.get("strategy", "?"))

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset", "?"))

    @property
    def last_round(self) -> int | None:
        return int(self.rounds[-1]["round"]) if self.rounds else None

    @property
    def planned_rounds(self) -> int | None:
        value = self.config.get("num-server-rounds")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def wall_seconds(self) -> float | None:
        """From ``started_at`` to the last metrics.json write; else the sum of the rounds' seconds."""
        if self.started_at is not None and self.updated_at is not None:
            return max(0.0, self.updated_at - self.started_at)
        seconds = [row["seconds"] for row in self.rounds if is_number(row.get("seconds"))]
        return float(sum(seconds)) if seconds else None

    def metrics(self) -> list[str]:
        """The numeric per-round metrics this run recorded (``central_accuracy``, ``seconds``, ...)."""
        names = {k for row in self.rounds for k, v in row.items() if k != "round" and is_number(v)}
        return sorted(names)

    def series(self, metric: str) -> list[tuple[int, float]]:
        """(round, value) of ``metric`` wherever it was recorded."""
        return [(int(row["round"]), float(row[metric])) for row in self.rounds if is_number(row.get(metric))]

    def elapsed_by_round(self) -> dict[int, float]:
        """Round → seconds from the start of round 0 to the end of that round (None-safe sum)."""
        total, out = 0.0, {}
        for row in self.rounds:
            seconds = row.get("seconds")
            total += float(seconds) if is_number(seconds) else 0.0
            out[int(row["round"])] = total
        return out


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name}: {type(exc).__name__}: {exc}"


def read_run(path: Path) -> RunRecord:
    """Read one run directory; never raises for what is (or is not) in it.

    Parameters
    ----------
    path : Path
        A directory ``RunDirectory.create`` made.

    Returns
    -------
    RunRecord
        With ``status`` ``incomplete`` when metrics.json does not exist yet, or
        ``unreadable: <file>: <why>`` when a file cannot be parsed or checked.
    """
    if not path.is_dir():
        return RunRecord(path, f"{UNREADABLE}: not a directory")
    config: Mapping[str, Any] = {}
    config_problem = None
    if (path / CONFIG_FILE).exists():
        loaded, config_problem = _read_json(path / CONFIG_FILE)
        if config_problem is None and not isinstance(loaded, dict):
            config_problem = f"{CONFIG_FILE}: expected a JSON object"
        config = loaded if isinstance(loaded, dict) else {}
    if not (path / METRICS_FILE).exists():
        status = f"{UNREADABLE}: {config_problem}" if config_problem else INCOMPLETE
        return RunRecord(path, status, config)
    payload, problem = _read_json(path / METRICS_FILE)
    if problem is None:
        reason = check_metrics(payload)
        problem = None if reason is None else f"{METRICS_FILE}: {reason}"
    problem = problem or config_problem
    if problem is not None:
        return RunRecord(path, f"{UNREADABLE}: {problem}", config)
    return RunRecord(
        path,
        str(payload["status"]),
        config,
        tuple(payload["rounds"]),
        tuple(str(n) for n in payload.get("notes") or ()),
        payload.get("started_at"),
        payload.get("updated_at"),
    )


def looks_like_run_dir(path: Path) -> bool:
    """A directory with a run's files, or named as ``RunDirectory.create`` names them."""
    return path.is_dir() and (
        any((path / name).exists() for name in (CONFIG_FILE, METRICS_FILE, ERROR_FILE))
        or RUN_NAME.match(path.name) is not None
    )


def find_run_dirs(root: Path, *, max_depth: int = 4) -> list[Path]:
    """Run directories under ``root`` (an ``output-dir``, or a sweep directory), sorted by path.

    Searches ``max_depth`` levels down and does not descend into a run directory.
    """
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if looks_like_run_dir(child):
                found.append(child)
            elif depth < max_depth:
                walk(child, depth + 1)

    if looks_like_run_dir(root):
        return [root]
    walk(root, 1)
    return found


# ------------------------------------------------------------------ per-metric figures
def lower_is_better(metric: str) -> bool:
    """Losses, times and privacy budgets improve downwards; accuracies and counts upwards."""
    return metric.endswith("loss") or metric in ("seconds", "epsilon", "dp_sgd_epsilon")


@dataclass(frozen=True)
class MetricSummary:
    """Final and best value of a metric, and when it first reached a target (None: never)."""

    final: float | None
    best: float | None
    rounds_to_target: int | None
    seconds_to_target: float | None


def metric_summary(
    points: Sequence[tuple[int, float]],
    elapsed: Mapping[int, float],
    *,
    target: float | None,
    lower_better: bool = False,
) -> MetricSummary:
    """The figures ``compare`` and ``sweep`` report for one run's metric.

    Parameters
    ----------
    points : sequence of (round, value)
        By rising round.
    elapsed : Mapping[int, float]
        Round → seconds since the run's first round began (:meth:`RunRecord.elapsed_by_round`).
    target : float or None
        A round reaches it when its value is ``>= target`` (``<=`` if ``lower_better``).
    lower_better : bool
        Whether smaller values are better (losses).

    Returns
    -------
    MetricSummary
        ``final`` is the last round's value, ``best`` the max (min); the target fields are
        the first round reaching ``target`` and the seconds elapsed at its end.
    """
    if not points:
        return MetricSummary(None, None, None, None)
    values = [v for _, v in points]
    best = min(values) if lower_better else max(values)
    reached = None
    if target is not None:
        reached = next((r for r, v in points if (v <= target if lower_better else v >= target)), None)
    return MetricSummary(
        final=values[-1],
        best=best,
        rounds_to_target=reached,
        seconds_to_target=None if reached is None else elapsed.get(reached),
    )


# ------------------------------------------------------------------ the runs table
def format_seconds(seconds: float | None) -> str:
    """``41s``, ``3m12s``, ``1h02m``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown pipe table, padded so it also reads as plain text."""
    body = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def epsilon_text(run: RunRecord) -> str:
    """The last recorded ε: user-level DP-FedAvg's, else the worst client's DP-SGD ε."""
    for key, suffix in (("epsilon", ""), ("dp_sgd_epsilon", " (DP-SGD)")):
        points = run.series(key)
        if points:
            return f"{points[-1][1]:.3f}{suffix}"
    return "-"


def status_text(run: RunRecord, now: float | None = None) -> str:
    """The status, with the age of the last write for a run still marked running."""
    if run.status == RUNNING and run.updated_at is not None:
        age = (time.time() if now is None else now) - run.updated_at
        return f"{RUNNING} (updated {format_seconds(age)} ago)"
    return run.status


def display_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (its own name when it is ``root``)."""
    if path == root or not path.is_relative_to(root):
        return path.name
    return path.relative_to(root).as_posix()


def runs_table(runs: Sequence[RunRecord], root: Path, *, metric: str = "central_accuracy") -> str:
    """The ``edgebloom runs`` table: one row per run directory under ``root``."""
    header = [
        "run",
        "strategy",
        "dataset",
        "status",
        "rounds",
        f"final {metric}",
        f"best {metric}",
        "ε",
        "wall",
    ]
    rows = []
    for run in runs:
        summary = metric_summary(run.series(metric), {}, target=None, lower_better=lower_is_better(metric))
        done = "-" if run.last_round is None else str(run.last_round)
        planned = run.planned_rounds
        rows.append(
            [
                display_name(run.path, root),
                run.strategy,
                run.dataset,
                status_text(run),
                done if planned is None else f"{done}/{planned}",
                fmt(summary.final),
                fmt(summary.best),
                epsilon_text(run),
                format_seconds(run.wall_seconds),
            ]
        )
    return markdown_table(header, rows)
