"""DP-FedAvg state for checkpoints, secret sampling, and the registry/config wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from server_app.reporting import format_round
from strategies.algorithms.fedavg import FedAvg
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import build_strategy
from strategies.wrappers.dp_config import DPConfig
from strategies.wrappers.dp_fedavg import DPFedAvg
from tasks.config import AppConfig, ConfigError
from tests.conftest import FakeGrid, config_record, make_reply

NODES = list(range(1, 41))


def _dp(**overrides: object) -> DPFedAvg:
    # weight_cap=1.0: the constructor's default before DPFedAvg took a DPConfig (run config: 100).
    settings: dict = dict(
        noise_multiplier=1.0,
        clip_norm=1.0,
        sampling_rate=0.25,
        delta=1e-5,
        noise_seed=5,
        population=40,
        weight_cap=1.0,
    )
    settings.update(overrides)
    return DPFedAvg(FedAvg(seed=3, min_available_nodes=1), DPConfig(**settings))


def _round(strategy: DPFedAvg, t: int, arrays):  # noqa: ANN001, ANN202
    messages = strategy.configure_train(t, arrays, config_record(local_epochs=1), FakeGrid(NODES))
    sampled = [m.metadata.dst_node_id for m in messages]
    replies = [
        make_reply(n, {"w": np.full(8, 0.3 * n, np.float32)}, {"num-examples": 10 + n}) for n in sampled
    ]
    return strategy.aggregate_train(t, replies)[0]


def test_state_round_trip_continues_the_same_run() -> None:
    # Prepare: an uninterrupted 4-round run with adaptive clipping and a noise seed.
    settings = dict(adaptive_clipping=True, count_noise_std=5.0)
    start = from_layers(["w"], [np.zeros(8, np.float32)])
    straight = _dp(**settings)
    arrays = start
    for t in (1, 2, 3, 4):
        arrays = _round(straight, t, arrays)

    # Execute: 2 rounds, checkpoint through JSON, a fresh strategy restores and runs 2 more.
    first = _dp(**settings)
    arrays2 = start
    for t in (1, 2):
        arrays2 = _round(first, t, arrays2)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = _dp(**settings)
    resumed.load_state_dict(state)
    for t in (3, 4):
        arrays2 = _round(resumed, t, arrays2)

    # Assert: same model, same clipping norm, same ε as the uninterrupted run.
    np.testing.assert_array_equal(to_layers(arrays)[0], to_layers(arrays2)[0])
    assert resumed.clip_norm == straight.clip_norm != 1.0
    assert resumed.round_metrics(4)["epsilon"] == pytest.approx(straight.round_metrics(4)["epsilon"])
    assert resumed.accountant.num_steps == 4
    assert resumed.round_metrics(1) == straight.round_metrics(1)


def test_without_a_noise_seed_the_sample_is_not_a_function_of_the_public_seed() -> None:
    arrays = from_layers(["w"], [np.zeros(2, np.float32)])
    picks = []
    for _ in range(2):
        strategy = _dp(noise_seed=-1)
        messages = strategy.configure_train(1, arrays, config_record(local_epochs=1), FakeGrid(NODES))
        picks.append(sorted(m.metadata.dst_node_id for m in messages))
    # Two entropy-seeded draws of Poisson(q=0.25) over 40 nodes agree with probability ~1e-8.
    assert picks[0] != picks[1]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"dp-noise-multiplier": 0.0}, "dp-noise-multiplier"),
        ({"dp-clip-norm": -1.0}, "dp-clip-norm"),
        ({"dp-sampling-rate": 1.5}, "dp-sampling-rate"),
        ({"dp-sampling-rate": 0.0}, "dp-sampling-rate"),
        ({"dp-delta": 1.0}, "dp-delta"),
        ({"dp-weight-cap": 0.0}, "dp-weight-cap"),
        ({"dp-estimator": "median"}, "dp-estimator"),
        ({"dp-population": 10, "dp-delta": 0.2}, "dp-delta"),
    ],
)
def test_bad_dp_run_config_fails_before_training_naming_the_key(override: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_strategy(AppConfig.from_run_config({"strategy": "dp-fedavg", **override}))


def test_registry_wraps_fedprox_and_the_round_line_shows_epsilon() -> None:
    strategy = build_strategy(
        AppConfig.from_run_config({"strategy": "dp-fedprox", "proximal-mu": 0.1, "dp-population": 40})
    )
    row = {
        "round": 3,
        "sampled": 4,
        "succeeded": 4,
        "failed": 0,
        "seconds": 1.0,
        "epsilon": 1.23456,
        "delta": 1e-5,
        "dp_sgd_epsilon": 0.5,
    }

    assert isinstance(strategy, DPFedAvg) and strategy.inner.proximal_mu == 0.1
    line = format_round(row, 10)
    assert "ε 1.235 (δ=1e-05)" in line and "client DP-SGD ε ≤ 0.500" in line
