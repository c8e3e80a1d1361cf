"""``edgebloom compare``: one metric of several runs, as a figure and a Markdown table.

The table names each run (its directory name, or as much of its path as tells runs apart)
with the final and best value of the metric, the first round that reaches ``target`` and
the seconds to it (:func:`experiments.runs.metric_summary`; seconds are the sum of the
rounds' ``seconds`` in metrics.json up to that round). Losses count as reached at or
below the target, other metrics at or above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from experiments.runs import (
    ExperimentError,
    RunRecord,
    find_run_dirs,
    fmt,
    format_seconds,
    lower_is_better,
    markdown_table,
    metric_summary,
    read_run,
)


def unique_labels(paths: Sequence[Path]) -> list[str]:
    """The shortest trailing parts of each path that tell the runs apart (the name when it does)."""
    parts = [p.resolve().parts for p in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]  # the same directory named twice


def load_runs(paths: Sequence[Path]) -> list[RunRecord]:
    """Read each run (a folder of run directories: each of them); one with no rounds is an error naming it."""
    if not paths:
        raise ExperimentError("name at least one run directory (edgebloom runs OUTPUT_DIR lists them)")
    # A folder holding run directories (an output-dir, a sweep's seed folder) stands for them.
    expanded = [run for p in paths for run in (find_run_dirs(p) if p.is_dir() else [p]) or [p]]
    runs = [read_run(p) for p in expanded]
    bad = [f"{r.path} ({r.status})" for r in runs if not r.rounds]
    if bad:
        raise ExperimentError(f"no rounds to compare in: {', '.join(bad)}")
    return runs


def check_metric(runs: Sequence[RunRecord], metric: str) -> None:
    """Raise :class:`ExperimentError` listing the recorded metrics if no run recorded ``metric``."""
    recorded = sorted({m for r in runs for m in r.metrics()})
    if metric not in recorded:
        raise ExperimentError(
            f"metric {metric!r} is not recorded by these runs; choose one of: {', '.join(recorded)}"
        )


def compare_table(runs: Sequence[RunRecord], labels: Sequence[str], metric: str, target: float) -> str:
    """Markdown: run, status, rounds, final, best, rounds-to-target, seconds-to-target."""
    lower = lower_is_better(metric)
    header = ["run", "status", "rounds", "final", "best", f"rounds to {target:g}", f"seconds to {target:g}"]
    rows = []
    for run, label in zip(runs, labels, strict=True):
        s = metric_summary(run.series(metric), run.elapsed_by_round(), target=target, lower_better=lower)
        rows.append(
            [
                label,
                run.status,
                str(run.last_round),
                fmt(s.final),
                fmt(s.best),
                "-" if s.rounds_to_target is None else str(s.rounds_to_target),
                format_seconds(s.seconds_to_target),
            ]
        )
    return markdown_table(header, rows)


def plot_compare(
    runs: Sequence[RunRecord], labels: Sequence[str], metric: str, target: float | None, out: Path
) -> None:
    """``metric`` per round for every run, one line each, legend by run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run, label in zip(runs, labels, strict=True):
        points = run.series(metric)
        if points:
            ax.plot([r for r, _ in points], [v for _, v in points], marker="o", markersize=3, label=label)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set(xlabel="round", ylabel=metric, title=f"{metric} per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def compare(paths: Sequence[Path], *, metric: str, target: float, out: Path) -> str:
    """Write the figure to ``out`` and return the Markdown table.

    Raises
    ------
    ExperimentError
        A run with no readable rounds, or a metric no run recorded.
    """
    runs = load_runs(paths)
    check_metric(runs, metric)
    labels = unique_labels([r.path for r in runs])
    plot_compare(runs, labels, metric, target, out)
    return compare_table(runs, labels, metric, target)
