"""``python -m strategies list``: print every registered strategy and the keys it reads."""

from __future__ import annotations

import sys

from strategies.registry import REGISTRY
from tasks.config import KEYS_BY_NAME


def main(argv: list[str]) -> int:
    if argv[:1] != ["list"]:
        print("usage: python -m strategies list", file=sys.stderr)
        return 2
    for spec in sorted(REGISTRY.values(), key=lambda s: s.name):
        print(f"{spec.name:12s} {spec.summary}")
        for key in spec.keys:
            k = KEYS_BY_NAME[key]
            print(f"{'':12s}   {key} ({k.type.__name__}, default {k.default!r}): {k.help}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
