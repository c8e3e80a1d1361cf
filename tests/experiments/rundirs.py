"""Run directories for the experiments tests, written by the ServerApp's own writer code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord

from server_app.reporting import RoundReporter
from server_app.run_dir import COMPLETED, RunDirectory
from strategies.core.ledger import RoundStats


def write_run(
    root: Path,
    accuracies: Sequence[float],
    *,
    seconds: Sequence[float] | None = None,
    strategy: str = "fedavg",
    dataset: str = "digits",
    status: str = COMPLETED,
    planned: int | None = None,
    extra: dict | None = None,
) -> Path:
    """A run directory with rounds 0..len-1 (``central_accuracy`` as given), as RunDirectory writes it."""
    run = RunDirectory.create(str(root), strategy, dataset)
    run.write_config(
        {"strategy": strategy, "dataset": dataset, "num-server-rounds": planned or len(accuracies) - 1}
    )
    for rnd, acc in enumerate(accuracies):
        row = {"round": rnd, "central_accuracy": acc, "central_loss": 1.0 - acc}
        if seconds is not None:
            row["seconds"] = seconds[rnd]
        run.add_round({**row, **(extra or {})})
    run.status = status
    run.write_metrics()
    return run.path


def reported_run(root: Path, accuracies: Sequence[float], *, strategy: str = "fedprox") -> Path:
    """A completed run whose metrics.json the ServerApp's RoundReporter wrote, round by round."""
    run = RunDirectory.create(str(root), strategy, "digits")
    run.write_config({"strategy": strategy, "dataset": "digits", "num-server-rounds": len(accuracies) - 1})
    results = iter(accuracies)
    stats = {r: RoundStats(sampled=4, succeeded=4, train_loss=0.5) for r in range(1, len(accuracies))}
    reporter = RoundReporter(stats, run, lambda _arrays: (0.5, next(results)), num_rounds=len(accuracies) - 1)
    arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    for rnd in range(len(accuracies)):
        reporter(rnd, arrays)
    run.status = COMPLETED
    run.write_metrics()
    return run.path
