"""Register strategy plug-ins through real entry-point discovery, without pip.

``importlib.metadata`` finds a distribution by a ``<name>-<version>.dist-info``
directory on ``sys.path``; its ``entry_points.txt`` is what ``pip install`` would have
written from ``[project.entry-points]``. Writing that directory into a temporary folder
and putting the folder on ``sys.path`` (or ``PYTHONPATH``) is therefore an install as
far as entry-point discovery is concerned, and takes milliseconds instead of a venv.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

#: The example plug-in's project: its pyproject declares the entry point, its module the strategy.
EXAMPLE_PLUGIN = Path(__file__).resolve().parent / "edgebloom_example_plugin"


def write_distribution(
    root: Path,
    name: str,
    version: str,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str] | None = None,
) -> Path:
    """Write ``<name>-<version>.dist-info`` (and optional ``<module>.py`` files) under ``root``.

    Parameters
    ----------
    root : Path
        A folder that will be put on ``sys.path``.
    name, version : str
        The distribution's name and version.
    entry_points : dict
        Group → {entry-point name: ``module:attribute``}.
    modules : dict, optional
        Module name → source, written as ``root/<module>.py``.

    Returns
    -------
    Path
        ``root``.
    """
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, points in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{ep} = {target}" for ep, target in points.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(source)
    importlib.invalidate_caches()  # importlib.metadata caches directory listings
    return root


def install_example_plugin(root: Path) -> list[Path]:
    """Register the example plug-in from its own pyproject; returns the paths to put on ``sys.path``."""
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]
    write_distribution(root, project["name"], project["version"], project["entry-points"])
    return [root, EXAMPLE_PLUGIN]
