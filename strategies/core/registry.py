"""Strategy registry: run config ``strategy='<name>'`` → a configured strategy.

Adding a strategy is one file plus one entry in :data:`REGISTRY`, or, from another
installed package, an entry point in the group ``edgebloom.strategies``
(``[project.entry-points."edgebloom.strategies"]``) naming a :class:`StrategySpec` or a
callable returning one (docs/writing-a-strategy.md). Each spec declares the run-config
keys it reads (:class:`tasks.config.Key`: name, type, default, help, range), so they
are validated before training and listed by ``python -m strategies list``. Unknown
names fail with the list of known ones; a plug-in that does not load, or reuses a
built-in name or key, fails with the package's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points

from flwr.serverapp.strategy import Strategy

from strategies.algorithms.fedadagrad import FedAdagrad
from strategies.algorithms.fedadam import FedAdam
from strategies.algorithms.fedavg import FedAvg
from strategies.algorithms.fedavgm import FedAvgM
from strategies.algorithms.fedbuff import fedbuff_from_config
from strategies.algorithms.fedprox import FedProx
from strategies.algorithms.fedyogi import FedYogi
from strategies.algorithms.median import FedMedian
from strategies.algorithms.multikrum import MultiKrum
from strategies.algorithms.norm_bounded import NormBoundedFedAvg
from strategies.algorithms.trimmed_mean import FedTrimmedMean
from strategies.wrappers.compressed import with_compression
from tasks.config import KEYS_BY_NAME, AppConfig, ConfigError, Key, Scalar, validated

#: Entry-point group through which installed packages register strategies.
ENTRY_POINT_GROUP = "edgebloom.strategies"


def common_kwargs(cfg: AppConfig) -> dict[str, object]:
    """Constructor arguments every FedAvg-based strategy takes from the run config."""
    return {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": cfg.min_train_nodes,
        "min_evaluate_nodes": cfg.min_evaluate_nodes,
        "min_available_nodes": cfg.min_available_nodes,
        "wait_for_nodes_timeout": cfg.wait_for_nodes_timeout,
        "local_epochs": cfg.local_epochs,
        "straggler_fraction": cfg.straggler_fraction,
        "seed": cfg.seed,
        "max_num_examples": cfg.max_num_examples,
        "min_valid_replies": cfg.min_valid_replies,
    }


#: Run-config keys of the DP wrappers (README "Privacy").
DP_KEYS = (
    "dp-estimator",
    "dp-clipping",
    "dp-clip-norm",
    "dp-noise-multiplier",
    "dp-weight-cap",
    "dp-population",
    "dp-min-total-weight",
    "dp-sampling",
    "dp-sampling-rate",
    "dp-adaptive-clipping",
    "dp-target-quantile",
    "dp-count-noise-std",
    "dp-accountant",
    "dp-delta",
    "dp-max-epsilon",
    "dp-noise-seed",
    "dp-secure-noise",
)


#: The contract suite runs DP with a handful of clients: every one sampled (fixed size, q = 1)
#: and little noise (z = 0.01), else noise of std z*S/(qN) drowns any update; a fixed noise
#: seed lets it check the noise-free part of the aggregate.
DP_CONTRACT_CONFIG: dict[str, Scalar] = {
    "dp-sampling": "fixed-size",
    "dp-sampling-rate": 1.0,
    "dp-noise-multiplier": 0.01,
    "dp-noise-seed": 0,
}


def _dp(cfg: AppConfig, inner: FedAvg) -> Strategy:
    """Wrap ``inner`` in weighted DP-FedAvg (imported lazily: dp-accounting is heavy)."""
    from strategies.wrappers.dp_fedavg import build_dp_strategy

    return build_dp_strategy(cfg, inner)


def builtin_keys(*names: str) -> tuple[Key, ...]:
    """The keys ``names`` as declared in :data:`tasks.config.KEYS` (where built-in strategies' keys live)."""
    return tuple(KEYS_BY_NAME[name] for name in names)


def server_opt_kwargs(cfg: AppConfig) -> dict[str, object]:
    """Constructor arguments shared by the server optimizers (FedAdam, FedYogi, FedAdagrad, FedAvgM)."""
    return {
        "server_learning_rate": cfg.server_learning_rate,
        "proximal_mu": cfg.proximal_mu,
        **common_kwargs(cfg),
    }


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: how to build it, the run-config keys it reads, what it promises.

    Attributes
    ----------
    name : str
        The value of ``strategy='<name>'`` in the run config.
    summary : str
        One line for ``python -m strategies list``: the rule and its paper.
    build : Callable[[AppConfig], Strategy]
        Builds the strategy from the validated run config. A plug-in's own keys are in
        ``cfg.extra``, validated, typed and defaulted by the registry.
    keys : tuple of Key
        Run-config keys the strategy reads besides the common ones (sampling, local
        training, reply validation). Built-in strategies name keys of
        :data:`tasks.config.KEYS` (:func:`builtin_keys`); a plug-in declares its own,
        which must not reuse a name of ``KEYS``.
    deterministic : bool, default True
        False when the aggregate is random (DP noise); the contract suite then checks
        the noise-free part, with the seed set in ``contract_config``.
    server_optimizer : bool, default False
        True when the new model is a server optimizer's step from the mean update, not
        the aggregate itself (identical updates then move the model in their direction,
        by the optimizer's step size).
    order_invariant : bool, default True
        The result does not depend on the order in which replies arrive.
    contract_config : Mapping[str, Scalar], default {}
        Run-config overrides under which ``tests/strategies/test_contract.py`` checks the
        strategy, for settings whose defaults only make sense with many clients (DP).
    origin : str, default "built-in"
        The distribution that registered a plug-in (set by the registry).
    """

    name: str
    summary: str
    build: Callable[[AppConfig], Strategy]
    keys: tuple[Key, ...] = ()
    deterministic: bool = True
    server_optimizer: bool = False
    order_invariant: bool = True
    contract_config: Mapping[str, Scalar] = field(default_factory=dict)
    origin: str = "built-in"

    def __post_init__(self) -> None:
        for key in self.keys:
            if not isinstance(key, Key):
                raise TypeError(
                    f"strategy {self.name!r}: keys must be tasks.config.Key objects, got {key!r}; "
                    f"for keys declared in tasks.config.KEYS use builtin_keys({key!r})"
                )


REGISTRY: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec(
            "fedavg",
            "FedAvg (McMahan et al. 2017): example-weighted average; stragglers dropped",
            lambda cfg: FedAvg(**common_kwargs(cfg)),  # type: ignore[arg-type]
        ),
        StrategySpec(
            "fedprox",
            "FedProx (Li et al. 2020): proximal term on clients; stragglers aggregated",
            lambda cfg: FedProx(proximal_mu=cfg.proximal_mu, **common_kwargs(cfg)),  # type: ignore[arg-type]
            keys=builtin_keys("proximal-mu"),
        ),
        StrategySpec(
            "median",
            "coordinate-wise median (Yin et al. 2018); tolerates f < n/2",
            lambda cfg: FedMedian(num_byzantine=cfg.robust_num_byzantine, **common_kwargs(cfg)),  # type: ignore[arg-type]
            keys=builtin_keys("robust-num-byzantine"),
        ),
        StrategySpec(
            "trimmed-mean",
            "coordinate-wise beta-trimmed mean (Yin et al. 2018); needs beta >= f/n, 2*beta*n < n",
            lambda cfg: FedTrimmedMean(
                beta=cfg.trimmed_mean_beta,
                num_byzantine=cfg.robust_num_byzantine,
                **common_kwargs(cfg),  # type: ignore[arg-type]
            ),
            keys=builtin_keys("trimmed-mean-beta", "robust-num-byzantine"),
        ),
        StrategySpec(
            "multi-krum",
            "Multi-Krum (Blanchard et al. 2017); needs n > 2f + 2",
            lambda cfg: MultiKrum(
                num_byzantine=cfg.robust_num_byzantine,
                num_selected=cfg.krum_num_selected,
                **common_kwargs(cfg),  # type: ignore[arg-type]
            ),
            keys=builtin_keys("robust-num-byzantine", "krum-num-selected"),
        ),
        StrategySpec(
            "norm-bounded",
            "FedAvg over server-clipped updates (norm-bound)",
            lambda cfg: NormBoundedFedAvg(max_norm=cfg.norm_bound, **common_kwargs(cfg)),  # type: ignore[arg-type]
            keys=builtin_keys("norm-bound"),
        ),
        StrategySpec(
            "dp-fedavg",
            "weighted user-level DP-FedAvg (McMahan et al. 2018), accounted ε; adaptive clipping optional",
            lambda cfg: _dp(cfg, FedAvg(**common_kwargs(cfg))),  # type: ignore[arg-type]
            keys=builtin_keys(*DP_KEYS),
            deterministic=False,
            contract_config=DP_CONTRACT_CONFIG,
        ),
        StrategySpec(
            "dp-fedprox",
            "DP-FedAvg around FedProx: the clients' proximal term, user-level DP on the server",
            lambda cfg: _dp(cfg, FedProx(proximal_mu=cfg.proximal_mu, **common_kwargs(cfg))),  # type: ignore[arg-type]
            keys=builtin_keys("proximal-mu", *DP_KEYS),
            deterministic=False,
            contract_config=DP_CONTRACT_CONFIG,
        ),
        StrategySpec(
            "fedadam",
            "FedAdam (Reddi et al. 2021): Adam on the server over FedAvg's mean update",
            lambda cfg: FedAdam(
                beta1=cfg.server_beta1, beta2=cfg.server_beta2, tau=cfg.server_tau, **server_opt_kwargs(cfg)
            ),  # type: ignore[arg-type]
            keys=builtin_keys(
                "server-learning-rate", "server-beta1", "server-beta2", "server-tau", "proximal-mu"
            ),
            server_optimizer=True,
        ),
        StrategySpec(
            "fedyogi",
            "FedYogi (Reddi et al. 2021): Yogi on the server over FedAvg's mean update",
            lambda cfg: FedYogi(
                beta1=cfg.server_beta1, beta2=cfg.server_beta2, tau=cfg.server_tau, **server_opt_kwargs(cfg)
            ),  # type: ignore[arg-type]
            keys=builtin_keys(
                "server-learning-rate", "server-beta1", "server-beta2", "server-tau", "proximal-mu"
            ),
            server_optimizer=True,
        ),
        StrategySpec(
            "fedadagrad",
            "FedAdagrad (Reddi et al. 2021): Adagrad on the server over FedAvg's mean update",
            lambda cfg: FedAdagrad(beta1=cfg.server_beta1, tau=cfg.server_tau, **server_opt_kwargs(cfg)),  # type: ignore[arg-type]
            keys=builtin_keys("server-learning-rate", "server-beta1", "server-tau", "proximal-mu"),
            server_optimizer=True,
        ),
        StrategySpec(
            "fedavgm",
            "FedAvgM (Hsu et al. 2019): server momentum over FedAvg's mean update",
            lambda cfg: FedAvgM(momentum=cfg.server_momentum, **server_opt_kwargs(cfg)),  # type: ignore[arg-type]
            keys=builtin_keys("server-learning-rate", "server-momentum", "proximal-mu"),
            server_optimizer=True,
        ),
        StrategySpec(
            "fedbuff",
            "FedBuff (Nguyen et al. 2022): asynchronous buffered aggregation, staleness weight 1/sqrt(1+tau)",
            lambda cfg: fedbuff_from_config(cfg, **common_kwargs(cfg)),
            keys=builtin_keys(
                "fedbuff-concurrency",
                "fedbuff-buffer-size",
                "fedbuff-max-staleness",
                "fedbuff-server-learning-rate",
            ),
            # The contract's 3-round digits run trains 5 clients: one buffer of all 5 per round.
            contract_config={"fedbuff-concurrency": 5, "fedbuff-buffer-size": 5},
        ),
    )
}


def plugin_specs() -> dict[str, StrategySpec]:
    """Strategies registered by installed packages under the entry-point group ``edgebloom.strategies``.

    Returns
    -------
    dict
        Name → spec, each with ``origin`` set to its distribution's name.

    Raises
    ------
    ConfigError
        Naming the package, if an entry point fails to load, is not a
        :class:`StrategySpec` (or a callable returning one), is named differently from its
        spec, reuses a built-in strategy name, another plug-in's name, or a key of
        :data:`tasks.config.KEYS`, or declares a key whose default fails its own check.
    """
    specs: dict[str, StrategySpec] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        package = ep.dist.name if ep.dist is not None else "an unknown package"
        where = f"strategy plug-in {ep.name!r} ({ep.value!r} from package {package!r})"
        try:
            loaded = ep.load()
            spec = loaded if isinstance(loaded, StrategySpec) else loaded() if callable(loaded) else loaded
        except Exception as exc:  # any failure inside a third-party package
            raise ConfigError(
                f"{where} failed to load: {type(exc).__name__}: {exc}. Fix or uninstall {package}"
            ) from exc
        if not isinstance(spec, StrategySpec):
            raise ConfigError(
                f"{where} gave a {type(spec).__name__}; the entry point must name a "
                f"strategies.core.registry.StrategySpec or a callable returning one"
            )
        if spec.name != ep.name:
            raise ConfigError(f"{where} registers a strategy named {spec.name!r}; the names must match")
        if spec.name in REGISTRY:
            raise ConfigError(f"{where} clashes with the built-in strategy {spec.name!r}; rename the plug-in")
        if spec.name in specs:
            raise ConfigError(f"{where} clashes with the plug-in of package {specs[spec.name].origin!r}")
        for key in spec.keys:
            if key.name in KEYS_BY_NAME:
                raise ConfigError(
                    f"{where} declares the key {key.name!r}, which is a built-in run-config key; "
                    f"plug-ins declare keys of their own (e.g. prefixed with the strategy name)"
                )
            try:
                validated(key, key.default)
            except ConfigError as exc:
                raise ConfigError(f"{where}: the default of its key {key.name!r} is invalid: {exc}") from exc
        specs[spec.name] = replace(spec, origin=package)
    return specs


def all_specs() -> dict[str, StrategySpec]:
    """Built-in and plug-in strategies, sorted by name (plug-ins are loaded on every call)."""
    specs = {**REGISTRY, **plugin_specs()}
    return {name: specs[name] for name in sorted(specs)}


def get_spec(name: str) -> StrategySpec:
    """The registered strategy ``name``; ``ConfigError`` lists the known names."""
    specs = all_specs()
    if name not in specs:
        raise ConfigError(f"run config: strategy={name!r} is unknown; known strategies: {', '.join(specs)}")
    return specs[name]


def key_values(spec: StrategySpec, cfg: AppConfig) -> dict[str, Scalar]:
    """The typed value of each of ``spec``'s keys in ``cfg``.

    Built-in keys were validated with the rest of ``AppConfig``; a plug-in's keys are
    read from ``cfg.extra`` (keys not declared in ``KEYS``), defaulted and validated here
    with the same messages.
    """
    values: dict[str, Scalar] = {}
    for key in spec.keys:
        if key.name in KEYS_BY_NAME:
            values[key.name] = getattr(cfg, key.name.replace("-", "_"))
        else:
            values[key.name] = validated(key, cfg.extra.get(key.name, key.default))
    return values


def build_strategy(cfg: AppConfig) -> Strategy:
    """Build the strategy named by ``cfg.strategy``, after validating the keys it declares."""
    spec = get_spec(cfg.strategy)
    own = {k: v for k, v in key_values(spec, cfg).items() if k not in KEYS_BY_NAME}
    if own:
        cfg = replace(cfg, extra={**cfg.extra, **own})
    try:
        # compression != 'none' wraps any strategy (README "Update compression").
        return with_compression(cfg, spec.build(cfg))
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"run config: strategy {spec.name!r}: {exc}") from exc
