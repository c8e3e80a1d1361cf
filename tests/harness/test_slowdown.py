"""Tests for harness.slowdown: seeded per-partition slowdown factors and the sleep they cause."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.slowdown import slow_down, slowdown_factor


def factors(kind: str, seed: int, n: int = 2000, **kwargs: float) -> np.ndarray:
    settings = {"max_factor": 4.0, "sigma": 1.0, **kwargs}
    return np.array([slowdown_factor(kind, seed=seed, partition=p, **settings) for p in range(n)])


@pytest.mark.parametrize("kind", ["uniform", "lognormal"])
def test_factors_are_seeded_per_partition(kind: str) -> None:
    a, b, other = factors(kind, 42, 50), factors(kind, 42, 50), factors(kind, 43, 50)

    np.testing.assert_array_equal(a, b)  # same seed, same device speeds, whatever the strategy
    assert not np.array_equal(a, other)
    below_cap = a[a < 4.0]
    assert len(below_cap) >= 25 and len(set(below_cap.tolist())) == len(below_cap)  # partitions differ


def test_none_is_no_slowdown() -> None:
    assert set(factors("none", 42, 20).tolist()) == {1.0}


def test_uniform_factors_fill_one_to_max_evenly() -> None:
    f = factors("uniform", 0, max_factor=3.0)

    assert f.min() >= 1.0 and f.max() <= 3.0
    assert f.mean() == pytest.approx(2.0, abs=0.05)  # U[1, 3]: mean 2, std 2/sqrt(12) = 0.577
    assert f.std() == pytest.approx(2 / math.sqrt(12), abs=0.03)


def test_lognormal_factors_are_folded_and_capped() -> None:
    # Prepare: a cap no draw reaches (exp(1 * 10) >> any |z| in 2000 draws) shows the raw law.
    raw = factors("lognormal", 0, max_factor=1000.0, sigma=1.0)
    capped = factors("lognormal", 0, max_factor=3.0, sigma=1.0)

    # Assert: log f = |z| with z ~ N(0, 1): median 0.674, mean sqrt(2/pi) = 0.798.
    assert raw.min() >= 1.0
    assert np.median(np.log(raw)) == pytest.approx(0.674, abs=0.05)
    assert np.log(raw).mean() == pytest.approx(math.sqrt(2 / math.pi), abs=0.05)
    np.testing.assert_allclose(capped, np.minimum(raw, 3.0))
    assert (capped == 3.0).mean() == pytest.approx(2 * (1 - 0.8640), abs=0.04)  # P(|z| > ln 3 = 1.0986)


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("gamma", {}, "device-slowdown='gamma' must be one of none, uniform, lognormal"),
        ("uniform", {"max_factor": 0.5}, "device-slowdown-max=0.5 must be >= 1"),
        ("lognormal", {"sigma": 0.0}, "device-slowdown-sigma=0.0 must be > 0"),
        ("uniform", {"partition": -1}, "partition-id=-1 must be >= 0"),
    ],
)
def test_out_of_range_settings_are_refused(kind: str, kwargs: dict, message: str) -> None:
    settings = {"seed": 1, "partition": 0, "max_factor": 4.0, "sigma": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        slowdown_factor(kind, **settings)


def test_slow_down_sleeps_f_minus_one_times_the_training_time() -> None:
    # Prepare
    slept: list[float] = []
    config = {"device-slowdown": "uniform", "device-slowdown-max": 5.0, "device-slowdown-seed": 9}
    expected = slowdown_factor("uniform", seed=9, partition=3, max_factor=5.0, sigma=1.0)

    # Execute
    metrics = slow_down(config, {"partition-id": 3, "num-partitions": 10}, 2.0, sleep=slept.append)

    # Assert
    assert expected > 1.0
    assert slept == [pytest.approx((expected - 1.0) * 2.0)]
    assert metrics == {"slowdown-factor": expected, "slowdown-seconds": pytest.approx((expected - 1.0) * 2.0)}


@pytest.mark.parametrize(
    ("config", "node_config"),
    [
        ({}, {"partition-id": 3}),  # the server sent no slowdown: none
        ({"device-slowdown": "none"}, {"partition-id": 3}),
        ({"device-slowdown": "uniform"}, {"data-path": "/data/x.npz"}),  # a real device: not simulated
    ],
)
def test_no_sleep_without_a_simulated_slowdown(config: dict, node_config: dict) -> None:
    slept: list[float] = []

    assert slow_down(config, node_config, 2.0, sleep=slept.append) == {}
    assert slept == []


def test_the_server_sends_the_slowdown_in_the_train_config() -> None:
    from server_app.app import client_configs
    from tasks.config import AppConfig

    cfg = AppConfig.from_run_config({"device-slowdown": "lognormal", "device-slowdown-sigma": 0.5, "seed": 5})
    train, _ = client_configs(cfg, "digits-cnn", 10)
    plain, _ = client_configs(AppConfig.from_run_config({}), "digits-cnn", 10)

    assert train["device-slowdown"] == "lognormal" and train["device-slowdown-sigma"] == 0.5
    assert train["device-slowdown-max"] == 4.0 and train["device-slowdown-seed"] == 5
    assert "device-slowdown" not in plain


# ---------------------------------------------------------------- the slowdown mod, on its own
def _mod_reply(config: dict, node_config: dict, slept: list[float]) -> dict:
    """``slowdown_mod`` around a handler that reports 2 s of training; the reply's metrics."""
    from functools import partial

    from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

    from harness.slowdown import slowdown_mod

    msg = Message(RecordDict({"config": ConfigRecord(config)}), dst_node_id=1, message_type=MessageType.TRAIN)

    def handler(m: Message, ctx: Context) -> Message:
        metrics = MetricRecord({"train-seconds": 2.0, "num-examples": 10})
        return Message(content=RecordDict({"metrics": metrics}), reply_to=m)

    ctx = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})
    reply = partial(slowdown_mod, sleep=slept.append)(msg, ctx, handler)
    return dict(reply.content["metrics"])


def test_slowdown_mod_sleeps_after_training_and_reports_it() -> None:
    slept: list[float] = []
    config = {"device-slowdown": "uniform", "device-slowdown-max": 5.0, "device-slowdown-seed": 9}
    expected = slowdown_factor("uniform", seed=9, partition=3, max_factor=5.0, sigma=1.0)

    metrics = _mod_reply(config, {"partition-id": 3, "num-partitions": 10}, slept)

    assert slept == [pytest.approx((expected - 1.0) * 2.0)]
    assert metrics["slowdown-factor"] == expected and metrics["num-examples"] == 10


@pytest.mark.parametrize(
    ("config", "node_config"),
    [
        ({}, {"partition-id": 3}),
        ({"device-slowdown": "uniform", "device-slowdown-max": 5.0}, {"data-path": "/data/x.npz"}),
    ],
)
def test_slowdown_mod_does_nothing_unless_asked_on_a_simulated_node(config: dict, node_config: dict) -> None:
    slept: list[float] = []

    metrics = _mod_reply(config, node_config, slept)

    assert slept == [] and metrics == {"train-seconds": 2.0, "num-examples": 10}
