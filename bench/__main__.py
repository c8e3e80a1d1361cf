"""``python -m bench [--quick] [--only SECTION ...] [--out DIR]``: run the benchmarks.

Writes ``results.json`` (every figure, with the machine it was measured on) and
``BENCHMARKS.md`` into ``--out``; the full mode also copies ``BENCHMARKS.md`` to the
repository root. ``--only SECTION --update`` re-measures one section and replaces just it
in the published results. ``--quick`` runs a tiny configuration of every section (CI checks that
it runs and writes sane results; its figures mean little).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import aggregation, efficiency, overhead, report, scale, secagg
from bench.localflower import REPO, LocalFlower, start_local_flower, stop_process_tree
from bench.machine import load_average, machine_info

SECTIONS = ("overhead", "aggregation", "scale", "efficiency", "secagg")
#: Results other benchmark modules may leave in the output directory; included if present.
OPTIONAL = {"async_vs_sync": "async_vs_sync.json", "compression": "compression.json", "engine": "engine.json"}


def start_in(directory: Path, home: Path) -> LocalFlower:
    """A SuperLink started with ``directory`` as its working directory (see ``overhead.run_compare``)."""
    here = Path.cwd()
    os.chdir(directory)
    try:
        return start_local_flower(home, num_supernodes=10)
    finally:
        os.chdir(here)


def merge_optional(results: dict[str, Any], out: Path) -> None:
    """Add the results of the separately run benchmarks (:data:`OPTIONAL`) found in ``out``."""
    for name, filename in OPTIONAL.items():
        path = out / filename
        if path.exists():
            results[name] = json.loads(path.read_text())


def complete(results: dict[str, Any], out: Path) -> None:
    """What the report needs beyond the measured sections, added again at every render.

    The separately run benchmarks' JSON from ``out`` (:data:`OPTIONAL`). Scale has its own
    runs (``bench/scale.py``); it is no longer derived from the overhead runs.
    """
    merge_optional(results, out)


def versions(m: dict[str, Any]) -> str:
    """The library versions of a machine record, as BENCHMARKS.md prints them."""
    return f"flwr {m['flwr']}, torch {m['torch']}, numpy {m['numpy']}, ray {m['ray']}, Python {m['python']}"


def updated(published: dict[str, Any], fresh: dict[str, Any], sections: list[str]) -> dict[str, Any]:
    """``published`` with ``sections`` replaced by those of ``fresh``, each stamped with its own run.

    A section's figures are ratios taken within that section's run, so a section can be
    re-measured alone; the stamp (when, which CPU) is printed above it in BENCHMARKS.md.
    """
    m = fresh["machine"]
    stamp = {
        "started": fresh["started"],
        "cpu": m["cpu"],
        "cores": m["cores"],
        "versions": versions(m),
    }
    for name in sections:
        if name in fresh:
            published[name] = {**fresh[name], "measured_separately": stamp}
    return published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny configs: checks that everything runs")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="output directory")
    parser.add_argument(
        "--compare-app",
        type=Path,
        help="another edgebloom checkout (e.g. from `git archive`) to run on the headline configs",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="re-render BENCHMARKS.md from --out/results.json"
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --only: replace just these sections in --out/results.json (keeping the rest), re-render",
    )
    args = parser.parse_args(argv)
    if args.update and (args.only is None or args.quick or args.report_only):
        parser.error("--update needs --only SECTION ... and a full run (no --quick, no --report-only)")
    if args.update and not (args.out / "results.json").exists():
        parser.error(f"--update: {args.out / 'results.json'} does not exist; run `python -m bench` first")
    if args.report_only:
        results = json.loads((args.out / "results.json").read_text())
        complete(results, args.out)
        (args.out / "BENCHMARKS.md").write_text(report.render(results))
        if results["mode"] == "full":
            shutil.copyfile(args.out / "BENCHMARKS.md", REPO / "BENCHMARKS.md")
        return 0
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    sections = list(args.only or SECTIONS)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average_samples": [],
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgebloom-bench-") as tmp:
        work = Path(tmp)
        flower = compare_flower = None
        if {"overhead", "scale", "efficiency"} & set(sections):
            flower = start_local_flower(work / "flwr-home", num_supernodes=10)
        compare = None
        if args.compare_app is not None and "overhead" in sections:
            compare_flower = start_in(args.compare_app.resolve(), work / "flwr-home-compare")
            compare = (compare_flower, args.compare_app.resolve())
        try:
            if "overhead" in sections:
                results["load_average_samples"].append(("overhead:start", load_average()))
                results["overhead"] = overhead.run(flower, work, args.quick, compare)
                results["load_average_samples"].append(("overhead:end", load_average()))
            if "scale" in sections:
                results["scale"] = scale.run(flower, work, args.quick)
                results["load_average_samples"].append(("scale:end", load_average()))
            if "aggregation" in sections:
                results["aggregation"] = aggregation.run(args.quick)
                results["load_average_samples"].append(("aggregation:end", load_average()))
            if "efficiency" in sections:
                results["efficiency"] = efficiency.run(flower, work, args.quick, out / "efficiency.png")
                results["load_average_samples"].append(("efficiency:end", load_average()))
            if "secagg" in sections:
                results["secagg"] = secagg.run(work, args.quick)
                results["load_average_samples"].append(("secagg:end", load_average()))
        finally:
            for started_flower in (flower, compare_flower):
                if started_flower is not None:
                    stop_process_tree(started_flower.pid)
    elapsed = time.monotonic() - started
    results["total_seconds"] = elapsed
    if args.update:
        results = updated(json.loads((out / "results.json").read_text()), results, sections)
    complete(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    markdown = report.render(results)
    (out / "BENCHMARKS.md").write_text(markdown)
    if not args.quick and (args.only is None or args.update):
        shutil.copyfile(out / "BENCHMARKS.md", REPO / "BENCHMARKS.md")
    print(f"bench: wrote {out / 'results.json'} and {out / 'BENCHMARKS.md'} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
