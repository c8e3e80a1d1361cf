"""The ``edgebloom`` command: list runs, compare them, sweep a grid of settings over seeds.

``edgebloom runs [OUTPUT_DIR]``, ``edgebloom compare RUN_DIR... [--metric] [--target] [--out]``,
``edgebloom sweep --grid "..." [--seeds N] [--run-config "..."] [--federation-config "..."]
[--connection NAME] [--out SWEEP_DIR]`` (README "Experiments"). Also ``python -m experiments``.
Exit status: 0 done, 1 a sweep had failed runs, 2 bad input (a message says what to fix),
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.runs import ExperimentError

DEFAULT_METRIC = "central_accuracy"
DEFAULT_TARGET = 0.9


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgebloom",
        description="Experiments with the edgebloom Flower app: list runs, compare them, sweep settings.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{runs,compare,sweep}")

    runs = sub.add_parser("runs", help="a table of the run directories under OUTPUT_DIR")
    runs.add_argument("output_dir", nargs="?", default="outputs", type=Path, help="default: outputs")

    compare = sub.add_parser("compare", help="one metric of several runs: a figure and a Markdown table")
    compare.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    compare.add_argument(
        "--metric", default=DEFAULT_METRIC, help=f"per-round metric (default {DEFAULT_METRIC})"
    )
    compare.add_argument("--target", type=float, default=DEFAULT_TARGET, help="for rounds/seconds to target")
    compare.add_argument(
        "--out", type=Path, default=Path("compare.png"), help="the figure (default compare.png)"
    )

    sweep = sub.add_parser("sweep", help="every grid combination x seed through flwr run, resumable")
    sweep.add_argument(
        "--grid",
        required=True,
        help='space-separated key=value[,value...], e.g. "strategy=fedavg,fedprox proximal-mu=0.01,0.1"',
    )
    sweep.add_argument(
        "--seeds", type=int, default=1, help="seeds per combination, from the run config's seed"
    )
    sweep.add_argument("--run-config", default=None, help="fixed keys for every run, as flwr run takes them")
    sweep.add_argument(
        "--federation-config", default=None, help='passed to every flwr run (e.g. "num-supernodes=20")'
    )
    sweep.add_argument(
        "--connection", default=None, help="SuperLink connection name (default: flwr's default)"
    )
    sweep.add_argument("--out", type=Path, default=None, help="sweep directory (default sweeps/<time>)")
    sweep.add_argument("--app", type=Path, default=Path("."), help="the Flower app directory (default .)")
    sweep.add_argument(
        "--metric", default=DEFAULT_METRIC, help=f"summarized metric (default {DEFAULT_METRIC})"
    )
    sweep.add_argument("--target", type=float, default=DEFAULT_TARGET, help="for rounds/seconds to target")
    return parser


def cmd_runs(args: argparse.Namespace) -> int:
    from experiments.runs import find_run_dirs, read_run, runs_table

    root = args.output_dir
    if not root.is_dir():
        raise ExperimentError(
            f"{root} is not a directory (run directories go to output-dir, default outputs)"
        )
    paths = find_run_dirs(root)
    if not paths:
        print(f"no run directories under {root}")
        return 0
    print(runs_table([read_run(p) for p in paths], root))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from experiments.compare import compare

    table = compare(args.run_dirs, metric=args.metric, target=args.target, out=args.out)
    print(table)
    print(f"\nfigure: {args.out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import time

    from experiments import grid as g
    from experiments.sweep import SweepSpec, run_sweep, seeds_from

    app = args.app.resolve()
    if not (app / "pyproject.toml").is_file():
        raise ExperimentError(f"--app {args.app}: no pyproject.toml there; run from the app's directory")
    # Everything is checked against the app's declarations before the first run starts.
    declared = g.declared_keys()
    grid = g.typed_grid(g.parse_grid(args.grid), declared)
    base = g.parse_run_config(args.run_config, declared)
    g.check_overlap(grid, base)
    g.check_combinations(g.expand(grid), base)
    g.check_federation_config(args.federation_config)
    seeds = seeds_from(base, args.seeds, int(declared[g.SEED_KEY].default))
    base = {k: v for k, v in base.items() if k != g.SEED_KEY}  # the first seed; the sweep sets each
    spec = SweepSpec(
        grid=grid,
        base=base,
        seeds=seeds,
        app=app,
        connection=args.connection,
        federation_config=args.federation_config,
        metric=args.metric,
        target=args.target,
    )
    out = args.out or Path("sweeps") / time.strftime("%Y%m%d-%H%M%S")
    result = run_sweep(spec, out, echo=lambda line: print(line, flush=True))
    print()
    print((out / "summary.md").read_text())
    print(f"summary: {out / 'summary.md'}, {out / 'summary.csv'}; figure: {out / 'compare.png'}")
    return 1 if any(r.failed for r in result.rows) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgebloom`` console script."""
    args = build_parser().parse_args(argv)
    handlers = {"runs": cmd_runs, "compare": cmd_compare, "sweep": cmd_sweep}
    try:
        return handlers[args.command](args)
    except ExperimentError as exc:
        print(f"edgebloom {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgebloom: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        sys.stdout = open(os.devnull, "w")  # Python flushes stdout again at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
