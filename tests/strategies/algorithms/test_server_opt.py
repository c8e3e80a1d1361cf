"""Server-optimizer strategies (FedAdam, FedYogi, FedAdagrad, FedAvgM) built from the run config.

Known values: one 2-element layer, three rounds. Each round two clients reply, with 100
and 300 training examples; their example-weighted mean update is ``DELTAS[t]``, so these
tests check the weighting, the pseudo-gradient against the round's global model and the
update rule together. Hyperparameters (run config): server-learning-rate 0.5,
server-beta1 0.5, server-beta2 0.75, server-tau 0.1 (so v starts at τ² = 0.01),
server-momentum 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from strategies.algorithms.fedavgm import FedAvgM
from strategies.algorithms.server_opt import STATE_KEY
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import build_strategy
from tasks.config import AppConfig, ConfigError
from tests.conftest import FakeGrid, config_record, make_reply

HYPER = {
    "server-learning-rate": 0.5,
    "server-beta1": 0.5,
    "server-beta2": 0.75,
    "server-tau": 0.1,
    "server-momentum": 0.5,
}
W0 = [1.0, -2.0]
DELTAS = [[0.4, -0.2], [0.4, 0.2], [-0.8, 0.1]]
SPREAD = np.array([0.1, -0.3])  # client A moves Delta + 3*SPREAD, client B Delta - SPREAD

# m_t = 0.5 m_{t-1} + 0.5 Delta_t (all three adaptive rules):
M = [[0.2, -0.1], [0.3, 0.05], [-0.25, 0.075]]
# v_{-1} = tau^2 = 0.01.
# FedAdam, v_t = 0.75 v_{t-1} + 0.25 Delta_t^2:
#   coordinate 0: 0.0075 + 0.04 = 0.0475; 0.035625 + 0.04 = 0.075625; 0.05671875 + 0.16 = 0.21671875
#   coordinate 1: 0.0075 + 0.01 = 0.0175; 0.013125 + 0.01 = 0.023125; 0.01734375 + 0.0025 = 0.01984375
ADAM_V = [[0.0475, 0.0175], [0.075625, 0.023125], [0.21671875, 0.01984375]]
# FedYogi, v_t = v_{t-1} - 0.25 Delta_t^2 sign(v_{t-1} - Delta_t^2):
#   coordinate 0: v below Delta^2 every round: 0.01 + 0.04, + 0.04, + 0.16
#   coordinate 1: 0.01 + 0.01, + 0.01 (0.02 < 0.04), then 0.03 > 0.01: - 0.0025
YOGI_V = [[0.05, 0.02], [0.09, 0.03], [0.25, 0.0275]]
# FedAdagrad, v_t = v_{t-1} + Delta_t^2:
ADAGRAD_V = [[0.17, 0.05], [0.33, 0.09], [0.97, 0.1]]


def adaptive_trajectory(v: list[list[float]]) -> list[list[float]]:
    """w_t after each round: w += 0.5 * m_t / (sqrt(v_t) + 0.1), from the hand-computed m_t, v_t."""
    w, out = list(W0), []
    for m_t, v_t in zip(M, v, strict=True):
        w = [w[i] + 0.5 * m_t[i] / (math.sqrt(v_t[i]) + 0.1) for i in range(2)]
        out.append(w)
    return out


EXPECTED_W = {
    "fedadam": adaptive_trajectory(ADAM_V),
    "fedyogi": adaptive_trajectory(YOGI_V),
    "fedadagrad": adaptive_trajectory(ADAGRAD_V),
    # FedAvgM, u_t = 0.5 u_{t-1} + Delta_t: u = [0.4, -0.2], [0.6, 0.1], [-0.5, 0.15]; w += 0.5 u.
    "fedavgm": [[1.2, -2.1], [1.5, -2.05], [1.25, -1.975]],
}


def build(name: str, **overrides: object):  # noqa: ANN201
    return build_strategy(AppConfig.from_run_config({"strategy": name, **HYPER, **overrides}))


def play_round(strategy, t: int, weights: np.ndarray, delta: list[float]) -> np.ndarray:  # noqa: ANN001
    """Round ``t``: clients 1 (100 examples) and 2 (300) whose weighted mean update is ``delta``."""
    arrays = from_layers(["w"], [weights])
    strategy.configure_train(t, arrays, config_record(), FakeGrid([1, 2]))
    d = np.array(delta)
    replies = [
        make_reply(1, {"w": weights + d + 3 * SPREAD}, {"num-examples": 100}),
        make_reply(2, {"w": weights + d - SPREAD}, {"num-examples": 300}),
    ]
    new, _ = strategy.aggregate_train(t, replies)
    return np.array(to_layers(new)[0])


@pytest.mark.parametrize("name", sorted(EXPECTED_W))
def test_one_round_matches_hand_computation(name: str) -> None:
    # Prepare
    strategy = build(name)

    # Execute
    w1 = play_round(strategy, 1, np.array(W0), DELTAS[0])

    # Assert
    np.testing.assert_allclose(w1, EXPECTED_W[name][0], rtol=1e-12)
    assert strategy.state_dict()[STATE_KEY]["step"] == 1


@pytest.mark.parametrize("name", sorted(EXPECTED_W))
def test_three_rounds_match_hand_computation(name: str) -> None:
    # Prepare
    strategy = build(name)
    w = np.array(W0)

    # Execute / Assert after every round, so a wrong intermediate state cannot cancel out.
    for t in range(3):
        w = play_round(strategy, t + 1, w, DELTAS[t])
        np.testing.assert_allclose(w, EXPECTED_W[name][t], rtol=1e-12)
    state = strategy.state_dict()[STATE_KEY]
    assert state["name"] == name and state["step"] == 3
    np.testing.assert_allclose(state["m"][0], [-0.5, 0.15] if name == "fedavgm" else M[2], rtol=1e-12)


def test_fedadam_one_round_by_hand() -> None:
    # Prepare: coordinate 1 alone. m = -0.1, v = 0.0175, step = 0.5 * -0.1 / (sqrt(0.0175) + 0.1).
    strategy = build("fedadam")

    # Execute
    w1 = play_round(strategy, 1, np.array(W0), DELTAS[0])

    # Assert: sqrt(0.0175) = 0.13228756555322954 -> -2 - 0.05 / 0.23228756555322954.
    assert w1[1] == pytest.approx(-2.0 - 0.05 / 0.23228756555322954, rel=1e-12)


def test_registry_passes_the_run_config_to_the_optimizer() -> None:
    strategy = build("fedyogi", **{"proximal-mu": 0.3})

    opt = strategy.optimizer
    assert (opt.name, opt.lr, opt.beta1, opt.beta2, opt.tau) == ("fedyogi", 0.5, 0.5, 0.75, 0.1)
    assert opt.initial_accumulator == pytest.approx(0.01)  # v_{-1} = tau^2 (Reddi et al., Algorithm 2)
    assert strategy.proximal_mu == 0.3
    assert build("fedavgm").optimizer.momentum == 0.5


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server-learning-rate", 0.0),
        ("server-beta1", 1.0),
        ("server-beta2", -0.1),
        ("server-tau", 0.0),
        ("server-momentum", 1.0),
    ],
)
def test_out_of_range_hyperparameters_fail_before_training(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"{key}={value} is invalid"):
        AppConfig.from_run_config({"strategy": "fedadam", key: value})


def test_a_round_without_valid_replies_keeps_the_model_and_the_optimizer_state() -> None:
    # Prepare: one good round, then a round where every node failed.
    strategy = build("fedadam")
    w1 = play_round(strategy, 1, np.array(W0), DELTAS[0])
    before = strategy.state_dict()[STATE_KEY]
    strategy.configure_train(2, from_layers(["w"], [w1]), config_record(), FakeGrid([1, 2]))

    # Execute
    new, _ = strategy.aggregate_train(2, [make_reply(1, error="boom"), make_reply(2, error="boom")])

    # Assert: no model, no step; the next good round continues from round 1's state.
    assert new is None
    after = strategy.state_dict()[STATE_KEY]
    assert after["step"] == before["step"] == 1
    np.testing.assert_array_equal(after["v"][0], before["v"][0])
    w2 = play_round(strategy, 3, w1, DELTAS[1])
    np.testing.assert_allclose(w2, EXPECTED_W["fedadam"][1], rtol=1e-12)


def test_integer_buffers_keep_the_global_value_and_only_float_layers_are_optimized() -> None:
    # Prepare: a float layer and an integer counter (BatchNorm's num_batches_tracked).
    strategy = build("fedadam")
    arrays = from_layers(["w", "count"], [np.array([1.0, -2.0], np.float32), np.array(10, np.int64)])
    strategy.configure_train(1, arrays, config_record(), FakeGrid([1, 2]))
    replies = [
        make_reply(1, {"w": np.array([1.4, -2.2], np.float32), "count": np.array(20)}, {"num-examples": 1}),
        make_reply(2, {"w": np.array([1.4, -2.2], np.float32), "count": np.array(30)}, {"num-examples": 1}),
    ]

    # Execute
    new, _ = strategy.aggregate_train(1, replies)

    # Assert: the counter is the global model's (strategies/core/buffers.py); the float layer took
    # Adam's step, and the optimizer's state holds the float layer only.
    w, count = to_layers(new)
    assert count.dtype == np.int64 and int(count) == 10
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, EXPECTED_W["fedadam"][0], rtol=1e-6)
    assert [a.shape for a in strategy.optimizer.state.m] == [(2,)]


@pytest.mark.parametrize("name", sorted(EXPECTED_W))
def test_proximal_mu_is_sent_and_stragglers_are_kept_as_in_fedprox(name: str) -> None:
    # Prepare
    nodes = list(range(1, 11))
    arrays = from_layers(["w"], [np.zeros(2, np.float32)])
    common = {"local-epochs": 5, "straggler-fraction": 0.3}
    prox = build(name, **common, **{"proximal-mu": 0.1})
    plain = build(name, **common)

    # Execute
    prox_msgs = list(prox.configure_train(1, arrays, config_record(), FakeGrid(nodes)))
    plain_msgs = list(plain.configure_train(1, arrays, config_record(), FakeGrid(nodes)))

    # Assert: with mu > 0 every sampled client trains (stragglers with fewer epochs) and gets mu;
    # with mu = 0 nothing is sent about it and stragglers are dropped, as FedAvg does.
    prox_configs = [dict(m.content["config"]) for m in prox_msgs]
    assert len(prox_msgs) == 10 and all(c["proximal-mu"] == 0.1 for c in prox_configs)
    assert sum(c["local-epochs"] < 5 for c in prox_configs) == 3
    assert len(plain_msgs) == 7
    assert all("proximal-mu" not in m.content["config"] for m in plain_msgs)


def test_loading_another_optimizers_checkpoint_is_refused() -> None:
    # Prepare
    adam = build("fedadam")
    play_round(adam, 1, np.array(W0), DELTAS[0])
    yogi = build("fedyogi")

    # Execute / Assert
    with pytest.raises(ValueError, match="'fedadam' server-optimizer state, this run uses 'fedyogi'"):
        yogi.load_state_dict(adam.state_dict())


def test_state_before_the_first_round_restores_to_a_fresh_optimizer() -> None:
    # Prepare: a checkpoint taken before any step.
    fresh = FedAvgM(server_learning_rate=1.0, momentum=0.0)
    state = fresh.state_dict()

    # Execute
    other = FedAvgM(server_learning_rate=1.0, momentum=0.0)
    other.load_state_dict(state)

    # Assert: lr=1, momentum=0 is plain FedAvg: the round's mean update is applied as is.
    assert state[STATE_KEY] is None and other.optimizer.state is None
    w1 = play_round(other, 1, np.array(W0), DELTAS[0])
    np.testing.assert_allclose(w1, np.array(W0) + DELTAS[0], rtol=1e-12)


@pytest.mark.parametrize("name", ["fedadam", "fedavgm"])
def test_restored_moments_are_checked_against_the_model_before_training(name: str) -> None:
    # Prepare: moments saved for a float (2, 3) layer and a float (2,) layer; the int
    # counter is not optimized. The second model has a (3, 3) layer instead.
    strategy = build_strategy(AppConfig.from_run_config({"strategy": name}))
    moments = [np.zeros((2, 3)), np.zeros(2)]
    saved = {"name": name, "m": moments, "v": moments if name == "fedadam" else [], "step": 1}
    strategy.load_state_dict({STATE_KEY: saved})  # type: ignore[attr-defined]
    names = ["w", "b", "steps"]
    same = [np.ones((2, 3), np.float32), np.ones(2, np.float32), np.array(4)]
    other = [np.ones((3, 3), np.float32), np.ones(2, np.float32), np.array(4)]

    # Execute
    fits = strategy.check_state(names, same)  # type: ignore[attr-defined]
    misfit = strategy.check_state(names, other)  # type: ignore[attr-defined]

    # Assert: one clear reason, naming the optimizer, the moment and the shapes.
    assert fits is None
    assert misfit == (
        f"{name} state 'm' has layer shapes [(2, 3), (2,)], but this model's floating-point "
        "layers ['w', 'b'] have [(3, 3), (2,)]"
    )
