"""The ClientApp's per-process caches stay bounded over many runs and many nodes."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

import client_app.app as client_module
from client_app.app import app, clear_caches
from client_app.cache import LRUCache
from strategies.core.records import from_layers
from tasks import wire
from tasks.models import build_model
from tasks.train import get_weights


def test_lru_cache_keeps_the_most_recently_used_entries() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    made: list[str] = []

    def make(key: str) -> int:
        made.append(key)
        return len(made)

    cache.get_or_create("a", lambda: make("a"))
    cache.get_or_create("b", lambda: make("b"))
    cache.get_or_create("a", lambda: make("a"))  # a hit: "a" is now the most recent
    cache.get_or_create("c", lambda: make("c"))  # evicts "b"

    assert made == ["a", "b", "c"] and list(cache) == ["a", "c"] and len(cache) == 2
    assert cache.peek("b") is None and cache.peek("a") == 1


def test_lru_cache_refuses_no_capacity() -> None:
    with pytest.raises(ValueError, match="max_entries=0 must be >= 1"):
        LRUCache(0)


def evaluate(run_id: int, partition: int) -> None:
    torch.manual_seed(0)
    model = build_model("digits-cnn", (1, 8, 8), 10)
    names = list(model.state_dict())
    content = RecordDict(
        {
            wire.ARRAYS: from_layers(names, get_weights(model)),
            wire.CONFIG: ConfigRecord({wire.MODEL: "digits-cnn", wire.NUM_CLASSES: 10}),
        }
    )
    msg = Message(content, dst_node_id=5, message_type=MessageType.EVALUATE)
    node = {"partition-id": partition, "num-partitions": 8}
    ctx = Context(run_id=run_id, node_id=5, node_config=node, state=RecordDict(), run_config={})
    reply = app(msg, ctx)
    assert not reply.has_error(), reply.error


def test_a_worker_keeps_at_most_max_runs_runs() -> None:
    clear_caches()

    for run_id in range(31_000, 31_006):  # six runs served by one process, one after the other
        evaluate(run_id, partition=0)

    assert list(client_module._RUNS) == [31_004, 31_005]  # the last MAX_RUNS = 2


def test_a_run_keeps_at_most_max_nodes_per_run_nodes_sharing_one_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_caches()
    monkeypatch.setattr(client_module, "MAX_NODES_PER_RUN", 3)

    for partition in range(8):
        evaluate(32_000, partition)

    run = client_module._RUNS.peek(32_000)
    assert run is not None and len(run.nodes) == 3 and len(run.models) == 1
    assert len({id(node.model) for node in run.nodes.values()}) == 1


def serve(run_id: int, partition: int, population: int, run_config: dict) -> None:
    model = build_model("digits-cnn", (1, 8, 8), 10)
    names = list(model.state_dict())
    content = RecordDict(
        {
            wire.ARRAYS: from_layers(names, get_weights(model)),
            wire.CONFIG: ConfigRecord({wire.MODEL: "digits-cnn", wire.NUM_CLASSES: 10}),
        }
    )
    msg = Message(content, dst_node_id=5, message_type=MessageType.EVALUATE)
    node = {"partition-id": partition, "num-partitions": population}
    ctx = Context(run_id=run_id, node_id=5, node_config=node, state=RecordDict(), run_config=run_config)
    reply = app(msg, ctx)
    assert not reply.has_error(), reply.error


def test_the_node_cache_is_bounded_by_a_constant_not_by_the_population(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Arrange: 10,000 virtual nodes on digits (sampled partitions), a small bound to reach quickly
    clear_caches()
    monkeypatch.setattr(client_module, "MAX_NODES_PER_RUN", 4)
    run_config = {"dataset": "digits", "partitioner": "sampled", "partition-size": 12, "val-fraction": 0.25}

    # Execute: one worker serves nodes spread over the population
    for partition in range(0, 10_000, 1_000):
        serve(33_000, partition, 10_000, run_config)

    # Assert: only the last 4 nodes' data is kept, each only its own 12 examples
    run = client_module._RUNS.peek(33_000)
    assert run is not None and len(run.nodes) == 4 and len(run.models) == 1
    assert [key[0][1] for key in run.nodes] == [6_000, 7_000, 8_000, 9_000]
    assert all(len(n.data.x_train) + len(n.data.x_val) == 12 for n in run.nodes.values())
    assert client_module.MAX_NODES_PER_RUN < 10_000
