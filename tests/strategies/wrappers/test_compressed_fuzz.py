"""Property-based fuzzing of compressed replies through the compression wrapper.

Each case is a round of FedAvg, the coordinate-wise median or Multi-Krum wrapped in
:class:`strategies.wrappers.compressed.CompressedStrategy` (int8 or top-k), with a random mix of
good compressed replies (encoded by the real client code, ``reply_arrays``) and
malformed ones: every field of the wire format with the wrong dtype (complex, unsigned,
timedelta, string, bool, another float width), shape or range (NaN/inf, negative scale,
huge zero point, out-of-range / unsorted / duplicate indices, the wrong number of
entries), missing or extra fields, an empty record, the other scheme's encoding, an
integer buffer sent anyway, corrupt bytes, and a reply with both a model and an update.
Whatever the mix, no exception escapes ``aggregate_train``, every malformed reply is
counted as ``malformed-compressed``, and the released model is bit for bit what the good
replies alone give. The model has an int64 BatchNorm counter, which is never sent.

``COMPRESSED_FUZZ_EXAMPLES`` cases per (strategy, scheme) (40 by default: 240 cases,
about 15 s on one core). Hypothesis runs derandomized, so CI sees the same cases every time.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_app.compression import reply_arrays
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import REGISTRY
from strategies.core.reply_checks import MALFORMED_COMPRESSED, MISSING_RECORDS
from strategies.numeric.compression import COMPRESSED_KEY, array_key, topk_count
from strategies.wrappers.compressed import CompressedStrategy
from tests.conftest import FakeGrid, config_record, make_reply
from tests.strategies.test_contract import as_dict, build, num_valid_replies

FUZZ_EXAMPLES = int(os.environ.get("COMPRESSED_FUZZ_EXAMPLES", "40"))
TOPK_FRACTION = 0.5  # k >= 2 in every layer below, so two indices can be swapped or repeated
COUNTER = "bn.num_batches_tracked"
GLOBAL = {
    "conv.weight": np.linspace(-0.5, 0.5, 6, dtype=np.float32).reshape(2, 3),
    "conv.bias": np.array([0.1, -0.2, 0.3], dtype=np.float32),
    COUNTER: np.array(40, dtype=np.int64),
    "head.weight": np.linspace(1.0, -1.0, 8, dtype=np.float32).reshape(4, 2),
}
NAMES = list(GLOBAL)
FLOATING = [n for n in NAMES if n != COUNTER]

Encoded = dict[str, np.ndarray]
Mutation = Callable[[Encoded, str, np.random.Generator], Encoded]


def _set(field: str, make: Callable[[np.ndarray, np.random.Generator], np.ndarray]) -> Mutation:
    """A mutation replacing ``field`` of one layer with ``make(old value, rng)``."""

    def mutate(encoded: Encoded, layer: str, rng: np.random.Generator) -> Encoded:
        key = array_key(layer, field)
        return {**encoded, key: make(encoded[key], rng)}

    return mutate


def _swap_first_two(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = indices.copy()
    out[[0, 1]] = out[[1, 0]]
    return out


def _repeat_first(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = indices.copy()
    out[1] = out[0]
    return out


def _one_out_of_range(size: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def make(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = indices.copy()
        out[-1] = size + int(rng.integers(0, 1000))
        return out

    return make


def _with_value(value: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def make(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = values.copy()
        out[int(rng.integers(out.size))] = value
        return out

    return make


#: Field mutations of an int8 layer (q_data, q_scale, q_zero_point, q_dtype).
INT8_MUTATIONS: dict[str, Mutation] = {
    "scale-complex": _set("q_scale", lambda v, r: v.astype(np.complex128) + 1j),
    "scale-timedelta": _set("q_scale", lambda v, r: np.array([1], dtype="m8[s]")),
    "scale-string": _set("q_scale", lambda v, r: np.array(["0.01"])),
    "scale-bool": _set("q_scale", lambda v, r: np.array([True])),
    "scale-int": _set("q_scale", lambda v, r: np.array([1], dtype=np.int64)),
    "scale-float32": _set("q_scale", lambda v, r: v.astype(np.float32)),
    "scale-nan": _set("q_scale", lambda v, r: np.array([np.nan])),
    "scale-inf": _set("q_scale", lambda v, r: np.array([r.choice([np.inf, -np.inf])])),
    "scale-negative": _set("q_scale", lambda v, r: -v - 1.0),
    "scale-scalar": _set("q_scale", lambda v, r: v.reshape(())),
    "scale-two": _set("q_scale", lambda v, r: np.concatenate([v, v])),
    "zero-point-float": _set("q_zero_point", lambda v, r: v.astype(np.float64)),
    "zero-point-unsigned": _set("q_zero_point", lambda v, r: np.array([2**64 - 1], dtype=np.uint64)),
    "zero-point-huge": _set("q_zero_point", lambda v, r: np.array([2**60 + int(r.integers(2**30))])),
    "zero-point-timedelta": _set("q_zero_point", lambda v, r: v.astype("m8[s]")),
    "zero-point-complex": _set("q_zero_point", lambda v, r: v.astype(np.complex64)),
    "data-int8": _set("q_data", lambda v, r: v.astype(np.int8)),
    "data-float": _set("q_data", lambda v, r: v.astype(np.float32)),
    "data-wrong-shape": _set("q_data", lambda v, r: np.zeros(v.size + 1, np.uint8)),
    "data-empty": _set("q_data", lambda v, r: np.zeros(0, np.uint8)),
    "dtype-tag-complex": _set("q_dtype", lambda v, r: np.empty(0, np.complex64)),
    "dtype-tag-float64": _set("q_dtype", lambda v, r: np.empty(0, np.float64)),
    "dtype-tag-int": _set("q_dtype", lambda v, r: np.empty(0, np.int32)),
    "dtype-tag-not-empty": _set("q_dtype", lambda v, r: np.zeros(2, np.float32)),
}

#: Field mutations of a top-k layer (sp_indices, sp_values, sp_shape).
TOPK_MUTATIONS: dict[str, Mutation] = {
    "indices-unsigned-unsorted": _set("sp_indices", lambda v, r: _swap_first_two(v, r).astype(np.uint8)),
    "indices-unsigned-huge": _set("sp_indices", lambda v, r: np.array([2**63] + list(v[1:]), np.uint64)),
    "indices-unsigned": _set("sp_indices", lambda v, r: v.astype(np.uint32)),
    "indices-unsorted": _set("sp_indices", _swap_first_two),
    "indices-duplicate": _set("sp_indices", _repeat_first),
    "indices-negative": _set("sp_indices", lambda v, r: np.concatenate([[-1], v[1:]]).astype(v.dtype)),
    "indices-float": _set("sp_indices", lambda v, r: v.astype(np.float64)),
    "indices-complex": _set("sp_indices", lambda v, r: v.astype(np.complex128)),
    "indices-timedelta": _set("sp_indices", lambda v, r: v.astype("m8[s]")),
    "indices-bool": _set("sp_indices", lambda v, r: np.ones(v.size, bool)),
    "indices-2d": _set("sp_indices", lambda v, r: v.reshape(1, -1)),
    "values-nan": _set("sp_values", _with_value(np.nan)),
    "values-inf": _set("sp_values", _with_value(np.inf)),
    "values-complex": _set("sp_values", lambda v, r: v.astype(np.complex64)),
    "values-float64": _set("sp_values", lambda v, r: v.astype(np.float64)),
    "values-int": _set("sp_values", lambda v, r: v.astype(np.int32)),
    "values-too-many": _set("sp_values", lambda v, r: np.concatenate([v, v[:1]])),
    "shape-wrong": _set("sp_shape", lambda v, r: np.array([int(np.prod(v)) + 1])),
    "shape-unsigned": _set("sp_shape", lambda v, r: v.astype(np.uint64)),
    "shape-float": _set("sp_shape", lambda v, r: v.astype(np.float64)),
    "shape-negative": _set("sp_shape", lambda v, r: -v),
    "shape-huge": _set("sp_shape", lambda v, r: np.array([2**62, 2**62])),
    "shape-scalar": _set("sp_shape", lambda v, r: np.array(int(np.prod(v)))),
}


def _drop_one_entry(encoded: Encoded, layer: str, rng: np.random.Generator) -> Encoded:
    """k - 1 entries, consistent with each other: only the count is wrong."""
    indices, values = array_key(layer, "sp_indices"), array_key(layer, "sp_values")
    return {**encoded, indices: encoded[indices][1:], values: encoded[values][1:]}


TOPK_MUTATIONS["fewer-than-k"] = _drop_one_entry


def _missing_field(encoded: Encoded, layer: str, rng: np.random.Generator) -> Encoded:
    keys = sorted(encoded)
    del_key = keys[int(rng.integers(len(keys)))]
    return {k: v for k, v in encoded.items() if k != del_key}


#: Mutations of the whole record, for either scheme.
COMMON_MUTATIONS: dict[str, Mutation] = {
    "missing-field": _missing_field,
    "empty-record": lambda e, layer, r: {},
    "extra-key": lambda e, layer, r: {**e, "evil.weight/q_data": np.zeros(3, np.uint8)},
    "counter-sent": lambda e, layer, r: {**e, array_key(COUNTER, "raw"): np.array(100, np.int64)},
    "unknown-field": lambda e, layer, r: {**e, array_key(layer, "extra"): np.zeros(1, np.float32)},
}

#: Malformations of the reply itself: name → the rejection reason it must be counted under
#: (None: an error reply, counted as a failed node).
REPLY_KINDS: dict[str, str | None] = {
    "corrupt-payload": MALFORMED_COMPRESSED,
    "model-and-update": MALFORMED_COMPRESSED,
    "other-scheme": MALFORMED_COMPRESSED,
    "no-metrics-record": MISSING_RECORDS,  # decodes fine; the inner strategy's validation rejects it
    "error": None,
}


def bad_kinds(scheme: str) -> dict[str, str | None]:
    fields = INT8_MUTATIONS if scheme == "int8" else TOPK_MUTATIONS
    return {**dict.fromkeys([*fields, *COMMON_MUTATIONS], MALFORMED_COMPRESSED), **REPLY_KINDS}


def local_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A trained client model: float layers moved a little, the counter moved by 100 batches."""
    local = {k: (v + rng.normal(0, 0.02, v.shape)).astype(v.dtype) for k, v in GLOBAL.items() if k != COUNTER}
    return {**local, COUNTER: GLOBAL[COUNTER] + 100}


def encode(msg: Message, rng: np.random.Generator, *, scheme: str | None = None) -> Encoded:
    """What the client code sends in reply to ``msg`` (``scheme`` overrides the server's)."""
    config = dict(msg.content["config"])
    if scheme is not None:
        config["compression"] = scheme
    local = local_model(rng)
    global_layers = to_layers(msg.content["arrays"], NAMES)
    _, record = reply_arrays(
        NAMES, global_layers, [local[n] for n in NAMES], ConfigRecord(config), RecordDict()
    )
    return dict(zip(record.keys(), [np.array(a) for a in to_layers(record)], strict=True))


def reply_with(node: int, encoded: Encoded, rng: np.random.Generator, **extra: Any) -> Message:
    record = ArrayRecord({k: Array(v) for k, v in encoded.items()})  # type: ignore[arg-type]
    metrics = {"num-examples": int(rng.integers(1, 5000)), "train-loss": 0.5}
    return make_reply(node, metrics=metrics, extra={COMPRESSED_KEY: record, **extra})


def bad_reply(kind: str, msg: Message, scheme: str, rng: np.random.Generator) -> Message:
    node = msg.metadata.dst_node_id
    if kind == "error":
        return make_reply(node, error="client crashed")
    if kind == "other-scheme":
        return reply_with(node, encode(msg, rng, scheme="topk" if scheme == "int8" else "int8"), rng)
    encoded = encode(msg, rng)
    layer = str(rng.choice(FLOATING))
    mutation = {**INT8_MUTATIONS, **TOPK_MUTATIONS, **COMMON_MUTATIONS}.get(kind)
    if mutation is not None:
        return reply_with(node, mutation(encoded, layer, rng), rng)
    if kind == "model-and-update":
        return reply_with(node, encoded, rng, arrays=from_layers(NAMES, list(GLOBAL.values())))
    reply = reply_with(node, encoded, rng)
    if kind == "corrupt-payload":
        key = str(rng.choice(sorted(encoded)))
        good = reply.content[COMPRESSED_KEY][key]
        reply.content[COMPRESSED_KEY][key] = Array(
            dtype=good.dtype, shape=good.shape, stype=good.stype, data=b"\x93NUMPY garbage"
        )
    elif kind == "no-metrics-record":
        del reply.content["metrics"]
    else:
        raise AssertionError(f"unknown kind {kind!r}")
    return reply


def test_every_mutation_is_drawn_and_k_allows_two_indices_per_layer() -> None:
    assert all(topk_count(GLOBAL[n].size, TOPK_FRACTION) >= 2 for n in FLOATING)
    assert len(bad_kinds("int8")) + len(bad_kinds("topk")) >= 60


def run(strategy: Any, nodes: list[int], reply_for: Callable[[list[Message]], list[Message]]) -> Any:
    start = from_layers(NAMES, list(GLOBAL.values()))
    messages = list(strategy.configure_train(1, start, config_record(), FakeGrid(nodes)))
    new, _ = strategy.aggregate_train(1, reply_for(messages))
    return new


@pytest.mark.parametrize("scheme", ["int8", "topk"])
@pytest.mark.parametrize("name", ["fedavg", "median", "multi-krum"])
def test_malformed_compressed_replies_are_counted_and_never_raise(name: str, scheme: str) -> None:
    spec = REGISTRY[name]
    min_good = num_valid_replies(spec)
    kinds = bad_kinds(scheme)

    def strategy() -> CompressedStrategy:
        built = build(spec, compression=scheme, **{"topk-fraction": TOPK_FRACTION})
        assert isinstance(built, CompressedStrategy)
        return built

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases in CI every time
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        num_good=st.integers(0, min_good + 2),
        bad=st.lists(st.sampled_from(sorted(kinds)), min_size=1, max_size=6),
        seed=st.integers(0, 2**32 - 1),
    )
    def case(num_good: int, bad: list[str], seed: int) -> None:
        # Sampled nodes that never answer keep the sample admissible for Krum (n > 2f + 2).
        silent = max(2, min_good - num_good - len(bad))
        nodes = list(range(1, num_good + len(bad) + silent + 1))
        answering = nodes[: num_good + len(bad)]
        order = np.random.default_rng(seed).permutation(len(answering))

        def mixed(messages: list[Message]) -> list[Message]:
            rng = np.random.default_rng(seed)  # the same good replies in both runs
            by_node = {m.metadata.dst_node_id: m for m in messages}
            good = [reply_with(n, encode(by_node[n], rng), rng) for n in answering[:num_good]]
            broken = [
                bad_reply(kind, by_node[n], scheme, rng)
                for kind, n in zip(bad, answering[num_good:], strict=True)
            ]
            replies = good + broken
            return [replies[i] for i in order]

        def good_only(messages: list[Message]) -> list[Message]:
            rng = np.random.default_rng(seed)
            by_node = {m.metadata.dst_node_id: m for m in messages}
            return [reply_with(n, encode(by_node[n], rng), rng) for n in answering[:num_good]]

        fuzzed = strategy()
        released = run(fuzzed, nodes, mixed)  # no exception may escape
        reference = run(strategy(), nodes, good_only)

        assert (released is None) == (reference is None)
        if released is not None:
            got, want = as_dict(released), as_dict(reference)
            assert list(got) == NAMES
            for k in NAMES:
                assert got[k].dtype == GLOBAL[k].dtype and np.all(np.isfinite(got[k])), k
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
            assert got[COUNTER] == GLOBAL[COUNTER]  # never sent, never aggregated
        stats = fuzzed.stats[1]
        assert stats.succeeded == num_good
        assert stats.rejected == dict(Counter(kinds[k] for k in bad if kinds[k] is not None))
        errors = [n for k, n in zip(bad, answering[num_good:], strict=True) if k == "error"]
        assert sorted(stats.failed_nodes) == errors + nodes[len(answering) :]

    case()


@pytest.mark.parametrize(("scheme", "kind"), [(s, k) for s in ("int8", "topk") for k in sorted(bad_kinds(s))])
def test_each_malformation_alone_is_counted_under_its_reason(scheme: str, kind: str) -> None:
    # The fuzz draws kinds at random; this pins every one of them once, next to a good reply.
    strategy = build(REGISTRY["fedavg"], compression=scheme, **{"topk-fraction": TOPK_FRACTION})
    rng = np.random.default_rng(0)

    def replies(messages: list[Message]) -> list[Message]:
        good, bad = sorted(messages, key=lambda m: m.metadata.dst_node_id)
        return [reply_with(1, encode(good, rng), rng), bad_reply(kind, bad, scheme, rng)]

    released = run(strategy, [1, 2], replies)

    expected = bad_kinds(scheme)[kind]
    stats = strategy.stats[1]
    assert released is not None and stats.succeeded == 1
    assert stats.rejected == ({} if expected is None else {expected: 1})
    assert stats.failed_nodes == ([2] if expected is None else [])
    assert as_dict(released)[COUNTER] == GLOBAL[COUNTER]
