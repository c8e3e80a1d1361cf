"""Efficiency users feel: rounds and wall time to a target accuracy, FedAvg vs. FedProx.

Each run is the app through ``flwr run`` with the user's default federation (one client
per core, ``client-resources-num-cpus=1``) and centralized evaluation each round:

- digits (scikit-learn's real 8×8 digits), 10 clients all sampled, E=5, B=10, lr 0.1:
  IID, Dirichlet α=0.1 and McMahan's shards (2 per client); FedProx μ=0.1.
- Synthetic(1, 1) (Li et al. 2020), 30 devices, 10 per round, logistic regression,
  E=20, B=10, lr 0.01 (the FedProx paper's settings), 0% and 90% stragglers;
  FedProx μ=1 (the paper's), FedAvg drops stragglers.

Wall time to target is the sum of round times up to the first round whose central
accuracy reaches the target (it includes round 1's Ray/actor start; the ServerApp's
start-up before round 1 is reported with the overhead section).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.localflower import LocalFlower
from bench.sim import run_app

DIGITS_TARGET = 0.90
SYNTHETIC_TARGET = 0.60


def experiments(quick: bool) -> list[dict[str, Any]]:
    if quick:
        base = {"dataset": "digits", "num-server-rounds": 1, "local-epochs": 1, "fraction-evaluate": 0.0}
        return [
            {
                "name": f"{s} digits iid",
                "nodes": 10,
                "target": 0.5,
                "group": "digits",
                "config": {
                    **base,
                    "strategy": s,
                    "partitioner": "iid",
                    "proximal-mu": 0.1 if s == "fedprox" else 0.0,
                },
            }
            for s in ("fedavg", "fedprox")
        ]
    out = []
    for part, extra in (("iid", {}), ("dirichlet 0.1", {"dirichlet-alpha": 0.1}), ("shard", {})):
        for strategy in ("fedavg", "fedprox"):
            config = {
                "dataset": "digits",
                "strategy": strategy,
                "partitioner": part.split()[0],
                "num-server-rounds": 15,
                "fraction-evaluate": 0.0,
                **extra,
            }
            if strategy == "fedprox":
                config["proximal-mu"] = 0.1
            out.append(
                {
                    "name": f"{strategy} digits {part}",
                    "nodes": 10,
                    "target": DIGITS_TARGET,
                    "group": "digits",
                    "config": config,
                }
            )
    for stragglers in (0.0, 0.9):
        for strategy in ("fedavg", "fedprox"):
            config = {
                "dataset": "synthetic",
                "synthetic-devices": 30,
                "strategy": strategy,
                "fraction-train": 0.34,
                "fraction-evaluate": 0.0,
                "local-epochs": 20,
                "batch-size": 10,
                "learning-rate": 0.01,
                "straggler-fraction": stragglers,
                "num-server-rounds": 40,
            }
            if strategy == "fedprox":
                config["proximal-mu"] = 1.0
            out.append(
                {
                    "name": f"{strategy} synthetic(1,1) {int(stragglers * 100)}% stragglers",
                    "nodes": 30,
                    "target": SYNTHETIC_TARGET,
                    "group": "synthetic",
                    "config": config,
                }
            )
    return out


def run(flower: LocalFlower, work: Path, quick: bool, plot_path: Path) -> dict[str, Any]:
    rows = []
    for exp in experiments(quick):
        out_dir = work / "efficiency" / exp["name"].replace(" ", "_").replace("%", "pct")
        config = {**exp["config"], "output-dir": str(out_dir)}
        sim = run_app(
            flower, run_config=config, num_supernodes=exp["nodes"], num_cpus_per_client=1, outputs=out_dir
        )
        row: dict[str, Any] = {
            "name": exp["name"],
            "group": exp["group"],
            "target": exp["target"],
            "config": exp["config"],
        }
        if sim.metrics is None:
            row["error"] = "\n".join(sim.text().splitlines()[-20:])
            rows.append(row)
            continue
        rounds = [r for r in sim.metrics["rounds"] if r["round"] > 0]
        accuracy = [r.get("central_accuracy") for r in rounds]
        hit = next((i for i, a in enumerate(accuracy) if a is not None and a >= exp["target"]), None)
        row.update(
            status=sim.metrics.get("status"),
            accuracy=accuracy,
            round_seconds=[r["seconds"] for r in rounds],
            final_accuracy=accuracy[-1] if accuracy else None,
            best_accuracy=max((a for a in accuracy if a is not None), default=None),
            rounds_to_target=None if hit is None else hit + 1,
            seconds_to_target=None if hit is None else sum(r["seconds"] for r in rounds[: hit + 1]),
            total_round_seconds=sum(r["seconds"] for r in rounds),
            wall_s=sim.wall_s,
        )
        rows.append(row)
    plot(rows, plot_path)
    return {"rows": rows, "plot": plot_path.name}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["group"] for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.5), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        for r in rows:
            if r["group"] != group or "accuracy" not in r:
                continue
            xs = list(range(1, len(r["accuracy"]) + 1))
            ax.plot(xs, r["accuracy"], label=r["name"], linestyle="--" if "fedprox" in r["name"] else "-")
            ax.axhline(r["target"], color="grey", linewidth=0.6)
        ax.set_title(f"{group}: central accuracy per round")
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
