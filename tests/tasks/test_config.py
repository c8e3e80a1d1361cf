import dataclasses
import tomllib
from pathlib import Path

import numpy as np
import pytest

from strategies.algorithms.fedprox import FedProxConfig
from strategies.algorithms.server_opt import SecondMomentOptConfig
from strategies.wrappers.dp_config import ACCOUNTANT_NAMES, DPConfig
from tasks.config import (
    RUN_KEYS,
    AppConfig,
    ConfigError,
    Section,
    at_least,
    builtin_keys,
    declare,
    declared_keys,
    in_range,
)

REPO = Path(__file__).resolve().parents[2]


def _pyproject_table() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def test_every_pyproject_key_is_declared_by_an_owner() -> None:
    undeclared = sorted(set(_pyproject_table()) - set(builtin_keys()))
    assert undeclared == [], f"keys in pyproject.toml that no owner declares: {undeclared}"


def test_every_declared_key_is_in_pyproject_with_its_default() -> None:
    # Flower only passes keys that [tool.flwr.app.config] carries: a declared key missing
    # there could never be set, and a different default there would silently win.
    table = _pyproject_table()
    declared = {name: d.key.default for name, d in builtin_keys().items()}
    missing = sorted(set(declared) - set(table))
    assert missing == [], f"declared keys missing from pyproject.toml: {missing}"
    assert {k: table[k] for k in declared} == declared


def test_run_level_keys_are_the_fields_of_appconfig() -> None:
    names = {f.name for f in dataclasses.fields(AppConfig)} - {"owned", "extra"}
    assert {k.name.replace("-", "_") for k in RUN_KEYS} == names
    assert builtin_keys()["local-epochs"].owner == "tasks.config.AppConfig"
    assert builtin_keys()["proximal-mu"].owner == "strategies.algorithms.fedprox.FedProxConfig"


@dataclasses.dataclass(frozen=True)
class _OwnerA(Section):
    shared_knob: int = declare(1, "a knob", at_least(0))


@dataclasses.dataclass(frozen=True)
class _OwnerB(Section):
    knob: float = declare(0.5, "another knob", in_range(0, 1), name="shared-knob")


@dataclasses.dataclass(frozen=True)
class _SubOfA(_OwnerA):
    other_knob: int = declare(2, "a third knob")


def test_a_key_declared_by_two_owners_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as info:
        declared_keys([_OwnerA, _OwnerB])
    message = str(info.value)
    assert "'shared-knob'" in message
    assert f"{__name__}._OwnerA" in message and f"{__name__}._OwnerB" in message


def test_a_key_inherited_from_its_owner_is_not_a_second_declaration() -> None:
    declared = declared_keys([_OwnerA, _SubOfA, _OwnerA])
    assert declared["shared-knob"].owner == f"{__name__}._OwnerA"
    assert declared["other-knob"].owner == f"{__name__}._SubOfA"


def test_the_builtin_owners_declare_no_key_twice() -> None:
    # builtin_keys raises on a duplicate; the union covers run-level, strategy, wrapper and harness keys.
    owners = {d.owner.rsplit(".", 1)[0] for d in builtin_keys().values()}
    assert {"tasks.config", "strategies.wrappers.dp_config", "harness.attacks", "harness.slowdown"} <= owners


def test_a_sub_config_is_typed_frozen_and_validated_when_built() -> None:
    cfg = AppConfig.from_run_config({"server-learning-rate": 1, "proximal-mu": 0.3})
    own = cfg.section(SecondMomentOptConfig)

    # Typed: an int given for a float key comes back a float; values are the run's.
    assert own.server_learning_rate == 1.0 and isinstance(own.server_learning_rate, float)
    assert own.proximal_mu == 0.3 and own.server_beta2 == 0.99
    # Frozen.
    with pytest.raises(dataclasses.FrozenInstanceError):
        own.server_tau = 1.0  # type: ignore[misc]
    # Validated also when built in Python, with the run-config message.
    with pytest.raises(ConfigError, match=r"proximal-mu=-1.0 is invalid: must be >= 0"):
        FedProxConfig(proximal_mu=-1.0)
    with pytest.raises(ConfigError, match="must be of type float"):
        FedProxConfig(proximal_mu="0.1")  # type: ignore[arg-type]


def test_combinations_of_an_owners_keys_are_checked_when_its_sub_config_is_built() -> None:
    # Prepare: a DP combination no DP strategy can honour, in a run that does not use DP.
    cfg = AppConfig.from_run_config({"dp-estimator": "uniform", "dp-sampling": "poisson"})

    # Execute / Assert: the run config is fine; DP's sub-config is refused, naming the key.
    assert cfg.dp_estimator == "uniform"
    with pytest.raises(ConfigError, match="dp-estimator='uniform'"):
        cfg.section(DPConfig)


def test_owned_keys_stay_readable_as_flat_attributes() -> None:
    cfg = AppConfig.from_run_config({"dp-clip-norm": 2, "attack": "scale", "compression": "int8"})
    assert (cfg.dp_clip_norm, cfg.attack, cfg.compression) == (2.0, "scale", "int8")
    assert cfg.to_dict()["dp-clip-norm"] == 2.0 and cfg.to_dict()["num-server-rounds"] == 10
    with pytest.raises(AttributeError, match="no_such_key"):
        _ = cfg.no_such_key


def test_dp_accountant_names_are_the_accountants_registry() -> None:
    from strategies.numeric.accounting import ACCOUNTANTS

    assert ACCOUNTANT_NAMES == tuple(ACCOUNTANTS)


def test_defaults_validate() -> None:
    cfg = AppConfig.from_run_config({})
    assert cfg.strategy == "fedavg" and cfg.dataset == "digits" and cfg.resolved_partitioner == "iid"
    assert cfg.resolved_model((1, 8, 8)) == "digits-cnn"


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("proximal-mu", -0.1, ">= 0"),
        ("fraction-train", 0.0, "(0, 1]"),
        ("fraction-train", 1.5, "(0, 1]"),
        ("fraction-evaluate", -1.0, "[0, 1]"),
        ("num-server-rounds", 0, ">= 1"),
        ("partitioner", "random", "iid, dirichlet, shard, pathological"),
        ("model", "resnet-1000", "digits-cnn"),
        ("dataset", "imagenet", "digits, synthetic"),
        ("device", "tpu", "cuda"),
        ("num-server-rounds", 2.5, "int"),
        ("num-server-rounds", True, "integer, not a boolean"),
        # A round or a wait longer than a day is a typo or "forever": refused, not waited for.
        ("round-timeout", 86_401.0, "(0, 86400.0]"),
        ("wait-for-nodes-timeout", 1e9, "(0, 86400.0]"),
        ("round-timeout", 0.0, "(0, 86400.0]"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        AppConfig.from_run_config({key: value})
    assert f"{key}={value!r}" in str(info.value) and allowed in str(info.value)


def test_natural_partitioner_needs_a_dataset_with_devices() -> None:
    with pytest.raises(ConfigError, match="partitioner='natural'"):
        AppConfig.from_run_config({"partitioner": "natural", "dataset": "digits"})


def test_stragglers_need_more_than_one_epoch() -> None:
    with pytest.raises(ConfigError, match="local-epochs >= 2"):
        AppConfig.from_run_config({"straggler-fraction": 0.5, "local-epochs": 1})


def test_server_prepare_rejects_a_shape_the_model_cannot_take(tmp_path: Path) -> None:
    from server_app.app import prepare

    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=np.zeros((4, 28, 28), np.uint8),
        y_train=np.arange(4),
        x_test=np.zeros((2, 28, 28), np.uint8),
        y_test=np.arange(2),
    )
    cfg = AppConfig.from_run_config({"dataset": str(path), "model": "digits-cnn"})
    with pytest.raises(ConfigError, match=r"takes inputs of shape \(1, 8, 8\).*\(1, 28, 28\)"):
        prepare(cfg)
    _, model_name, _ = prepare(AppConfig.from_run_config({"dataset": str(path)}))
    assert model_name == "mnist-cnn"


def test_round_config_keys_the_server_forwards_are_declared_run_config_keys() -> None:
    # The server sends these settings under the same names the run config declares them
    # (tasks/wire.py); renaming one side alone would send a key no client reads.
    from tasks import wire

    forwarded = [
        wire.LOCAL_EPOCHS,
        wire.BATCH_SIZE,
        wire.LEARNING_RATE,
        wire.MOMENTUM,
        wire.WEIGHT_DECAY,
        wire.PROXIMAL_MU,
        wire.CLIP_NORM,
        wire.COMPRESSION,
        wire.TOPK_FRACTION,
        wire.DP_SGD_NOISE_MULTIPLIER,
        wire.DP_SGD_MAX_GRAD_NORM,
        wire.DP_SGD_DELTA,
        wire.DP_SECURE_NOISE,
        wire.DEVICE_SLOWDOWN,
        wire.DEVICE_SLOWDOWN_MAX,
        wire.DEVICE_SLOWDOWN_SIGMA,
        wire.ATTACK,
        wire.ATTACK_FRACTION,
        wire.ATTACK_SCALE,
        wire.SEED,
    ]
    assert [k for k in forwarded if k not in builtin_keys()] == []
