"""Every key that travels between the apps is spelled once, in tasks/wire.py.

An AST scan of the app packages for string constants equal to a wire key that is used
for nothing else (record names, metric and config keys of the protocol). Keys that double
as ordinary words elsewhere ("model", "config", "seed", "loss", ...: checkpoint fields,
metrics.json columns) are left out of the scan; their message uses go through the
constants all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.processes import REPO
from tasks import wire

PACKAGES = ("strategies", "client_app", "server_app", "harness", "tasks")
#: Wire values with no other meaning in the code base.
DISTINCTIVE = {
    value
    for name, value in vars(wire).items()
    if name.isupper() and isinstance(value, str) and "-" in value and not value.startswith("dp-sgd-")
} - {"dp-secure-noise", "attack-fraction", "attack-scale", "device-slowdown"}


def literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in DISTINCTIVE
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_spells_a_wire_key_outside_tasks_wire(package: str) -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}: {value!r}"
        for path in sorted((REPO / package).rglob("*.py"))
        if path != REPO / "tasks" / "wire.py"
        for line, value in literals(path)
    ]
    assert not found, "use the constant from tasks/wire.py:\n" + "\n".join(found)


def test_the_scan_sees_a_literal_wire_key(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('config = {"server-round": 1}\n')
    assert literals(module) == [(1, "server-round")]
    assert {"server-round", "num-examples", "compressed-update", "dp-clip-norm"} <= DISTINCTIVE
