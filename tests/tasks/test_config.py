import tomllib
from pathlib import Path

import numpy as np
import pytest

from tasks.config import KEYS, AppConfig, ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_pyproject_defaults_equal_the_declared_keys() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert pyproject == {k.name: k.default for k in KEYS}


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
