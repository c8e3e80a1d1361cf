"""A sweep's summary: one row per combination, statistics over its seeds, and a band plot.

Only finished runs (metrics status ``completed`` or ``stopped``) count in the statistics;
failed ones are counted. ``mean`` is the arithmetic mean over seeds and ``std`` the sample
standard deviation (n − 1 in the denominator; ``-`` with one seed). Rounds- and
seconds-to-target are averaged over the seeds that reached the target; ``reached`` says
how many did. ``seconds`` is each run's wall time (``started_at`` to the last metrics.json
write). The figure draws each combination's mean curve per round with a band from the
lowest to the highest seed (min–max) at each round.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.runs import (
    RunRecord,
    fmt,
    format_seconds,
    lower_is_better,
    markdown_table,
    metric_summary,
)
from tasks.config import Scalar


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1); (None, None) when empty, std None for one value."""
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class ComboSummary:
    """Statistics over one combination's seeds (``(mean, std)`` pairs; None when nothing to average)."""

    label: str
    combination: Mapping[str, Scalar]
    planned: int
    finished: int
    failed: int
    final: tuple[float | None, float | None]
    best: tuple[float | None, float | None]
    rounds_to_target: tuple[float | None, float | None]
    seconds_to_target: tuple[float | None, float | None]
    reached: int
    seconds: tuple[float | None, float | None]


def summarize(
    label: str,
    combination: Mapping[str, Scalar],
    runs: Sequence[RunRecord | None],
    *,
    metric: str,
    target: float,
    failed: int,
) -> ComboSummary:
    """Statistics of one combination.

    Parameters
    ----------
    label : str
        The combination's name in tables.
    combination : Mapping
        Its grid values.
    runs : sequence of RunRecord or None
        One entry per planned seed: the finished run, or None (failed or not run).
    metric, target : str, float
        What is summarized, and the target for rounds/seconds-to-target.
    failed : int
        How many of the seeds' latest attempts failed.
    """
    done = [r for r in runs if r is not None]
    lower = lower_is_better(metric)
    figures = [
        metric_summary(r.series(metric), r.elapsed_by_round(), target=target, lower_better=lower)
        for r in done
    ]
    reached = [f for f in figures if f.rounds_to_target is not None]
    return ComboSummary(
        label=label,
        combination=dict(combination),
        planned=len(runs),
        finished=len(done),
        failed=failed,
        final=mean_std([f.final for f in figures if f.final is not None]),
        best=mean_std([f.best for f in figures if f.best is not None]),
        rounds_to_target=mean_std(
            [float(f.rounds_to_target) for f in reached if f.rounds_to_target is not None]
        ),
        seconds_to_target=mean_std([f.seconds_to_target for f in reached if f.seconds_to_target is not None]),
        reached=len(reached),
        seconds=mean_std([r.wall_seconds for r in done if r.wall_seconds is not None]),
    )


def _pm(pair: tuple[float | None, float | None], spec: str = ".4f") -> str:
    mean, std = pair
    if mean is None:
        return "-"
    return fmt(mean, spec) if std is None else f"{fmt(mean, spec)} ± {fmt(std, spec)}"


def _pm_seconds(pair: tuple[float | None, float | None]) -> str:
    mean, std = pair
    if mean is None:
        return "-"
    return format_seconds(mean) if std is None else f"{format_seconds(mean)} ± {format_seconds(std)}"


def summary_markdown(rows: Sequence[ComboSummary], *, metric: str, target: float) -> str:
    """The ``summary.md`` table: mean ± std over seeds per combination."""
    header = [
        "combination",
        "runs ok",
        "failed",
        f"final {metric}",
        f"best {metric}",
        f"rounds to {target:g}",
        f"seconds to {target:g}",
        "run time",
    ]
    body = [
        [
            r.label or "(base)",
            f"{r.finished}/{r.planned}",
            str(r.failed),
            _pm(r.final),
            _pm(r.best),
            f"{_pm(r.rounds_to_target, '.1f')} ({r.reached}/{r.finished} reached)" if r.finished else "-",
            _pm_seconds(r.seconds_to_target),
            _pm_seconds(r.seconds),
        ]
        for r in rows
    ]
    return markdown_table(header, body)


CSV_FIELDS = (
    "runs",
    "finished",
    "failed",
    "final_mean",
    "final_std",
    "best_mean",
    "best_std",
    "rounds_to_target_mean",
    "rounds_to_target_std",
    "reached_target",
    "seconds_to_target_mean",
    "seconds_to_target_std",
    "seconds_mean",
    "seconds_std",
)


def write_summary_csv(path: Path, rows: Sequence[ComboSummary], grid_keys: Sequence[str]) -> None:
    """``summary.csv``: the grid's keys, then :data:`CSV_FIELDS` (empty cells for None)."""
    cell = lambda v: "" if v is None else v  # noqa: E731
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["combination", *grid_keys, *CSV_FIELDS])
        for r in rows:
            writer.writerow(
                [
                    r.label,
                    *(r.combination.get(k, "") for k in grid_keys),
                    r.planned,
                    r.finished,
                    r.failed,
                    *(cell(v) for v in (*r.final, *r.best, *r.rounds_to_target)),
                    r.reached,
                    *(cell(v) for v in (*r.seconds_to_target, *r.seconds)),
                ]
            )


def band(curves: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float, float, float]]:
    """(round, mean, min, max) over the curves, at every round at least one of them recorded."""
    by_round: dict[int, list[float]] = {}
    for curve in curves:
        for rnd, value in curve:
            by_round.setdefault(rnd, []).append(value)
    return [(r, math.fsum(v) / len(v), min(v), max(v)) for r, v in sorted(by_round.items())]


def plot_sweep(
    path: Path,
    curves: Mapping[str, Sequence[Sequence[tuple[int, float]]]],
    *,
    metric: str,
    target: float | None,
) -> None:
    """``compare.png``: per combination, the mean curve over seeds with a min–max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, seed_curves in curves.items():
        points = band(seed_curves)
        if not points:
            continue
        x = [p[0] for p in points]
        (line,) = ax.plot(
            x, [p[1] for p in points], marker="o", markersize=3, label=f"{name} (n={len(seed_curves)})"
        )
        ax.fill_between(x, [p[2] for p in points], [p[3] for p in points], color=line.get_color(), alpha=0.2)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set(xlabel="round", ylabel=metric, title=f"{metric}: mean over seeds, band = min–max")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
