"""``python -m bench.compression [--rounds N] [--out DIR]``: accuracy vs bytes of update compression.

Digits, the default run (10 clients all sampled, E=5, B=10, lr 0.1, IID, seed 42),
through ``flwr run`` in Flower's simulation engine, once per setting: no compression,
int8, and top-k with error feedback at 10% and 1% of each layer's entries. The
compressed runs' bytes are what the wrapper recorded (``bytes_up`` / ``bytes_down`` in
metrics.json: serialized ``.npy`` payloads, headers included). An uncompressed run has
no wrapper; its bytes are computed from the model: each reply and each message the
server sends is one copy of the model, ``len(Array.data)`` summed over its layers,
times the replies and messages the round log counts.

Writes ``compression.json`` to ``--out`` (``python -m bench`` merges it into its
report) and prints the markdown table that README "Update compression" shows.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.localflower import REPO, start_local_flower, stop_process_tree
from bench.machine import machine_info
from bench.sim import run_app
from strategies.core.records import npy_array
from tasks.models import build_model
from tasks.train import get_weights

SETTINGS: tuple[dict[str, Any], ...] = (
    {"name": "none", "compression": "none"},
    {"name": "int8", "compression": "int8"},
    {"name": "top-k 10%", "compression": "topk", "topk-fraction": 0.1},
    {"name": "top-k 1%", "compression": "topk", "topk-fraction": 0.01},
)


def model_bytes() -> int:
    """Serialized bytes of one digits-CNN model, as the ServerApp and clients send it."""
    torch.manual_seed(0)
    model = build_model("digits-cnn", (1, 8, 8), 10)
    return sum(len(npy_array(w).data) for w in get_weights(model))


def row_of(setting: dict[str, Any], metrics: dict[str, Any], full: int) -> dict[str, Any]:
    rounds = [r for r in metrics["rounds"] if r["round"] > 0]
    if setting["compression"] == "none":
        up = [r["succeeded"] * full for r in rounds]
        down = [(r["sampled"] - r["dropped"] + r["eval_sampled"]) * full for r in rounds]
    else:
        up = [r["bytes_up"] for r in rounds]
        down = [r["bytes_down"] for r in rounds]
    accuracy = [r["central_accuracy"] for r in rounds]
    return {
        **setting,
        "status": metrics["status"],
        "bytes_up": up,
        "bytes_down": down,
        "accuracy": accuracy,
        "initial_accuracy": metrics["rounds"][0]["central_accuracy"],
        "rejected": sum(sum(r["rejected"].values()) for r in rounds),
    }


def table(rows: list[dict[str, Any]]) -> str:
    base = sum(rows[0]["bytes_up"]) / len(rows[0]["bytes_up"])
    head = (
        "| compression | upload / round | vs none | download / round | central acc after round 1 / 3 / 10 |\n"
        "|---|---:|---:|---:|---|"
    )
    lines = [head]
    for r in rows:
        up = sum(r["bytes_up"]) / len(r["bytes_up"])
        down = sum(r["bytes_down"]) / len(r["bytes_down"])
        acc = r["accuracy"]
        picks = " / ".join(f"{acc[i - 1]:.3f}" for i in (1, 3, len(acc)) if i <= len(acc))
        lines.append(
            f"| {r['name']} | {up / 1e3:.1f} kB | {up / base:.3f}× | {down / 1e3:.1f} kB | {picks} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compression", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="num-server-rounds of every run")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="output directory")
    args = parser.parse_args(argv)
    full = model_bytes()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgebloom-compression-") as tmp:
        work = Path(tmp)
        flower = start_local_flower(work / "flwr-home", num_supernodes=10)
        try:
            for setting in SETTINGS:
                out_dir = work / setting["name"].replace(" ", "_").replace("%", "pct")
                config = {k: v for k, v in setting.items() if k != "name"}
                config |= {"num-server-rounds": args.rounds, "output-dir": str(out_dir)}
                sim = run_app(
                    flower, run_config=config, num_supernodes=10, num_cpus_per_client=1, outputs=out_dir
                )
                if sim.metrics is None or sim.metrics.get("status") != "completed":
                    raise RuntimeError(
                        f"{setting['name']} run failed:\n" + "\n".join(sim.text().splitlines()[-30:])
                    )
                rows.append({**row_of(setting, sim.metrics, full), "wall_s": sim.wall_s})
                print(f"bench.compression: {setting['name']} done in {sim.wall_s:.0f} s", flush=True)
        finally:
            stop_process_tree(flower.pid)
    markdown = table(rows)
    result = {
        "model_bytes": full,
        "rounds": args.rounds,
        "rows": rows,
        "table": markdown,
        "machine": machine_info(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compression.json").write_text(json.dumps(result, indent=1))
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
