"""Tests for strategies.numeric.server_opt: hand-computed steps, Yogi's sign, checkpoints, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strategies.numeric.server_opt import (
    SERVER_OPTIMIZERS,
    FedAdagradOptimizer,
    FedAdamOptimizer,
    FedAvgMOptimizer,
    FedYogiOptimizer,
    ServerOptimizer,
    ServerOptState,
    create_server_optimizer,
)

# One 2-element layer, three rounds. Hyperparameters: lr=0.5, beta1=0.5, beta2=0.75,
# tau=0.1, v_{-1}=0 (explicit), FedAvgM momentum=0.5.
W0 = [1.0, -2.0]
DELTAS = [[0.4, -0.2], [0.4, 0.2], [-0.8, 0.1]]
LR, BETA1, BETA2, TAU = 0.5, 0.5, 0.75, 0.1

# First moment, shared by the three adaptive rules (m_t = 0.5 m_{t-1} + 0.5 Delta_t):
#   coordinate 0: 0.2, 0.3, -0.25        coordinate 1: -0.1, 0.05, 0.075
M = [[0.2, -0.1], [0.3, 0.05], [-0.25, 0.075]]

# FedAdam, v_t = 0.75 v_{t-1} + 0.25 Delta_t^2:
#   coordinate 0: 0.04, 0.07, 0.2125     coordinate 1: 0.01, 0.0175, 0.015625
ADAM_V = [[0.04, 0.01], [0.07, 0.0175], [0.2125, 0.015625]]
# FedYogi, v_t = v_{t-1} - 0.25 Delta_t^2 sign(v_{t-1} - Delta_t^2):
#   coordinate 0: v below Delta^2 every round, so it grows: 0 + 0.04, + 0.04, + 0.16
#   coordinate 1: 0 + 0.01, + 0.01 (0.01 < 0.04), then 0.02 > 0.01 so - 0.0025
YOGI_V = [[0.04, 0.01], [0.08, 0.02], [0.24, 0.0175]]
# FedAdagrad, v_t = v_{t-1} + Delta_t^2:
#   coordinate 0: 0.16, 0.32, 0.96       coordinate 1: 0.04, 0.08, 0.09
ADAGRAD_V = [[0.16, 0.04], [0.32, 0.08], [0.96, 0.09]]


def adaptive_trajectory(v: list[list[float]]) -> list[list[float]]:
    """w_t per round from the hand-computed m_t, v_t: w += 0.5 * m / (sqrt(v) + 0.1)."""
    w = list(W0)
    out = []
    for m_t, v_t in zip(M, v, strict=True):
        w = [w[i] + LR * m_t[i] / (math.sqrt(v_t[i]) + TAU) for i in range(2)]
        out.append(w)
    return out


# FedAvgM, u_t = 0.5 u_{t-1} + Delta_t; w += 0.5 u_t:
#   u: [0.4, -0.2], [0.6, 0.1], [-0.5, 0.15]
#   w: [1.2, -2.1], [1.5, -2.05], [1.25, -1.975]
AVGM_W = [[1.2, -2.1], [1.5, -2.05], [1.25, -1.975]]

EXPECTED_W = {
    "fedadam": adaptive_trajectory(ADAM_V),
    "fedyogi": adaptive_trajectory(YOGI_V),
    "fedadagrad": adaptive_trajectory(ADAGRAD_V),
    "fedavgm": AVGM_W,
}


def make_optimizer(name: str) -> ServerOptimizer:
    if name == "fedavgm":
        return FedAvgMOptimizer(lr=LR, momentum=0.5)
    if name == "fedadagrad":
        return FedAdagradOptimizer(lr=LR, beta1=BETA1, tau=TAU, initial_accumulator=0.0)
    cls = FedAdamOptimizer if name == "fedadam" else FedYogiOptimizer
    return cls(lr=LR, beta1=BETA1, beta2=BETA2, tau=TAU, initial_accumulator=0.0)


def run(opt: ServerOptimizer, weights: list[np.ndarray], deltas: list[list[float]]) -> list[np.ndarray]:
    for d in deltas:
        weights = opt.step(weights, [np.array(d)])
    return weights


# --------------------------------------------------------------------------- #
# Known values                                                                #
# --------------------------------------------------------------------------- #


def test_adam_one_step_by_hand() -> None:
    # Prepare: m = 0.5 * [0.4, -0.2] = [0.2, -0.1]; v = 0.25 * [0.16, 0.04] = [0.04, 0.01].
    opt = make_optimizer("fedadam")

    # Execute
    (w1,) = opt.step([np.array(W0)], [np.array(DELTAS[0])])

    # Assert: 1 + 0.5 * 0.2 / (0.2 + 0.1) = 4/3; -2 + 0.5 * -0.1 / (0.1 + 0.1) = -2.25.
    np.testing.assert_allclose(w1, [4.0 / 3.0, -2.25], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(EXPECTED_W))
def test_one_step_matches_hand_computation(name: str) -> None:
    # Prepare
    opt = make_optimizer(name)

    # Execute
    (w1,) = run(opt, [np.array(W0)], DELTAS[:1])

    # Assert
    np.testing.assert_allclose(w1, EXPECTED_W[name][0], rtol=1e-12)
    assert opt.state is not None and opt.state.step == 1


@pytest.mark.parametrize("name", sorted(EXPECTED_W))
def test_three_steps_match_hand_computation(name: str) -> None:
    # Prepare
    opt = make_optimizer(name)
    weights = [np.array(W0)]

    # Execute / Assert after every round, so a wrong intermediate state cannot cancel out.
    for t in range(3):
        weights = opt.step(weights, [np.array(DELTAS[t])])
        np.testing.assert_allclose(weights[0], EXPECTED_W[name][t], rtol=1e-12)
    assert opt.state is not None and opt.state.step == 3


@pytest.mark.parametrize(
    ("name", "expected_v"), [("fedadam", ADAM_V), ("fedyogi", YOGI_V), ("fedadagrad", ADAGRAD_V)]
)
def test_moments_after_three_steps(name: str, expected_v: list[list[float]]) -> None:
    # Prepare
    opt = make_optimizer(name)

    # Execute
    run(opt, [np.array(W0)], DELTAS)

    # Assert
    assert opt.state is not None
    np.testing.assert_allclose(opt.state.m[0], M[2], rtol=1e-12)
    np.testing.assert_allclose(opt.state.v[0], expected_v[2], rtol=1e-12)


def test_default_initial_accumulator_is_tau_squared() -> None:
    # Prepare: Algorithm 2 starts from v_{-1} >= tau^2; the default is tau^2 = 0.01.
    opt = FedAdamOptimizer(lr=LR, beta1=BETA1, beta2=BETA2, tau=TAU)

    # Execute
    (w1,) = opt.step([np.array(W0)], [np.array(DELTAS[0])])

    # Assert: v = 0.75 * 0.01 + 0.25 * Delta^2 = [0.0475, 0.0175].
    assert opt.state is not None
    np.testing.assert_allclose(opt.state.v[0], [0.0475, 0.0175], rtol=1e-12)
    np.testing.assert_allclose(
        w1,
        [1.0 + 0.5 * 0.2 / (math.sqrt(0.0475) + 0.1), -2.0 + 0.5 * -0.1 / (math.sqrt(0.0175) + 0.1)],
        rtol=1e-12,
    )


def test_no_bias_correction() -> None:
    # Prepare: beta1 = 0.9 and a zero start; with bias correction the first step would be
    # lr * Delta / (|Delta| + tau) instead of lr * 0.1 * Delta / (0.1 * |Delta| + tau).
    opt = FedAdamOptimizer(lr=1.0, beta1=0.9, beta2=0.99, tau=0.5, initial_accumulator=0.0)

    # Execute
    (w1,) = opt.step([np.array([0.0])], [np.array([1.0])])

    # Assert: m = 0.1, v = 0.01, step = 0.1 / (0.1 + 0.5).
    np.testing.assert_allclose(w1, [0.1 / 0.6], rtol=1e-12)


def test_yogi_moves_v_towards_delta_squared_by_sign() -> None:
    # Prepare: v_{-1} = 0.25 (exact binary fractions so sign(0) is really hit);
    # Delta^2 = [0.0625, 0.25, 1.0] is below, equal to and above v_{-1}.
    delta = [np.array([0.25, 0.5, 1.0])]
    yogi = FedYogiOptimizer(lr=1.0, beta2=0.75, tau=0.1, initial_accumulator=0.25)
    adam = FedAdamOptimizer(lr=1.0, beta2=0.75, tau=0.1, initial_accumulator=0.25)

    # Execute
    yogi.step([np.zeros(3)], delta)
    adam.step([np.zeros(3)], delta)

    # Assert: Yogi subtracts / keeps / adds 0.25 * Delta^2:
    #   0.25 - 0.015625, 0.25, 0.25 + 0.25; Adam decays: 0.1875 + 0.25 * Delta^2.
    assert yogi.state is not None and adam.state is not None
    np.testing.assert_array_equal(yogi.state.v[0], [0.234375, 0.25, 0.5])
    np.testing.assert_array_equal(adam.state.v[0], [0.203125, 0.25, 0.4375])


def test_fedavgm_without_momentum_is_fedavg() -> None:
    # Prepare
    opt = FedAvgMOptimizer(lr=1.0, momentum=0.0)
    weights = [np.array([1.0, 2.0]), np.array([[3.0]])]

    # Execute
    for _ in range(2):
        weights = opt.step(weights, [np.array([0.5, -1.0]), np.array([[0.25]])])

    # Assert: two plain w + Delta steps.
    np.testing.assert_allclose(weights[0], [2.0, 0.0])
    np.testing.assert_allclose(weights[1], [[3.5]])


def test_output_keeps_layer_dtypes_and_rounds_integer_layers() -> None:
    # Prepare
    opt = FedAvgMOptimizer(lr=1.0, momentum=0.0)
    weights = [np.array([1.0], dtype=np.float32), np.array([10], dtype=np.int64)]

    # Execute
    new = opt.step(weights, [np.array([0.5], dtype=np.float32), np.array([2.6])])

    # Assert: 12.6 rounds to 13, not truncated to 12.
    assert new[0].dtype == np.float32 and new[1].dtype == np.int64
    np.testing.assert_array_equal(new[0], [1.5])
    np.testing.assert_array_equal(new[1], [13])


# --------------------------------------------------------------------------- #
# Checkpointing                                                               #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", sorted(SERVER_OPTIMIZERS))
def test_state_round_trip_resumes_identically(name: str) -> None:
    # Prepare: two layers of float32 weights, five rounds of random updates.
    rng = np.random.default_rng(7)
    weights = [rng.normal(size=(3,)).astype(np.float32), rng.normal(size=(2, 2)).astype(np.float32)]
    deltas = [[rng.normal(size=(3,)), rng.normal(size=(2, 2))] for _ in range(5)]
    uninterrupted = make_optimizer(name)
    first, resumed = make_optimizer(name), make_optimizer(name)

    # Execute: 5 steps in one go vs 2 steps, checkpoint, restore into a new optimizer, 3 steps.
    w_a = weights
    for d in deltas:
        w_a = uninterrupted.step(w_a, d)
    w_b = weights
    for d in deltas[:2]:
        w_b = first.step(w_b, d)
    assert first.state is not None
    resumed.state = ServerOptState.from_state_dict(first.state.state_dict())
    for d in deltas[2:]:
        w_b = resumed.step(w_b, d)

    # Assert: bit-identical weights and state.
    for a, b in zip(w_a, w_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert uninterrupted.state is not None and resumed.state is not None
    assert resumed.state.step == uninterrupted.state.step == 5
    for a, b in zip(
        uninterrupted.state.m + uninterrupted.state.v, resumed.state.m + resumed.state.v, strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_state_dict_is_a_copy() -> None:
    # Prepare
    opt = make_optimizer("fedadam")
    run(opt, [np.array(W0)], DELTAS[:1])
    assert opt.state is not None
    saved = opt.state.state_dict()

    # Execute
    saved["m"][0][:] = 99.0  # type: ignore[index]

    # Assert
    np.testing.assert_allclose(opt.state.m[0], M[0])


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"m": [np.zeros(2)], "v": [np.zeros(2)]}, "missing"),
        ({"m": [np.zeros(2)], "v": [np.zeros(2)], "step": -1}, "step"),
        ({"m": [np.zeros(2)], "v": [np.zeros(2)], "step": 1.5}, "step"),
        ({"m": [np.zeros(2)], "v": [np.zeros(3)], "step": 1}, "shapes"),
        ({"m": [np.array([np.nan, 0.0])], "v": [], "step": 1}, "non-finite"),
    ],
)
def test_from_state_dict_rejects_malformed_state(state: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ServerOptState.from_state_dict(state)


def test_restoring_a_state_without_v_into_an_adaptive_optimizer_fails() -> None:
    # Prepare: a FedAvgM checkpoint (no second moment) loaded into FedYogi.
    avgm = make_optimizer("fedavgm")
    run(avgm, [np.array(W0)], DELTAS[:1])
    assert avgm.state is not None
    yogi = make_optimizer("fedyogi")
    yogi.state = ServerOptState.from_state_dict(avgm.state.state_dict())

    # Execute / Assert
    with pytest.raises(ValueError, match="state\\['v'\\]"):
        yogi.step([np.array(W0)], [np.array(DELTAS[1])])


# --------------------------------------------------------------------------- #
# Validation                                                                  #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("cls", "kwargs", "param"),
    [
        (FedAdamOptimizer, {"lr": 0.0}, "lr"),
        (FedAdamOptimizer, {"lr": -1.0}, "lr"),
        (FedAdamOptimizer, {"lr": math.nan}, "lr"),
        (FedAdamOptimizer, {"lr": True}, "lr"),
        (FedAdamOptimizer, {"lr": 0.1, "beta1": 1.0}, "beta1"),
        (FedAdamOptimizer, {"lr": 0.1, "beta1": -0.1}, "beta1"),
        (FedAdamOptimizer, {"lr": 0.1, "beta2": 1.0}, "beta2"),
        (FedYogiOptimizer, {"lr": 0.1, "beta2": -0.5}, "beta2"),
        (FedYogiOptimizer, {"lr": 0.1, "tau": 0.0}, "tau"),
        (FedAdagradOptimizer, {"lr": 0.1, "tau": -1e-3}, "tau"),
        (FedAdagradOptimizer, {"lr": 0.1, "initial_accumulator": -1.0}, "initial_accumulator"),
        (FedAvgMOptimizer, {"lr": 0.1, "momentum": 1.0}, "momentum"),
        (FedAvgMOptimizer, {"lr": 0.1, "momentum": -0.1}, "momentum"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_parameter(
    cls: type[ServerOptimizer], kwargs: dict[str, float], param: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{param} must be"):
        cls(**kwargs)


def test_mismatched_layers_raise() -> None:
    # Prepare
    opt = make_optimizer("fedadam")

    # Execute / Assert
    with pytest.raises(ValueError, match="shape"):
        opt.step([np.zeros(2)], [np.zeros(3)])
    with pytest.raises(ValueError, match="layers"):
        opt.step([np.zeros(2)], [np.zeros(2), np.zeros(1)])
    with pytest.raises(ValueError, match="at least one layer"):
        opt.step([], [])


def test_invalid_delta_leaves_state_unchanged() -> None:
    # Prepare
    opt = make_optimizer("fedyogi")
    weights = run(opt, [np.array(W0)], DELTAS[:1])
    assert opt.state is not None
    before = opt.state.state_dict()

    # Execute
    with pytest.raises(ValueError, match="non-finite"):
        opt.step(weights, [np.array([np.inf, 0.0])])
    with pytest.raises(ValueError, match="state holds"):
        opt.step([np.zeros(3)], [np.zeros(3)])

    # Assert
    after = opt.state.state_dict()
    assert after["step"] == before["step"] == 1
    np.testing.assert_array_equal(after["m"][0], before["m"][0])  # type: ignore[index]
    np.testing.assert_array_equal(after["v"][0], before["v"][0])  # type: ignore[index]


def test_registry_builds_by_name_and_rejects_unknown_names() -> None:
    # Execute
    opt = create_server_optimizer("fedyogi", lr=0.01, tau=1e-3)

    # Assert
    assert isinstance(opt, FedYogiOptimizer) and opt.lr == 0.01
    with pytest.raises(ValueError, match="fedadagrad, fedadam, fedavgm, fedyogi"):
        create_server_optimizer("fedsgd", lr=0.1)
