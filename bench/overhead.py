"""Simulation overhead: the app through Flower's engine vs. the same rounds in plain PyTorch.

For each (model, population, clients per round) the app runs ``R`` rounds through
``flwr run`` on a local simulation SuperLink, and ``bench.plain`` runs the identical
rounds (same data file, partitions, sampled-client count, epochs, batch size, model,
torch threads, weighted average, federated evaluation) in one process with no Flower.
Both sides use one worker with ``threads`` torch threads: the simulation gets one Ray
actor (``client-resources-num-cpus`` = all cores), so neither side runs clients in
parallel. The ratio is the median steady-state round (rounds 2..R) of the simulation
over that of the plain loop. Round 1 of the simulation also starts Ray and the actor;
that and everything before it is the fixed start-up, reported separately.

The quickstart-style baseline app (``bench/baseline_app``: reloads its data and rebuilds
its model on every call) is run the same way on the headline configs, and the configs
marked ``fused`` once more with ``fused-evaluate=true`` (one round trip per round), and
those marked ``parallel`` with Flower's client resources as README recommends (one CPU
per ClientApp, so one actor per core) against plain PyTorch given every core as torch
threads: both sides use the whole machine, each in its own way. Each
edgebloom run's steady rounds are broken down into where the overhead goes
(:mod:`bench.breakdown`, from the app's per-round phase timings).

``flwr run`` is given a copy of the app's source files (:func:`app_copy`), as a project
with its virtual environment outside it would be: Flower 1.41's FAB build walks every
file under the project directory before it filters any (``flwr/cli/utils.py:550``), so a
``.venv`` inside the project costs the CLI seconds. That walk is timed on the repository
itself too (``fab_walk``), for the record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import breakdown
from bench.data import random_images_npz
from bench.localflower import REPO, LocalFlower
from bench.sim import SimRun, run_app, steady_seconds

BASELINE_APP = REPO / "bench" / "baseline_app"
EXAMPLES_PER_CLIENT = 100  # 90 train + 10 held out (val-fraction 0.1)


def configs(quick: bool) -> list[dict[str, Any]]:
    """The measured configurations; ``baseline`` marks those also run with the baseline app."""
    if quick:
        return [
            {
                "model": "digits-cnn",
                "data": "digits",
                "nodes": 10,
                "per_round": 10,
                "rounds": 3,
                "epochs": 1,
                "baseline": True,
                "fused": True,
                "parallel": True,
            },
        ]
    out = []
    for model, data, rounds in (("digits-cnn", "digits", 5), ("mnist-cnn", "mnist", 4)):
        for nodes, per_round in ((10, 10), (100, 10), (1000, 10)):
            out.append(
                {
                    "model": model,
                    "data": data,
                    "nodes": nodes,
                    "per_round": per_round,
                    "rounds": rounds,
                    "epochs": 5,
                    "baseline": nodes == 100,
                    # Issue 16's digits target: 10 clients, all 10 per round, E=5.
                    "fused": model == "digits-cnn" and nodes == 10,
                    "parallel": model == "digits-cnn" and nodes == 10,
                }
            )
    # The headline config with one local epoch: a fifth of the compute per message.
    out.append(
        {
            "model": "mnist-cnn",
            "data": "mnist",
            "nodes": 100,
            "per_round": 10,
            "rounds": 4,
            "epochs": 1,
            "baseline": True,
            "fused": True,
            "parallel": True,
        }
    )
    return out


#: Config keys that say which extra runs to make, not what to measure.
VARIANT_KEYS = ("baseline", "fused", "parallel")


def app_copy(work: Path) -> Path:
    """The app's source files (git's tracked and untracked-not-ignored files) in ``work/edgebloom``.

    What ``flwr run`` bundles either way, without the project's virtual environment and
    caches: the layout README recommends (the environment outside the project). Without
    git (a ``git archive`` checkout under ``--compare-app``), the repository itself.
    """
    proc = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        return REPO
    target = work / "edgebloom"
    for name in filter(None, proc.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / name)
    return target


def fab_walk(app: Path) -> dict[str, float | int]:
    """Seconds Flower's FAB build spends listing the project's files before it filters them."""
    from flwr.cli.utils import collect_files

    out: dict[str, float | int] = {}
    for key, root in (("project", REPO), ("copy", app)):
        began = time.perf_counter()
        files = collect_files(root)
        out[f"{key}_s"], out[f"{key}_files"] = time.perf_counter() - began, len(files)
    return out


def app_run_config(cfg: dict[str, Any], dataset: Path, output_dir: Path) -> dict[str, Any]:
    fraction = cfg["per_round"] / cfg["nodes"]
    return {
        "dataset": str(dataset),
        "model": cfg["model"],
        "num-server-rounds": cfg["rounds"],
        "fraction-train": fraction,
        "fraction-evaluate": fraction,
        "min-available-nodes": cfg["nodes"],
        "local-epochs": cfg["epochs"],
        "batch-size": 10,
        "threads-per-client": 1,
        "central-eval": False,
        "output-dir": str(output_dir),
    }


def plain(run_config: dict[str, Any], nodes: int, rounds: int, threads: int = 1) -> dict[str, Any]:
    """``bench.plain`` in a fresh process; its JSON result."""
    args = json.dumps({"run_config": run_config, "num_nodes": nodes, "rounds": rounds, "threads": threads})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.plain", args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.plain failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def startup(run: SimRun, round1_s: float, steady_s: float) -> dict[str, float | None]:
    """Fixed start-up from the streamed log: CLI, ServerApp ready, and round 1's extra time."""
    submitted = run.first("Successfully started run")
    ready = run.first("[ROUND 1/")
    out: dict[str, float | None] = {
        "cli_submit_s": submitted,
        "serverapp_ready_s": None if ready is None or submitted is None else ready - submitted,
        "first_round_extra_s": round1_s - steady_s,
    }
    out["total_s"] = None if ready is None else ready + out["first_round_extra_s"]  # type: ignore[operator]
    return out


def run_one(
    flower: LocalFlower,
    cfg: dict[str, Any],
    work: Path,
    cores: int,
    compare: tuple[LocalFlower, Path] | None = None,
    app: Path = REPO,
) -> dict[str, Any]:
    name = f"{cfg['model']}-{cfg['nodes']}n-{cfg['per_round']}pr-e{cfg['epochs']}"
    dataset = random_images_npz(work / "data", cfg["data"], cfg["nodes"] * EXAMPLES_PER_CLIENT)
    out_dir = work / "runs" / name
    run_config = app_run_config(cfg, dataset, out_dir)
    sim = run_app(
        flower,
        run_config=run_config,
        num_supernodes=cfg["nodes"],
        num_cpus_per_client=cores,
        app=app,
        outputs=out_dir,
    )
    result: dict[str, Any] = {**{k: v for k, v in cfg.items() if k not in VARIANT_KEYS}, "name": name}
    if sim.metrics is None or sim.metrics.get("status") != "completed":
        tail = "\n".join(sim.text().splitlines()[-30:])
        raise RuntimeError(f"simulation {name} did not complete (rc={sim.returncode}):\n{tail}")
    rounds = [r["seconds"] for r in sim.metrics["rounds"] if r["round"] > 0]
    sim_steady = steady_seconds(rounds)
    reference = plain(run_config, cfg["nodes"], cfg["rounds"])
    plain_steady = steady_seconds(reference["round_seconds"])
    result.update(
        sim_round_seconds=rounds,
        plain_round_seconds=reference["round_seconds"],
        sim_steady_s=sim_steady,
        plain_steady_s=plain_steady,
        overhead_s=sim_steady - plain_steady,
        ratio=sim_steady / plain_steady,
        startup=startup(sim, rounds[0], sim_steady),
        peak_memory=sim.peak_memory,
        params=reference["params"],
        wall_s=sim.wall_s,
        breakdown=breakdown.of_run(sim.metrics["rounds"], plain_steady),
        cpu=sim.steady_cpu(cfg["rounds"]),
        plain_cpu_s=steady_seconds(reference["cpu_seconds"]),
    )
    result["startup"]["round1"] = breakdown.first_round(sim.metrics["rounds"], result["breakdown"])
    if cfg.get("fused"):
        result["fused"] = run_compare(
            flower,
            cfg,
            dataset,
            work / "runs" / f"{name}-fused",
            cores,
            plain_steady,
            app,
            extra={"fused-evaluate": True},
        )
    if cfg.get("parallel") and cores > 1:
        # Flower's client resources as README recommends (one CPU per ClientApp: an actor
        # per core, two clients at a time here) against plain PyTorch given the same cores
        # as torch threads (one process, clients one after another).
        wide = plain(run_config, cfg["nodes"], cfg["rounds"], threads=cores)
        wide_steady = steady_seconds(wide["round_seconds"])
        result["parallel"] = {
            **run_compare(flower, cfg, dataset, work / "runs" / f"{name}-parallel", 1, wide_steady, app),
            "plain_steady_s": wide_steady,
            "plain_cpu_s": steady_seconds(wide["cpu_seconds"]),
            "plain_threads": wide["torch_threads"],
            "actors": cores,
        }
    if cfg.get("baseline") and compare is not None:
        result["before"] = run_compare(
            compare[0], cfg, dataset, work / "runs" / f"{name}-before", cores, plain_steady, compare[1]
        )
    if cfg.get("baseline"):
        result["baseline"] = run_baseline(
            flower, cfg, dataset, work / "runs" / f"{name}-baseline", cores, plain_steady
        )
    return result


def run_compare(
    flower: LocalFlower,
    cfg: dict[str, Any],
    dataset: Path,
    out_dir: Path,
    cores: int,
    plain_steady: float,
    app: Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The same config with another checkout of edgebloom (e.g. the commit before an optimization).

    ``flower`` must have been started with that checkout as its working directory: Ray's
    actors import the ClientApp's modules from the SuperLink's working directory (which
    comes first on their ``sys.path``), not from the installed app bundle. ``extra``:
    run-config keys on top of the config's (``fused-evaluate``).
    """
    sim = run_app(
        flower,
        run_config={**app_run_config(cfg, dataset, out_dir), **(extra or {})},
        num_supernodes=cfg["nodes"],
        num_cpus_per_client=cores,
        app=app,
        outputs=out_dir,
    )
    if sim.metrics is None or sim.metrics.get("status") != "completed":
        tail = "\n".join(sim.text().splitlines()[-30:])
        return {"error": f"{app} did not complete (rc={sim.returncode}):\n{tail}"}
    rounds = [r["seconds"] for r in sim.metrics["rounds"] if r["round"] > 0]
    steady = steady_seconds(rounds)
    split = breakdown.of_run(sim.metrics["rounds"], plain_steady)
    return {
        "app": str(app),
        "sim_round_seconds": rounds,
        "sim_steady_s": steady,
        "ratio": steady / plain_steady,
        "overhead_s": steady - plain_steady,
        "startup": {
            **startup(sim, rounds[0], steady),
            "round1": breakdown.first_round(sim.metrics["rounds"], split),
        },
        "peak_memory": sim.peak_memory,
        "breakdown": split,
        "cpu": sim.steady_cpu(cfg["rounds"]),
    }


def run_baseline(
    flower: LocalFlower, cfg: dict[str, Any], dataset: Path, out_dir: Path, cores: int, plain_steady: float
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = out_dir / "timings.json"
    fraction = cfg["per_round"] / cfg["nodes"]
    run_config = {
        "dataset": str(dataset),
        "model": cfg["model"],
        "num-server-rounds": cfg["rounds"],
        "fraction-train": fraction,
        "fraction-evaluate": fraction,
        "min-available-nodes": cfg["nodes"],
        "local-epochs": cfg["epochs"],
        "threads-per-client": 1,
        "timings-path": str(timings),
    }
    sim = run_app(
        flower,
        run_config=run_config,
        num_supernodes=cfg["nodes"],
        num_cpus_per_client=cores,
        app=BASELINE_APP,
    )
    if not timings.exists():
        tail = "\n".join(sim.text().splitlines()[-30:])
        raise RuntimeError(f"baseline app did not finish a round (rc={sim.returncode}):\n{tail}")
    rounds = json.loads(timings.read_text())["round_seconds"]
    steady = steady_seconds(rounds)
    return {
        "sim_round_seconds": rounds,
        "sim_steady_s": steady,
        "ratio": steady / plain_steady,
        "overhead_s": steady - plain_steady,
        "startup": startup(sim, rounds[0], steady),
        "peak_memory": sim.peak_memory,
    }


def run(
    flower: LocalFlower, work: Path, quick: bool, compare: tuple[LocalFlower, Path] | None = None
) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    app = app_copy(work)
    results = []
    for cfg in configs(quick):
        try:
            results.append(run_one(flower, cfg, work, cores, compare, app))
        except Exception as exc:  # noqa: BLE001  (report what failed, measure the rest)
            results.append({**cfg, "error": str(exc)[-2000:]})
    return {
        "examples_per_client": EXAMPLES_PER_CLIENT,
        "actors": 1,
        "threads": 1,
        "configs": results,
        "fab_walk": fab_walk(app),
    }
