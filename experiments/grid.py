"""The sweep's grid: parsing ``--grid``, expanding combinations, checking keys against the app.

``--grid "strategy=fedavg,fedprox proximal-mu=0.01,0.1"``: entries separated by spaces,
each ``key=value[,value...]``. A value in quotes (``'...'`` or ``"..."``) is a string taken
as is (it may hold spaces and commas); an unquoted one is read as TOML (``0.1``, ``3``,
``true``) and otherwise as a bare string (``fedavg``). Every key must be one the app
declares (``tasks.config.builtin_keys`` and installed strategy plug-ins': one source of
truth, the same declarations the ServerApp validates with), and each value is coerced to
the key's declared type and checked by its declared check, so a typo fails before any
run, naming close matches. ``--run-config`` is parsed by Flower's own parser
(``flwr.common.config.parse_config_args``), as ``flwr run`` parses it.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.runs import ExperimentError
from tasks.config import ConfigError, Key, Scalar, validated

#: Keys the sweep sets itself: the seed from ``--seeds``, the output directory inside ``--out``.
SEED_KEY = "seed"
OUTPUT_KEY = "output-dir"
RESERVED = {
    SEED_KEY: "the sweep sets seed from --seeds N (N seeds from the run config's seed, default 42)",
    OUTPUT_KEY: "the sweep puts each run's output-dir inside --out",
}


def split_entries(text: str) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Split ``--grid`` into ``(key, [(value text, quoted), ...])`` entries, in order.

    Raises
    ------
    ExperimentError
        An unterminated quote, an entry without ``=``, an empty key or value.
    """
    entries: list[tuple[str, list[tuple[str, bool]]]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        eq = text.find("=", i)
        space = next((j for j in range(i, n) if text[j].isspace()), n)
        if eq == -1 or eq > space:
            raise ExperimentError(
                f"--grid: {text[i:space]!r} is not key=value[,value...] "
                f'(e.g. --grid "strategy=fedavg,fedprox proximal-mu=0.01,0.1")'
            )
        key = text[i:eq]
        if not key:
            raise ExperimentError(f"--grid: an entry has no key before '=' (at {text[i:space]!r})")
        i = eq + 1
        values: list[tuple[str, bool]] = []
        while True:
            if i < n and text[i] in "'\"":
                close = text.find(text[i], i + 1)
                if close == -1:
                    raise ExperimentError(f"--grid: {key}: the quote {text[i]} opened here is never closed")
                values.append((text[i + 1 : close], True))
                i = close + 1
            else:
                start = i
                while i < n and text[i] != "," and not text[i].isspace():
                    if text[i] in "'\"":
                        raise ExperimentError(f"--grid: {key}: a quote may only start a value")
                    i += 1
                if i == start:
                    raise ExperimentError(
                        f"--grid: {key}: empty value (values are separated by single commas)"
                    )
                values.append((text[start:i], False))
            if i < n and text[i] == ",":
                i += 1
                continue
            if i < n and not text[i].isspace():
                raise ExperimentError(f"--grid: {key}: unexpected {text[i]!r} after a quoted value")
            break
        entries.append((key, values))
    if not entries:
        raise ExperimentError(
            '--grid is empty: give key=value[,value...] entries, e.g. "strategy=fedavg,fedprox"'
        )
    return entries


def parse_value(text: str, quoted: bool) -> Scalar:
    """A grid value: a quoted one is a string; an unquoted one TOML if it parses, else a string."""
    if quoted:
        return text
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return value if isinstance(value, bool | int | float | str) else text


def parse_grid(text: str) -> dict[str, list[Scalar]]:
    """``--grid`` → key → its values, in the order given; a key named twice or a value repeated is refused."""
    grid: dict[str, list[Scalar]] = {}
    for key, raw in split_entries(text):
        if key in grid:
            raise ExperimentError(f"--grid: {key} is given twice; list all its values once: {key}=a,b")
        values = [parse_value(v, q) for v, q in raw]
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise ExperimentError(f"--grid: {key}: the value {repeated[0]!r} is listed twice")
        grid[key] = values
    return grid


def expand(grid: Mapping[str, Sequence[Scalar]]) -> list[dict[str, Scalar]]:
    """Every combination of the grid's values (the first key varies slowest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def declared_keys() -> dict[str, Key]:
    """Every run-config key the app declares: built-in owners and installed strategy plug-ins."""
    from strategies.core.registry import all_specs
    from tasks.config import builtin_keys

    keys = {name: d.key for name, d in builtin_keys().items()}
    for spec in all_specs().values():
        keys.update({key.name: key for key in spec.keys})
    return keys


def check_known(names: Sequence[str], declared: Mapping[str, Key], *, where: str) -> None:
    """Refuse keys the app does not declare, or that the sweep sets itself, naming close matches."""
    for name in names:
        if name in RESERVED:
            raise ExperimentError(f"{where}: {name} cannot be set here: {RESERVED[name]}")
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=5, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "no declared key is close"
            raise ExperimentError(
                f"{where}: {name!r} is not a run-config key of this app ({hint}); "
                "`python -m strategies list` lists every key"
            )


def typed_value(key: Key, value: Scalar, *, where: str) -> Scalar:
    """``value`` as ``key``'s declared type, checked by its declared check (ExperimentError if not)."""
    if key.type is str and not isinstance(value, str):
        value = str(value).lower() if isinstance(value, bool) else str(value)  # dataset=1 → '1'
    elif key.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        return validated(key, value)
    except ConfigError as exc:
        raise ExperimentError(f"{where}: {exc}") from exc


def typed_grid(grid: Mapping[str, Sequence[Scalar]], declared: Mapping[str, Key]) -> dict[str, list[Scalar]]:
    """Check the grid's keys and type and check each value (:func:`typed_value`)."""
    check_known(list(grid), declared, where="--grid")
    return {
        k: [typed_value(declared[k], v, where=f"--grid {k}") for v in values] for k, values in grid.items()
    }


def flower_config_args(text: str) -> dict[str, Any]:
    """``key=value ...`` parsed by Flower's own parser (as ``flwr run`` parses its options).

    Raises
    ------
    ValueError
        With Flower's message, for text Flower would refuse.
    """
    import click
    from flwr.common.config import parse_config_args

    try:
        return parse_config_args([text])
    except click.ClickException as exc:  # Flower reports a malformed string as a CLI error
        raise ValueError(exc.message) from exc


def parse_run_config(text: str | None, declared: Mapping[str, Key]) -> dict[str, Scalar]:
    """``--run-config`` as ``flwr run`` parses it (Flower's parser), keys checked and values typed."""
    if not text:
        return {}
    try:
        parsed = flower_config_args(text)
    except ValueError as exc:
        raise ExperimentError(f"--run-config: {exc}") from exc
    check_known(list(parsed), declared, where="--run-config")
    return {k: typed_value(declared[k], v, where=f"--run-config {k}") for k, v in parsed.items()}


def toml_value(value: Scalar) -> str:
    """One value as TOML for ``flwr run --run-config`` (strings in quotes Flower's parser keeps whole)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        text = repr(value)
        return text if re.search(r"[.eE]", text) else f"{text}.0"
    if "'" not in value:
        return f"'{value}'"  # a TOML literal string: no escapes to get wrong
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    raise ExperimentError(f"the value {value!r} holds both quote characters; flwr run cannot pass it")


def run_config_arg(values: Mapping[str, Scalar]) -> str:
    """``k1=v1 k2='v2'``: the single ``--run-config`` argument of one ``flwr run``."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())


def label(combination: Mapping[str, Scalar]) -> str:
    """``strategy=fedprox proximal-mu=0.1``: how tables and logs name a combination."""
    return " ".join(f"{k}={v}" for k, v in combination.items())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def folder_name(combination: Mapping[str, Scalar]) -> str:
    """A directory name for a combination, readable and unique (a hash keeps long ones distinct)."""
    import hashlib

    name = "_".join(f"{_slug(k)}-{_slug(str(v))}" for k, v in combination.items()) or "base"
    if len(name) > 80 or any(_slug(str(v)) != str(v) for v in combination.values()):
        digest = hashlib.sha1(label(combination).encode()).hexdigest()[:8]
        name = f"{name[:80]}-{digest}"
    return name


def check_combinations(combinations: Sequence[Mapping[str, Scalar]], base: Mapping[str, Scalar]) -> None:
    """Build each combination's config and strategy as the ServerApp would, before anything runs.

    Catches what the declarations can tell without data or nodes: an unknown strategy,
    checks across keys (``straggler-fraction`` with one local epoch, a strategy's own
    combinations), the combinations a wrapper refuses (secure aggregation with a robust
    rule, DP around FedBuff, fused evaluation with FedBuff, ...), and a tracker whose
    library is missing. Not caught: what depends on the nodes (a robust rule's guarantee
    for the sampled clients), which the ServerApp refuses at run time.
    """
    from server_app.tracking import TrackingConfig, require_libraries
    from strategies.core.registry import build_strategy
    from tasks.config import AppConfig

    for combination in combinations:
        try:
            cfg = AppConfig.from_run_config({**base, **combination})
            build_strategy(cfg)
            require_libraries(cfg.section(TrackingConfig).backends)
        except ConfigError as exc:
            raise ExperimentError(f"combination {label(combination) or '(base)'}: {exc}") from exc


def check_overlap(grid: Mapping[str, Any], base: Mapping[str, Any]) -> None:
    """A key both swept and fixed is ambiguous: refuse it."""
    both = sorted(set(grid) & set(base))
    if both:
        raise ExperimentError(
            f"{', '.join(both)} given in both --grid and --run-config; keep each key in one of them"
        )


def check_federation_config(text: str | None) -> None:
    """Refuse a ``--federation-config`` that ``flwr run`` would refuse, before any run starts.

    Parsed as ``flwr run`` does (Flower's parser; ``-`` in keys becomes ``_``) into Flower's
    ``SimulationConfig``, whose fields are the allowed keys (``num-supernodes``,
    ``client-resources-num-cpus``, ...).
    """
    if not text:
        return
    from flwr.supercore.utils import simulation_config_from_json

    try:
        values = {k.replace("-", "_"): v for k, v in flower_config_args(text).items()}
        simulation_config_from_json(values)  # ValueError naming unknown fields
    except (ValueError, TypeError) as exc:  # TypeError: a value of the wrong type for its field
        raise ExperimentError(f"--federation-config {text!r}: {exc}") from exc
