"""Aggregation: time and peak extra memory of aggregating K replies of the 1.66M-parameter MNIST CNN.

Three things are timed on identical inputs (K train replies as the strategy receives
them, float32 payloads serialized as ``.npy`` in Flower ``Array`` s):

- the aggregation kernel, records in → one ``ArrayRecord`` out: edgebloom's
  ``weighted_average`` over zero-copy views, Flower's ``aggregate_arrayrecords``, and
  edgebloom's kernel before this benchmark existed (kept below as ``previous_*``);
- every registered strategy's whole ``aggregate_train`` (reply validation included);
- the floor: bytes read (K × model bytes) ÷ the machine's copy bandwidth, measured here
  with ``np.copyto`` on a buffer larger than the last-level cache.

Replies beyond ``POOL`` distinct payloads reuse them round-robin (K = 1000 reads 1000
payloads, 100 of them distinct: 665 MB, far beyond any CPU cache, so every read still
comes from memory). Extra memory is the tracemalloc peak during the call (NumPy reports
its buffers to tracemalloc); the replies themselves are allocated before it starts.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.task_identity import TaskIdentity

from strategies.core.records import from_layers, npy_array, to_layers
from strategies.core.registry import REGISTRY, build_strategy
from strategies.numeric.aggregate import weighted_average
from tasks.config import AppConfig
from tasks.models import build_model

POOL = 100
#: A strategy is not run at the next K when its measurement at the previous K predicts more
#: extra memory or time than this (linear in K; Multi-Krum's pairwise distances: quadratic).
MAX_PREDICTED_GIB = 3.0
MAX_PREDICTED_SECONDS = 120.0
QUADRATIC = {"multi-krum"}
QUICK_STRATEGIES = ("fedavg", "fedprox", "median")


def copy_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Bytes per second ``np.copyto`` moves (best of ``repeats``), on buffers beyond the caches."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return nbytes / best


def make_replies(k: int, names: list[str], shapes: list[tuple[int, ...]], pool: int = POOL) -> list[Message]:
    """``k`` train replies with random float32 models and num-examples 50..149."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    rng = np.random.default_rng(0)
    records = []
    for _ in range(min(k, pool)):
        arrays = OrderedDict(
            (n, npy_array(rng.standard_normal(s, dtype=np.float32)))
            for n, s in zip(names, shapes, strict=True)
        )
        records.append(ArrayRecord(arrays))
    replies = []
    for i in range(k):
        metadata = Metadata(
            run_id=1,
            message_id=f"m{i}",
            src_node_id=i + 1,
            dst_node_id=0,
            reply_to_message_id="q",
            group_id="1",
            created_at=time.time(),
            ttl=3600.0,
            message_type="train",
        )
        metrics = MetricRecord({"num-examples": int(50 + i % 100), "train-loss": 1.0})
        content = RecordDict({"arrays": records[i % len(records)], "metrics": metrics})
        replies.append(Message(metadata=metadata, content=content))  # type: ignore[call-arg]
    return replies


# ----------------------------------------------------------------- the kernel before
def previous_weighted_average(updates: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    """The kernel of edgebloom before the benchmarks (commit 6c2c135): multiply into a temporary, add."""
    factors = np.asarray(weights, np.float64) / float(np.sum(weights))
    out = []
    for i, layer in enumerate(updates[0]):
        acc = np.zeros(layer.shape, dtype=layer.dtype)
        tmp = np.empty_like(acc)
        for client, factor in zip(updates, factors, strict=True):
            np.multiply(client[i], acc.dtype.type(factor), out=tmp, casting="unsafe")
            acc += tmp
        out.append(acc)
    return out


def previous_from_layers(names: list[str], layers: list[np.ndarray]) -> ArrayRecord:
    """The ``from_layers`` of edgebloom before: Flower's ``Array(ndarray)`` (``np.save`` into BytesIO)."""
    return ArrayRecord(
        OrderedDict((n, Array(np.ascontiguousarray(a))) for n, a in zip(names, layers, strict=True))
    )


# ---------------------------------------------------------------------- measuring
def timed(fn: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if setup is not None:
            setup()
        gc.collect()
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
        del result
    return best


def peak_extra_bytes(fn: Callable[[], Any], setup: Callable[[], Any] | None = None) -> int:
    if setup is not None:
        setup()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
        del result
    finally:
        tracemalloc.stop()
    return peak - base


def run(quick: bool) -> dict[str, Any]:
    model = build_model("mnist-cnn", (1, 28, 28), 10)
    state = model.state_dict()
    names = list(state)
    shapes = [tuple(t.shape) for t in state.values()]
    model_bytes = sum(int(np.prod(s)) * 4 for s in shapes)
    bandwidth = copy_bandwidth(64 * 2**20 if quick else 256 * 2**20)
    ks = [10] if quick else [10, 100, 1000]
    rows: list[dict[str, Any]] = []
    previous: dict[str, tuple[int, float, int]] = {}
    for k in ks:
        replies = make_replies(k, names, shapes)
        contents = [m.content for m in replies]
        weights = [float(c["metrics"]["num-examples"]) for c in contents]
        floor = k * model_bytes / bandwidth
        repeats = 3 if k <= 100 else 2

        def edgebloom_kernel(contents=contents, weights=weights) -> ArrayRecord:
            return from_layers(
                names, weighted_average([to_layers(c["arrays"], names) for c in contents], weights)
            )

        def flower_kernel(contents=contents) -> ArrayRecord:
            return aggregate_arrayrecords(contents, "num-examples")

        def previous_kernel(contents=contents, weights=weights) -> ArrayRecord:
            views = [to_layers(c["arrays"], names) for c in contents]
            return previous_from_layers(names, previous_weighted_average(views, weights))

        kernels = {
            "edgebloom weighted_average": edgebloom_kernel,
            "flwr aggregate_arrayrecords": flower_kernel,
            "edgebloom before (6c2c135)": previous_kernel,
        }
        reference = to_layers(edgebloom_kernel(), names)
        check = to_layers(flower_kernel(), names)
        max_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(reference, check, strict=True))
        for name, fn in kernels.items():
            seconds = timed(fn, repeats)
            extra = peak_extra_bytes(fn)
            rows.append(_row("kernel", name, k, seconds, floor, extra, model_bytes))
        rows[-3]["max_abs_diff_vs_flwr"] = max_diff
        global_record = ArrayRecord(dict(contents[0]["arrays"]))
        for strategy_name in QUICK_STRATEGIES if quick else sorted(REGISTRY):
            reason = _too_heavy(strategy_name, k, previous.get(strategy_name))
            if reason:
                rows.append({"kind": "strategy", "name": strategy_name, "k": k, "skipped": reason})
                continue
            try:
                strategy, round_replies, configure = _configured(strategy_name, k, global_record, replies)

                def call(strategy=strategy, replies=round_replies) -> Any:
                    return strategy.aggregate_train(1, replies)

                # Each aggregate_train consumes its round's configuration (DP: the global model, the
                # accountant step), so every timed call is preceded by an untimed configure_train.
                arrays, _ = call()
                if arrays is None:
                    raise RuntimeError("aggregate_train returned no model")
                seconds = timed(call, 2 if k <= 100 else 1, setup=configure)
                extra = peak_extra_bytes(call, setup=configure)
            except Exception as exc:  # noqa: BLE001  (report it, measure the others)
                rows.append({"kind": "strategy", "name": strategy_name, "k": k, "skipped": f"{exc}"[:200]})
                continue
            row = _row("strategy", strategy_name, k, seconds, floor, extra, model_bytes)
            row["replies"] = len(round_replies)
            previous[strategy_name] = (k, seconds, extra)
            rows.append(row)
        del replies, contents
        gc.collect()
    return {
        "model": "mnist-cnn",
        "params": model_bytes // 4,
        "model_mib": model_bytes / 2**20,
        "copy_bandwidth_gib_s": bandwidth / 2**30,
        "distinct_payloads": POOL,
        "rows": rows,
    }


def _too_heavy(name: str, k: int, last: tuple[int, float, int] | None) -> str:
    """Why ``name`` is not run with ``k`` replies (empty: run it)."""
    if last is None:
        return ""
    k0, seconds, extra = last
    scale = k / k0
    predicted_s = seconds * scale ** (2 if name in QUADRATIC else 1)
    predicted_gib = extra * scale / 2**30
    if predicted_gib > MAX_PREDICTED_GIB or predicted_s > MAX_PREDICTED_SECONDS:
        return (
            f"not run: K={k0} took {seconds:.2f} s and {extra / 2**20:.0f} MiB extra, predicting "
            f"{predicted_s:.0f} s and {predicted_gib:.1f} GiB extra at K={k} "
            f"(limits {MAX_PREDICTED_SECONDS:.0f} s, {MAX_PREDICTED_GIB:.0f} GiB)"
        )
    return ""


class _Grid:
    """Node discovery only: ``configure_train`` samples from these ids."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


def _configured(
    name: str, k: int, global_record: ArrayRecord, replies: list[Message]
) -> tuple[Any, list, Callable[[], Any]]:
    """The strategy after ``configure_train`` of round 1 on K nodes, and the replies of the nodes it sampled.

    All K are sampled: fraction 1 (DP: fixed-size sampling with rate 1, population K).
    """
    overrides = {
        "strategy": name,
        "robust-num-byzantine": 1,
        "dp-population": k,
        "dp-sampling": "fixed-size",
        "dp-sampling-rate": 1.0,
        "dp-noise-seed": 0,
    }
    strategy = build_strategy(AppConfig.from_run_config(overrides))
    grid = _Grid([m.metadata.src_node_id for m in replies])

    def configure() -> set[int]:
        messages = strategy.configure_train(1, global_record, ConfigRecord(), grid)
        return {m.metadata.dst_node_id for m in messages}

    sampled = configure()
    return strategy, [m for m in replies if m.metadata.src_node_id in sampled], configure


def _row(
    kind: str, name: str, k: int, seconds: float, floor: float, extra: int, model_bytes: int
) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": name,
        "k": k,
        "seconds": seconds,
        "floor_seconds": floor,
        "ratio_to_floor": seconds / floor,
        "peak_extra_mib": extra / 2**20,
        "peak_extra_models": extra / model_bytes,
    }
