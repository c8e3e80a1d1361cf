"""The app packages are type-checked: mypy passes, and every ``type: ignore`` is rare and explained.

mypy's settings live in pyproject.toml ``[tool.mypy]`` (packages, strictness, and the named
untyped third-party libraries); CI runs the same command as :func:`test_mypy_passes`.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP_PACKAGES = ("strategies", "client_app", "server_app", "tasks", "harness", "experiments")
MAX_TYPE_IGNORES = 10
#: ``# type: ignore[code, ...]  # reason``: an error code and a reason after it.
EXPLAINED_IGNORE = re.compile(r"#\s*type:\s*ignore\[[a-z0-9-]+(,\s*[a-z0-9-]+)*\]\s*#\s*\S.*")
ANY_IGNORE = re.compile(r"#\s*type:\s*ignore\b")


def type_ignores(source: str) -> list[tuple[int, str]]:
    """(line, comment) of every ``type: ignore`` comment in ``source`` (strings do not count)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = [t for t in tokens if t.type == tokenize.COMMENT]
    return [(t.start[0], t.string) for t in comments if ANY_IGNORE.search(t.string)]


def unexplained(comment: str) -> bool:
    """True if the ``type: ignore`` in ``comment`` lacks an error code or a reason."""
    return EXPLAINED_IGNORE.search(comment) is None


def app_sources() -> list[Path]:
    return sorted(p for pkg in APP_PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_the_ignore_scanner_sees_comments_only_and_judges_reasons() -> None:
    source = (
        'x = "# type: ignore"\n'
        "y = f()  # type: ignore\n"
        "z = g()  # type: ignore[arg-type]\n"
        "w = h()  # type: ignore[arg-type, call-arg]  # flwr stubs omit metadata=\n"
    )
    found = type_ignores(source)
    assert [line for line, _ in found] == [2, 3, 4]
    assert [unexplained(c) for _, c in found] == [True, True, False]


def test_few_type_ignores_each_with_an_error_code_and_a_reason() -> None:
    found = {
        f"{path.relative_to(REPO)}:{line}": comment
        for path in app_sources()
        for line, comment in type_ignores(path.read_text(encoding="utf-8"))
    }
    assert len(found) <= MAX_TYPE_IGNORES, (
        f"{len(found)} `type: ignore` in the app packages (at most {MAX_TYPE_IGNORES}): type the code "
        f"instead (narrowing, Protocol, TypedDict, tasks.wire.as_float/as_int): {sorted(found)}"
    )
    bare = {where: comment for where, comment in found.items() if unexplained(comment)}
    assert not bare, (
        "each `type: ignore` needs an error code and a reason: "
        f"`# type: ignore[code]  # why the checker is wrong here`; lacking: {bare}"
    )


def test_mypy_config_covers_the_app_packages_without_blanket_ignores() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert sorted(config["packages"]) == sorted(APP_PACKAGES)
    assert config["warn_unused_ignores"] is True and config["check_untyped_defs"] is True
    assert "ignore_missing_imports" not in config and "ignore_errors" not in config
    for override in config.get("overrides", []):
        assert "ignore_errors" not in override, override
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        # Only third-party libraries may be treated as untyped, never our own packages.
        assert not [m for m in modules if m.split(".")[0] in APP_PACKAGES], modules


def test_mypy_passes() -> None:
    # Warm (mypy's cache in .mypy_cache) this takes a few seconds; cold about 25 s on 2 cores.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}\n{result.stderr}"
    assert "Success" in result.stdout
