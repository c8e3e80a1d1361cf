"""The DP wrapper's keys: declared once in ``strategies/wrappers/dp_config.py``, validated once."""

from __future__ import annotations

import dataclasses
import math

import pytest

from strategies.algorithms.fedavg import FedAvg
from strategies.core.registry import REGISTRY, build_strategy
from strategies.wrappers.dp_config import DPConfig, DPFedProxConfig
from strategies.wrappers.dp_fedavg import DPFedAvg
from tasks.config import AppConfig, ConfigError


def test_the_run_configs_dp_keys_are_one_typed_frozen_dpconfig() -> None:
    # Prepare
    cfg = AppConfig.from_run_config({"dp-clip-norm": 2, "dp-population": 40, "dp-noise-seed": 3})

    # Execute
    own = cfg.section(DPConfig)

    # Assert: typed (an int for a float key is a float), the run's values, the rest defaults.
    assert own == DPConfig(clip_norm=2.0, population=40, noise_seed=3)
    assert isinstance(own.clip_norm, float) and own.estimator == "fixed" and own.weight_cap == 100.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        own.clip_norm = 3.0  # type: ignore[misc]


def test_the_wrapper_gets_the_one_config_object_the_registry_validated() -> None:
    strategy = build_strategy(
        AppConfig.from_run_config({"strategy": "dp-fedavg", "dp-population": 40, "dp-clip-norm": 0.5})
    )

    assert isinstance(strategy, DPFedAvg)
    assert strategy.config == DPConfig(population=40, clip_norm=0.5)
    assert strategy.clip_norm == 0.5 and strategy.noise_seed is None


@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("min_total_weight", "dp-min-total-weight"),
        ("max_epsilon", "dp-max-epsilon"),
        ("count_noise_std", "dp-count-noise-std"),
    ],
)
def test_an_infinite_setting_is_refused_naming_the_key(field: str, key: str) -> None:
    # The ranges (>= 0) admit inf, which TOML can spell; DP cannot honour it.
    with pytest.raises(ConfigError, match=rf"{key}=inf is invalid: must be a finite number"):
        DPConfig(**{field: math.inf})


def test_a_bad_dp_setting_never_reaches_the_wrapper() -> None:
    # Validation happens once, when the config is built: there is no DPFedAvg to construct.
    with pytest.raises(ConfigError, match="dp-accountant='pld' is invalid"):
        DPConfig(accountant="pld", sampling="fixed-size")
    strategy = DPFedAvg(FedAvg(min_available_nodes=1), DPConfig(sampling="fixed-size", estimator="uniform"))
    assert strategy.estimator == "uniform" and strategy.sampling == "fixed-size"


def test_dp_fedprox_declares_fedprox_mu_and_the_dp_keys_each_once() -> None:
    names = [k.name for k in DPFedProxConfig.keys()]
    assert names[0] == "proximal-mu" and names[1:] == [k.name for k in DPConfig.keys()]
    assert REGISTRY["dp-fedprox"].keys == DPFedProxConfig.keys()
