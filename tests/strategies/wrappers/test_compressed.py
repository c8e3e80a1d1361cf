"""The compression wrapper: client replies encoded by the real client code, decoded by the wrapper.

Replies are built with ``client_app.compression.reply_arrays`` (what the ClientApp's
train handler sends), so every test exercises both halves of the wire format.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from client_app.compression import RESIDUAL_KEY, reply_arrays
from strategies.algorithms.fedavg import FedAvg
from strategies.algorithms.median import FedMedian
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import DP_CONTRACT_CONFIG, REGISTRY, build_strategy
from strategies.numeric.compression import (
    COMPRESSED_KEY,
    COMPRESSION_KEY,
    TOPK_FRACTION_KEY,
    array_key,
    nbytes,
    quantize_uint8,
    topk_count,
)
from strategies.wrappers.compressed import MALFORMED_COMPRESSED, CompressedStrategy, with_compression
from tasks.config import AppConfig, ConfigError
from tests.conftest import FakeGrid, make_reply

RNG = np.random.default_rng(7)
GLOBAL = {
    "conv.weight": RNG.normal(size=(4, 3, 3)).astype(np.float32),
    "conv.bias": np.array([0.1, -0.2, 0.3, 0.0], dtype=np.float32),
    "head.weight": RNG.normal(size=(10, 12)).astype(np.float32),
}
NAMES = list(GLOBAL)
#: .npy header of each serialized array: 128 bytes for arrays of these sizes (padded to 64).
HEADER = 128


def fedavg() -> FedAvg:
    return FedAvg(min_train_nodes=1, min_available_nodes=1)


def configure(strategy: CompressedStrategy, nodes: list[int], rnd: int = 1) -> list[Message]:
    grid = FakeGrid(nodes)
    return list(
        strategy.configure_train(rnd, from_layers(NAMES, list(GLOBAL.values())), ConfigRecord(), grid)
    )


def client_reply(
    msg: Message, local: dict[str, np.ndarray], *, state: RecordDict | None = None, n: int = 100
) -> Message:
    """What the ClientApp replies to ``msg`` after training to ``local``."""
    config = msg.content["config"]
    global_layers = to_layers(msg.content["arrays"], NAMES)
    key, arrays = reply_arrays(
        NAMES, global_layers, list(local.values()), config, RecordDict() if state is None else state
    )
    return make_reply(
        msg.metadata.dst_node_id,
        metrics={"num-examples": n},
        extra={key: arrays},
        reply_to=msg.metadata.message_id,
    )


def perturbed(scale: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + scale * rng.normal(size=v.shape)).astype(v.dtype) for k, v in GLOBAL.items()}


def decoded_layers(strategy: CompressedStrategy, rnd: int, reply: Message) -> dict[str, np.ndarray]:
    (full,), malformed = strategy.decode_replies(rnd, [reply])
    assert malformed == []
    return dict(zip(NAMES, to_layers(full.content["arrays"], NAMES), strict=True))


# ----------------------------------------------------------------------- quantization
def test_int8_reply_is_within_half_a_step_of_the_local_model_per_element() -> None:
    strategy = CompressedStrategy(fedavg(), scheme="int8")
    (msg,) = configure(strategy, [1])
    local = perturbed(0.05, seed=1)

    decoded = decoded_layers(strategy, 1, client_reply(msg, local))

    for name in NAMES:
        delta = local[name] - GLOBAL[name]
        scale = float(delta.max() - delta.min()) / 255
        error = np.abs(decoded[name].astype(np.float64) - local[name])
        # scale/2 from quantization, plus float32 rounding of global + delta on either side.
        assert error.max() <= scale / 2 + 4 * np.finfo(np.float32).eps * np.abs(local[name]).max()
        assert error.max() > scale / 8  # it really is quantized, not sent in full


def test_config_asks_clients_for_the_scheme_and_fraction() -> None:
    strategy = CompressedStrategy(fedavg(), scheme="topk", topk_fraction=0.25)

    messages = configure(strategy, [1, 2, 3])

    for msg in messages:
        config = msg.content["config"]
        assert config[COMPRESSION_KEY] == "topk" and config[TOPK_FRACTION_KEY] == 0.25
        assert config["server-round"] == 1  # the inner's config is kept


# ----------------------------------------------------------------------- top-k
def test_topk_reply_keeps_exactly_k_entries_of_largest_magnitude_per_layer() -> None:
    strategy = CompressedStrategy(fedavg(), scheme="topk", topk_fraction=0.1)
    (msg,) = configure(strategy, [1])
    local = perturbed(0.05, seed=2)
    reply = client_reply(msg, local)

    encoded = reply.content[COMPRESSED_KEY]
    decoded = decoded_layers(strategy, 1, reply)
    for name in NAMES:
        delta = (local[name] - GLOBAL[name]).ravel()
        k = topk_count(delta.size, 0.1)
        assert encoded[array_key(name, "sp_indices")].shape == (k,)
        sent = (decoded[name] - GLOBAL[name]).ravel()
        kept = np.flatnonzero(sent)
        assert kept.size == k
        # The kept entries are the k largest in magnitude, with their exact values.
        assert np.abs(delta[kept]).min() >= np.sort(np.abs(delta))[-k]
        np.testing.assert_allclose(sent[kept], delta[kept], rtol=0, atol=1e-6)


def test_topk_count_rounds_and_keeps_at_least_one() -> None:
    assert [topk_count(n, f) for n, f in ((100, 0.1), (10, 0.01), (10, 0.7), (36, 0.1), (5, 1.0))] == [
        10,
        1,
        7,
        4,
        5,
    ]


def test_error_feedback_carries_the_residual_to_the_next_round() -> None:
    # One layer of 4 entries, k = 1: round 1 sends the 5 and keeps [0, 1, 0.9, 0];
    # round 2's update [0, 0.5, 0, 0.2] plus that residual sends the 1.5 (1 of it
    # left over from round 1) and keeps [0, 0, 0.9, 0.2].
    names = ["w"]
    state = RecordDict()
    config = ConfigRecord({COMPRESSION_KEY: "topk", TOPK_FRACTION_KEY: 0.25})
    zero = [np.zeros(4, np.float32)]
    round1 = [np.array([5.0, 1.0, 0.9, 0.0], np.float32)]
    round2 = [np.array([0.0, 0.5, 0.0, 0.2], np.float32)]

    _, sent1 = reply_arrays(names, zero, round1, config, state)
    residual1 = to_layers(state[RESIDUAL_KEY])[0].copy()
    _, sent2 = reply_arrays(names, zero, round2, config, state)
    residual2 = to_layers(state[RESIDUAL_KEY])[0]

    assert to_layers(sent1)[0].tolist() == [0] and to_layers(sent1)[1].tolist() == [5.0]
    np.testing.assert_array_equal(residual1, np.array([0, 1.0, 0.9, 0], np.float32))
    assert to_layers(sent2)[0].tolist() == [1] and to_layers(sent2)[1].tolist() == [1.5]
    np.testing.assert_allclose(residual2, [0, 0, 0.9, 0.2], rtol=0, atol=1e-7)
    # Nothing is lost: sent + residual == the sum of the updates.
    total = np.zeros(4, np.float32)
    total[[0, 1]] = [5.0, 1.5]
    np.testing.assert_allclose(total + residual2, round1[0] + round2[0], rtol=0, atol=1e-6)


def test_a_residual_that_does_not_fit_the_model_is_discarded() -> None:
    state = RecordDict({RESIDUAL_KEY: from_layers(["w"], [np.ones(3, np.float32)])})
    config = ConfigRecord({COMPRESSION_KEY: "topk", TOPK_FRACTION_KEY: 0.5})

    _, sent = reply_arrays(
        ["w"], [np.zeros(4, np.float32)], [np.array([0, 3, 0, 1], np.float32)], config, state
    )

    indices, values, _ = to_layers(sent)
    assert indices.tolist() == [1, 3] and values.tolist() == [3.0, 1.0]
    np.testing.assert_array_equal(to_layers(state[RESIDUAL_KEY])[0], [0, 0, 0, 0])


# ----------------------------------------------------------------------- bytes
def test_bytes_up_and_down_are_the_serialized_payload_sizes() -> None:
    strategy = CompressedStrategy(fedavg(), scheme="int8")
    messages = configure(strategy, [1, 2])
    replies = [client_reply(m, perturbed(0.05, seed=i)) for i, m in enumerate(messages)]

    strategy.aggregate_train(1, replies)
    metrics = strategy.round_metrics(1)

    model_payload = sum(a.nbytes + HEADER for a in GLOBAL.values())
    assert metrics["bytes_down"] == 2 * model_payload
    assert metrics["bytes_up_uncompressed"] == 2 * model_payload
    # Per layer: data (1 byte per entry) + float64 scale + int64 zero point, as nbytes() counts
    # them, plus the dtype tag (no data); four .npy headers.
    per_reply = sum(nbytes(quantize_uint8(v)) + 4 * HEADER for v in GLOBAL.values())
    assert metrics["bytes_up"] == 2 * per_reply
    assert metrics["bytes_up"] == sum(
        len(a.data) for r in replies for a in r.content[COMPRESSED_KEY].values()
    )


def test_evaluate_messages_count_as_bytes_down() -> None:
    strategy = CompressedStrategy(fedavg(), scheme="int8")
    grid = FakeGrid([1, 2, 3])

    messages = list(
        strategy.configure_evaluate(1, from_layers(NAMES, list(GLOBAL.values())), ConfigRecord(), grid)
    )

    assert len(messages) == 3
    assert strategy.round_metrics(1)["bytes_down"] == 3 * sum(a.nbytes + HEADER for a in GLOBAL.values())


# ----------------------------------------------------------------------- malformed
def _replace(reply: Message, key: str, value: np.ndarray | None) -> Message:
    arrays = {k: v for k, v in reply.content[COMPRESSED_KEY].items() if k != key}
    if value is not None:
        arrays[key] = Array(value)
    return make_reply(
        reply.metadata.src_node_id,
        metrics={"num-examples": 100},
        extra={COMPRESSED_KEY: ArrayRecord(arrays)},  # type: ignore[arg-type]
    )


MALFORMED = {
    "wrong shape": lambda r: _replace(r, "conv.bias/q_data", np.zeros(5, np.uint8)),
    "missing key": lambda r: _replace(r, "head.weight/q_scale", None),
    "extra key": lambda r: _replace(r, "head.weight/extra", np.zeros(1, np.uint8)),
    "negative scale": lambda r: _replace(r, "conv.bias/q_scale", np.array([-1.0])),
    "wrong dtype tag": lambda r: _replace(r, "conv.bias/q_dtype", np.empty(0, np.float64)),
    # A complex scale used to be cut to its real part and aggregated; a timedelta one raised TypeError.
    "complex scale": lambda r: _replace(r, "conv.bias/q_scale", np.array([0.01 + 0.5j])),
    "timedelta scale": lambda r: _replace(r, "conv.bias/q_scale", np.array([1], dtype="m8[s]")),
    "float zero point": lambda r: _replace(r, "head.weight/q_zero_point", np.array([3.0])),
    "unsigned zero point": lambda r: _replace(
        r, "head.weight/q_zero_point", np.array([2**64 - 1], np.uint64)
    ),
    "garbage bytes": lambda r: make_reply(
        r.metadata.src_node_id,
        metrics={"num-examples": 100},
        extra={
            COMPRESSED_KEY: ArrayRecord(
                {
                    **r.content[COMPRESSED_KEY],
                    "conv.bias/q_data": Array(dtype="uint8", shape=(4,), stype="numpy.ndarray", data=b"nope"),
                }
            )
        },
    ),
    "model and update": lambda r: make_reply(
        r.metadata.src_node_id,
        arrays=GLOBAL,
        metrics={"num-examples": 100},
        extra={COMPRESSED_KEY: r.content[COMPRESSED_KEY]},
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_compressed_reply_is_rejected_with_a_reason_and_the_rest_aggregate(kind: str) -> None:
    strategy = CompressedStrategy(fedavg(), scheme="int8")
    messages = configure(strategy, [1, 2, 3])
    locals_ = [perturbed(0.05, seed=i) for i in range(3)]
    replies = [client_reply(m, loc) for m, loc in zip(messages, locals_, strict=True)]
    reference = CompressedStrategy(fedavg(), scheme="int8")
    configure(reference, [1, 2, 3])

    arrays, _ = strategy.aggregate_train(1, [MALFORMED[kind](replies[0]), *replies[1:]])
    expected, _ = reference.aggregate_train(1, replies[1:])

    stats = strategy.stats[1]
    assert stats.rejected == {MALFORMED_COMPRESSED: 1}
    assert stats.failed == 0 and stats.failed_nodes == [] and stats.succeeded == 2
    assert arrays is not None and expected is not None
    for a, b in zip(to_layers(arrays, NAMES), to_layers(expected, NAMES), strict=True):
        np.testing.assert_array_equal(a, b)


TOPK_MALFORMED = {
    # Unsigned indices out of order passed the first/last-index check (np.diff wrapped
    # around), then densify raised IndexError out of aggregate_train and ended the run.
    "unsigned out of range": lambda r: _replace(r, "conv.bias/sp_indices", np.array([2**63, 1], np.uint64)),
    "unsigned unsorted": lambda r: _replace(r, "conv.bias/sp_indices", np.array([3, 1], np.uint8)),
    "unsorted": lambda r: _replace(r, "conv.bias/sp_indices", np.array([3, 1], np.int32)),
    "duplicate": lambda r: _replace(r, "conv.bias/sp_indices", np.array([1, 1], np.int32)),
    "out of range": lambda r: _replace(r, "conv.bias/sp_indices", np.array([1, 4], np.int32)),
    "complex values": lambda r: _replace(r, "conv.bias/sp_values", np.array([1 + 1j, 2])),
    "nan value": lambda r: _replace(r, "conv.bias/sp_values", np.array([np.nan, 2], np.float32)),
    "float64 values": lambda r: _replace(r, "conv.bias/sp_values", np.array([1.0, 2.0])),
    "unsigned shape": lambda r: _replace(r, "conv.bias/sp_shape", np.array([4], np.uint64)),
    "huge shape": lambda r: _replace(r, "conv.bias/sp_shape", np.array([2**62, 2**62])),
}


@pytest.mark.parametrize("kind", sorted(TOPK_MALFORMED))
def test_malformed_topk_reply_is_rejected_never_raised(kind: str) -> None:
    # conv.bias has 4 entries, so topk-fraction 0.5 sends k = 2 of them.
    strategy = CompressedStrategy(fedavg(), scheme="topk", topk_fraction=0.5)
    messages = configure(strategy, [1, 2])
    replies = [client_reply(m, perturbed(0.05, seed=30 + i)) for i, m in enumerate(messages)]
    assert to_layers(replies[0].content[COMPRESSED_KEY], ["conv.bias/sp_indices"])[0].shape == (2,)
    reference = CompressedStrategy(fedavg(), scheme="topk", topk_fraction=0.5)
    configure(reference, [1, 2])

    arrays, _ = strategy.aggregate_train(1, [TOPK_MALFORMED[kind](replies[0]), replies[1]])
    expected, _ = reference.aggregate_train(1, replies[1:])

    stats = strategy.stats[1]
    assert stats.rejected == {MALFORMED_COMPRESSED: 1} and stats.failed == 0 and stats.succeeded == 1
    assert arrays is not None and expected is not None
    for a, b in zip(to_layers(arrays, NAMES), to_layers(expected, NAMES), strict=True):
        np.testing.assert_array_equal(a, b)


def test_topk_reply_with_more_than_k_entries_is_rejected() -> None:
    strategy = CompressedStrategy(fedavg(), scheme="topk", topk_fraction=0.1)
    (msg,) = configure(strategy, [1])
    cheat = CompressedStrategy(fedavg(), scheme="topk", topk_fraction=0.2)
    (cheat_msg,) = configure(cheat, [1])
    reply = client_reply(cheat_msg, perturbed(0.05, seed=3))  # a client using twice the fraction

    arrays, _ = strategy.aggregate_train(1, [reply])

    assert arrays is None  # nothing valid to aggregate: the previous model is kept
    assert strategy.stats[1].rejected == {MALFORMED_COMPRESSED: 1} and strategy.stats[1].failed == 0


def test_uncompressed_reply_is_aggregated_as_is() -> None:
    strategy = CompressedStrategy(fedavg(), scheme="topk", topk_fraction=0.1)
    (msg,) = configure(strategy, [1])
    local = perturbed(0.05, seed=4)

    arrays, _ = strategy.aggregate_train(1, [make_reply(1, arrays=local, metrics={"num-examples": 10})])

    assert arrays is not None
    for a, b in zip(to_layers(arrays, NAMES), local.values(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert strategy.round_metrics(1)["bytes_up"] == sum(a.nbytes + HEADER for a in local.values())


# ----------------------------------------------------------------------- aggregation
def test_int8_fedavg_is_within_the_quantization_bound_of_uncompressed_fedavg() -> None:
    weights = [100, 300, 600]
    locals_ = [perturbed(0.1, seed=10 + i) for i in range(3)]
    plain = fedavg()
    plain.configure_train(1, from_layers(NAMES, list(GLOBAL.values())), ConfigRecord(), FakeGrid([1, 2, 3]))
    compressed = CompressedStrategy(fedavg(), scheme="int8")
    messages = configure(compressed, [1, 2, 3])

    expected, _ = plain.aggregate_train(
        1,
        [
            make_reply(i + 1, arrays=loc, metrics={"num-examples": n})
            for i, (loc, n) in enumerate(zip(locals_, weights, strict=True))
        ],
    )
    got, _ = compressed.aggregate_train(
        1, [client_reply(m, loc, n=n) for m, loc, n in zip(messages, locals_, weights, strict=True)]
    )

    assert expected is not None and got is not None
    for name, a, b in zip(NAMES, to_layers(got, NAMES), to_layers(expected, NAMES), strict=True):
        # Σ (n_k / n) · scale_k / 2, each client's own step.
        bound = sum(
            n / sum(weights) * float(np.ptp(loc[name] - GLOBAL[name])) / 255 / 2
            for loc, n in zip(locals_, weights, strict=True)
        )
        error = np.abs(a.astype(np.float64) - b)
        assert error.max() <= bound + 8 * np.finfo(np.float32).eps * np.abs(b).max()
        assert error.max() > 0


def test_wrapping_median_keeps_its_robustness() -> None:
    # Four honest clients near the global model and one that adds 1000 to every weight (a
    # constant update, which int8 sends exactly); the median ignores it.
    honest = [perturbed(0.01, seed=20 + i) for i in range(4)]
    byzantine = {k: v + np.float32(1000) for k, v in GLOBAL.items()}
    strategy = CompressedStrategy(
        FedMedian(num_byzantine=1, min_train_nodes=1, min_available_nodes=1), scheme="int8"
    )
    messages = configure(strategy, [1, 2, 3, 4, 5])

    arrays, _ = strategy.aggregate_train(
        1, [client_reply(m, loc) for m, loc in zip(messages, [*honest, byzantine], strict=True)]
    )

    assert arrays is not None
    for name, got in zip(NAMES, to_layers(arrays, NAMES), strict=True):
        stacked = np.stack([h[name] for h in [*honest, byzantine]])
        median = np.median(stacked, axis=0)
        step = max(float(np.ptp(h[name] - GLOBAL[name])) / 255 for h in honest)
        assert np.abs(got - median).max() <= step / 2 + 1e-5
        assert np.abs(got - GLOBAL[name]).max() < 0.1


# ----------------------------------------------------------------------- every registered strategy
NUM_NODES = 6  # enough for Multi-Krum (n > 2f + 2) and the trimmed mean (beta >= f / n)


def _config(name: str, scheme: str) -> AppConfig:
    overrides = {"strategy": name, "compression": scheme, "topk-fraction": 0.5, "min-available-nodes": 1}
    return AppConfig.from_run_config({**REGISTRY[name].contract_config, **overrides})


def _refuses_compression(name: str) -> bool:
    try:
        build_strategy(_config(name, "int8"))
    except ConfigError:
        return True
    return False


#: Strategies that run their own (asynchronous) loop cannot be wrapped and say so.
REFUSING = [n for n in sorted(REGISTRY) if _refuses_compression(n)]
WRAPPABLE = [n for n in sorted(REGISTRY) if n not in REFUSING]


def test_only_asynchronous_strategies_refuse_compression_and_they_say_why() -> None:
    assert REFUSING == ["fedbuff"]
    with pytest.raises(ConfigError, match="compression='int8' cannot be combined with strategy='fedbuff'"):
        build_strategy(_config("fedbuff", "int8"))


@pytest.mark.parametrize("scheme", ["int8", "topk"])
@pytest.mark.parametrize("name", WRAPPABLE)
def test_every_registered_strategy_aggregates_compressed_identical_updates(name: str, scheme: str) -> None:
    spec = REGISTRY[name]
    strategy = build_strategy(_config(name, scheme))
    assert isinstance(strategy, CompressedStrategy) and strategy.scheme == scheme
    inner_type = type(build_strategy(_config(name, "none")))
    assert type(strategy.inner) is inner_type
    nodes = list(range(1, NUM_NODES + 1))
    messages = configure(strategy, nodes)
    assert messages and all(m.content["config"][COMPRESSION_KEY] == scheme for m in messages)
    # A small update (norm < norm-bound) taking two values in each layer.
    update = {
        k: np.where(np.arange(v.size).reshape(v.shape) % 2 == 0, 0.01, -0.02).astype(np.float32)
        for k, v in GLOBAL.items()
    }
    local = {k: GLOBAL[k] + update[k] for k in NAMES}
    replies = [client_reply(m, local, n=1000) for m in messages]
    malformed = _replace(
        replies[0], f"{NAMES[0]}/q_data" if scheme == "int8" else f"{NAMES[0]}/sp_values", None
    )

    arrays, _ = strategy.aggregate_train(1, [malformed, *replies[1:]])

    assert arrays is not None
    assert strategy.stats[1].rejected == {MALFORMED_COMPRESSED: 1}
    assert strategy.round_metrics(1)["bytes_up"] > 0
    # Top-k at 50% sends the larger half of each layer (the -0.02 entries) exactly; int8 sends
    # every entry within half a step (0.03 / 255 / 2), plus float32 rounding of G + u - G.
    sent = {k: np.where(update[k] < 0, update[k], 0) if scheme == "topk" else update[k] for k in NAMES}
    exact = 1e-6 if scheme == "topk" else 0.03 / 255 / 2 + 1e-6
    for name_, got in zip(NAMES, to_layers(arrays, NAMES), strict=True):
        step = got - GLOBAL[name_]
        if spec.server_optimizer:  # a step in the update's direction
            assert np.all(step * sent[name_] >= 0) and np.any(step * sent[name_] > 0)
            assert np.abs(step[sent[name_] == 0]).max(initial=0) < 1e-6  # float rounding only
        else:  # DP adds noise of std 0.01 * S / (q W) ≈ 0.002 (DP_CONTRACT_CONFIG)
            tolerance = exact if spec.deterministic else 0.02
            np.testing.assert_allclose(step, sent[name_], rtol=0, atol=tolerance)


@pytest.mark.parametrize("name", WRAPPABLE)
def test_every_wrapped_strategy_checkpoints_and_resumes_through_the_wrapper(name: str) -> None:
    strategy = build_strategy(_config(name, "topk"))

    assert strategy.state_dict().keys() == strategy.inner.state_dict().keys()  # type: ignore[attr-defined]
    strategy.load_state_dict(strategy.state_dict())  # type: ignore[attr-defined]
    assert "start_round" in inspect.signature(strategy.start).parameters
    assert strategy.stats is strategy.inner.stats  # type: ignore[attr-defined]


def test_dp_contract_config_is_what_the_parametrized_checks_assume() -> None:
    assert DP_CONTRACT_CONFIG["dp-noise-multiplier"] == 0.01 and DP_CONTRACT_CONFIG["dp-sampling-rate"] == 1.0


# ----------------------------------------------------------------------- the round loop
class CompressingGrid(FakeGrid):
    """Replies to train messages like a compressing client whose training adds ``step`` to each weight."""

    def __init__(self, nodes: list[int], step: float) -> None:
        super().__init__(nodes)
        self.step = step
        self.states = {n: RecordDict() for n in nodes}
        self.rounds: list[int] = []

    def send_and_receive(self, messages, timeout=None):  # noqa: ANN001, ANN201
        replies = []
        for msg in messages:
            if msg.metadata.message_type != "train":
                continue
            self.rounds.append(int(msg.content["config"]["server-round"]))
            arrays = to_layers(msg.content["arrays"], NAMES)
            local = {n: a + np.float32(self.step) for n, a in zip(NAMES, arrays, strict=True)}
            replies.append(client_reply(msg, local, state=self.states[msg.metadata.dst_node_id]))
        return replies


def test_start_runs_the_wrapper_hooks_from_start_round() -> None:
    strategy = CompressedStrategy(fedavg(), scheme="topk", topk_fraction=0.5)
    grid = CompressingGrid([1, 2], step=0.01)

    result = strategy.start(
        grid=grid,  # type: ignore[arg-type]
        initial_arrays=from_layers(NAMES, list(GLOBAL.values())),
        num_rounds=4,
        start_round=3,
    )

    assert sorted(set(grid.rounds)) == [3, 4] and sorted(strategy.traffic) == [3, 4]
    assert all(strategy.stats[r].succeeded == 2 for r in (3, 4))
    # Half of each constant step is sent per round; error feedback sends the other half next
    # round, so after two rounds every weight moved by 0.01 or 0.02 (never by 0: nothing is lost).
    assert result.arrays is not None
    for name, got in zip(NAMES, to_layers(result.arrays, NAMES), strict=True):
        moved = got - GLOBAL[name]
        assert np.all(np.isclose(moved, 0.01, atol=1e-6) | np.isclose(moved, 0.02, atol=1e-6))
        assert math.isclose(float(moved.sum()), 0.02 * moved.size * 0.75, rel_tol=0.1)


# ----------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"compression": "gzip"}, "compression='gzip' is invalid: must be one of none, int8, topk"),
        ({"topk-fraction": 0.0}, "topk-fraction=0.0 is invalid: must be in (0, 1]"),
        ({"topk-fraction": 1.5}, "topk-fraction=1.5 is invalid"),
    ],
)
def test_bad_compression_config_names_the_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        AppConfig.from_run_config(override)
    assert message in str(err.value) and "--run-config" in str(err.value)


def test_no_compression_leaves_the_strategy_unwrapped() -> None:
    cfg = AppConfig.from_run_config({})
    inner = fedavg()

    assert with_compression(cfg, inner) is inner
    assert type(build_strategy(cfg)) is FedAvg


def test_compression_around_a_strategy_without_the_protocol_is_refused_naming_it() -> None:
    # A plug-in returning a plain Flower strategy has no reply-transform hook for the
    # wrapper to register with: refused before training, naming the protocol and the fix.
    from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

    with pytest.raises(TypeError, match=r"does not implement the EdgeStrategy protocol.*add_reply_transform"):
        with_compression(_config("fedavg", "int8"), FlowerFedAvg())
    assert with_compression(_config("fedavg", "none"), plain := FlowerFedAvg()) is plain
