"""Integer buffers and the final check of the released model (strategies/core/buffers.py).

The contract suite checks the rule for every registered strategy; here are its pure
functions on known values, the three failures measured before the rule (norm-bounded
and DP-FedAvg shrinking a 0.10 weight step when a counter moved by 100, Multi-Krum
choosing an attacker because of counters), and the paths where a released model
really is non-finite and the round keeps the previous one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord

from strategies.algorithms.fedavg import FedAvg
from strategies.core.buffers import (
    NON_FINITE_MODEL,
    check_released_model,
    is_parameter,
    parameter_indices,
    select,
    with_previous_buffers,
)
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import DP_CONTRACT_CONFIG, build_strategy
from tasks.config import AppConfig
from tests.conftest import FakeGrid, config_record, make_reply

FLOAT32_MAX = np.float32(np.finfo(np.float32).max)
NAMES = ["w", "bn.num_batches_tracked", "b"]


def build(**run_config: Any) -> Any:
    return build_strategy(AppConfig.from_run_config(run_config))


def model(w: np.ndarray, count: int, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"w": w.astype(np.float32), "bn.num_batches_tracked": np.array(count, np.int64), "b": b}


def play(strategy: Any, start: dict[str, np.ndarray], replies: list[Any], server_round: int = 1) -> Any:
    arrays = from_layers(list(start), list(start.values()))
    nodes = [m.metadata.src_node_id for m in replies]
    strategy.configure_train(server_round, arrays, config_record(), FakeGrid(nodes))
    new, _ = strategy.aggregate_train(server_round, replies)
    return new


def as_dict(record: ArrayRecord) -> dict[str, np.ndarray]:
    return dict(zip(record.keys(), to_layers(record), strict=True))


# --------------------------------------------------------------------------- #
# The pure functions                                                          #
# --------------------------------------------------------------------------- #


def test_floating_arrays_are_parameters_and_everything_else_is_a_buffer() -> None:
    layers = [np.zeros(2, np.float32), np.array(3, np.int64), np.zeros(1, np.float64), np.zeros(1, np.uint8)]

    assert [is_parameter(a.dtype) for a in layers] == [True, False, True, False]
    assert parameter_indices(layers) == [0, 2]
    assert [a.dtype for a in select(layers, [0, 2])] == [np.float32, np.float64]


def test_with_previous_buffers_puts_parameters_in_place_and_keeps_the_previous_buffers() -> None:
    previous = [np.zeros(2, np.float32), np.array(7, np.int64), np.zeros(1, np.float32)]
    new = [np.ones(2, np.float32), np.full(1, 2.0, np.float32)]

    merged = with_previous_buffers(new, previous, [0, 2])

    assert merged[0] is new[0] and merged[2] is new[1]
    assert merged[1] is previous[1] and int(merged[1]) == 7
    with pytest.raises(ValueError, match="1 parameter arrays for 2 parameter positions"):
        with_previous_buffers(new[:1], previous, [0, 2])


def test_check_released_model_names_the_first_non_finite_array() -> None:
    good = [np.ones(2, np.float32), np.array(5, np.int64)]
    bad = [np.ones(2, np.float32), np.array([np.inf, np.nan, 1.0], np.float32)]

    assert check_released_model(["a", "n"], good) is None
    rejection = check_released_model(["a", "b"], bad)
    assert rejection is not None and rejection.reason == NON_FINITE_MODEL == "non-finite-model"
    assert rejection.detail.startswith("b: 2 non-finite value(s)")


# --------------------------------------------------------------------------- #
# The failures measured before the rule                                       #
# --------------------------------------------------------------------------- #

#: A weight step of L2 norm 0.10 (4 coordinates of 0.05) next to a counter step of 100.
STEP = np.full(4, 0.05)


def counter_replies(num_nodes: int) -> tuple[dict[str, np.ndarray], list[Any]]:
    start = model(np.zeros(4), 10, np.zeros(1, np.float32))
    replies = [
        make_reply(n, model(STEP, 110, np.zeros(1, np.float32)), {"num-examples": 1000})
        for n in range(1, num_nodes + 1)
    ]
    return start, replies


def test_norm_bounded_keeps_a_0_10_weight_step_when_the_counter_moves_by_100() -> None:
    # Prepare: norm-bound 1.0 is ten times the weight step; before the rule the counter's
    # 100 made the update's norm ~100 and clipped the weights to a 0.001 step.
    start, replies = counter_replies(3)

    # Execute
    new = play(build(strategy="norm-bounded", **{"norm-bound": 1.0}), start, replies)

    # Assert: the full 0.10 step, and the global counter.
    result = as_dict(new)
    np.testing.assert_allclose(result["w"], STEP, rtol=1e-6)
    assert int(result["bn.num_batches_tracked"]) == 10


def test_dp_fedavg_keeps_a_0_10_weight_step_when_the_counter_moves_by_100() -> None:
    # Prepare: clip norm 1.0; noise std z*S/(qW) = 0.01/3 per coordinate (fixed seed).
    start, replies = counter_replies(3)
    strategy = build(strategy="dp-fedavg", **DP_CONTRACT_CONFIG, **{"dp-clip-norm": 1.0})

    # Execute
    new = play(strategy, start, replies)

    # Assert: the step is 0.05 per coordinate up to the noise (it was 0.0005 when the counter
    # was clipped with the weights), and the counter is the global one, un-noised.
    result = as_dict(new)
    np.testing.assert_allclose(result["w"], STEP, atol=0.015)
    assert result["bn.num_batches_tracked"].dtype == np.int64 and int(result["bn.num_batches_tracked"]) == 10


def test_multi_krum_chooses_honest_clients_whatever_their_counters() -> None:
    # Prepare: 4 honest clients with a 0.05 step and counters spread by their data sizes;
    # an attacker sends +3.0 with a counter in the middle of theirs. With counters in the
    # distances, the attacker was the most central client and Krum (m = 1) chose it.
    start = model(np.zeros(4), 0, np.zeros(1, np.float32))
    honest = [
        make_reply(n, model(STEP + 0.01 * n, 100 * n, np.zeros(1, np.float32)), {"num-examples": 100})
        for n in (1, 2, 3, 4)
    ]
    attacker = make_reply(5, model(np.full(4, 3.0), 250, np.zeros(1, np.float32)), {"num-examples": 100})
    strategy = build(strategy="multi-krum", **{"robust-num-byzantine": 1, "krum-num-selected": 1})

    # Execute
    new = play(strategy, start, [*honest, attacker])

    # Assert: an honest client's weights, the global counter.
    result = as_dict(new)
    assert np.all(result["w"] < 0.2), result["w"]
    assert int(result["bn.num_batches_tracked"]) == 0


# --------------------------------------------------------------------------- #
# A non-finite model is never released, never raised                          #
# --------------------------------------------------------------------------- #


def edge_replies(num_nodes: int) -> list[Any]:
    """Finite replies at ±float32 max with unequal example counts."""
    examples = [220, 158, 518, 1305, 1048]
    w = np.array([FLOAT32_MAX, -FLOAT32_MAX, FLOAT32_MAX, -FLOAT32_MAX], np.float32)
    return [
        make_reply(n, model(w, 5, np.zeros(1, np.float32)), {"num-examples": examples[n - 1]})
        for n in range(1, num_nodes + 1)
    ]


def assert_kept_previous(strategy: Any, new: Any, server_round: int = 1) -> None:
    stats = strategy.stats[server_round]
    assert new is None
    assert stats.kept_previous_model and stats.rejected == {NON_FINITE_MODEL: 1}


def test_a_server_step_out_of_float32_keeps_the_previous_model_and_the_optimizer_state() -> None:
    # Prepare: FedAvgM's step is eta * Delta (Adam's is bounded by eta): a huge eta turns a
    # finite mean update into an inf model.
    strategy = build(strategy="fedavgm", **{"server-learning-rate": 1e5})
    start = model(np.zeros(4), 5, np.zeros(1, np.float32))

    # Execute: nothing raises.
    new = play(strategy, start, edge_replies(3))

    # Assert: no model, no step; a later ordinary round steps from a fresh state.
    assert_kept_previous(strategy, new)
    assert strategy.optimizer.state is None
    ordinary = [make_reply(n, model(STEP, 5, np.zeros(1, np.float32)), {"num-examples": 10}) for n in (1, 2)]
    after = play(strategy, start, ordinary, server_round=2)
    assert after is not None and strategy.optimizer.state.step == 1


def test_fedbuff_does_not_publish_a_non_finite_buffer_application() -> None:
    # Prepare: eta_g = 1e5 pushes w + eta_g * mean update out of float32.
    strategy = build(strategy="fedbuff", **{"fedbuff-server-learning-rate": 1e5})
    start = model(np.zeros(4), 5, np.zeros(1, np.float32))

    # Execute: nothing raises.
    new = play(strategy, start, edge_replies(3))

    # Assert: the version is not bumped (no model was published).
    assert_kept_previous(strategy, new)
    assert strategy.version == 0


def test_dp_model_noise_of_replies_at_the_float32_edge_is_finite() -> None:
    # Prepare: model-noise DP adds noise to the plain weighted mean (which overflowed float32).
    strategy = build(strategy="dp-fedavg", **DP_CONTRACT_CONFIG, **{"dp-estimator": "model-noise"})
    start = model(np.zeros(4), 5, np.zeros(1, np.float32))

    # Execute
    new = play(strategy, start, edge_replies(5))

    # Assert: the mean, at the edge but finite; the counter is the global one.
    result = as_dict(new)
    assert np.all(np.isfinite(result["w"]))
    np.testing.assert_array_equal(np.sign(result["w"]), [1, -1, 1, -1])
    assert int(result["bn.num_batches_tracked"]) == 5


def test_fedavg_release_model_refuses_a_non_finite_aggregate_of_any_rule() -> None:
    # Prepare: a rule (as a plug-in would write one) that returns inf.
    class Broken(FedAvg):
        def aggregate_layers(self, layers: list, weights: list[float]) -> list:
            return [np.full_like(a, np.inf) for a in layers[0]]

    strategy = Broken(min_train_nodes=1, min_available_nodes=1)
    start = model(np.zeros(4), 5, np.zeros(1, np.float32))
    replies = [make_reply(1, model(STEP, 6, np.zeros(1, np.float32)), {"num-examples": 10})]

    # Execute
    new = play(strategy, start, replies)

    # Assert
    assert_kept_previous(strategy, new)
