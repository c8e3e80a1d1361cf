"""The run configuration: every key declared once, beside the code that owns it.

Keys are the kebab-case keys of ``[tool.flwr.app.config]`` in ``pyproject.toml``. A key is
declared as a field of a frozen dataclass, a :class:`Section`, with :func:`declare` (default,
help, valid range); its type is the field's annotation and its name the field's name in
kebab case. Run-level keys (rounds, sampling, timeouts, data, model, local training,
output, resume, seed) are the fields of :class:`AppConfig` below; each strategy, wrapper
and simulation feature declares its own keys in its own module and reads them back as a
typed, frozen sub-config (``cfg.section(FedProxConfig)``). :func:`builtin_sections` lists
the owners; a key declared by two owners is refused, naming both; a test checks that
pyproject's table equals the declarations, both ways. Bad values raise
:class:`ConfigError` naming the key, the value and what is allowed, before any training.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

from tasks.data import BUILTIN_DATASETS, HUB_DATASETS, DatasetError, check_dataset_name
from tasks.models import MODELS
from tasks.partition import PARTITIONERS

Scalar = bool | int | float | str


class ConfigError(ValueError):
    """A run-config value is invalid; the message names the key and the fix."""


def _no_check(value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Key:
    """One run-config key: its type, default, and a check returning an error or None."""

    name: str
    type: type
    default: Scalar
    help: str
    check: Callable[[Any], str | None] = _no_check

    @property
    def valid(self) -> str:
        """The allowed values in words (``>= 1``, ``(0, 1]``, ``one of a, b``), or ``""``."""
        return str(getattr(self.check, "valid", ""))


def _described(check: Callable[[Any], str | None], valid: str) -> Callable[[Any], str | None]:
    """Attach the allowed values in words to ``check`` (``python -m strategies list`` prints them)."""
    check.valid = valid  # type: ignore[attr-defined]  # a function attribute; Key.valid reads it by getattr
    return check


def at_least(lo: float) -> Callable[[Any], str | None]:
    return _described(lambda v: None if v >= lo else f"must be >= {lo}", f">= {lo}")


def in_range(
    lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[Any], str | None]:
    valid = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def check(v: Any) -> str | None:
        ok_lo = v > lo if lo_open else v >= lo
        ok_hi = v < hi if hi_open else v <= hi
        if ok_lo and ok_hi:
            return None
        return f"must be in {valid}"

    return _described(check, valid)


def one_of(*allowed: str) -> Callable[[Any], str | None]:
    return _described(
        lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}",
        f"one of {', '.join(allowed)}",
    )


def _check_dataset(value: str) -> str | None:
    try:
        check_dataset_name(value)
    except DatasetError as exc:
        return str(exc).split("; ", 1)[-1]
    return None


def _check_device(value: str) -> str | None:
    if value in ("auto", "cpu", "mps") or value == "cuda" or value.startswith("cuda:"):
        return None
    return "must be auto, cpu, cuda, cuda:N or mps"


def validated(key: Key, value: Any) -> Any:
    """``value`` coerced to ``key.type`` and checked; ``ConfigError`` names the key, value and fix.

    Every :class:`Section` (``AppConfig`` included) validates its keys with this when it
    is built, so built-in and plug-in keys get the same messages.
    """
    value = _coerce(key, value)
    problem = key.check(value)
    if problem:
        raise ConfigError(_message(key, value, problem))
    return value


def _coerce(key: Key, value: Any) -> Any:
    """Check ``value``'s type against ``key``; ints are accepted where floats are."""
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if key.type is int and isinstance(value, bool):
        raise ConfigError(_message(key, value, "must be an integer, not a boolean"))
    if not isinstance(value, key.type):
        raise ConfigError(_message(key, value, f"must be of type {key.type.__name__}"))
    return value


def _message(key: Key, value: Any, problem: str) -> str:
    return (
        f"run config: {key.name}={value!r} is invalid: {problem}. Fix it in pyproject.toml "
        f'[tool.flwr.app.config] or override it with --run-config "{key.name}=..."'
    )


# ------------------------------------------------------------------ declaring keys
_KEY_FIELD = "edgebloom.key"


def declare(
    default: Scalar, help: str, check: Callable[[Any], str | None] | None = None, *, name: str = ""
) -> Any:
    """Declare one run-config key as a field of a :class:`Section`.

    Parameters
    ----------
    default : bool, int, float or str
        The default; pyproject's ``[tool.flwr.app.config]`` must carry the same value.
    help : str
        One line for ``python -m strategies list`` and the docs.
    check : callable, optional
        ``value -> problem or None`` (:func:`at_least`, :func:`in_range`, :func:`one_of`).
    name : str, optional
        The kebab-case key; default: the field's name with ``_`` replaced by ``-``.

    Returns
    -------
    dataclasses.Field
        The field; its annotation (``int``, ``float``, ``str``, ``bool``) is the key's type.
    """
    return field(default=default, metadata={_KEY_FIELD: (name, help, check or _no_check)})


@dataclass(frozen=True)
class Declared:
    """One key as a :class:`Section` declares it: the key, its field and the class that owns it."""

    key: Key
    attribute: str
    owner: str


def _owner(cls: type, attribute: str) -> str:
    """The class (``module.QualName``) that declares ``attribute``: a base class may own a shared key."""
    for klass in reversed(cls.__mro__):
        if attribute in vars(klass).get("__annotations__", {}):
            return f"{klass.__module__}.{klass.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


#: Section class → its declared keys, computed once per class (classes never change).
_DECLARED_FIELDS: dict[type[Section], tuple[Declared, ...]] = {}


def declared_fields(cls: type[Section]) -> tuple[Declared, ...]:
    """The keys ``cls`` declares (its :func:`declare` fields, inherited ones included), in field order."""
    # A dict, not functools.cache: typeshed's cache wants Hashable arguments, and a frozen
    # dataclass's class object does not type as Hashable (its ``__hash__`` is per instance).
    cached = _DECLARED_FIELDS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if _KEY_FIELD not in f.metadata:
            continue
        name, help_text, check = f.metadata[_KEY_FIELD]
        if f.default is MISSING:  # declare() always sets one; Flower needs every default in pyproject
            raise TypeError(f"{cls.__name__}.{f.name}: a declared key needs a default")
        declared = Key(name or f.name.replace("_", "-"), hints[f.name], f.default, help_text, check)
        out.append(Declared(declared, f.name, _owner(cls, f.name)))
    _DECLARED_FIELDS[cls] = tuple(out)
    return _DECLARED_FIELDS[cls]


S = TypeVar("S", bound="Section")


@dataclass(frozen=True)
class Section:
    """Base of a typed, frozen sub-config: a dataclass whose :func:`declare` fields are run-config keys.

    Building one validates every key (type, range: :func:`validated`), then the
    combinations (:meth:`check_combinations`), so a sub-config that exists is valid,
    whether it came from the run config (:meth:`AppConfig.section`) or from Python.
    Subclasses are ``@dataclass(frozen=True)`` too; a base class owns the keys it
    declares, so strategies sharing keys subclass one owner (``ServerOptConfig`` extends
    ``FedProxConfig``). Field names ``keys`` and ``values`` are taken by the methods.
    """

    def __post_init__(self) -> None:
        for declared in declared_fields(type(self)):
            value = validated(declared.key, getattr(self, declared.attribute))
            object.__setattr__(self, declared.attribute, value)  # an int given for a float
        self.check_combinations()

    def check_combinations(self) -> None:
        """Checks that involve several keys; raise :class:`ConfigError` naming them."""

    @classmethod
    def keys(cls) -> tuple[Key, ...]:
        """The run-config keys this sub-config declares."""
        return tuple(d.key for d in declared_fields(cls))

    @classmethod
    def from_values(cls: type[S], values: Mapping[str, Any]) -> S:
        """The sub-config from kebab-case ``values``; keys missing from them take their default."""
        return cls(**{d.attribute: values.get(d.key.name, d.key.default) for d in declared_fields(cls)})

    def values(self) -> dict[str, Scalar]:
        """The kebab-case key → value of this sub-config."""
        return {d.key.name: getattr(self, d.attribute) for d in declared_fields(type(self))}


def declared_keys(sections: Iterable[type[Section]]) -> dict[str, Declared]:
    """Name → declaration over ``sections``; a name declared by two owners is refused.

    A class shared by several sections (a base such as ``FedProxConfig``) is one owner,
    and so is a section listed twice.

    Raises
    ------
    ConfigError
        Naming the key and both owners.
    """
    out: dict[str, Declared] = {}
    for section in sections:
        for declared in declared_fields(section):
            seen = out.get(declared.key.name)
            if seen is not None and (seen.owner, seen.attribute) != (declared.owner, declared.attribute):
                raise ConfigError(
                    f"run-config key {declared.key.name!r} is declared twice: by {seen.owner} and by "
                    f"{declared.owner}; each key has one owner: rename one, or share the owner's class"
                )
            out[declared.key.name] = declared
    return out


#: Longest ``round-timeout`` / ``wait-for-nodes-timeout``: one day. Longer is a typo (ms for s)
#: or "forever", and a run then hangs on a dead SuperLink or node for days; a day also
#: stays below what a thread wait (``threading.TIMEOUT_MAX``) accepts.
MAX_TIMEOUT_S = 86_400.0


@dataclass(frozen=True)
class AppConfig(Section):
    """Validated run configuration: the run-level keys, and every owner's keys by :meth:`section`.

    The fields below are the run-level keys, each declared here once. Keys of a strategy,
    wrapper or simulation feature are declared by their owner (:func:`builtin_sections`),
    validated by :meth:`from_run_config` and read as a typed sub-config with
    :meth:`section`; ``cfg.<key_name>`` still reads them (``cfg.dp_clip_norm``). Keys
    nobody built-in declares (a plug-in's) are kept, unvalidated, in ``extra``.
    """

    num_server_rounds: int = declare(10, "federated rounds", at_least(1))
    strategy: str = declare("fedavg", "server strategy, by registry name (python -m strategies list)")
    fraction_train: float = declare(
        1.0, "fraction of nodes sampled to train each round", in_range(0, 1, lo_open=True)
    )
    fraction_evaluate: float = declare(
        0.5,
        "fraction of nodes sampled for federated evaluation (0 = no federated evaluation)",
        in_range(0, 1),
    )
    fused_evaluate: bool = declare(
        False,
        "evaluate the received model inside the train message (one round trip per round); "
        "round r's figures are the federated evaluation of round r-1's model",
    )
    min_train_nodes: int = declare(2, "minimum nodes sampled for training", at_least(1))
    min_evaluate_nodes: int = declare(2, "minimum nodes sampled for evaluation", at_least(1))
    min_available_nodes: int = declare(2, "nodes that must be connected before a round starts", at_least(1))
    wait_for_nodes_timeout: float = declare(
        120.0, "seconds to wait for min-available-nodes", in_range(0, MAX_TIMEOUT_S, lo_open=True)
    )
    round_timeout: float = declare(
        600.0,
        "seconds to wait for replies in one round; also the messages' TTL",
        in_range(0, MAX_TIMEOUT_S, lo_open=True),
    )
    max_num_examples: int = declare(
        1_000_000, "replies claiming more training examples are dropped", at_least(1)
    )
    min_valid_replies: int = declare(1, "fewer valid train replies keep the previous model", at_least(1))
    # Local training: the server sends these to the clients every round.
    local_epochs: int = declare(5, "local epochs per round (E)", at_least(1))
    batch_size: int = declare(
        10, "local batch size (B); 0 = full batch (FedSGD with local-epochs=1)", at_least(0)
    )
    learning_rate: float = declare(0.1, "client SGD learning rate", in_range(0, 1e6, lo_open=True))
    momentum: float = declare(0.0, "client SGD momentum", in_range(0, 1, hi_open=True))
    weight_decay: float = declare(0.0, "client SGD weight decay", at_least(0))
    straggler_fraction: float = declare(
        0.0, "fraction of sampled clients that run fewer epochs", in_range(0, 1)
    )
    # Client DP-SGD (Opacus, sample-level DP; README "Privacy"): local-training settings the
    # server sends like the ones above, used by tasks/dp_train.py on the client.
    dp_sgd_noise_multiplier: float = declare(
        0.0, "client DP-SGD noise multiplier (0 = no DP-SGD; Opacus, sample-level DP)", at_least(0)
    )
    dp_sgd_max_grad_norm: float = declare(
        1.0, "client DP-SGD per-example clipping norm", in_range(0, 1e9, lo_open=True)
    )
    dp_sgd_delta: float = declare(
        1e-5, "δ of the client's reported DP-SGD ε", in_range(0, 1, lo_open=True, hi_open=True)
    )
    seed: int = declare(42, "seed for data splits, sampling, stragglers and local shuffling")
    dataset: str = declare(
        "digits", f"{', '.join([*BUILTIN_DATASETS, *HUB_DATASETS])} or a path to .npz", _check_dataset
    )
    model: str = declare("auto", f"auto or one of {', '.join(MODELS)}", one_of("auto", *MODELS))
    partitioner: str = declare(
        "auto",
        "how training data is split across nodes (auto: natural for synthetic, else iid)",
        one_of("auto", *PARTITIONERS),
    )
    dirichlet_alpha: float = declare(
        0.5, "Dirichlet concentration (dirichlet partitioner)", in_range(0, 1e9, lo_open=True)
    )
    shards_per_client: int = declare(2, "shards per client (shard partitioner)", at_least(1))
    classes_per_client: int = declare(2, "classes per client (pathological partitioner)", at_least(1))
    partition_size: int = declare(
        20,
        "examples per client (sampled partitioner: each client draws its own from the whole "
        "training set, so clients overlap and the population may exceed the dataset)",
        at_least(1),
    )
    test_fraction: float = declare(
        0.2,
        "share of digits held out as the server's test set",
        in_range(0, 1, lo_open=True, hi_open=True),
    )
    val_fraction: float = declare(
        0.1, "share of each client's data kept for federated evaluation", in_range(0, 1, hi_open=True)
    )
    synthetic_alpha: float = declare(1.0, "Synthetic(α, β): model heterogeneity α", at_least(0))
    synthetic_beta: float = declare(1.0, "Synthetic(α, β): data heterogeneity β", at_least(0))
    synthetic_devices: int = declare(30, "Synthetic: number of devices (one partition each)", at_least(1))
    synthetic_iid: bool = declare(False, "Synthetic: the IID variant")
    device: str = declare("auto", "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps", _check_device)
    threads_per_client: int = declare(
        0, "torch threads per client process; 0 = leave torch's default", at_least(0)
    )
    output_dir: str = declare("outputs", "where run directories go (relative: see README)")
    central_eval: bool = declare(True, "evaluate the global model on the server's test set each round")
    resume: str = declare(
        "", "run directory whose checkpoint to continue from ('' = a fresh run; README \"Reliability\")"
    )
    #: Validated values of the keys the owners in :func:`builtin_sections` declare (by name).
    owned: Mapping[str, Scalar] = field(default_factory=dict)
    #: Keys no built-in owner declares (a plug-in's), as given.
    extra: Mapping[str, Scalar] = field(default_factory=dict)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> AppConfig:
        """Build and validate the config: run-level keys, then every built-in owner's keys.

        Each key is checked alone here; checks across one owner's keys run when its
        sub-config is built (:meth:`section`), so a setting of a strategy the run does
        not use cannot fail the run. Keys no built-in owner declares go to ``extra``.
        """
        declared = declared_keys(builtin_sections())
        run_level = {
            d.attribute: run_config.get(name, d.key.default)
            for name, d in declared.items()
            if d.owner == _SELF
        }
        owned = {
            name: validated(d.key, run_config.get(name, d.key.default))
            for name, d in declared.items()
            if d.owner != _SELF
        }
        extra = {k: v for k, v in run_config.items() if k not in declared}
        return cls(**run_level, owned=owned, extra=extra)

    def check_combinations(self) -> None:
        if self.resolved_partitioner == "natural" and self.dataset != "synthetic":
            raise ConfigError(
                f"run config: partitioner='natural' needs a dataset with a natural "
                f"per-device split (dataset='synthetic'), got dataset={self.dataset!r}; "
                f"use partitioner='iid', 'dirichlet', 'shard' or 'pathological'"
            )
        if self.straggler_fraction > 0 and self.local_epochs < 2:
            raise ConfigError(
                f"run config: straggler-fraction={self.straggler_fraction} needs "
                f"local-epochs >= 2 (stragglers run 1..E-1 epochs), got local-epochs="
                f"{self.local_epochs}"
            )

    def section(self, cls: type[S]) -> S:
        """The typed, frozen sub-config ``cls`` of this run (validated, combinations included).

        Raises
        ------
        ConfigError
            Naming the key, for a value of ``cls``'s keys (a plug-in's come from ``extra``)
            or a combination of them that is invalid.
        """
        return cls.from_values({**self.extra, **self.owned})

    def __getattr__(self, name: str) -> Any:
        # Owners' keys as flat attributes (cfg.dp_clip_norm), as before they had owners;
        # only called when normal lookup fails, so the fields above are untouched.
        owned = self.__dict__.get("owned", {})
        if name.replace("_", "-") in owned and not name.startswith("_"):
            return owned[name.replace("_", "-")]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def resolved_partitioner(self) -> str:
        """``partitioner``, with ``auto`` meaning natural for synthetic data, else iid."""
        if self.partitioner != "auto":
            return self.partitioner
        return "natural" if self.dataset == "synthetic" else "iid"

    def resolved_model(self, input_shape: tuple[int, ...]) -> str:
        """The model to use: ``model`` itself, or for ``auto`` the one fitting the data."""
        if self.model != "auto":
            return self.model
        by_dataset = {
            "digits": "digits-cnn",
            "ylecun/mnist": "mnist-cnn",
            "uoft-cs/cifar10": "cifar-mobilenet",
            "synthetic": "logreg",
            "linreg": "linreg",
        }
        if self.dataset in by_dataset:
            return by_dataset[self.dataset]
        by_shape: dict[tuple[int, ...], str] = {
            (1, 8, 8): "digits-cnn",
            (1, 28, 28): "mnist-cnn",
            (3, 32, 32): "cifar-mobilenet",
        }
        return by_shape.get(tuple(input_shape), "logreg")

    def to_dict(self) -> dict[str, Scalar]:
        """The resolved config with kebab-case keys (for config.json)."""
        return {**self.values(), **self.owned, **self.extra}


_SELF = f"{AppConfig.__module__}.{AppConfig.__qualname__}"

#: The run-level keys (the fields of :class:`AppConfig`).
RUN_KEYS: tuple[Key, ...] = AppConfig.keys()


def builtin_sections() -> tuple[type[Section], ...]:
    """Every built-in owner of run-config keys: the run level, strategies, wrappers, simulation, tracking.

    The owners sit above ``tasks`` in the import graph (they import Flower), so they are
    imported here, when a config is built, and ``tasks`` itself stays framework-free.
    """
    from harness.attacks import AttackConfig
    from harness.dropout import DropoutConfig
    from harness.slowdown import SlowdownConfig
    from server_app.tracking import TrackingConfig
    from strategies.core.registry import builtin_sections as strategy_sections

    return (AppConfig, *strategy_sections(), AttackConfig, SlowdownConfig, DropoutConfig, TrackingConfig)


def builtin_keys() -> dict[str, Declared]:
    """Name → declaration of every built-in key (:func:`builtin_sections`); pyproject must equal these."""
    return declared_keys(builtin_sections())
