"""Strategy registry: run config ``strategy='<name>'`` → a configured strategy.

Adding a strategy is one file plus one entry in :data:`REGISTRY`. Unknown names fail
with the list of known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.serverapp.strategy import Strategy

from strategies.fedavg import FedAvg
from strategies.fedprox import FedProx
from strategies.median import FedMedian
from strategies.multikrum import MultiKrum
from strategies.norm_bounded import NormBoundedFedAvg
from strategies.trimmed_mean import FedTrimmedMean
from tasks.config import AppConfig, ConfigError


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
)


def _dp(cfg: AppConfig, inner: FedAvg) -> Strategy:
    """Wrap ``inner`` in weighted DP-FedAvg (imported lazily: dp-accounting is heavy)."""
    from strategies.dp_fedavg import build_dp_strategy

    return build_dp_strategy(cfg, inner)


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: how to build it and which run-config keys it reads."""

    name: str
    summary: str
    build: Callable[[AppConfig], Strategy]
    keys: tuple[str, ...] = ()


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
            keys=("proximal-mu",),
        ),
        StrategySpec(
            "median",
            "coordinate-wise median (Yin et al. 2018); tolerates f < n/2",
            lambda cfg: FedMedian(num_byzantine=cfg.robust_num_byzantine, **common_kwargs(cfg)),  # type: ignore[arg-type]
            keys=("robust-num-byzantine",),
        ),
        StrategySpec(
            "trimmed-mean",
            "coordinate-wise beta-trimmed mean (Yin et al. 2018); needs beta >= f/n, 2*beta*n < n",
            lambda cfg: FedTrimmedMean(
                beta=cfg.trimmed_mean_beta,
                num_byzantine=cfg.robust_num_byzantine,
                **common_kwargs(cfg),  # type: ignore[arg-type]
            ),
            keys=("trimmed-mean-beta", "robust-num-byzantine"),
        ),
        StrategySpec(
            "multi-krum",
            "Multi-Krum (Blanchard et al. 2017); needs n > 2f + 2",
            lambda cfg: MultiKrum(
                num_byzantine=cfg.robust_num_byzantine,
                num_selected=cfg.krum_num_selected,
                **common_kwargs(cfg),  # type: ignore[arg-type]
            ),
            keys=("robust-num-byzantine", "krum-num-selected"),
        ),
        StrategySpec(
            "norm-bounded",
            "FedAvg over server-clipped updates (norm-bound)",
            lambda cfg: NormBoundedFedAvg(max_norm=cfg.norm_bound, **common_kwargs(cfg)),  # type: ignore[arg-type]
            keys=("norm-bound",),
        ),
        StrategySpec(
            "dp-fedavg",
            "weighted user-level DP-FedAvg (McMahan et al. 2018), accounted ε; adaptive clipping optional",
            lambda cfg: _dp(cfg, FedAvg(**common_kwargs(cfg))),  # type: ignore[arg-type]
            keys=DP_KEYS,
        ),
        StrategySpec(
            "dp-fedprox",
            "DP-FedAvg around FedProx: the clients' proximal term, user-level DP on the server",
            lambda cfg: _dp(cfg, FedProx(proximal_mu=cfg.proximal_mu, **common_kwargs(cfg))),  # type: ignore[arg-type]
            keys=("proximal-mu", *DP_KEYS),
        ),
    )
}


def get_spec(name: str) -> StrategySpec:
    """The registered strategy ``name``; ``ConfigError`` lists the known names."""
    if name not in REGISTRY:
        raise ConfigError(
            f"run config: strategy={name!r} is unknown; known strategies: {', '.join(sorted(REGISTRY))}"
        )
    return REGISTRY[name]


def build_strategy(cfg: AppConfig) -> Strategy:
    """Build the strategy named by ``cfg.strategy``."""
    spec = get_spec(cfg.strategy)
    try:
        return spec.build(cfg)
    except ValueError as exc:
        raise ConfigError(f"run config: strategy {spec.name!r}: {exc}") from exc
