"""``edgebloom sweep``: every grid combination × seed through the real ``flwr run``, resumably.

Layout of a sweep directory (``--out``)::

    sweep.json                      the manifest: the sweep's settings and each run's latest attempt
    runs/<combination>/seed-<s>/    that run's output-dir: the ServerApp's run directory(ies)
    runs/<combination>/seed-<s>/flwr.log   the output of its latest flwr run
    summary.csv, summary.md, compare.png

Runs go one after another, each ``flwr run <app> [CONNECTION] --stream --run-config ...``
with ``seed`` and an absolute ``output-dir`` inside the sweep directory, so each run's
directory is known. A run is finished only when its own metrics.json says so
(``completed`` or ``stopped``, :data:`experiments.runs.FINISHED`); the manifest records
attempts (exit code, log tail) but the metrics decide. Running the same sweep again
skips finished runs and retries the others; an earlier failed attempt's run directory
stays beside the new one. Ctrl-C stops the current ``flwr run`` (its process group, and
the run on the SuperLink with ``flwr stop``) and leaves the sweep resumable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.grid import (
    OUTPUT_KEY,
    SEED_KEY,
    expand,
    folder_name,
    label,
    run_config_arg,
)
from experiments.runs import (
    FINISHED,
    INCOMPLETE,
    ExperimentError,
    RunRecord,
    find_run_dirs,
    format_seconds,
    read_run,
)
from experiments.summary import ComboSummary, plot_sweep, summarize, summary_markdown, write_summary_csv
from server_app.run_dir import RUNNING, write_json_atomic
from tasks.config import Scalar

MANIFEST = "sweep.json"
RUNS = "runs"
LOG = "flwr.log"
MANIFEST_VERSION = 1
DISABLE_INSTALL = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"
#: Lines of a failed run's flwr output kept in the manifest and the summary.
TAIL_LINES = 15
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RUN_ID = re.compile(r"Successfully started run (\d+)")


@dataclass(frozen=True)
class SweepSpec:
    """What one ``edgebloom sweep`` runs: the grid, the fixed run config, seeds and where."""

    grid: Mapping[str, Sequence[Scalar]]
    base: Mapping[str, Scalar]
    seeds: Sequence[int]
    app: Path
    connection: str | None = None
    federation_config: str | None = None
    metric: str = "central_accuracy"
    target: float = 0.9


@dataclass(frozen=True)
class PlannedRun:
    """One combination with one seed; ``folder`` is its output-dir under ``runs/``."""

    combination: Mapping[str, Scalar]
    seed: int

    @property
    def label(self) -> str:
        return label(self.combination)

    @property
    def folder(self) -> str:
        return f"{folder_name(self.combination)}/seed-{self.seed}"

    def run_config(self, base: Mapping[str, Scalar], output_dir: Path) -> dict[str, Scalar]:
        """The whole ``--run-config`` of this run: fixed keys, the combination, seed, output-dir."""
        return {**base, **self.combination, SEED_KEY: self.seed, OUTPUT_KEY: str(output_dir)}


def seeds_from(base: Mapping[str, Scalar], count: int, default: int) -> list[int]:
    """``count`` consecutive seeds starting at the run config's ``seed`` (else ``default``)."""
    if count < 1:
        raise ExperimentError(f"--seeds {count}: give at least 1 seed")
    start = base.get(SEED_KEY, default)
    if not isinstance(start, int) or isinstance(start, bool):
        raise ExperimentError(f"--run-config seed={start!r}: must be an integer")
    return list(range(start, start + count))


def plan(grid: Mapping[str, Sequence[Scalar]], seeds: Sequence[int]) -> list[PlannedRun]:
    """Every combination × seed, combination by combination."""
    return [PlannedRun(combo, seed) for combo in expand(grid) for seed in seeds]


# ------------------------------------------------------------------ the manifest and resuming
def finished_run(output_dir: Path) -> RunRecord | None:
    """The latest run under ``output_dir`` whose metrics say it finished, or None."""
    runs = [read_run(p) for p in find_run_dirs(output_dir, max_depth=1)] if output_dir.is_dir() else []
    done = [r for r in runs if r.finished]
    return done[-1] if done else None


def new_manifest(spec: SweepSpec) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "app": str(spec.app),
        "run_config": dict(spec.base),
        "federation_config": spec.federation_config,
        "runs": {},
    }


def load_manifest(path: Path, spec: SweepSpec) -> dict[str, Any]:
    """The sweep directory's manifest, or a new one; refuses a sweep made with other fixed settings.

    The grid and seeds may change between invocations (finished runs are reused, new ones
    run); the fixed ``--run-config`` and ``--federation-config`` may not, since every
    finished run was made with them.
    """
    if not path.exists():
        return new_manifest(spec)
    import json

    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExperimentError(f"{path} cannot be read ({exc}); move it away or choose another --out") from exc
    problem = check_manifest(manifest)
    if problem:
        raise ExperimentError(f"{path}: {problem}; move it away or choose another --out")
    for key, mine, flag in (
        ("run_config", dict(spec.base), "--run-config"),
        ("federation_config", spec.federation_config, "--federation-config"),
    ):
        if manifest[key] != mine:
            raise ExperimentError(
                f"{path.parent} is a sweep made with {flag} {manifest[key]!r}, not {mine!r}: its finished "
                f"runs would not be comparable. Use the same {flag} to resume it, or another --out"
            )
    return manifest


def check_manifest(manifest: Any) -> str | None:
    """Why ``manifest`` (parsed sweep.json) is not one this version writes, or None."""
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        return f"not a version-{MANIFEST_VERSION} sweep manifest"
    if not isinstance(manifest.get("runs"), dict) or not isinstance(manifest.get("run_config"), dict):
        return "'runs' or 'run_config' is not an object"
    if "federation_config" not in manifest:
        return "'federation_config' is missing"
    for folder, entry in manifest["runs"].items():
        if not isinstance(entry, dict):
            return f"runs[{folder!r}] is not an object"
        attempts = entry.get("attempts", 0)
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            return f"runs[{folder!r}]: 'attempts' is not an integer"
    return None


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of a flwr log, colour codes removed."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


# ------------------------------------------------------------------ running flwr
#: ``runner(run, output_dir, log) -> exit code``: starts one run and waits for it.
Runner = Callable[[PlannedRun, Path, Path], int]


def flwr_executable() -> str:
    """``flwr`` beside this Python (the same environment), else on PATH."""
    here = shutil.which("flwr", path=str(Path(sys.executable).parent))
    found = here or shutil.which("flwr")
    if found is None:
        raise ExperimentError("flwr is not installed in this environment: pip install -e . in the project")
    return found


def flwr_command(spec: SweepSpec, run: PlannedRun, output_dir: Path) -> list[str]:
    """``flwr run <app> [CONNECTION] --stream --run-config ... [--federation-config ...]``."""
    cmd = [flwr_executable(), "run", str(spec.app)]
    if spec.connection:
        cmd.append(spec.connection)
    cmd += ["--stream", "--run-config", run_config_arg(run.run_config(spec.base, output_dir))]
    if spec.federation_config:
        cmd += ["--federation-config", spec.federation_config]
    return cmd


def flwr_env() -> dict[str, str]:
    """The current environment, with Flower's run-time dependency installation off unless the user set it."""
    env = dict(os.environ)
    env.setdefault(DISABLE_INSTALL, "1")
    return env


def flwr_runner(spec: SweepSpec) -> Runner:
    """The real runner: one ``flwr run`` subprocess in its own process group, output to ``log``."""

    def run(planned: PlannedRun, output_dir: Path, log: Path) -> int:
        env = flwr_env()
        with log.open("w") as fh:
            proc = subprocess.Popen(
                flwr_command(spec, planned, output_dir),
                cwd=spec.app,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the sweep, which stops this group itself
            )
            try:
                return proc.wait()
            except KeyboardInterrupt:
                stop_flwr_run(proc.pid, log, spec.connection, env)
                raise

    return run


def stop_flwr_run(pid: int, log: Path, connection: str | None, env: Mapping[str, str]) -> None:
    """Stop the ``flwr run`` client (its process groups) and the run it started on the SuperLink."""
    from harness.processes import stop_process_tree

    stop_process_tree(pid, timeout=10)
    match = _RUN_ID.search(_ANSI.sub("", log.read_text(errors="replace")) if log.exists() else "")
    if match is None:
        return  # the run was never submitted
    cmd = [flwr_executable(), "stop", match.group(1), *([connection] if connection else [])]
    try:
        subprocess.run(cmd, env=dict(env), capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass  # the SuperLink is gone too; nothing left to stop


# ------------------------------------------------------------------ the sweep
@dataclass
class SweepResult:
    """What one invocation did, and the summary it wrote."""

    total: int
    skipped: int = 0
    ran: int = 0
    failed: int = 0
    rows: list[ComboSummary] = field(default_factory=list)


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    runner: Runner | None = None,
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Run every combination × seed not yet finished under ``out``, then write the summary.

    Parameters
    ----------
    spec : SweepSpec
        Grid, fixed run config, seeds, app directory, connection.
    out : Path
        The sweep directory (created; resumed when it holds a manifest).
    runner : Runner, optional
        Starts one run; default: the real ``flwr run`` (:func:`flwr_runner`).
    echo : callable
        Where progress lines go.

    Returns
    -------
    SweepResult
        Counts of this invocation and the summary rows. A KeyboardInterrupt is re-raised
        after the manifest and summary are written.
    """
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    manifest = load_manifest(manifest_path, spec)
    runner = runner or flwr_runner(spec)
    planned = plan(spec.grid, spec.seeds)
    finished = {p.folder: finished_run(out / RUNS / p.folder) for p in planned}
    todo = sum(1 for p in planned if finished[p.folder] is None)
    result = SweepResult(total=len(planned), skipped=len(planned) - todo)
    combos = len(planned) // len(spec.seeds)
    echo(
        f"sweep: {len(planned)} runs ({combos} combinations × {len(spec.seeds)} seeds) in {out}; "
        f"{result.skipped} finished before, {todo} to run"
    )
    durations: list[float] = []
    started = time.monotonic()
    try:
        for k, run in enumerate(planned, 1):
            head = f"[{k}/{len(planned)}] {run.label or '(base)'} seed={run.seed}"
            if finished[run.folder] is not None:
                echo(f"{head}: finished before, skipped")
                continue
            output_dir = out / RUNS / run.folder
            output_dir.mkdir(parents=True, exist_ok=True)
            log = output_dir / LOG
            entry = manifest["runs"].setdefault(run.folder, {})
            entry.update(
                combination=dict(run.combination),
                seed=run.seed,
                status="running",
                attempts=int(entry.get("attempts", 0)) + 1,
            )
            write_json_atomic(manifest_path, manifest)
            echo(f"{head}: running (log: {log.relative_to(out)})")
            before = set(find_run_dirs(output_dir, max_depth=1))
            t0 = time.monotonic()
            code: int | None = None
            try:
                code = runner(run, output_dir, log)
            except KeyboardInterrupt:
                entry.update(status="interrupted", exit_code=None, log_tail=log_tail(log))
                raise
            finally:
                entry["seconds"] = round(time.monotonic() - t0, 3)
                if code is not None:
                    record_attempt(entry, output_dir, before, code, log, out)
                write_json_atomic(manifest_path, manifest)
            durations.append(time.monotonic() - t0)
            result.ran += 1
            remaining = sum(1 for p in planned[k:] if finished[p.folder] is None)
            eta = sum(durations) / len(durations) * remaining
            outcome = entry["status"]
            if outcome not in FINISHED:
                result.failed += 1
                outcome = f"{outcome} (exit code {entry['exit_code']}); see {log.relative_to(out)}"
            echo(
                f"{head}: {outcome} in {format_seconds(entry['seconds'])} | "
                f"elapsed {format_seconds(time.monotonic() - started)}, ETA {format_seconds(eta)}"
            )
    except KeyboardInterrupt:
        write_summary(spec, out, manifest)
        echo(f"sweep interrupted: the current run was stopped; run the same command again to resume {out}")
        raise
    result.rows = write_summary(spec, out, manifest)
    return result


def record_attempt(
    entry: dict[str, Any], output_dir: Path, before: set[Path], code: int, log: Path, out: Path
) -> None:
    """Fill a manifest entry from what the run left: its metrics decide the status."""
    new = sorted(set(find_run_dirs(output_dir, max_depth=1)) - before)
    record = read_run(new[-1]) if new else None
    entry["exit_code"] = code
    entry["run_dir"] = str(record.path.relative_to(out)) if record is not None else None
    if record is None:
        entry["status"] = "failed"
        entry["reason"] = "no run directory: the run failed before training (see log_tail)"
    elif record.status == RUNNING:  # flwr run returned, the ServerApp never ended the run (killed)
        entry["status"] = INCOMPLETE
        entry["reason"] = "the run ended with metrics.json still saying 'running' (the ServerApp was killed?)"
    else:
        entry["status"] = record.status
        entry["reason"] = "; ".join(record.notes) if record.notes else None
    entry["log_tail"] = None if record is not None and record.finished else log_tail(log)


def write_summary(spec: SweepSpec, out: Path, manifest: Mapping[str, Any]) -> list[ComboSummary]:
    """``summary.csv``, ``summary.md`` and ``compare.png`` over the spec's combinations, from disk."""
    rows, curves = [], {}
    failures = []
    for combination in expand(spec.grid):
        runs = [finished_run(out / RUNS / PlannedRun(combination, s).folder) for s in spec.seeds]
        entries = [manifest["runs"].get(PlannedRun(combination, s).folder, {}) for s in spec.seeds]
        failed = sum(1 for r, e in zip(runs, entries, strict=True) if r is None and e.get("status"))
        name = label(combination) or "(base)"
        rows.append(summarize(name, combination, runs, metric=spec.metric, target=spec.target, failed=failed))
        curves[name] = [r.series(spec.metric) for r in runs if r is not None and r.series(spec.metric)]
        for seed, run, e in zip(spec.seeds, runs, entries, strict=True):
            if run is None and e.get("status"):
                failures.append((name, seed, e))
    table = summary_markdown(rows, metric=spec.metric, target=spec.target)
    fixed = f"`{run_config_arg(spec.base)}`" if spec.base else "(the app's defaults)"
    federation = f" Federation config: `{spec.federation_config}`." if spec.federation_config else ""
    lines = [
        f"# Sweep summary: {spec.metric}, target {spec.target:g}",
        "",
        f"Seeds: {', '.join(map(str, spec.seeds))}. Fixed run config: {fixed}.{federation}",
        "Mean ± sample standard deviation (n − 1) over the finished seeds; rounds and seconds to the",
        "target over the seeds that reached it. `compare.png`: mean curve per combination, band = min–max.",
        "",
        table,
    ]
    if failures:
        lines += ["", "## Failed runs", ""]
        for name, seed, e in failures:
            lines += [
                f"### {name} seed={seed}: {e.get('status')} (exit code {e.get('exit_code')})",
                "",
                *([e["reason"], ""] if e.get("reason") else []),
                "```",
                e.get("log_tail") or "(no output)",
                "```",
                "",
            ]
    (out / "summary.md").write_text("\n".join(lines).rstrip() + "\n")
    write_summary_csv(out / "summary.csv", rows, list(spec.grid))
    plot_sweep(out / "compare.png", curves, metric=spec.metric, target=spec.target)
    return rows
