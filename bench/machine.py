"""What the figures were measured on: CPU, cores, threads, versions, load."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from typing import Any


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def memory_gib() -> float | None:
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, library versions and the load average now."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "flwr": version("flwr"),
        "torch": version("torch"),
        "numpy": version("numpy"),
        "ray": version("ray"),
        "os": platform.platform(),
        "load_average": load_average(),
    }
