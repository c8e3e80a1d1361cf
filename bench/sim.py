"""Run an app through Flower's simulation engine and time it from outside.

``run_app`` calls ``flwr run <app> local --stream`` against a :class:`LocalFlower`,
stamps every streamed log line with the seconds since the command started (start-up
milestones), samples the memory of every process under the SuperLink once a second
(the SuperLink, SuperExec, the simulation process, Ray and its actors), and their CPU
time four times a second, summed per kind of process (:func:`process_kind`), so that
:func:`cpu_per_round` can say which processes kept the cores busy during the steady
rounds. The sampler's own CPU time is counted too (``monitor``): it shares the cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.localflower import BIN, REPO, LocalFlower


def run_config_arg(overrides: dict[str, Any]) -> str:
    """``--run-config`` text: strings quoted, booleans lower-case."""
    parts = []
    for key, value in overrides.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = f"'{value}'"
        else:
            text = repr(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


#: Kinds of process under the SuperLink, for CPU time (:func:`process_kind`).
KINDS = ("actor", "simulation", "ray", "superlink")
_TICKS = os.sysconf("SC_CLK_TCK")


def process_kind(comm: str, cmdline: str) -> str:
    """The kind of a process under the SuperLink, from its name and command line.

    ``actor`` (a Ray actor running ClientApps), ``simulation`` (the simulation process:
    ServerApp, message extractor, Grid), ``ray`` (Ray's daemons and idle workers) or
    ``superlink`` (SuperLink, SuperExec and anything else).
    """
    if comm.startswith("ray::ClientApp"):
        return "actor"
    if "flwr-simulation" in cmdline:
        return "simulation"
    if comm.startswith("ray::") or comm in ("raylet", "gcs_server") or "/ray/" in cmdline:
        return "ray"
    return "superlink"


def _cpu_seconds(pid: int) -> tuple[str, float] | None:
    """(kind, user + system CPU seconds) of one process, or ``None`` if it is gone."""
    base = Path("/proc") / str(pid)
    try:
        stat = (base / "stat").read_text()
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    # utime and stime are fields 14 and 15 of /proc/PID/stat (12 and 13 after the comm).
    return process_kind(comm, cmdline), (int(fields[11]) + int(fields[12])) / _TICKS


class CpuMeter:
    """CPU seconds used so far per kind of process under ``root`` (exited ones keep their last count)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.last: dict[int, tuple[str, float]] = {}

    def sample(self) -> dict[str, float]:
        for pid in _tree(self.root):
            got = _cpu_seconds(pid)
            if got is not None:
                self.last[pid] = got
        totals = dict.fromkeys(KINDS, 0.0)
        for kind, seconds in self.last.values():
            totals[kind] += seconds
        return totals


def cpu_per_round(
    samples: list[tuple[float, dict[str, float]]], begin: float, end: float, rounds: int
) -> dict[str, float] | None:
    """CPU seconds per round of each kind of process between two moments, or ``None``.

    Parameters
    ----------
    samples : list of (seconds since start, CPU seconds per kind)
        :attr:`SimRun.cpu_samples`.
    begin, end : float
        The window, e.g. the end of round 1 and the end of the last round (log stamps).
    rounds : int
        Rounds that ran in the window.

    Returns
    -------
    dict or None
        Per kind (and ``total``), the CPU seconds used from the first sample at or after
        ``begin`` to the last at or before ``end``, scaled from that span to the window and
        divided by ``rounds``; ``None`` if fewer than two samples fall in the window.
    """
    inside = [(t, c) for t, c in samples if begin <= t <= end]
    if len(inside) < 2 or rounds < 1 or inside[-1][0] <= inside[0][0]:
        return None
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    scale = (end - begin) / (t1 - t0) / rounds
    out = {k: (c1[k] - c0[k]) * scale for k in c1}
    out["total"] = sum(out[k] for k in c1)
    return out


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError):
        return 0, 0
    return rss, pss


def tree_memory(root: int) -> dict[str, float]:
    """Total RSS and PSS (MiB) of ``root`` and all its descendants, and their number."""
    pids = _tree(root)
    mem = [_memory_kib(p) for p in pids]
    return {
        "rss_mib": sum(r for r, _ in mem) / 1024,
        "pss_mib": sum(p for _, p in mem) / 1024,
        "processes": sum(1 for r, _ in mem if r > 0),
    }


@dataclass
class SimRun:
    """What one ``flwr run`` produced."""

    returncode: int
    wall_s: float
    lines: list[tuple[float, str]]
    peak_memory: dict[str, float]
    final_memory: dict[str, float]
    run_dir: Path | None = None
    metrics: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: (seconds since start, CPU seconds per kind of process, plus ``monitor``: the sampler's own).
    cpu_samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    def steady_cpu(self, rounds: int) -> dict[str, float] | None:
        """CPU seconds per steady round (rounds 2..``rounds``) of each kind of process."""
        # The app pads the round number to the width of the last one: "[round  1/12]".
        begin, end = self.first_match(r"\[round\s+1/"), self.first_match(rf"\[round\s+{rounds}/")
        if begin is None or end is None or rounds < 2:
            return None
        return cpu_per_round(self.cpu_samples, begin, end, rounds - 1)

    def first(self, marker: str) -> float | None:
        """Seconds after start of the first line containing ``marker``."""
        return next((t for t, line in self.lines if marker in line), None)

    def first_match(self, pattern: str) -> float | None:
        """Seconds after start of the first line matching the regular expression ``pattern``."""
        compiled = re.compile(pattern)
        return next((t for t, line in self.lines if compiled.search(line)), None)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def run_app(
    flower: LocalFlower,
    *,
    run_config: dict[str, Any],
    num_supernodes: int,
    num_cpus_per_client: int,
    app: Path = REPO,
    timeout: float = 1800,
    outputs: Path | None = None,
) -> SimRun:
    """``flwr run app local --stream`` with the given run config and federation size."""
    federation = f"num-supernodes={num_supernodes} client-resources-num-cpus={num_cpus_per_client}"
    cmd = [str(BIN / "flwr"), "run", str(app), "local", "--stream", "--federation-config", federation]
    cmd += ["--run-config", run_config_arg(run_config)]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=flower.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak = {"rss_mib": 0.0, "pss_mib": 0.0, "processes": 0}
    last = peak
    meter, cpu_samples, ticks = CpuMeter(flower.pid), [], 0
    while reader.is_alive():
        if time.monotonic() - start > timeout:
            proc.kill()
            break
        # Memory (smaps_rollup walks each process's page tables) once a second, CPU
        # time (one /proc read per process) four times a second.
        if ticks % 4 == 0:
            last = tree_memory(flower.pid)
            if last["rss_mib"] > peak["rss_mib"]:
                peak = last
        ticks += 1
        cpu_samples.append((time.monotonic() - start, {**meter.sample(), "monitor": time.thread_time()}))
        reader.join(timeout=0.25)
    proc.wait()
    reader.join(timeout=5)
    result = SimRun(proc.returncode, time.monotonic() - start, lines, peak, last, cpu_samples=cpu_samples)
    if outputs is not None:
        dirs = sorted(p.parent for p in outputs.glob("*/metrics.json"))
        if dirs:
            result.run_dir = dirs[-1]
            result.metrics = json.loads((dirs[-1] / "metrics.json").read_text())
    return result


def steady_seconds(seconds: list[float], skip: int = 1) -> float:
    """Median of per-round seconds after the first ``skip`` rounds (start-up rounds)."""
    import statistics

    rest = seconds[skip:] or seconds
    return float(statistics.median(rest))
