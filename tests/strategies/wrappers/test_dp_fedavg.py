"""The DP-FedAvg wrapper on hand-made replies: estimator, noise, sampling, budget, config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strategies.algorithms.fedavg import FedAvg
from strategies.algorithms.fedprox import FedProx
from strategies.core.control import StopTraining
from strategies.core.records import from_layers, to_layers
from strategies.numeric.accounting import create_accountant
from strategies.wrappers.dp_config import DPConfig
from strategies.wrappers.dp_fedavg import CLIP_NORM_KEY, UNCLIPPED_KEY, DPFedAvg
from tasks.config import ConfigError
from tests.conftest import FakeGrid, config_record, make_reply

DIM = 20_000


def _dp(inner: FedAvg | None = None, **overrides: object) -> DPFedAvg:
    # weight_cap=1.0: the constructor's default before DPFedAvg took a DPConfig (run config: 100).
    settings: dict = dict(
        noise_multiplier=1.0, clip_norm=1.0, sampling_rate=0.5, delta=1e-5, noise_seed=1, weight_cap=1.0
    )
    settings.update(overrides)
    return DPFedAvg(inner or FedAvg(seed=3, min_available_nodes=1), DPConfig(**settings))


def _configure(strategy: DPFedAvg, server_round: int, nodes: list[int], dim: int = DIM) -> list[int]:
    arrays = from_layers(["w"], [np.zeros(dim, np.float32)])
    messages = strategy.configure_train(server_round, arrays, config_record(local_epochs=1), FakeGrid(nodes))
    return [m.metadata.dst_node_id for m in messages]


def _reply(node: int, value: float, num_examples: int, dim: int = DIM, **metrics: float):
    return make_reply(node, {"w": np.full(dim, value, np.float32)}, {"num-examples": num_examples, **metrics})


def test_fixed_denominator_aggregate_plus_noise_of_std_sigma() -> None:
    # Prepare: N=6, q=0.5 fixed-size -> 3 sampled; W = N = 6 (weight cap 100), qW = 3.
    strategy = _dp(noise_multiplier=0.03, sampling="fixed-size", population=6, weight_cap=100.0)
    sampled = _configure(strategy, 1, list(range(1, 7)))
    assert len(sampled) == 3
    # Norms: 0.005*sqrt(20000) = 0.707 (kept), 0.02*sqrt(20000) = 2.83 (clipped to 1).
    replies = [
        _reply(sampled[0], 0.005, num_examples=50),  # w_k = 0.5
        _reply(sampled[1], 0.02, num_examples=300),  # w_k = 1
        make_reply(sampled[2], error="node crashed"),
    ]

    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)

    # Assert: expected = (0.5*0.005 + 1*0.02/2.8284) / 3, sigma = z S / (qW) = 0.03 / 3 = 0.01.
    expected = (0.5 * 0.005 + 0.02 / (0.02 * math.sqrt(DIM))) / 3
    deviation = to_layers(arrays)[0].astype(np.float64) - expected
    assert abs(deviation.std() - 0.01) < 0.05 * 0.01
    assert abs(deviation.mean()) < 3 * 0.01 / math.sqrt(DIM)
    assert strategy.round_metrics(1)["noise_std"] == pytest.approx(0.01)
    assert strategy.round_metrics(1)["sampled_clients"] == 3
    assert strategy.stats[1].succeeded == 2 and strategy.stats[1].failed == 1


def test_clipped_denominator_uses_the_larger_denominator_and_twice_the_noise() -> None:
    # N=4, q=0.5 -> 2 sampled; W_min = 1 so q W_min = 0.5 < sum w_k = 1.5.
    strategy = _dp(
        noise_multiplier=0.01, estimator="clipped", sampling="fixed-size", population=4, min_total_weight=1.0
    )
    sampled = _configure(strategy, 1, [1, 2, 3, 4])
    replies = [_reply(sampled[0], 0.002, num_examples=1), _reply(sampled[1], 0.004, num_examples=1)]
    strategy.weight_cap = 2.0  # w_k = 0.5 each: sum 1.0 > q W_min = 0.5

    arrays, _ = strategy.aggregate_train(1, replies)

    # (0.5*0.002 + 0.5*0.004) / 1.0 = 0.003; sigma = 2 z S / (q W_min) = 0.02 / 0.5 = 0.04.
    deviation = to_layers(arrays)[0].astype(np.float64) - 0.003
    assert abs(deviation.std() - 0.04) < 0.05 * 0.04


def test_poisson_sampling_picks_each_node_with_probability_q_reproducibly() -> None:
    nodes = list(range(200))
    strategy = _dp(sampling_rate=0.1, population=200)
    again = _dp(sampling_rate=0.1, population=200)

    picks = [_configure(strategy, t, nodes, dim=2) for t in range(1, 51)]

    share = sum(len(p) for p in picks) / (200 * 50)
    assert abs(share - 0.1) < 0.01  # binomial std 0.003
    assert len({len(p) for p in picks}) > 1  # the sample size varies, as Poisson sampling does
    assert _configure(again, 7, nodes, dim=2) == picks[6]


def test_a_round_with_nobody_sampled_still_releases_noise_and_is_accounted() -> None:
    strategy = _dp(sampling_rate=0.001, population=2, noise_multiplier=1.0, weight_cap=1.0)
    assert _configure(strategy, 1, [1, 2], dim=1000) == []

    arrays, metrics = strategy.aggregate_train(1, [])

    # sigma = z S / (q W) = 1 / (0.001 * 2) = 500.
    assert metrics is None and abs(to_layers(arrays)[0].std() - 500) < 0.1 * 500
    assert strategy.round_metrics(1)["epsilon"] > 0 and strategy.round_metrics(1)["sampled_clients"] == 0


def test_stops_before_the_round_that_would_exceed_max_epsilon() -> None:
    # Prepare: the budget lies between epsilon after one and after two rounds.
    reference = create_accountant("rdp", sampling="poisson")
    reference.step(noise_multiplier=1.0, sampling_rate=0.5)
    eps1 = reference.get_epsilon(1e-5)
    reference.step(noise_multiplier=1.0, sampling_rate=0.5)
    eps2 = reference.get_epsilon(1e-5)
    strategy = _dp(max_epsilon=(eps1 + eps2) / 2, population=4)
    sampled = _configure(strategy, 1, [1, 2, 3, 4], dim=4)
    strategy.aggregate_train(1, [_reply(n, 0.1, 10, dim=4) for n in sampled])

    # Execute / Assert
    with pytest.raises(StopTraining, match=r"round 2 would reach ε=.*dp-max-epsilon=.*stopped after round 1"):
        _configure(strategy, 2, [1, 2, 3, 4], dim=4)
    assert strategy.round_metrics(1)["epsilon"] == pytest.approx(eps1)
    assert strategy.accountant.num_steps == 1


def test_epsilon_is_recorded_every_round_and_grows() -> None:
    strategy = _dp(population=4)
    epsilons = []
    for t in (1, 2, 3):
        sampled = _configure(strategy, t, [1, 2, 3, 4], dim=4)
        strategy.aggregate_train(t, [_reply(n, 0.1, 10, dim=4) for n in sampled])
        epsilons.append(strategy.round_metrics(t)["epsilon"])

    assert strategy.round_metrics(0)["epsilon"] is None
    assert 0 < epsilons[0] < epsilons[1] < epsilons[2]


def test_client_side_clipping_sends_the_clip_norm_with_the_inner_config() -> None:
    inner = FedProx(proximal_mu=0.1, local_epochs=3, min_available_nodes=1)
    strategy = _dp(inner, clipping="client", sampling_rate=1.0, delta=1e-3)
    arrays = from_layers(["w"], [np.zeros(2, np.float32)])

    messages = strategy.configure_train(1, arrays, config_record(batch_size=10), FakeGrid([1, 2, 3, 4]))

    configs = [dict(m.content["config"]) for m in messages]
    assert len(configs) == 4 and all(c[CLIP_NORM_KEY] == 1.0 for c in configs)
    assert all(c["proximal-mu"] == 0.1 and c["local-epochs"] == 3 and c["batch-size"] == 10 for c in configs)
    server_side = _dp(sampling_rate=1.0, delta=1e-3).configure_train(
        1, arrays, config_record(), FakeGrid([1, 2, 3, 4])
    )
    assert len(server_side) == 4 and all(CLIP_NORM_KEY not in m.content["config"] for m in server_side)


def test_client_side_bits_drive_adaptive_clipping_and_oversized_updates_are_clipped() -> None:
    strategy = _dp(
        clipping="client",
        adaptive_clipping=True,
        sampling="fixed-size",
        population=4,
        noise_multiplier=0.1,
        count_noise_std=0.1,
    )
    sampled = _configure(strategy, 1, [1, 2, 3, 4], dim=1)
    # Both report "clipped" (bit 0) -> C must grow; 5.0 exceeds C = 1 and is clipped again.
    replies = [_reply(n, 5.0, 10, dim=1, **{UNCLIPPED_KEY: 0}) for n in sampled]

    strategy.aggregate_train(1, replies)

    assert strategy.clip_norm > 1.0


@pytest.mark.parametrize(("norm", "shrinks"), [(0.01, True), (100.0, False)])
def test_adaptive_clipping_moves_c_towards_the_update_norms(norm: float, shrinks: bool) -> None:
    # m = 20 of N = 40; sigma_b = 1 so z_Delta = (0.5^-2 - 2^-2)^(-1/2) = 1/sqrt(3.75).
    strategy = _dp(
        noise_multiplier=0.5,
        sampling="fixed-size",
        population=40,
        adaptive_clipping=True,
        count_noise_std=1.0,
    )
    sampled = _configure(strategy, 1, list(range(40)), dim=1)
    replies = [_reply(n, norm, 10, dim=1) for n in sampled]

    strategy.aggregate_train(1, replies)

    assert (strategy.clip_norm < 1.0) is shrinks and strategy.clip_norm != 1.0
    # sigma = z_Delta S / (q W) with q W = 20 and the C in force during the round.
    expected_std = (0.5**-2 - 2.0**-2) ** -0.5 / 20
    assert strategy.round_metrics(1)["noise_std"] == pytest.approx(expected_std)
    assert strategy.round_metrics(1)["clip_norm"] == 1.0


def test_model_noise_is_plain_fedavg_plus_noise_without_epsilon() -> None:
    strategy = _dp(estimator="model-noise", sampling="fixed-size", population=4, noise_multiplier=0.02)
    sampled = _configure(strategy, 1, [1, 2, 3, 4])
    replies = [_reply(sampled[0], 1.0, 100), _reply(sampled[1], 4.0, 200)]

    arrays, _ = strategy.aggregate_train(1, replies)

    # FedAvg: (100*1 + 200*4) / 300 = 3; sigma = z S / m = 0.02 / 2 = 0.01.
    deviation = to_layers(arrays)[0].astype(np.float64) - 3.0
    assert abs(deviation.std() - 0.01) < 0.05 * 0.01
    assert strategy.round_metrics(1)["epsilon"] is None


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"noise_multiplier": 0.0}, "dp-noise-multiplier"),
        ({"noise_multiplier": -1.0}, "dp-noise-multiplier"),
        ({"clip_norm": 0.0}, "dp-clip-norm"),
        ({"sampling_rate": 0.0}, "dp-sampling-rate"),
        ({"sampling_rate": 1.5}, "dp-sampling-rate"),
        ({"delta": 0.0}, "dp-delta"),
        ({"delta": 1.0}, "dp-delta"),
        ({"delta": 0.01, "population": 100}, "dp-delta"),
        ({"weight_cap": 0.0}, "dp-weight-cap"),
        ({"estimator": "median"}, "dp-estimator"),
        ({"clipping": "nowhere"}, "dp-clipping"),
        ({"sampling": "random"}, "dp-sampling"),
        ({"accountant": "moments"}, "dp-accountant"),
        ({"accountant": "pld", "sampling": "fixed-size"}, "dp-accountant"),
        ({"adaptive_clipping": True, "noise_multiplier": 1.0, "count_noise_std": 0.5}, "dp-count-noise-std"),
        ({"estimator": "model-noise", "max_epsilon": 3.0}, "dp-max-epsilon"),
    ],
)
def test_bad_dp_config_fails_at_construction_naming_the_key(override: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        _dp(**override)


def test_delta_too_large_for_the_connected_population_fails_at_round_one() -> None:
    strategy = _dp(delta=0.2)  # population from the 10 connected nodes: needs delta < 0.1

    with pytest.raises(ConfigError, match=r"dp-delta=0.2 must be < 1/population = 1/10"):
        _configure(strategy, 1, list(range(10)), dim=2)


def test_adaptive_clipping_count_noise_default_is_checked_once_population_is_known() -> None:
    # sigma_b = q N / 20 = 0.5 * 20 / 20 = 0.5, so z = 1.0 >= 2 sigma_b.
    strategy = _dp(adaptive_clipping=True, noise_multiplier=1.0)

    with pytest.raises(ValueError, match="dp-count-noise-std"):
        _configure(strategy, 1, list(range(20)), dim=2)


# ------------------------------------------------ issue 12: accounting is always a valid bound
def test_uniform_estimator_with_poisson_sampling_is_refused_naming_the_sound_combinations() -> None:
    # Execute / Assert: sigma = z S / m with a random m has no valid epsilon.
    with pytest.raises(ValueError, match="dp-estimator='uniform'") as excinfo:
        _dp(estimator="uniform", sampling="poisson")
    message = str(excinfo.value)
    assert "fixed-size" in message and "'fixed' or 'clipped'" in message and "2S/(m+1)" in message
    # The sound combination is still accepted.
    assert _dp(estimator="uniform", sampling="fixed-size", population=4).estimator == "uniform"


def test_fixed_size_with_fewer_connected_nodes_accounts_the_rate_actually_used() -> None:
    # Prepare: N = 10, q = 0.2 -> m = 2 per round; only 5 nodes connect, so each has chance 2/5.
    strategy = _dp(sampling="fixed-size", sampling_rate=0.2, population=10, delta=1e-3)
    reference = create_accountant("rdp", sampling="fixed-size", population_size=5)
    reference.step(noise_multiplier=1.0, sampling_rate=0.4)
    declared = create_accountant("rdp", sampling="fixed-size", population_size=10)
    declared.step(noise_multiplier=1.0, sampling_rate=0.2)

    # Execute
    sampled = _configure(strategy, 1, [1, 2, 3, 4, 5], dim=4)
    strategy.aggregate_train(1, [_reply(n, 0.1, 10, dim=4) for n in sampled])

    # Assert: the accountant used 2/5, never the smaller declared 2/10, and says so.
    metrics = strategy.round_metrics(1)
    assert len(sampled) == 2 and metrics["sampling_rate"] == pytest.approx(0.4)
    assert metrics["epsilon"] == pytest.approx(reference.get_epsilon(1e-3))
    assert metrics["epsilon"] > declared.get_epsilon(1e-3)


def test_fixed_size_rates_per_round_survive_a_checkpoint_and_drive_the_budget() -> None:
    # Prepare: round 1 with 5 of N = 10 connected (rate 2/5), round 2 with all 10 (rate 2/10).
    strategy = _dp(sampling="fixed-size", sampling_rate=0.2, population=10, delta=1e-3)
    for t, nodes in ((1, [1, 2, 3, 4, 5]), (2, list(range(1, 11)))):
        sampled = _configure(strategy, t, nodes, dim=4)
        strategy.aggregate_train(t, [_reply(n, 0.1, 10, dim=4) for n in sampled])
    reference = create_accountant("rdp", sampling="fixed-size", population_size=10)
    reference.step(noise_multiplier=1.0, sampling_rate=0.4, population_size=5)
    reference.step(noise_multiplier=1.0, sampling_rate=0.2)

    # Execute: a resumed run restores the mixed history from the checkpoint.
    resumed = _dp(sampling="fixed-size", sampling_rate=0.2, population=10, delta=1e-3)
    resumed.load_state_dict(strategy.state_dict())

    # Assert
    assert [r["sampling_rate"] for r in map(strategy.round_metrics, (1, 2))] == pytest.approx([0.4, 0.2])
    assert strategy.round_metrics(2)["epsilon"] == pytest.approx(reference.get_epsilon(1e-3))
    assert resumed.accountant.get_epsilon(1e-3) == pytest.approx(reference.get_epsilon(1e-3))


def test_adaptive_clipping_releases_the_noisy_count_when_nobody_replied() -> None:
    # Prepare: sigma_b = 5 > z / 2; nobody replies in round 1.
    strategy = _dp(adaptive_clipping=True, count_noise_std=5.0, population=4)
    _configure(strategy, 1, [1, 2, 3, 4], dim=4)

    # Execute
    strategy.aggregate_train(1, [])

    # Assert: C moved by the noisy count (b~ = N(0, 25)/m_hat + 1/2), as in every other round.
    assert strategy.clip_norm != 1.0
    assert strategy.round_metrics(1)["clip_norm"] == 1.0


def test_secure_noise_refuses_a_known_seed() -> None:
    with pytest.raises(ValueError, match="dp-noise-seed.*dp-secure-noise"):
        _dp(secure_noise=True, noise_seed=5)


def test_secure_noise_aggregates_with_the_secure_generator() -> None:
    # Prepare: N = 4, fixed-size q = 0.5 -> qW = 2 (cap 100); sigma = z S / (qW) = 0.5.
    strategy = _dp(secure_noise=True, noise_seed=-1, sampling="fixed-size", population=4, weight_cap=100.0)
    sampled = _configure(strategy, 1, [1, 2, 3, 4])

    arrays, _ = strategy.aggregate_train(1, [_reply(n, 0.0, 10) for n in sampled])

    assert type(strategy._noise_rng).__name__ == "SecureNoiseGenerator"
    assert abs(to_layers(arrays)[0].std() - 0.5) < 0.05 * 0.5


def test_dp_sgd_epsilon_of_every_node_is_kept_per_round() -> None:
    strategy = _dp(sampling_rate=1.0, population=4, delta=1e-3)
    sampled = _configure(strategy, 1, [1, 2, 3], dim=4)
    replies = [_reply(n, 0.1, 10, dim=4, **{"dp-sgd-epsilon": float(n)}) for n in sampled]

    strategy.aggregate_train(1, replies)

    stats = strategy.stats[1]
    assert stats.dp_sgd_epsilon_by_node == {1: 1.0, 2: 2.0, 3: 3.0} and stats.dp_sgd_epsilon == 3.0
