import numpy as np
import pytest
from flwr.serverapp.strategy import Strategy

from strategies.algorithms.fedavg import FedAvg
from strategies.algorithms.fedprox import FedProx
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import REGISTRY, get_spec
from tasks.config import AppConfig, ConfigError
from tests.conftest import FakeGrid, config_record, make_reply


def test_aggregate_train_weights_by_num_examples() -> None:
    # Prepare
    strategy = FedAvg(seed=0)
    replies = [
        make_reply(1, {"w": np.array([6.0, 0.0])}, {"num-examples": 100, "train-loss": 1.0}),
        make_reply(2, {"w": np.array([0.0, 6.0])}, {"num-examples": 200, "train-loss": 2.0}),
        make_reply(3, error="client crashed"),
    ]

    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)

    # Assert: weights 1/3, 2/3; the error reply is counted, not aggregated.
    np.testing.assert_allclose(to_layers(arrays)[0], [2.0, 4.0])
    assert metrics["train-loss"] == pytest.approx(1 / 3 + 4 / 3)
    assert strategy.stats[1].succeeded == 2 and strategy.stats[1].failed == 1
    assert strategy.stats[1].failed_nodes == [3]


def test_no_successful_reply_keeps_the_model() -> None:
    strategy = FedAvg()
    arrays, metrics = strategy.aggregate_train(1, [make_reply(1, error="boom")])
    assert arrays is None and metrics is None


def _train_messages(strategy: FedAvg, nodes: list[int]) -> dict[int, dict]:
    arrays = from_layers(["w"], [np.zeros(2, np.float32)])
    msgs = strategy.configure_train(1, arrays, config_record(local_epochs=5), FakeGrid(nodes))
    return {m.metadata.dst_node_id: dict(m.content["config"]) for m in msgs}


def test_fedprox_sends_mu_and_fewer_epochs_to_the_same_stragglers_fedavg_drops() -> None:
    nodes = list(range(1, 11))
    common = dict(local_epochs=5, straggler_fraction=0.3, seed=7)

    prox = _train_messages(FedProx(proximal_mu=0.1, **common), nodes)
    avg = _train_messages(FedAvg(**common), nodes)

    stragglers = {n for n, c in prox.items() if c["local-epochs"] < 5}
    assert len(prox) == 10 and len(stragglers) == 3
    assert all(c["proximal-mu"] == 0.1 and c["server-round"] == 1 for c in prox.values())
    assert all(1 <= prox[n]["local-epochs"] <= 4 for n in stragglers)
    # FedAvg samples the same clients and sends work only to the non-stragglers.
    assert set(avg) == set(prox) - stragglers


def test_sampling_fraction_and_seed() -> None:
    a = _train_messages(FedAvg(fraction_train=0.3, min_train_nodes=2, seed=1), list(range(20)))
    b = _train_messages(FedAvg(fraction_train=0.3, min_train_nodes=2, seed=1), list(range(20)))
    assert len(a) == 6 and set(a) == set(b)


def test_negative_mu_is_rejected() -> None:
    with pytest.raises(ValueError, match="proximal-mu"):
        FedProx(proximal_mu=-0.1)


def test_unknown_strategy_lists_the_known_ones() -> None:
    known = ", ".join(sorted(REGISTRY))
    assert {"fedavg", "fedprox", "median", "multi-krum", "dp-fedavg"} <= set(REGISTRY)
    with pytest.raises(ConfigError) as err:
        get_spec("fedsomething")
    assert f"known strategies: {known}" in str(err.value)


def test_every_registered_strategy_builds_from_default_config() -> None:
    cfg = AppConfig.from_run_config({})
    for name, spec in REGISTRY.items():
        strategy = spec.build(cfg)
        # A Message-API strategy the ServerApp can start, not a class, factory or None.
        assert isinstance(strategy, Strategy), f"{name} built a {type(strategy).__name__}"


def test_strategies_list_command_prints_names_and_keys() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "strategies", "list"], capture_output=True, text=True, check=True
    )
    assert (
        "fedavg" in out.stdout
        and "fedprox" in out.stdout
        and "proximal-mu (float, default 0.0)" in out.stdout
    )


def test_nodes_that_never_reply_count_as_failed() -> None:
    strategy = FedAvg(seed=0)
    sent = _train_messages(strategy, [1, 2, 3])
    assert set(sent) == {1, 2, 3}

    strategy.aggregate_train(1, [make_reply(1, {"w": np.zeros(2, np.float32)}, {"num-examples": 5})])

    assert strategy.stats[1].succeeded == 1 and strategy.stats[1].failed == 2
    assert sorted(strategy.stats[1].failed_nodes) == [2, 3]


def _global(strategy: FedAvg, nodes: list[int]) -> None:
    arrays = from_layers(["w"], [np.zeros(2, np.float32)])
    list(strategy.configure_train(1, arrays, config_record(local_epochs=1), FakeGrid(nodes)))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (make_reply(9, {"w": np.zeros(3, np.float32)}, {"num-examples": 5}), "wrong-shape"),
        (make_reply(9, {"w": np.zeros(2, np.float64)}, {"num-examples": 5}), "wrong-dtype"),
        (make_reply(9, {"w": np.array([np.nan, 0], np.float32)}, {"num-examples": 5}), "non-finite"),
        (make_reply(9, {"v": np.zeros(2, np.float32)}, {"num-examples": 5}), "missing-arrays"),
        (make_reply(9, {"w": np.zeros(2, np.float32)}, {"num-examples": 10**9}), "num-examples-too-large"),
        (make_reply(9, {"w": np.zeros(2, np.float32)}, {"num-examples": 0}), "num-examples-non-positive"),
        (make_reply(9, {"w": np.zeros(2, np.float32)}, {"num-examples": 2.5}), "num-examples-not-integer"),
        (make_reply(9, {"w": np.zeros(2, np.float32)}, None), "missing-records"),
    ],
)
def test_malformed_replies_are_dropped_counted_and_never_aggregated(bad, reason: str) -> None:  # noqa: ANN001
    strategy = FedAvg(max_num_examples=1000)
    _global(strategy, [1, 9])
    good = make_reply(1, {"w": np.array([1.0, 2.0], np.float32)}, {"num-examples": 5})

    arrays, _ = strategy.aggregate_train(1, [good, bad])

    np.testing.assert_array_equal(to_layers(arrays)[0], [1.0, 2.0])
    assert strategy.stats[1].rejected == {reason: 1} and strategy.stats[1].succeeded == 1


def test_too_few_valid_replies_keep_the_previous_model() -> None:
    strategy = FedAvg(min_valid_replies=2)
    _global(strategy, [1, 2])
    replies = [
        make_reply(1, {"w": np.ones(2, np.float32)}, {"num-examples": 5}),
        make_reply(2, {"w": np.ones(2, np.float32)}, {"num-examples": -1}),
    ]

    arrays, metrics = strategy.aggregate_train(1, replies)

    assert arrays is None and metrics is None and strategy.stats[1].kept_previous_model


def test_evaluate_replies_with_bad_metrics_are_dropped() -> None:
    strategy = FedAvg()
    good = make_reply(1, None, {"num-examples": 10, "loss": 1.0, "accuracy": 0.5}, message_type="evaluate")
    bad = make_reply(
        2, None, {"num-examples": 10, "loss": float("inf"), "accuracy": 0.9}, message_type="evaluate"
    )

    metrics = strategy.aggregate_evaluate(1, [good, bad])

    assert metrics["accuracy"] == pytest.approx(0.5) and strategy.stats[1].rejected == {
        "non-finite-metric": 1
    }


ROBUST = {
    "median": lambda: __import__("strategies.algorithms.median", fromlist=["FedMedian"]).FedMedian(
        num_byzantine=1
    ),
    "trimmed-mean": lambda: __import__("strategies.algorithms.trimmed_mean", fromlist=["x"]).FedTrimmedMean(
        beta=0.2, num_byzantine=1
    ),
    "multi-krum": lambda: __import__("strategies.algorithms.multikrum", fromlist=["x"]).MultiKrum(
        num_byzantine=1
    ),
}


@pytest.mark.parametrize("name", sorted(ROBUST))
def test_robust_strategies_ignore_one_attacker_among_five(name: str) -> None:
    # Prepare: four honest clients near 1.0, one attacker at 1e6 claiming many examples.
    strategy = ROBUST[name]()
    _global(strategy, [1, 2, 3, 4, 5])
    honest = [
        make_reply(i, {"w": np.full(2, 1.0 + 0.01 * i, np.float32)}, {"num-examples": 5})
        for i in (1, 2, 3, 4)
    ]
    attacker = make_reply(5, {"w": np.full(2, 1e6, np.float32)}, {"num-examples": 999})

    arrays, _ = strategy.aggregate_train(1, [*honest, attacker])

    assert np.all(np.abs(to_layers(arrays)[0] - 1.025) < 0.05)


def test_multi_krum_rejects_a_sample_outside_its_guarantee_before_training() -> None:
    from strategies.algorithms.multikrum import MultiKrum

    strategy = MultiKrum(num_byzantine=2, min_train_nodes=2)
    with pytest.raises(ConfigError, match=r"n > 2f \+ 2, got n=5, f=2"):
        _global(strategy, [1, 2, 3, 4, 5])


def test_norm_bounded_clips_each_update() -> None:
    from strategies.algorithms.norm_bounded import NormBoundedFedAvg

    strategy = NormBoundedFedAvg(max_norm=1.0)
    _global(strategy, [1, 2])
    replies = [
        make_reply(1, {"w": np.array([3.0, 4.0], np.float32)}, {"num-examples": 1}),  # ‖Δ‖=5 → (0.6, 0.8)
        make_reply(2, {"w": np.array([0.0, 0.5], np.float32)}, {"num-examples": 1}),  # within the bound
    ]

    arrays, _ = strategy.aggregate_train(1, replies)

    np.testing.assert_allclose(to_layers(arrays)[0], [0.3, 0.65], rtol=1e-6)


def test_too_few_valid_replies_for_the_guarantee_keep_the_model() -> None:
    from strategies.algorithms.median import FedMedian

    strategy = FedMedian(num_byzantine=1)
    _global(strategy, [1, 2, 3])
    replies = [make_reply(1, {"w": np.ones(2, np.float32)}, {"num-examples": 5}), make_reply(2, error="x")]

    arrays, _ = strategy.aggregate_train(1, replies)

    assert arrays is None and strategy.stats[1].kept_previous_model


def test_an_error_written_by_the_superlink_for_a_dead_node_is_counted_once() -> None:
    # The SuperLink answers for an unreachable node with an error whose src_node_id is
    # not that node's id; the node must be counted (and named) once.
    strategy = FedAvg(seed=0)
    _train_messages(strategy, [11, 12])

    strategy.aggregate_train(
        1,
        [
            make_reply(11, {"w": np.zeros(2, np.float32)}, {"num-examples": 5}),
            make_reply(1, error="Node Unavailable"),
        ],
    )

    assert strategy.stats[1].failed == 1 and strategy.stats[1].failed_nodes == [12]


def test_fraction_evaluate_zero_sends_no_evaluation_and_aggregates_nothing() -> None:
    strategy = FedAvg(fraction_evaluate=0.0, min_available_nodes=1)
    arrays = from_layers(["w"], [np.zeros(3, np.float32)])

    messages = list(strategy.configure_evaluate(1, arrays, config_record(), FakeGrid([1, 2, 3])))

    assert messages == []
    assert strategy.aggregate_evaluate(1, []) is None
