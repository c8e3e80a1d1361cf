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


def test_secure_aggregation_names_are_flowers_own() -> None:
    # The harness recognises a SecAgg+ stage by Flower's names; wire.py spells them as literals.
    from flwr.common.secure_aggregation.secaggplus_constants import (
        RECORD_KEY_CONFIGS,
        RECORD_KEY_STATE,
        Key,
        Stage,
    )

    assert (wire.SECAGG_CONFIGS, wire.SECAGG_STATE) == (RECORD_KEY_CONFIGS, RECORD_KEY_STATE)
    assert wire.SECAGG_STAGES == Stage.all()
    assert (wire.SECAGG_SETUP, wire.SECAGG_SHARE_KEYS, wire.SECAGG_COLLECT, wire.SECAGG_UNMASK) == (
        Stage.SETUP,
        Stage.SHARE_KEYS,
        Stage.COLLECT_MASKED_VECTORS,
        Stage.UNMASK,
    )
    flower_keys = {
        wire.SECAGG_STAGE: Key.STAGE,
        wire.SECAGG_SAMPLE_NUMBER: Key.SAMPLE_NUMBER,
        wire.SECAGG_SHARE_NUMBER: Key.SHARE_NUMBER,
        wire.SECAGG_THRESHOLD: Key.THRESHOLD,
        wire.SECAGG_CLIPPING_RANGE: Key.CLIPPING_RANGE,
        wire.SECAGG_TARGET_RANGE: Key.TARGET_RANGE,
        wire.SECAGG_MOD_RANGE: Key.MOD_RANGE,
        wire.SECAGG_MAX_WEIGHT: Key.MAX_WEIGHT,
        wire.SECAGG_PUBLIC_KEY_1: Key.PUBLIC_KEY_1,
        wire.SECAGG_PUBLIC_KEY_2: Key.PUBLIC_KEY_2,
        wire.SECAGG_DESTINATION_LIST: Key.DESTINATION_LIST,
        wire.SECAGG_CIPHERTEXT_LIST: Key.CIPHERTEXT_LIST,
        wire.SECAGG_SOURCE_LIST: Key.SOURCE_LIST,
        wire.SECAGG_ACTIVE_NODE_ID_LIST: Key.ACTIVE_NODE_ID_LIST,
        wire.SECAGG_DEAD_NODE_ID_LIST: Key.DEAD_NODE_ID_LIST,
        wire.SECAGG_NODE_ID_LIST: Key.NODE_ID_LIST,
        wire.SECAGG_SHARE_LIST: Key.SHARE_LIST,
    }
    assert all(ours == theirs for ours, theirs in flower_keys.items()), flower_keys
