"""Fixtures shared by the deployment tests (the ``deploy`` tier: pyproject.toml, tests/conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _tool_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        # The scripts find flower-superlink & co. (and the SuperLink finds
        # flower-superexec) on PATH: use the ones next to this interpreter.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_BIN_DIR": str(BIN),
        "PYTHON": sys.executable,
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@pytest.fixture(scope="session")
def tool_env() -> Callable[..., dict[str, str]]:
    """``tool_env(**extra)``: environment for the scripts and Flower CLIs, no network calls."""
    return _tool_env


@pytest.fixture(scope="session")
def cli_flags() -> Callable[..., frozenset[str]]:
    """``cli_flags("flwr", "run")``: every ``--flag`` the installed CLI's ``--help`` lists."""
    cache: dict[tuple[str, ...], frozenset[str]] = {}
    home = tempfile.mkdtemp(prefix="flwr-help-")

    def flags(*command: str) -> frozenset[str]:
        if command not in cache:
            proc = subprocess.run(
                [str(BIN / command[0]), *command[1:], "--help"],
                env=_tool_env(FLWR_HOME=home),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            cache[command] = frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", proc.stdout))
        return cache[command]

    return flags
