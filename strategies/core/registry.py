"""Strategy registry: run config ``strategy='<name>'`` → a configured strategy.

Adding a strategy is one file plus one entry in :data:`REGISTRY`, or, from another
installed package, an entry point in the group ``edgebloom.strategies``
(``[project.entry-points."edgebloom.strategies"]``) naming a :class:`StrategySpec` or a
callable returning one (docs/writing-a-strategy.md). Each spec names the sub-config
that declares the keys it reads (``config``: a :class:`tasks.config.Section` in the
strategy's own file), so they are validated before training, listed by
``python -m strategies list`` and read back typed (``cfg.section(FedProxConfig)``);
built-ins and plug-ins alike. Unknown names fail with the list of known ones; a
plug-in that does not load, or reuses a built-in name or key, fails with the
package's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points

from flwr.serverapp.strategy import Strategy

from strategies.algorithms.fedadagrad import FedAdagrad
from strategies.algorithms.fedadam import FedAdam
from strategies.algorithms.fedavg import FedAvg, FedAvgOptions
from strategies.algorithms.fedavgm import FedAvgM, FedAvgMConfig
from strategies.algorithms.fedbuff import FedBuffConfig, fedbuff_from_config
from strategies.algorithms.fedprox import FedProx, FedProxConfig
from strategies.algorithms.fedyogi import FedYogi
from strategies.algorithms.median import FedMedian
from strategies.algorithms.multikrum import MultiKrum, MultiKrumConfig
from strategies.algorithms.norm_bounded import NormBoundedConfig, NormBoundedFedAvg
from strategies.algorithms.robust_base import RobustConfig
from strategies.algorithms.server_opt import (
    AdaptiveOptConfig,
    SecondMomentOptConfig,
    ServerOptConfig,
    ServerOptOptions,
)
from strategies.algorithms.trimmed_mean import FedTrimmedMean, TrimmedMeanConfig
from strategies.core.protocol import EdgeStrategy
from strategies.wrappers.compressed import CompressionConfig, with_compression
from strategies.wrappers.dp_config import DPConfig, DPFedProxConfig
from strategies.wrappers.secagg_config import SecAggConfig
from tasks.config import (
    AppConfig,
    ConfigError,
    Declared,
    Key,
    Scalar,
    Section,
    builtin_keys,
    declared_keys,
    validated,
)

#: Entry-point group through which installed packages register strategies.
ENTRY_POINT_GROUP = "edgebloom.strategies"


def common_kwargs(cfg: AppConfig) -> FedAvgOptions:
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


class ServerOptKwargs(ServerOptOptions):
    """What every server optimizer's constructor takes from the run config."""

    server_learning_rate: float


def server_opt_kwargs(cfg: AppConfig, own: ServerOptConfig) -> ServerOptKwargs:
    """Constructor arguments shared by the server optimizers (FedAdam, FedYogi, FedAdagrad, FedAvgM)."""
    return {
        "server_learning_rate": own.server_learning_rate,
        "proximal_mu": own.proximal_mu,
        **common_kwargs(cfg),
    }


# Builders: each reads its strategy's typed sub-config; common_kwargs adds the run-level part.
def _fedprox(cfg: AppConfig) -> FedProx:
    return FedProx(proximal_mu=cfg.section(FedProxConfig).proximal_mu, **common_kwargs(cfg))


def _median(cfg: AppConfig) -> Strategy:
    own = cfg.section(RobustConfig)
    return FedMedian(num_byzantine=own.robust_num_byzantine, **common_kwargs(cfg))


def _trimmed_mean(cfg: AppConfig) -> Strategy:
    own = cfg.section(TrimmedMeanConfig)
    return FedTrimmedMean(
        beta=own.trimmed_mean_beta,
        num_byzantine=own.robust_num_byzantine,
        **common_kwargs(cfg),
    )


def _multi_krum(cfg: AppConfig) -> Strategy:
    own = cfg.section(MultiKrumConfig)
    return MultiKrum(
        num_byzantine=own.robust_num_byzantine,
        num_selected=own.krum_num_selected,
        **common_kwargs(cfg),
    )


def _norm_bounded(cfg: AppConfig) -> Strategy:
    own = cfg.section(NormBoundedConfig)
    return NormBoundedFedAvg(max_norm=own.norm_bound, **common_kwargs(cfg))


def _fedadam(cfg: AppConfig) -> Strategy:
    own = cfg.section(SecondMomentOptConfig)
    return FedAdam(
        beta1=own.server_beta1, beta2=own.server_beta2, tau=own.server_tau, **server_opt_kwargs(cfg, own)
    )


def _fedyogi(cfg: AppConfig) -> Strategy:
    own = cfg.section(SecondMomentOptConfig)
    return FedYogi(
        beta1=own.server_beta1, beta2=own.server_beta2, tau=own.server_tau, **server_opt_kwargs(cfg, own)
    )


def _fedadagrad(cfg: AppConfig) -> Strategy:
    own = cfg.section(AdaptiveOptConfig)
    return FedAdagrad(beta1=own.server_beta1, tau=own.server_tau, **server_opt_kwargs(cfg, own))


def _fedavgm(cfg: AppConfig) -> Strategy:
    own = cfg.section(FedAvgMConfig)
    return FedAvgM(momentum=own.server_momentum, **server_opt_kwargs(cfg, own))


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
        Builds the strategy from the validated run config; it reads its own keys as the
        typed, frozen sub-config ``cfg.section(<config>)`` (validated and defaulted by
        the registry before ``build`` is called; a plug-in's are also in ``cfg.extra``).
    config : type of Section, optional
        The :class:`tasks.config.Section` declaring the run-config keys the strategy
        reads besides the run-level ones (sampling, local training, reply validation),
        in the strategy's own file. Keys are owned once: a plug-in's must not reuse a
        name any built-in owner declares. ``keys`` lists them.
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
    config: type[Section] | None = None
    deterministic: bool = True
    server_optimizer: bool = False
    order_invariant: bool = True
    contract_config: Mapping[str, Scalar] = field(default_factory=dict)
    origin: str = "built-in"

    def __post_init__(self) -> None:
        if self.config is not None and not (
            isinstance(self.config, type) and issubclass(self.config, Section)
        ):
            raise TypeError(
                f"strategy {self.name!r}: config must be a tasks.config.Section subclass (a frozen "
                f"dataclass whose fields are declared with tasks.config.declare), got {self.config!r}"
            )

    @property
    def keys(self) -> tuple[Key, ...]:
        """The run-config keys the strategy declares (its ``config``'s), in declaration order."""
        return self.config.keys() if self.config is not None else ()


REGISTRY: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec(
            "fedavg",
            "FedAvg (McMahan et al. 2017): example-weighted average; stragglers dropped",
            lambda cfg: FedAvg(**common_kwargs(cfg)),
        ),
        StrategySpec(
            "fedprox",
            "FedProx (Li et al. 2020): proximal term on clients; stragglers aggregated",
            _fedprox,
            config=FedProxConfig,
        ),
        StrategySpec(
            "median",
            "coordinate-wise median (Yin et al. 2018); tolerates f < n/2",
            _median,
            config=RobustConfig,
        ),
        StrategySpec(
            "trimmed-mean",
            "coordinate-wise beta-trimmed mean (Yin et al. 2018); needs beta >= f/n, 2*beta*n < n",
            _trimmed_mean,
            config=TrimmedMeanConfig,
        ),
        StrategySpec(
            "multi-krum",
            "Multi-Krum (Blanchard et al. 2017); needs n > 2f + 2",
            _multi_krum,
            config=MultiKrumConfig,
        ),
        StrategySpec(
            "norm-bounded",
            "FedAvg over server-clipped updates (norm-bound)",
            _norm_bounded,
            config=NormBoundedConfig,
        ),
        StrategySpec(
            "dp-fedavg",
            "weighted user-level DP-FedAvg (McMahan et al. 2018), accounted ε; adaptive clipping optional",
            lambda cfg: _dp(cfg, FedAvg(**common_kwargs(cfg))),
            config=DPConfig,
            deterministic=False,
            contract_config=DP_CONTRACT_CONFIG,
        ),
        StrategySpec(
            "dp-fedprox",
            "DP-FedAvg around FedProx: the clients' proximal term, user-level DP on the server",
            lambda cfg: _dp(cfg, _fedprox(cfg)),
            config=DPFedProxConfig,
            deterministic=False,
            contract_config=DP_CONTRACT_CONFIG,
        ),
        StrategySpec(
            "fedadam",
            "FedAdam (Reddi et al. 2021): Adam on the server over FedAvg's mean update",
            _fedadam,
            config=SecondMomentOptConfig,
            server_optimizer=True,
        ),
        StrategySpec(
            "fedyogi",
            "FedYogi (Reddi et al. 2021): Yogi on the server over FedAvg's mean update",
            _fedyogi,
            config=SecondMomentOptConfig,
            server_optimizer=True,
        ),
        StrategySpec(
            "fedadagrad",
            "FedAdagrad (Reddi et al. 2021): Adagrad on the server over FedAvg's mean update",
            _fedadagrad,
            config=AdaptiveOptConfig,
            server_optimizer=True,
        ),
        StrategySpec(
            "fedavgm",
            "FedAvgM (Hsu et al. 2019): server momentum over FedAvg's mean update",
            _fedavgm,
            config=FedAvgMConfig,
            server_optimizer=True,
        ),
        StrategySpec(
            "fedbuff",
            "FedBuff (Nguyen et al. 2022): asynchronous buffered aggregation, staleness weight 1/sqrt(1+tau)",
            lambda cfg: fedbuff_from_config(cfg, **common_kwargs(cfg)),
            config=FedBuffConfig,
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
        spec, reuses a built-in strategy name or another plug-in's name, declares a key a
        built-in owner or another plug-in already declares (naming that owner), or a key
        whose default fails its own check.
    """
    specs: dict[str, StrategySpec] = {}
    builtin = builtin_keys()
    plugin_keys: dict[str, tuple[Declared, str]] = {}  # name -> declaration, package
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
        if spec.config is not None:
            try:  # two fields of the plug-in's own config cannot declare one key either
                declared_keys([spec.config])
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
        for key in spec.keys:
            if key.name in builtin:
                raise ConfigError(
                    f"{where} declares the key {key.name!r}, which is a built-in run-config key "
                    f"(declared by {builtin[key.name].owner}); plug-ins declare keys of their own "
                    f"(e.g. prefixed with the strategy name)"
                )
            if key.name in plugin_keys:
                owner, other = plugin_keys[key.name]
                raise ConfigError(
                    f"{where} declares the key {key.name!r}, which the plug-in of package {other!r} "
                    f"already declares ({owner.owner}); each key has one owner: rename one of them"
                )
            try:
                validated(key, key.default)
            except ConfigError as exc:
                raise ConfigError(f"{where}: the default of its key {key.name!r} is invalid: {exc}") from exc
        if spec.config is not None:
            plugin_keys.update({name: (d, package) for name, d in declared_keys([spec.config]).items()})
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


def _secure(cfg: AppConfig, strategy: Strategy) -> Strategy:
    """``strategy`` under SecAgg+ when ``secure-aggregation='secagg+'``, or refused before training.

    Imported lazily: the wrapper loads the DP wrapper (and dp-accounting).
    """
    own = cfg.section(SecAggConfig)
    if not own.enabled:
        return strategy
    compression = cfg.section(CompressionConfig).compression
    if compression != "none":
        raise ConfigError(
            f"run config: compression={compression!r} cannot be combined with "
            "secure-aggregation='secagg+': clients mask their whole quantized update, which the "
            "server can only sum, not decode per client; set compression='none' (or "
            "secure-aggregation='none')"
        )
    from strategies.wrappers.secagg import SecAggPlus

    if not isinstance(strategy, EdgeStrategy):
        raise ConfigError(
            f"run config: strategy {cfg.strategy!r} cannot run under secure-aggregation='secagg+': it "
            "is not an edgebloom strategy with a secure-sum hook"
        )
    return SecAggPlus(strategy, own)


def builtin_sections() -> tuple[type[Section], ...]:
    """Every sub-config the built-in strategies and wrappers declare (for ``AppConfig``).

    A class shared by several strategies (``FedProxConfig``) is listed once per use; it
    is still one owner of its keys (:func:`tasks.config.declared_keys`).
    """
    strategies = tuple(spec.config for spec in REGISTRY.values() if spec.config is not None)
    return (*strategies, DPConfig, CompressionConfig, SecAggConfig)


def build_strategy(cfg: AppConfig) -> Strategy:
    """Build the strategy named by ``cfg.strategy``, after validating the keys it declares.

    Built-in keys were validated with the rest of ``AppConfig``; a plug-in's are read
    from ``cfg.extra``, defaulted and validated here (its sub-config is built once before
    ``build``, with the same messages), and also left typed in ``cfg.extra``.
    """
    spec = get_spec(cfg.strategy)
    if spec.config is not None:
        own = cfg.section(spec.config).values()
        new = {k: v for k, v in own.items() if k not in cfg.owned}
        if new:
            cfg = replace(cfg, extra={**cfg.extra, **new})
    try:
        # secure-aggregation='secagg+' wraps a linear strategy (README "Secure aggregation");
        # compression != 'none' wraps any strategy (README "Update compression").
        return with_compression(cfg, _secure(cfg, spec.build(cfg)))
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"run config: strategy {spec.name!r}: {exc}") from exc
