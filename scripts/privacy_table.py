"""Measure accuracy vs epsilon on Synthetic(1, 1) with 100 virtual clients (README "Privacy").

Runs ``flwr run`` against one local simulation SuperLink (the helpers the e2e tests
use) for a non-private FedAvg baseline and DP-FedAvg at several noise multipliers,
all with the same data, model, sampling rate and rounds, and prints a Markdown table
of the final central accuracy and epsilon. Usage::

    python scripts/privacy_table.py [--rounds 20] [--out /tmp/privacy-table]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.processes import start_local_flower, stop_process_tree  # noqa: E402

COMMON = (
    "dataset='synthetic' synthetic-devices=100 local-epochs=1 batch-size=20 learning-rate=0.05 "
    "min-available-nodes=100 fraction-evaluate=0.05 min-evaluate-nodes=2"
)
DP = (
    "strategy='dp-fedavg' dp-sampling='poisson' dp-sampling-rate=0.1 dp-population=100 "
    "dp-clip-norm=1.0 dp-weight-cap=40.0 dp-delta=1e-5 dp-estimator='fixed'"
)
RUNS = {
    "non-private FedAvg (10 clients/round)": "strategy='fedavg' fraction-train=0.1 min-train-nodes=10",
    "DP-FedAvg z=0.8": f"{DP} dp-noise-multiplier=0.8",
    "DP-FedAvg z=1.0": f"{DP} dp-noise-multiplier=1.0",
    "DP-FedAvg z=2.0": f"{DP} dp-noise-multiplier=2.0",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="privacy-table-"))
    flower = start_local_flower(out / "flwr-home", num_supernodes=100)
    rows = []
    try:
        for label, overrides in RUNS.items():
            run_out = out / label.split(" (")[0].replace(" ", "-").replace("=", "")
            config = f"output-dir='{run_out}' num-server-rounds={args.rounds} {COMMON} {overrides}"
            proc = flower.run("--run-config", config, timeout=1800)
            metrics_files = list(run_out.glob("*/metrics.json"))
            if len(metrics_files) != 1:
                raise RuntimeError(f"{label}: no run directory\n{proc.stdout}\n{proc.stderr}")
            rounds = json.loads(metrics_files[0].read_text())["rounds"]
            last = rounds[-1]
            best = max(r["central_accuracy"] for r in rounds)
            rows.append((label, last.get("epsilon"), last["central_accuracy"], best))
            print(f"{label}: acc {last['central_accuracy']:.3f} eps {last.get('epsilon')}", flush=True)
    finally:
        stop_process_tree(flower.pid)
    print(f"\n| run | ε (δ=1e-5) after {args.rounds} rounds | final central accuracy | best round |")
    print("|---|---|---|---|")
    for label, epsilon, final, best in rows:
        eps = "∞ (no DP)" if epsilon is None else f"{epsilon:.2f}"
        print(f"| {label} | {eps} | {final:.3f} | {best:.3f} |")


if __name__ == "__main__":
    main()
