"""ServerApp: Flower's own FedAvg; records the seconds of every round in a JSON file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from tasks.data import read_npz
from tasks.models import build_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    x_train = read_npz(str(cfg["dataset"]))[0]
    torch.manual_seed(int(cfg["seed"]))
    model = build_model(str(cfg["model"]), (1, *x_train.shape[1:3]), 10)
    timings: list[float] = []
    last = [time.perf_counter()]

    def round_timer(server_round: int, arrays: ArrayRecord) -> None:
        # Called before round 1 and after every round, like edgebloom's reporter.
        now = time.perf_counter()
        if server_round > 0:
            timings.append(now - last[0])
            Path(str(cfg["timings-path"])).write_text(json.dumps({"round_seconds": timings}))
        last[0] = now

    strategy = FedAvg(
        fraction_train=float(cfg["fraction-train"]),
        fraction_evaluate=float(cfg["fraction-evaluate"]),
        min_available_nodes=int(cfg["min-available-nodes"]),
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        train_config=ConfigRecord({"lr": float(cfg["learning-rate"])}),
        num_rounds=int(cfg["num-server-rounds"]),
        evaluate_fn=round_timer,
    )
