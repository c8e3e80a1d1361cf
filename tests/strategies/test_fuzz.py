"""Property-based fuzzing of reply validation through every registered strategy.

Each case is a round with a random mix of good replies and malformed ones (wrong
shape, dtype or names, NaN/inf, empty arrays, corrupt payloads, zero / negative / huge
/ non-integer / missing ``num-examples``, missing or extra records, error replies), in
random order. Whatever the mix, the released model is finite and equals what the same
strategy releases from the good replies alone (bit for bit: malformed replies count
as no reply), and the round's drop counts name every bad reply by its reason.

``FUZZ_EXAMPLES`` cases per strategy (60 by default: over 700 cases in all with the
13 built-in strategies, a guard below keeps the total at 500 or more; set the
environment variable to go deeper, e.g. ``FUZZ_EXAMPLES=2000``). Hypothesis runs
derandomized, so CI sees the same cases every time.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategies.core.records import from_layers
from strategies.core.registry import REGISTRY
from tests.conftest import FakeGrid, config_record, make_reply
from tests.strategies.test_contract import GLOBAL, NAMES_OF_LAYERS, as_dict, build, num_valid_replies

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
MAX_NUM_EXAMPLES = 10_000

#: Malformation → the rejection reason it must be counted under (None: an error reply,
#: counted as a failed node instead).
BAD_KINDS: dict[str, str | None] = {
    "wrong-shape": "wrong-shape",
    "wrong-dtype": "wrong-dtype",
    "missing-name": "missing-arrays",
    "extra-name": "extra-arrays",
    "nan": "non-finite",
    "inf": "non-finite",
    "empty-array": "empty-array",
    "corrupt-payload": "malformed-array",
    "zero-examples": "num-examples-non-positive",
    "negative-examples": "num-examples-non-positive",
    "huge-examples": "num-examples-too-large",
    "float-examples": "num-examples-not-integer",
    "no-examples": "num-examples-missing",
    "no-metrics-record": "missing-records",
    "extra-array-record": "missing-records",
    "error": None,
}


def update(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: (v + rng.normal(0, 0.02, v.shape)).astype(v.dtype) for k, v in GLOBAL.items()}


def bad_reply(kind: str, node: int, rng: np.random.Generator) -> Any:
    arrays = update(rng)
    metrics: dict[str, Any] = {"num-examples": int(rng.integers(1, 5000)), "train-loss": 0.5}
    name = str(rng.choice(NAMES_OF_LAYERS))
    if kind == "error":
        return make_reply(node, error="client crashed")
    if kind == "wrong-shape":
        arrays[name] = np.zeros(arrays[name].size + 1, np.float32)
    elif kind == "wrong-dtype":
        arrays[name] = arrays[name].astype(np.float64)
    elif kind == "missing-name":
        del arrays[name]
    elif kind == "extra-name":
        arrays["evil.weight"] = np.zeros(3, np.float32)
    elif kind in ("nan", "inf"):
        flat = arrays[name].reshape(-1)
        flat[int(rng.integers(flat.size))] = np.nan if kind == "nan" else rng.choice([np.inf, -np.inf])
    elif kind == "empty-array":
        arrays[name] = np.zeros((0,) * arrays[name].ndim, np.float32)
    elif kind == "zero-examples":
        metrics["num-examples"] = 0
    elif kind == "negative-examples":
        metrics["num-examples"] = -int(rng.integers(1, 10**6))
    elif kind == "huge-examples":
        metrics["num-examples"] = MAX_NUM_EXAMPLES + int(rng.integers(1, 10**12))
    elif kind == "float-examples":
        metrics["num-examples"] = float(rng.choice([1000.0, 12.5]))
    elif kind == "no-examples":
        del metrics["num-examples"]
    msg = make_reply(node, arrays, metrics)
    if kind == "corrupt-payload":
        good = msg.content["arrays"][name]
        msg.content["arrays"][name] = Array(
            dtype=good.dtype, shape=good.shape, stype=good.stype, data=b"\x93NUMPY garbage"
        )
    elif kind == "no-metrics-record":
        del msg.content["metrics"]
    elif kind == "extra-array-record":
        msg.content["more"] = ArrayRecord({"x": Array(np.zeros(2, np.float32))})
        msg.content["metrics"] = MetricRecord(metrics)
    return msg


def test_the_fuzz_runs_at_least_500_cases_in_all() -> None:
    assert len(REGISTRY) * FUZZ_EXAMPLES >= 500


def run(strategy: Any, nodes: list[int], replies: list[Any]) -> ArrayRecord | None:
    start = from_layers(NAMES_OF_LAYERS, list(GLOBAL.values()))
    list(strategy.configure_train(1, start, config_record(), FakeGrid(nodes)))
    new, _ = strategy.aggregate_train(1, replies)
    return new


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_malformed_replies_never_reach_the_model(name: str) -> None:
    spec = REGISTRY[name]
    min_good = num_valid_replies(spec)

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases in CI every time
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        num_good=st.integers(0, min_good + 2),
        bad=st.lists(st.sampled_from(sorted(BAD_KINDS)), max_size=6),
        seed=st.integers(0, 2**32 - 1),
    )
    def case(num_good: int, bad: list[str], seed: int) -> None:
        rng = np.random.default_rng(seed)
        # A few more nodes are sampled but never answer (timeouts): at least two, and enough
        # that the strategy's own guarantee (e.g. Krum's n > 2f + 2) admits the sample.
        silent = max(2, min_good - num_good - len(bad))
        nodes = list(range(1, num_good + len(bad) + silent + 1))
        good = [
            make_reply(n, update(rng), {"num-examples": int(rng.integers(1, 5000)), "train-loss": 0.5})
            for n in nodes[:num_good]
        ]
        bad_replies = [
            bad_reply(kind, n, rng)
            for kind, n in zip(bad, nodes[num_good : len(nodes) - silent], strict=True)
        ]
        mixed = good + bad_replies
        order = rng.permutation(len(mixed))

        strategy = build(spec, **{"max-num-examples": MAX_NUM_EXAMPLES})
        released = run(strategy, nodes, [mixed[i] for i in order])
        reference = run(build(spec, **{"max-num-examples": MAX_NUM_EXAMPLES}), nodes, good)

        # The model: finite, and exactly what the good replies alone give.
        assert (released is None) == (reference is None)
        if released is not None:
            got, want = as_dict(released), as_dict(reference)
            assert list(got) == NAMES_OF_LAYERS
            for k in NAMES_OF_LAYERS:
                assert np.all(np.isfinite(got[k])), k
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        # The counts: every bad reply under its reason, errors as failed nodes.
        stats = strategy.stats[1]
        assert stats.succeeded == num_good
        assert stats.rejected == dict(Counter(BAD_KINDS[k] for k in bad if BAD_KINDS[k] is not None))
        errors = [n for k, n in zip(bad, nodes[num_good : len(nodes) - silent], strict=True) if k == "error"]
        assert sorted(stats.failed_nodes) == errors + nodes[len(nodes) - silent :]

    case()
