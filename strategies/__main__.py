"""``python -m strategies list``: every strategy (built-in and plug-in) with its keys.

For each key it prints the type, the default and the allowed values, e.g.::

    fedavgm       FedAvgM (Hsu et al. 2019): server momentum over FedAvg's mean update
                  server-momentum (float, default 0.9) [0, 1): β: FedAvgM server momentum
"""

from __future__ import annotations

import sys

from strategies.core.registry import REGISTRY, StrategySpec, all_specs
from tasks.config import ConfigError


def format_spec(spec: StrategySpec) -> list[str]:
    """The lines ``list`` prints for one strategy."""
    origin = "" if spec.origin == "built-in" else f" [plug-in from {spec.origin}]"
    lines = [f"{spec.name:13s} {spec.summary}{origin}"]
    for key in spec.keys:
        valid = f" {key.valid}" if key.valid else ""
        lines.append(f"{'':14s}{key.name} ({key.type.__name__}, default {key.default!r}){valid}: {key.help}")
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] != ["list"]:
        print("usage: python -m strategies list", file=sys.stderr)
        return 2
    try:
        specs = all_specs()
        status = 0
    except ConfigError as exc:  # a broken plug-in: still list the built-ins
        print(f"error: {exc}", file=sys.stderr)
        specs, status = dict(sorted(REGISTRY.items())), 1
    for spec in specs.values():
        print("\n".join(format_spec(spec)))
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
