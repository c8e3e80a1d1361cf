"""Issue 16's two target configs, now against an earlier checkout, separate and fused evaluation.

``python -m bench.engine --compare-app DIR`` runs the digits CNN (10 clients, 10 per round,
E=5) and the MNIST CNN (100 clients, 10 per round, E=1) as the overhead section does
(:func:`bench.overhead.run_one`: the simulation, the plain-PyTorch reference, the
``fused-evaluate`` variant, one actor per core, the overhead breakdown), with more
rounds, plus the same configs with the
checkout in ``DIR`` (e.g. ``git archive <commit> | tar -x -C DIR``: the app before a
change), all in one run, so before and after are rows of one table. It writes
``bench/results/engine.json``, which ``python -m bench`` renders as its own section
("Engine overhead before and after"). About 8 minutes on 2 quiet cores; not part of
``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import overhead
from bench.localflower import REPO, start_local_flower, stop_process_tree
from bench.machine import load_average, machine_info

#: (model, clients, local epochs) of the issue's targets.
TARGETS = {("digits-cnn", 10, 5), ("mnist-cnn", 100, 1)}
#: Rounds per run: more than the overhead section's, so that the steady median is of 11
#: (digits) and 7 (MNIST) rounds; a steady round costs a fraction of the start-up.
ROUNDS = {"digits-cnn": 12, "mnist-cnn": 8}


def target_configs() -> list[dict[str, Any]]:
    """The targets' overhead configs, each also with the compared checkout, fused and one actor per core."""
    out = [c for c in overhead.configs(False) if (c["model"], c["nodes"], c["epochs"]) in TARGETS]
    return [
        {**c, "rounds": ROUNDS[c["model"]], "baseline": True, "fused": True, "parallel": True} for c in out
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.splitlines()[0])
    parser.add_argument("--compare-app", type=Path, required=True, help="the earlier checkout to compare")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "engine.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    from bench.__main__ import start_in  # noqa: PLC0415  (the CLI module, only for its helper)

    # The quickstart-style app is the overhead section's comparison, not this one's.
    overhead.run_baseline = lambda *a, **k: None  # type: ignore[assignment]
    compare_app = args.compare_app.resolve()
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "load_average": [load_average()],
        "compare_app": compare_app.name,
    }
    with tempfile.TemporaryDirectory(prefix="edgebloom-engine-") as tmp:
        work = Path(tmp)
        flower = start_local_flower(work / "flwr-home", num_supernodes=10)
        compare_flower = start_in(compare_app, work / "flwr-home-compare")
        try:
            app = overhead.app_copy(work)
            configs = []
            for cfg in target_configs():
                try:
                    configs.append(
                        overhead.run_one(
                            flower, cfg, work, os.cpu_count() or 1, (compare_flower, compare_app), app
                        )
                    )
                except Exception as exc:  # noqa: BLE001  (report what failed, measure the rest)
                    configs.append({**cfg, "error": str(exc)[-2000:]})
                result["load_average"].append(load_average())
            result["overhead"] = {"configs": configs, "fab_walk": overhead.fab_walk(app)}
        finally:
            stop_process_tree(flower.pid)
            stop_process_tree(compare_flower.pid)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"bench.engine: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
