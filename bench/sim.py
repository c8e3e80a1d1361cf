"""Run an app through Flower's simulation engine and time it from outside.

``run_app`` calls ``flwr run <app> local --stream`` against a :class:`LocalFlower`,
stamps every streamed log line with the seconds since the command started (start-up
milestones), and samples the memory of every process under the SuperLink once a second
(the SuperLink, SuperExec, the simulation process, Ray and its actors).
"""

from __future__ import annotations

import json
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

    def first(self, marker: str) -> float | None:
        """Seconds after start of the first line containing ``marker``."""
        return next((t for t, line in self.lines if marker in line), None)

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
    while reader.is_alive():
        if time.monotonic() - start > timeout:
            proc.kill()
            break
        last = tree_memory(flower.pid)
        if last["rss_mib"] > peak["rss_mib"]:
            peak = last
        reader.join(timeout=1.0)
    proc.wait()
    reader.join(timeout=5)
    result = SimRun(proc.returncode, time.monotonic() - start, lines, peak, last)
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
