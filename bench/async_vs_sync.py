"""Asynchronous FedBuff vs synchronous FedAvg facing the same slow devices, on digits.

Both runs use Flower's simulation engine (``flwr run``) with 10 virtual SuperNodes, the
same seed and the same ``device-slowdown`` (each node's factor is drawn from the seed
and its partition, harness/slowdown.py), so they face identical devices. Every
node gets its own Ray actor (Ray is told there are 10 CPUs), so a slow device that
sleeps does not hold up another device's training, as on real phones; the real 2
cores are shared by whichever nodes are computing at the moment.

Measured from each run's metrics.json (the ServerApp's clock, from the round-0
evaluation on; the first round of both includes the simulation's start-up): the
wall time until central accuracy first reaches the target, the rounds (model
versions) and client updates aggregated until then. Federated evaluation is off in
both (FedBuff has none; FedAvg's would add an evaluation phase per round).

    python -m bench.async_vs_sync                      # the README table (a few minutes)
    python -m bench.async_vs_sync --target 0.85 --fedavg-rounds 6 --fedbuff-rounds 16

Writes ``async_vs_sync.json`` (one row per run, and the markdown table) into ``--out``
(default ``bench/results``, where ``python -m bench`` and ``python -m bench --report-only``
pick it up into ``BENCHMARKS.md``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.localflower import BIN, REPO, start_local_flower, stop_process_tree
from bench.sim import run_config_arg

NUM_NODES = 10


def time_to_target(rows: list[dict[str, Any]], target: float, *, skip_first: bool = False) -> dict[str, Any]:
    """Seconds, rounds and client updates until ``central_accuracy >= target`` (None if never).

    ``skip_first``: the clock starts when round 1 is published, leaving out the
    simulation's start-up (Ray actors importing PyTorch), which round 1 includes.
    """
    elapsed, updates = 0.0, 0
    for row in rows:
        if row["round"] == 0:
            continue
        if not (skip_first and row["round"] == 1):
            elapsed += float(row["seconds"])
        updates += int(row["succeeded"])
        if (row.get("central_accuracy") or 0.0) >= target:
            return {"seconds": elapsed, "rounds": row["round"], "updates": updates}
    return {"seconds": None, "rounds": None, "updates": None}


def run_one(flower: Any, out: Path, overrides: dict[str, Any], target: float) -> dict[str, Any]:
    # Ray is told the machine has one CPU per node, so each node gets its own actor: a
    # device that sleeps (slowdown) never holds up another device's training.
    federation = f"num-supernodes={NUM_NODES} client-resources-num-cpus=1 init-args-num-cpus={NUM_NODES}"
    cmd = [str(BIN / "flwr"), "run", str(REPO), "local", "--stream", "--federation-config", federation]
    cmd += ["--run-config", run_config_arg({**overrides, "output-dir": str(out)})]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=flower.env, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - started
    found = sorted(out.glob("*/metrics.json"))
    metrics = json.loads(found[-1].read_text()) if found else {}
    if metrics.get("status") != "completed":
        raise RuntimeError(f"{overrides['strategy']} run failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    rows = metrics["rounds"]
    trained = [r for r in rows if r["round"] > 0]
    row = {
        "strategy": overrides["strategy"],
        "rounds_run": len(trained),
        "final_accuracy": trained[-1]["central_accuracy"],
        "best_accuracy": max(r["central_accuracy"] for r in trained),
        "seconds_all_rounds": sum(r["seconds"] for r in trained),
        "median_round_seconds": sorted(r["seconds"] for r in trained)[len(trained) // 2],
        "staleness_mean": (
            sum(r["staleness_mean"] for r in trained) / len(trained)
            if "staleness_mean" in trained[0]
            else None
        ),
        "flwr_run_wall_s": wall,
        "to_target": time_to_target(rows, target),
        "to_target_after_round_1": time_to_target(rows, target, skip_first=True),
        "round_1_seconds": trained[0]["seconds"],
    }
    return row


def markdown(rows: list[dict[str, Any]], target: float) -> str:
    def fmt(v: Any, spec: str, unit: str = "", missing: str = "never") -> str:
        return missing if v is None else format(v, spec) + unit

    t = f"{target:.0%}"
    lines = [
        f"| strategy | slow devices | time to {t}, after round 1 | time to {t}, incl. start-up "
        f"| rounds / updates to {t} | median round | best acc (rounds) | mean staleness |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        config = r["run_config"]
        slow = config["device-slowdown"]
        if slow != "none":
            slow += f" (σ {config['device-slowdown-sigma']:g}, max {config['device-slowdown-max']:g})"
        after, total = r["to_target_after_round_1"], r["to_target"]
        lines.append(
            f"| {r['strategy']} | {slow} | {fmt(after['seconds'], '.1f', ' s')} "
            f"| {fmt(total['seconds'], '.1f', ' s')} "
            f"| {fmt(total['rounds'], 'd')} / {fmt(total['updates'], 'd')} "
            f"| {r['median_round_seconds']:.1f} s | {r['best_accuracy']:.3f} ({r['rounds_run']}) "
            f"| {fmt(r['staleness_mean'], '.2f', missing='–')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", type=float, default=0.9, help="central accuracy to reach")
    parser.add_argument("--fedavg-rounds", type=int, default=5)
    parser.add_argument("--fedbuff-rounds", type=int, default=12)
    parser.add_argument("--no-reference", action="store_true", help="skip FedAvg without slow devices")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--buffer-size", type=int, default=5)
    parser.add_argument("--slowdown", default="lognormal", choices=["uniform", "lognormal"])
    parser.add_argument("--slowdown-max", type=float, default=10.0)
    parser.add_argument("--slowdown-sigma", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="output directory")
    args = parser.parse_args()

    common = {
        "seed": args.seed,
        "fraction-evaluate": 0.0,
        "threads-per-client": 1,
        "device-slowdown": args.slowdown,
        "device-slowdown-max": args.slowdown_max,
        "device-slowdown-sigma": args.slowdown_sigma,
    }
    runs = [
        {"strategy": "fedavg", "num-server-rounds": args.fedavg_rounds, **common},
        {
            "strategy": "fedbuff",
            "num-server-rounds": args.fedbuff_rounds,
            "fedbuff-concurrency": args.concurrency,
            "fedbuff-buffer-size": args.buffer_size,
            **common,
        },
    ]
    if not args.no_reference:  # what a synchronous round costs here without slow devices
        runs.append({**runs[0], "device-slowdown": "none"})
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgebloom-async-") as tmp:
        flower = start_local_flower(Path(tmp) / "home", num_supernodes=NUM_NODES)
        try:
            for i, overrides in enumerate(runs):
                rows.append(run_one(flower, Path(tmp) / f"out{i}", overrides, args.target))
                rows[-1]["run_config"] = overrides
        finally:
            stop_process_tree(flower.pid)
    payload = {
        "benchmark": "async_vs_sync",
        "target_accuracy": args.target,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "settings": {
            "concurrency": args.concurrency,
            "buffer_size": args.buffer_size,
            "slowdown": args.slowdown,
            "slowdown_max": args.slowdown_max,
            "slowdown_sigma": args.slowdown_sigma,
            "seed": args.seed,
        },
        "rows": rows,
        "table": markdown(rows, args.target),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "async_vs_sync.json"
    path.write_text(json.dumps(payload, indent=2))
    print(payload["table"])
    print(f"\n(JSON: {path})")


if __name__ == "__main__":
    main()
