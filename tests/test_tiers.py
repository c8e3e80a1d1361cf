"""The test tiers are wired as README "Test" says: plain ``pytest`` deselects every marked tier."""

from __future__ import annotations

import shlex
import tomllib

from tests.conftest import REPO, TESTS, TIER_BY_FOLDER


def pytest_options() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]


def test_plain_pytest_deselects_every_declared_tier_and_nothing_else() -> None:
    # Prepare: the declared markers, and the marker expression plain `pytest` runs with.
    options = pytest_options()
    tiers = {line.split(":", 1)[0] for line in options["markers"]}
    args = shlex.split(options["addopts"])
    expression = args[args.index("-m") + 1]

    # Assert: every tier is deselected by name, and the expression deselects only tiers.
    assert set(expression.split(" and ")) == {f"not {tier}" for tier in tiers}, expression
    assert tiers == {"slow", "e2e", "deploy", "bench"}


def test_each_tier_folder_exists_and_names_a_declared_marker() -> None:
    tiers = {line.split(":", 1)[0] for line in pytest_options()["markers"]}

    for folder, marker in TIER_BY_FOLDER.items():
        assert (TESTS / folder).is_dir(), folder
        assert any((TESTS / folder).glob("test_*.py")), f"tests/{folder} has no test file"
        assert marker in tiers, marker
