"""SecAgg+ around the FedAvg family and DP-FedAvg: the secure sum, dropouts, misbehaviour, refusals.

Every test runs the real protocol: the server wrapper drives its four stages through a
Grid whose nodes run the real client mod (``tests/secagg_grid.py``) around a fake train
step with known updates, so the plain aggregate of the same replies is known exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType

from strategies.algorithms.fedadam import FedAdam
from strategies.algorithms.fedavg import FedAvg
from strategies.core.loop import with_ttl
from strategies.core.records import from_layers, to_layers
from strategies.core.reply_checks import (
    SECAGG_BAD_SHARE,
    SECAGG_BELOW_THRESHOLD,
    SECAGG_MALFORMED_MASKED,
    SECAGG_MALFORMED_REPLY,
)
from strategies.numeric.secagg import mean_error_bound
from strategies.wrappers.dp_config import DPConfig
from strategies.wrappers.dp_fedavg import DPFedAvg
from strategies.wrappers.secagg import SecAggPlus
from strategies.wrappers.secagg_config import SecAggConfig
from tasks import wire
from tests.conftest import push
from tests.secagg_grid import (
    NAMES,
    Client,
    ProtocolGrid,
    global_model,
    global_record,
    local_models,
    make_clients,
    train_config,
)

C, R = 1.0, 2**20
BOUND = mean_error_bound(clipping_range=C, quantization_range=R)
#: The float32 model adds its own rounding (values are O(1)) to the quantization bound.
TOLERANCE = BOUND + 1e-6


def secagg_config(**overrides: Any) -> SecAggConfig:
    keys: dict[str, Any] = dict(
        mode="secagg+",
        num_shares=5,
        reconstruction_threshold=3,
        clipping_range=C,
        quantization_range=R,
        max_weight=1000,
    )
    keys.update(overrides)
    return SecAggConfig(**keys)


def fedavg(num_nodes: int) -> FedAvg:
    return FedAvg(min_available_nodes=num_nodes, min_train_nodes=num_nodes, fraction_evaluate=0.0)


def run_round(strategy: SecAggPlus, grid: ProtocolGrid, server_round: int = 1) -> tuple[Any, Any]:
    """One train round as the round driver runs it: configure, the train exchange hook, aggregate."""
    messages = with_ttl(strategy.configure_train(server_round, global_record(), train_config(), grid), 60)
    replies = strategy.train_exchange(grid, server_round, messages, 60.0)  # type: ignore[arg-type]
    return strategy.aggregate_train(server_round, replies)


def plain_mean(clients: dict[int, Client], nodes: list[int] | None = None) -> list[np.ndarray]:
    """FedAvg of the same local models (float layers), example-weighted, in float64."""
    nodes = list(clients) if nodes is None else nodes
    models = local_models(clients)
    weights = np.array([clients[n].num_examples for n in nodes], np.float64)
    return [
        sum(w * np.asarray(models[n][i], np.float64) for n, w in zip(nodes, weights, strict=True))
        / weights.sum()
        for i in (0, 1)
    ]


def floats(arrays: ArrayRecord) -> list[np.ndarray]:
    return [np.asarray(a, np.float64) for a in to_layers(arrays)[:2]]


def assert_within_bound(arrays: ArrayRecord, expected: list[np.ndarray]) -> None:
    for got, want in zip(floats(arrays), expected, strict=True):
        assert np.max(np.abs(got - want)) <= TOLERANCE


# ------------------------------------------------------------------ the secure sum
def test_the_secure_mean_equals_plain_fedavg_of_the_same_replies_within_the_bound() -> None:
    # Prepare: 8 nodes, each linked to 5 (a sparse SecAgg+ graph), threshold 3.
    clients = make_clients(8)
    grid = ProtocolGrid(clients)
    strategy = SecAggPlus(fedavg(8), secagg_config(), rng=np.random.default_rng(0))

    # Execute: the round loop itself, through the strategy's train exchange hook.
    released: dict[int, ArrayRecord] = {}
    strategy.start(
        grid, global_record(), num_rounds=1, timeout=60, evaluate_fn=lambda r, a: released.update({r: a})
    )

    # Assert: |secure − plain| ≤ 2c/R per coordinate; the integer buffer is the global one.
    assert_within_bound(released[1], plain_mean(clients))
    assert int(to_layers(released[1])[2]) == 7
    stats = strategy.stats[1]
    assert (stats.sampled, stats.succeeded, stats.failed, stats.rejected) == (8, 8, 0, {})
    expected_loss = sum(c.num_examples * c.train_loss for c in clients.values()) / sum(
        c.num_examples for c in clients.values()
    )
    assert stats.train_loss == pytest.approx(expected_loss, abs=1e-3)
    metrics = strategy.round_metrics(1)
    assert metrics["secagg_survivors"] == 8 and metrics["secagg_dropped"] == 0
    assert metrics["secagg_kept_reason"] is None
    model_bytes = sum(a.nbytes for a in global_model())
    assert metrics["secagg_bytes_down"] > 8 * model_bytes  # the collect stage carries the model
    # Up: per node at least its masked vector (int64: twice a float32 model's parameters).
    assert metrics["secagg_bytes_up"] > 8 * 2 * sum(a.nbytes for a in global_model()[:2])


def test_weights_above_max_weight_are_capped() -> None:
    clients = make_clients(4)
    grid = ProtocolGrid(clients)
    strategy = SecAggPlus(fedavg(4), secagg_config(max_weight=50), rng=np.random.default_rng(0))

    arrays, metrics = run_round(strategy, grid)

    capped = {n: Client(c.delta, min(c.num_examples, 50), c.train_loss) for n, c in clients.items()}
    assert_within_bound(arrays, plain_mean(capped))
    assert metrics[wire.NUM_EXAMPLES] == sum(c.num_examples for c in capped.values())


def test_no_code_path_of_the_server_holds_an_individual_update() -> None:
    # Prepare: an inner FedAvg that records every array reaching its hooks.
    seen: list[np.ndarray] = []

    class Recording(FedAvg):
        def aggregate_layers(self, layers: list[list], weights: list[float]) -> list:
            seen.extend(a for client in layers for a in client)
            raise AssertionError("secure aggregation never hands the rule per-client layers")

        def apply_aggregate(self, server_round: int, aggregate: list[np.ndarray]) -> list[np.ndarray]:
            seen.extend(aggregate)
            return super().apply_aggregate(server_round, aggregate)

        def release_model(self, server_round: int, names: list[str], layers: list[np.ndarray]) -> Any:
            seen.extend(layers)
            return super().release_model(server_round, names, layers)

    clients = make_clients(5)
    grid = ProtocolGrid(clients)
    strategy = SecAggPlus(Recording(min_available_nodes=5, min_train_nodes=5), secagg_config())

    # Execute
    arrays, _ = run_round(strategy, grid)

    # Assert: no reply carries a model or a per-client metric; nothing the server received or
    # handed on equals any client's update or local model (within far more than the bound).
    assert arrays is not None
    for reply in grid.received:
        assert wire.ARRAYS not in reply.content.array_records
        assert wire.METRICS not in reply.content.metric_records
        seen.extend(to_layers(record) for record in reply.content.array_records.values())  # type: ignore[arg-type]
        for value in reply.content.config_records[wire.SECAGG_CONFIGS].values():
            if isinstance(value, list):
                seen.extend(
                    np.frombuffer(v, np.uint8).astype(np.float64) for v in value if isinstance(v, bytes)
                )
    flat = []
    for item in seen:
        for a in item if isinstance(item, list) else [item]:
            flat.append(np.asarray(a, np.float64))
    truths = [d for c in clients.values() for d in c.delta] + [
        np.asarray(layer, np.float64) for model in local_models(clients).values() for layer in model[:2]
    ]
    for array in flat:
        for truth in truths:
            if array.shape == truth.shape:
                assert not np.allclose(array, truth, atol=1e-3), "an individual update reached the server"


# ------------------------------------------------------------------ dropouts
@pytest.mark.parametrize("lost", [1, 2])
def test_nodes_lost_after_share_keys_are_recovered_and_the_sum_is_over_the_survivors(lost: int) -> None:
    clients = make_clients(7)
    gone = set(list(clients)[:lost])
    grid = ProtocolGrid(clients, drop={wire.SECAGG_COLLECT: gone})
    strategy = SecAggPlus(fedavg(7), secagg_config(), rng=np.random.default_rng(1))

    arrays, _ = run_round(strategy, grid)

    survivors = [n for n in clients if n not in gone]
    assert_within_bound(arrays, plain_mean(clients, survivors))
    stats = strategy.stats[1]
    assert stats.succeeded == 7 - lost and sorted(stats.failed_nodes) == sorted(gone)
    assert not stats.kept_previous_model
    metrics = strategy.round_metrics(1)
    assert (metrics["secagg_survivors"], metrics["secagg_dropped"]) == (7 - lost, lost)


def test_nodes_lost_before_sharing_keys_are_left_out() -> None:
    clients = make_clients(6)
    early, later = list(clients)[0], list(clients)[1]
    grid = ProtocolGrid(clients, drop={wire.SECAGG_SETUP: {early}, wire.SECAGG_SHARE_KEYS: {later}})
    strategy = SecAggPlus(fedavg(6), secagg_config(), rng=np.random.default_rng(2))

    arrays, _ = run_round(strategy, grid)

    assert_within_bound(arrays, plain_mean(clients, list(clients)[2:]))
    metrics = strategy.round_metrics(1)
    assert (
        metrics["secagg_survivors"],
        metrics["secagg_dropped"],
        metrics["secagg_lost_before_masking"],
    ) == (
        4,
        0,
        2,
    )


def test_a_survivor_silent_at_unmasking_is_still_in_the_sum() -> None:
    clients = make_clients(6)
    quiet = list(clients)[3]
    grid = ProtocolGrid(clients, drop={wire.SECAGG_UNMASK: {quiet}})
    strategy = SecAggPlus(fedavg(6), secagg_config(), rng=np.random.default_rng(3))

    arrays, _ = run_round(strategy, grid)

    assert_within_bound(arrays, plain_mean(clients))
    assert strategy.stats[1].failed == 0


def test_more_than_n_minus_t_lost_keeps_the_previous_model_and_counts_it() -> None:
    # 5 nodes, all neighbours, threshold 3: losing 3 after share keys leaves 2 < 3.
    clients = make_clients(5)
    grid = ProtocolGrid(clients, drop={wire.SECAGG_COLLECT: set(list(clients)[:3])})
    strategy = SecAggPlus(fedavg(5), secagg_config(), rng=np.random.default_rng(4))

    released: dict[int, ArrayRecord] = {}
    result = strategy.start(
        grid, global_record(), num_rounds=2, timeout=60, evaluate_fn=lambda r, a: released.update({r: a})
    )

    # Both rounds keep the model, and the run goes on to the end.
    for server_round in (1, 2):
        stats = strategy.stats[server_round]
        assert stats.kept_previous_model and stats.rejected == {SECAGG_BELOW_THRESHOLD: 1}
        assert (
            "fewer than secagg-reconstruction-threshold=3"
            in strategy.round_metrics(server_round)["secagg_kept_reason"]
        )
        for got, want in zip(to_layers(released[server_round]), global_model(), strict=True):
            np.testing.assert_array_equal(got, want)
    assert len(result.arrays) == 0  # no round released a model


def test_too_few_sampled_nodes_keep_the_model_before_any_message() -> None:
    clients = make_clients(2)
    grid = ProtocolGrid(clients)
    strategy = SecAggPlus(fedavg(2), secagg_config())

    arrays, metrics = run_round(strategy, grid)

    assert arrays is None and metrics is None and grid.received == []
    assert strategy.stats[1].rejected == {SECAGG_BELOW_THRESHOLD: 1}


# ------------------------------------------------------------------ misbehaviour
def rewrite(reply: Message, **config: Any) -> Message:
    record = dict(reply.content.config_records[wire.SECAGG_CONFIGS])
    record.update(config)
    reply.content[wire.SECAGG_CONFIGS] = ConfigRecord(record)
    return reply


def test_malformed_stage_replies_are_dropped_and_counted_and_the_round_completes() -> None:
    # 10 nodes, neighbourhoods of 9, threshold 5: every secret keeps >= 5 good shares below.
    clients = make_clients(10)
    nodes = list(clients)
    bad_key, bad_vector, bad_share, unmasked = nodes[0], nodes[1], nodes[2], nodes[3]

    def tamper(stage: str, node: int, reply: Message) -> Message:
        if reply.has_error():
            return reply
        if stage == wire.SECAGG_SETUP and node == bad_key:
            return rewrite(reply, **{wire.SECAGG_PUBLIC_KEY_1: b"not a key"})
        if stage == wire.SECAGG_COLLECT and node == bad_vector:
            names = list(reply.content.array_records[wire.SECAGG_MASKED].keys())
            reply.content[wire.SECAGG_MASKED] = from_layers(names, [np.zeros(3, np.float32)] * len(names))
        if stage == wire.SECAGG_COLLECT and node == unmasked:  # a node that also sends its model
            reply.content[wire.ARRAYS] = from_layers(NAMES, local_models(clients)[node])
        if stage == wire.SECAGG_UNMASK and node == bad_share:
            shares = list(reply.content.config_records[wire.SECAGG_CONFIGS][wire.SECAGG_SHARE_LIST])
            shares[0] = bytes(len(shares[0]))
            return rewrite(reply, **{wire.SECAGG_SHARE_LIST: shares})
        return reply

    grid = ProtocolGrid(clients, tamper=tamper)
    config = secagg_config(num_shares=9, reconstruction_threshold=5)
    strategy = SecAggPlus(fedavg(10), config, rng=np.random.default_rng(5))

    arrays, _ = run_round(strategy, grid)

    # The bad key never joins; the bad and the unmasked vector are dropped unread and their
    # masks removed; the bad share is refused and the others rebuild every secret.
    survivors = [n for n in nodes if n not in (bad_key, bad_vector, unmasked)]
    assert_within_bound(arrays, plain_mean(clients, survivors))
    assert strategy.stats[1].rejected == {
        SECAGG_MALFORMED_REPLY: 1,
        SECAGG_MALFORMED_MASKED: 2,
        SECAGG_BAD_SHARE: 1,
    }
    assert strategy.round_metrics(1)["secagg_dropped"] == 2


def test_replies_to_messages_never_sent_are_rejected() -> None:
    clients = make_clients(5)
    intruder = list(clients)[0]

    def tamper(stage: str, node: int, reply: Message) -> Message:
        if stage == wire.SECAGG_SETUP and node == intruder:
            reply.metadata.__dict__["_reply_to_message_id"] = "not-a-message"
        return reply

    grid = ProtocolGrid(clients, tamper=tamper)
    strategy = SecAggPlus(fedavg(5), secagg_config(), rng=np.random.default_rng(6))

    arrays, _ = run_round(strategy, grid)

    assert_within_bound(arrays, plain_mean(clients, list(clients)[1:]))
    assert sum(strategy.stats[1].rejected.values()) == 1


# ------------------------------------------------------------------ composition
def test_fedadam_steps_on_the_secure_mean_as_on_the_plain_mean() -> None:
    # Prepare: the same FedAdam twice, one fed plain replies, one under SecAgg+.
    fed: dict[str, list[np.ndarray]] = {}

    def adam(tag: str) -> FedAdam:
        class Recording(FedAdam):
            def apply_aggregate(self, server_round: int, aggregate: list[np.ndarray]) -> list[np.ndarray]:
                fed[tag] = [np.asarray(a, np.float64) for a in aggregate]
                return super().apply_aggregate(server_round, aggregate)

        return Recording(
            server_learning_rate=0.1,
            beta1=0.9,
            beta2=0.99,
            tau=1e-3,
            min_available_nodes=5,
            min_train_nodes=5,
        )

    clients = make_clients(5)
    plain = adam("plain")
    messages = push(plain.configure_train(1, global_record(), train_config(), ProtocolGrid(clients)))  # type: ignore[arg-type]
    grid = ProtocolGrid(clients)
    plain_arrays, _ = plain.aggregate_train(
        1, [grid.train(m, grid.contexts[m.metadata.dst_node_id]) for m in messages]
    )
    secure = SecAggPlus(adam("secure"), secagg_config(quantization_range=2**30))

    # Execute
    secure_arrays, _ = run_round(secure, ProtocolGrid(clients))

    # Assert: the optimizer's input within the bound, so its step within the bound times its gain.
    bound = mean_error_bound(clipping_range=C, quantization_range=2**30) + 1e-6
    for a, b in zip(fed["plain"], fed["secure"], strict=True):
        assert np.max(np.abs(a - b)) <= bound
    for a, b in zip(floats(plain_arrays), floats(secure_arrays), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)


def dp(**overrides: Any) -> DPFedAvg:
    keys: dict[str, Any] = dict(
        clipping="client",
        sampling="fixed-size",
        sampling_rate=1.0,
        noise_multiplier=0.5,
        clip_norm=1.0,
        weight_cap=1000.0,
        noise_seed=0,
        delta=1e-3,
    )
    keys.update(overrides)
    return DPFedAvg(FedAvg(min_available_nodes=5, min_train_nodes=5), DPConfig(**keys))


@pytest.mark.parametrize("estimator", ["fixed", "clipped"])
def test_distributed_dp_noises_the_secure_sum_and_accounts_as_client_clipping(estimator: str) -> None:
    # Prepare: the same DP-FedAvg (client clipping, same noise seed) with plain and secure replies.
    clients = make_clients(5)
    plain = dp(estimator=estimator)
    grid = ProtocolGrid(clients)
    messages = push(list(plain.configure_train(1, global_record(), train_config(), grid)))  # type: ignore[arg-type]
    assert all(m.content.config_records[wire.CONFIG][wire.CLIP_NORM] == 1.0 for m in messages)
    plain_arrays, _ = plain.aggregate_train(
        1, [grid.train(m, grid.contexts[m.metadata.dst_node_id]) for m in messages]
    )
    secure = SecAggPlus(dp(estimator=estimator), secagg_config())

    # Execute
    secure_arrays, metrics = run_round(secure, ProtocolGrid(clients))

    # Assert: the same noise on an update within the bound; ε recorded as for plain DP.
    for a, b in zip(floats(plain_arrays), floats(secure_arrays), strict=True):
        assert np.max(np.abs(a - b)) <= TOLERANCE
    assert secure.round_metrics(1)["epsilon"] == pytest.approx(plain.round_metrics(1)["epsilon"])
    assert secure.round_metrics(1)["epsilon"] > 0
    assert metrics[wire.NUM_EXAMPLES] == sum(c.num_examples for c in clients.values())


def test_dp_clipping_on_the_client_happens_before_masking() -> None:
    # Prepare: updates of norm about 3 behind the real dp_clipping_mod, S = 1.
    from client_app.dp import dp_clipping_mod

    clients = make_clients(5, scale=1.0)
    grid = ProtocolGrid(clients)
    grid.inner = lambda msg, ctx: dp_clipping_mod(msg, ctx, grid.train)
    strategy = SecAggPlus(dp(noise_multiplier=1e-6, clip_norm=1.0), secagg_config(clipping_range=1.0))

    arrays, _ = run_round(strategy, grid)

    # The (almost noise-free) step is a weighted mean of clipped updates: its norm ≤ S·Σw/(qW) ≤ S.
    step = [a - np.asarray(g, np.float64) for a, g in zip(floats(arrays), global_model()[:2], strict=True)]
    norm = float(np.sqrt(sum(np.sum(s**2) for s in step)))
    assert 0 < norm <= 1.0


# ------------------------------------------------------------------ refusals
def test_secagg_refuses_dp_settings_it_cannot_honour() -> None:
    with pytest.raises(ValueError, match="dp-clipping='server'"):
        SecAggPlus(dp(clipping="server"), secagg_config())
    with pytest.raises(ValueError, match="secagg-max-weight = dp-weight-cap"):
        SecAggPlus(dp(weight_cap=100.0), secagg_config())
    with pytest.raises(ValueError, match="secagg-clipping-range >= dp-clip-norm"):
        SecAggPlus(dp(clip_norm=2.0), secagg_config(clipping_range=1.0))
    with pytest.raises(ValueError, match="dp-estimator='model-noise'"):
        SecAggPlus(dp(estimator="model-noise"), secagg_config())


def test_aggregate_train_without_the_exchange_is_a_programming_error() -> None:
    strategy = SecAggPlus(fedavg(3), secagg_config())
    with pytest.raises(RuntimeError, match="without configure_train"):
        strategy.aggregate_train(1, [])


def test_stage_messages_are_train_messages_carrying_flowers_stage_names() -> None:
    clients = make_clients(4)
    stages: list[str] = []

    def tamper(stage: str, node: int, reply: Message) -> Message:
        stages.append(stage)
        return reply

    grid = ProtocolGrid(clients, tamper=tamper)
    run_round(SecAggPlus(fedavg(4), secagg_config()), grid)

    assert stages == [s for s in wire.SECAGG_STAGES for _ in range(4)]
    assert all(m.metadata.message_type == MessageType.TRAIN for m in grid.received)


# ------------------------------------------------------------------ the run config
SECURE = {"secure-aggregation": "secagg+"}
DP_CLIENT = {"dp-clipping": "client", "secagg-max-weight": 100}  # dp-weight-cap's default is 100
COMPOSES = {
    "fedavg": {},
    "fedprox": {"proximal-mu": 0.01},
    "fedadam": {},
    "fedyogi": {},
    "fedadagrad": {},
    "fedavgm": {},
    "dp-fedavg": DP_CLIENT,
    "dp-fedprox": DP_CLIENT,
}
REFUSED = {
    "median": ({"strategy": "median"}, "needs each client's update"),
    "trimmed-mean": ({"strategy": "trimmed-mean"}, "needs each client's update"),
    "multi-krum": ({"strategy": "multi-krum"}, "needs each client's update"),
    "norm-bounded": ({"strategy": "norm-bounded"}, "needs each client's update"),
    "fedbuff": ({"strategy": "fedbuff"}, "FedBuff aggregates each update as it arrives"),
    "dp-server-clipping": ({"strategy": "dp-fedavg", "secagg-max-weight": 100}, "dp-clipping='server'"),
    "dp-weight-cap": (
        {"strategy": "dp-fedavg", "dp-clipping": "client"},
        "secagg-max-weight = dp-weight-cap",
    ),
    "dp-adaptive": (
        {"strategy": "dp-fedavg", "dp-adaptive-clipping": True, **DP_CLIENT},
        "dp-adaptive-clipping",
    ),
    "dp-clip-norm": (
        {"strategy": "dp-fedavg", "dp-clip-norm": 10.0, "secagg-clipping-range": 8.0, **DP_CLIENT},
        "secagg-clipping-range >= dp-clip-norm",
    ),
    "int8": ({"strategy": "fedavg", "compression": "int8"}, "compression='int8' cannot be combined"),
    "topk": ({"strategy": "fedadam", "compression": "topk"}, "compression='topk' cannot be combined"),
}
BAD_KEYS = {
    "secure-aggregation": ("secagg", "must be one of none, secagg+"),
    "secagg-num-shares": (10, "must be odd"),
    "secagg-reconstruction-threshold": (5, "must be > secagg-num-shares/2"),
    "secagg-clipping-range": (0.0, "must be in"),
    "secagg-quantization-range": (1, "must be in"),
    "secagg-max-weight": (2**30, "lower secagg-max-weight or secagg-quantization-range"),
}


@pytest.mark.parametrize("name", list(COMPOSES))
def test_each_linear_strategy_is_built_under_secure_aggregation(name: str) -> None:
    from strategies.core.registry import build_strategy
    from tasks.config import AppConfig

    strategy = build_strategy(AppConfig.from_run_config({"strategy": name, **SECURE, **COMPOSES[name]}))

    assert isinstance(strategy, SecAggPlus)
    assert build_strategy(AppConfig.from_run_config({"strategy": name, **COMPOSES[name]})) is not None


@pytest.mark.parametrize("name", list(REFUSED))
def test_combinations_that_need_individual_updates_are_refused_before_training(name: str) -> None:
    from strategies.core.registry import build_strategy
    from tasks.config import AppConfig, ConfigError

    overrides, reason = REFUSED[name]
    with pytest.raises(ConfigError, match="secure") as info:
        build_strategy(AppConfig.from_run_config({**SECURE, **overrides}))
    assert reason in str(info.value)


@pytest.mark.parametrize("key", list(BAD_KEYS))
def test_bad_secure_aggregation_keys_are_refused_naming_the_key(key: str) -> None:
    from strategies.core.registry import build_strategy
    from tasks.config import AppConfig, ConfigError

    value, reason = BAD_KEYS[key]
    with pytest.raises(ConfigError, match=key) as info:  # a single key's range, or a combination
        build_strategy(AppConfig.from_run_config({**SECURE, key: value}))
    assert reason in str(info.value)


def test_threshold_above_num_shares_is_refused() -> None:
    from tasks.config import ConfigError

    with pytest.raises(ConfigError, match="<= secagg-num-shares=5"):
        secagg_config(num_shares=5, reconstruction_threshold=6)


#: Missing fields, a number, ids where bytes belong, bytes of a key's length where lists belong.
JUNK: list[Any] = [None, 7, [1, 2], b"\x00" * 32]


@pytest.mark.parametrize("stage", wire.SECAGG_STAGES)
@pytest.mark.parametrize("junk", range(len(JUNK)))
def test_junk_in_any_field_of_one_stage_reply_never_raises_and_the_round_completes(
    stage: str, junk: int
) -> None:
    # Prepare: one node writes a junk value into every field of its reply to one stage.
    clients = make_clients(6)
    liar = list(clients)[2]

    def tamper(at: str, node: int, reply: Message) -> Message:
        if at != stage or node != liar or reply.has_error():
            return reply
        record = reply.content.config_records[wire.SECAGG_CONFIGS]
        fields = {key: JUNK[junk] for key in record if key != wire.SECAGG_STAGE}
        if stage == wire.SECAGG_COLLECT:
            names = list(reply.content.array_records[wire.SECAGG_MASKED].keys())
            corrupt = ArrayRecord()
            for name in names:
                corrupt[name] = from_layers([name], [np.zeros(2, np.uint8)])[name]
            reply.content[wire.SECAGG_MASKED] = corrupt
        # None: the fields are missing altogether.
        kept = {k: v for k, v in fields.items() if v is not None}
        reply.content[wire.SECAGG_CONFIGS] = ConfigRecord({wire.SECAGG_STAGE: stage, **kept})
        return reply

    grid = ProtocolGrid(clients, tamper=tamper)
    strategy = SecAggPlus(fedavg(6), secagg_config(), rng=np.random.default_rng(7))

    # Execute
    arrays, _ = run_round(strategy, grid)

    # Assert: the liar is dropped and counted (or, at unmasking, its shares refused); the sum holds.
    expected = list(clients) if stage == wire.SECAGG_UNMASK else [n for n in clients if n != liar]
    assert_within_bound(arrays, plain_mean(clients, expected))
    assert sum(strategy.stats[1].rejected.values()) == 1


def test_a_dealer_sharing_a_seed_of_the_wrong_length_keeps_the_model_without_raising(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: clients whose "random" mask seed is 36 bytes (their digests match: they deal it).
    import client_app.secagg as client_secagg

    monkeypatch.setattr(client_secagg, "draw_seed", lambda: b"\x01" * 36)
    clients = make_clients(4)
    strategy = SecAggPlus(fedavg(4), secagg_config(), rng=np.random.default_rng(8))

    arrays, _ = run_round(strategy, ProtocolGrid(clients))

    assert arrays is None and strategy.stats[1].kept_previous_model
    assert "36 bytes" in strategy.round_metrics(1)["secagg_kept_reason"]
