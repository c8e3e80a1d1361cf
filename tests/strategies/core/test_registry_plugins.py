"""Strategy plug-ins through real entry-point discovery, declared keys, and ``python -m strategies list``.

Plug-ins are "installed" by writing a ``.dist-info`` with an ``entry_points.txt`` into a
temporary folder on ``sys.path`` (``tests/plugins``): ``importlib.metadata`` discovers them
exactly as it discovers a pip-installed package.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import REPO
from strategies.__main__ import main as list_main
from strategies.core.registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    StrategySpec,
    all_specs,
    build_strategy,
    get_spec,
)
from tasks.config import AppConfig, ConfigError, Section
from tests.plugins import EXAMPLE_PLUGIN, install_example_plugin, write_distribution

DOC = REPO / "docs" / "writing-a-strategy.md"

SPEC_MODULE = """
from dataclasses import dataclass

from strategies.algorithms.fedavg import FedAvg
from strategies.core.registry import StrategySpec, common_kwargs
from tasks.config import Section, at_least, declare

def make_spec(name="{name}", key="{key}", default={default}):
    @dataclass(frozen=True)
    class PluginConfig(Section):
        knob: int = declare(default, "a plug-in key", at_least(0), name=key)

    return StrategySpec(
        name=name,
        summary="a test plug-in",
        build=lambda cfg: FedAvg(**common_kwargs(cfg)),
        config=PluginConfig,
    )

SPEC = make_spec()
"""

#: A plug-in whose whole declaration of two keys is its own file: the registry must validate
#: them, ``list`` must show them and ``build`` must get them typed in its sub-config.
OWN_KEYS_MODULE = """
from dataclasses import dataclass

from strategies.algorithms.fedavg import FedAvg
from strategies.core.registry import StrategySpec, common_kwargs
from tasks.config import Section, at_least, declare, one_of

BUILT = []


@dataclass(frozen=True)
class OwnConfig(Section):
    own_rounds: int = declare(4, "how many inner rounds", at_least(1))
    own_mode: str = declare("fast", "fast or careful", one_of("fast", "careful"))


def build(cfg):
    BUILT.append(cfg.section(OwnConfig))
    return FedAvg(**common_kwargs(cfg))


SPEC = StrategySpec(name="ownkeys", summary="keys declared in this file only", build=build, config=OwnConfig)
"""


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` for fake distributions.

    monkeypatch restores the whole of ``sys.path`` afterwards (also the folders ``add_plugin``
    inserts), and imported plug-in modules are forgotten.
    """
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("edgebloom_geomed", "plugin_")):
            del sys.modules[name]


@pytest.fixture
def example_plugin(on_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in reversed(install_example_plugin(on_path / "site")):
        monkeypatch.syspath_prepend(str(path))


def add_plugin(root: Path, package: str, entry: str, target: str, source: str | None = None) -> None:
    module = target.split(":")[0]
    write_distribution(
        root / package,
        package,
        "1.0",
        {ENTRY_POINT_GROUP: {entry: target}},
        {module: source} if source is not None else None,
    )
    sys.path.insert(0, str(root / package))


def spec_source(name: str = "tplug", key: str = "tplug-rounds", default: object = 2) -> str:
    return SPEC_MODULE.format(name=name, key=key, default=default)


# --------------------------------------------------------------------------- #
# Discovery and typed keys                                                    #
# --------------------------------------------------------------------------- #


def test_example_plugin_is_found_through_its_entry_point_and_gets_typed_keys(example_plugin: None) -> None:
    # Execute
    spec = get_spec("geomed")
    default = build_strategy(AppConfig.from_run_config({"strategy": "geomed"}))
    tuned = build_strategy(AppConfig.from_run_config({"strategy": "geomed", "geomed-iterations": 7}))

    # Assert: origin is the distribution's name; keys come from cfg.extra, validated and typed.
    assert spec.origin == "edgebloom-example-plugin"
    assert [k.name for k in spec.keys] == ["geomed-iterations", "geomed-nu"]
    assert "geomed" in all_specs() and "geomed" not in REGISTRY
    assert (default.iterations, default.nu) == (3, 1e-6)
    assert tuned.iterations == 7 and isinstance(tuned.nu, float)


def test_a_plugin_key_accepts_an_int_for_a_float_and_rejects_bad_values_like_builtin_keys(
    example_plugin: None,
) -> None:
    # Execute / Assert: an int where a float is declared is accepted as that float...
    strategy = build_strategy(AppConfig.from_run_config({"strategy": "geomed", "geomed-iterations": 0}))
    assert strategy.iterations == 0

    # ... and out-of-range or wrongly typed values fail with the message built-in keys use.
    for key, value, problem in [
        ("geomed-iterations", -1, "must be >= 0"),
        ("geomed-nu", 0, "must be in (0, 1]"),
        ("geomed-iterations", 2.5, "must be of type int"),
    ]:
        with pytest.raises(ConfigError) as info:
            build_strategy(AppConfig.from_run_config({"strategy": "geomed", key: value}))
        shown = float(value) if key == "geomed-nu" else value
        assert str(info.value) == (
            f"run config: {key}={shown!r} is invalid: {problem}. Fix it in pyproject.toml "
            f'[tool.flwr.app.config] or override it with --run-config "{key}=..."'
        )


def test_a_callable_entry_point_returning_a_spec_is_accepted(on_path: Path) -> None:
    add_plugin(on_path, "callable-plugin", "tplug", "plugin_callable:make_spec", spec_source())

    spec = get_spec("tplug")

    assert spec.origin == "callable-plugin" and spec.keys[0].name == "tplug-rounds"


def test_unknown_strategy_lists_plugins_too(example_plugin: None) -> None:
    with pytest.raises(ConfigError, match=r"known strategies: .*fedprox, fedyogi, geomed, median"):
        get_spec("nope")


# --------------------------------------------------------------------------- #
# Broken plug-ins                                                             #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("entry", "target", "source", "message"),
    [
        (
            "tplug",
            "plugin_broken:SPEC",
            "import not_a_module_anywhere\n",
            r"'tplug' \('plugin_broken:SPEC' from package 'the-plugin'\) failed to load: "
            r"ModuleNotFoundError: .*not_a_module_anywhere.* Fix or uninstall the-plugin",
        ),
        ("tplug", "plugin_missing:SPEC", "X = 1\n", "failed to load: AttributeError"),
        ("tplug", "plugin_wrongtype:SPEC", "SPEC = 42\n", "gave a int; the entry point must name a"),
        (
            "fedavg",
            "plugin_clash:SPEC",
            spec_source(name="fedavg"),
            "clashes with the built-in strategy 'fedavg'",
        ),
        ("tplug", "plugin_renamed:SPEC", spec_source(name="other"), "registers a strategy named 'other'"),
        (
            "tplug",
            "plugin_seedkey:SPEC",
            spec_source(key="seed"),
            "declares the key 'seed', which is a built-in",
        ),
        ("tplug", "plugin_baddefault:SPEC", spec_source(default=-3), "the default of its key 'tplug-rounds'"),
    ],
)
def test_a_broken_plugin_fails_every_lookup_naming_its_package(
    on_path: Path, entry: str, target: str, source: str, message: str
) -> None:
    # Prepare
    add_plugin(on_path, "the-plugin", entry, target, source)

    # Execute / Assert: even a built-in strategy cannot be looked up past a broken plug-in.
    with pytest.raises(ConfigError, match=message) as info:
        get_spec("fedavg")
    assert "the-plugin" in str(info.value)


def test_two_plugins_with_one_name_clash(on_path: Path) -> None:
    add_plugin(on_path, "first-plugin", "tplug", "plugin_first:SPEC", spec_source())
    add_plugin(on_path, "second-plugin", "tplug", "plugin_second:SPEC", spec_source())

    with pytest.raises(ConfigError, match="clashes with the plug-in of package"):
        all_specs()


def test_two_plugins_declaring_one_key_are_refused_naming_both(on_path: Path) -> None:
    add_plugin(on_path, "first-plugin", "tplug", "plugin_first_key:SPEC", spec_source())
    add_plugin(on_path, "second-plugin", "tplug2", "plugin_second_key:SPEC", spec_source(name="tplug2"))

    with pytest.raises(ConfigError) as info:
        all_specs()

    message = str(info.value)
    assert "declares the key 'tplug-rounds', which the plug-in" in message
    assert "'first-plugin'" in message and "'second-plugin'" in message


def test_a_spec_whose_config_is_not_a_section_is_refused_with_the_fix() -> None:
    with pytest.raises(
        TypeError, match=r"config must be a tasks.config.Section subclass .*tasks.config.declare"
    ):
        StrategySpec("x", "x", lambda cfg: None, config=dict)  # type: ignore[arg-type,return-value]
    assert StrategySpec("y", "y", lambda cfg: None, config=Section).keys == ()  # type: ignore[arg-type,return-value]


def test_keys_declared_in_a_strategy_file_alone_are_validated_listed_and_typed(
    on_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the plug-in's file is the only place its keys exist.
    add_plugin(on_path, "own-keys", "ownkeys", "plugin_own_keys:SPEC", OWN_KEYS_MODULE)

    # Execute
    build_strategy(AppConfig.from_run_config({"strategy": "ownkeys", "own-rounds": 9}))
    status = list_main(["list"])

    # Assert: typed and frozen in the strategy's sub-config, defaults filled in ...
    (own,) = sys.modules["plugin_own_keys"].BUILT
    assert (own.own_rounds, own.own_mode) == (9, "fast")
    with pytest.raises(AttributeError):
        own.own_rounds = 1
    # ... listed with type, default and range ...
    out = capsys.readouterr().out
    assert status == 0
    assert "own-rounds (int, default 4) >= 1: how many inner rounds" in out
    assert "own-mode (str, default 'fast') one of fast, careful: fast or careful" in out
    # ... and validated before the strategy is built, with the run-config message.
    with pytest.raises(ConfigError, match=r"own-mode='slow' is invalid: must be one of fast, careful"):
        build_strategy(AppConfig.from_run_config({"strategy": "ownkeys", "own-mode": "slow"}))
    assert len(sys.modules["plugin_own_keys"].BUILT) == 1


# --------------------------------------------------------------------------- #
# python -m strategies list                                                   #
# --------------------------------------------------------------------------- #


def test_list_prints_every_strategy_with_each_key_type_default_and_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Execute
    status = list_main(["list"])

    # Assert
    out = capsys.readouterr().out
    assert status == 0
    for spec in REGISTRY.values():
        assert re.search(rf"^{re.escape(spec.name)} +{re.escape(spec.summary)}$", out, re.M), spec.name
        for key in spec.keys:
            valid = f" {key.valid}" if key.valid else ""
            line = f"{key.name} ({key.type.__name__}, default {key.default!r}){valid}: {key.help}"
            assert line in out
    assert "server-tau (float, default 0.001) (0, 1000000.0]: τ" in out
    assert "server-momentum (float, default 0.9) [0, 1): β: FedAvgM server momentum" in out


def test_list_in_a_fresh_process_discovers_the_installed_example_plugin(tmp_path: Path) -> None:
    # Prepare: the plug-in is found through PYTHONPATH alone, as an installed package would be.
    paths = [*install_example_plugin(tmp_path), REPO]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}

    # Execute
    proc = subprocess.run(
        [sys.executable, "-m", "strategies", "list"], capture_output=True, text=True, env=env, cwd=tmp_path
    )

    # Assert: the lines docs/writing-a-strategy.md shows are what the command prints.
    assert proc.returncode == 0, proc.stderr
    documented = DOC.read_text().split(
        "spec's name. `python -m strategies list` now shows it with its keys:"
    )[1]
    block = documented.split("```")[1].strip("\n").splitlines()
    assert len(block) == 3
    for line in block:
        assert line in proc.stdout.splitlines()


def test_list_reports_a_broken_plugin_and_still_lists_the_builtins(
    on_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_plugin(on_path, "the-plugin", "tplug", "plugin_broken2:SPEC", "raise RuntimeError('boom')\n")

    status = list_main(["list"])

    captured = capsys.readouterr()
    assert status == 1
    assert "the-plugin" in captured.err and "RuntimeError: boom" in captured.err
    assert re.search(r"^fedadam ", captured.out, re.M)


# --------------------------------------------------------------------------- #
# The documentation's example is the tested plug-in                           #
# --------------------------------------------------------------------------- #


def test_docs_show_the_example_plugin_verbatim() -> None:
    doc = DOC.read_text()
    code = (EXAMPLE_PLUGIN / "edgebloom_geomed.py").read_text()
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]

    assert f"```python\n{code}```" in doc
    (entry,) = project["entry-points"][ENTRY_POINT_GROUP].items()
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]\n{entry[0]} = "{entry[1]}"\n' in doc
    # "Under a page of code": the whole strategy, docstring included.
    assert len(code.splitlines()) <= 60
