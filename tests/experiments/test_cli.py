import importlib
import tomllib

import pytest

from experiments.cli import main
from harness.processes import REPO


def test_the_console_script_is_installed_with_the_project_but_not_shipped_in_the_fab() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())

    module, _, name = project["project"]["scripts"]["edgebloom"].partition(":")
    assert getattr(importlib.import_module(module), name) is main
    assert "experiments" in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert not [p for p in project["tool"]["flwr"]["app"]["fab-include"] if p.startswith("experiments")]


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("runs", "compare", "sweep"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: edgebloom {command}" in capsys.readouterr().out
