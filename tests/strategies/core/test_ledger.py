"""The round ledger: pure reply validation, and one object that only adds a round's counts."""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType

from strategies.algorithms.fedavg import FedAvg
from strategies.core.ledger import Failure, RoundStats, validate_train_replies
from strategies.core.records import from_layers
from strategies.core.reply_checks import Rejection
from strategies.core.validation import spec_of_record
from tests.conftest import FakeGrid, make_reply, push

W = np.zeros(3, np.float32)


def _sent(nodes: list[int]) -> list[Message]:
    strategy = FedAvg(min_train_nodes=1, min_available_nodes=1)
    arrays = from_layers(["w"], [W])
    return push(list(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid(nodes))))


def _answer(msg: Message, value: float, n: int = 10, **kw: object) -> Message:
    arrays = {"w": np.full(3, value, np.float32)}
    node, message_id = msg.metadata.dst_node_id, msg.metadata.message_id
    return make_reply(node, arrays, {"num-examples": n}, reply_to=message_id, **kw)


def test_validation_sorts_replies_into_valid_rejected_and_failed_without_side_effects() -> None:
    # Prepare: 6 nodes sent work; 1 and 2 valid, 3 non-finite, 4 an error, 5 silent,
    # 6 pre-rejected by a wrapper; plus a duplicate of node 1's reply.
    sent = _sent([1, 2, 3, 4, 5, 6])
    by_node = {m.metadata.dst_node_id: m for m in sent}
    replies = [
        _answer(by_node[2], 0.5),
        _answer(by_node[1], 0.25, n=5),
        _answer(by_node[3], float("nan")),
        make_reply(4, error="out of memory", reply_to=by_node[4].metadata.message_id),
        _answer(by_node[6], 0.1),
        _answer(by_node[1], 0.25, n=5),
    ]
    spec = spec_of_record(from_layers(["w"], [W]))
    wrapper_says = Rejection("malformed-compressed", "bad scale")

    # Execute
    outcome = validate_train_replies(
        replies, sent=sent, spec=spec, max_num_examples=1000, pre_rejected={4: wrapper_says}
    )

    # Assert
    # Content order (num-examples, then a digest of the arrays), not arrival order.
    assert [m.metadata.src_node_id for m in outcome.valid] == [1, 2]
    assert [layers[0][0] for layers in outcome.layers] == [0.25, 0.5]
    assert outcome.names == ["w"]
    reasons = sorted((node, r.reason) for node, r in outcome.rejections)
    assert reasons == [(1, "duplicate"), (3, "non-finite"), (6, "malformed-compressed")]
    assert sorted(outcome.failures, key=lambda f: f.node) == [Failure(4, "out of memory"), Failure(5, None)]


def test_the_ledger_adds_batches_instead_of_overwriting_them() -> None:
    # Prepare: a round validated in two batches (FedBuff validates one reply at a time).
    strategy = FedAvg(min_train_nodes=1, min_available_nodes=1)
    first = make_reply(1, {"w": np.ones(3, np.float32)}, {"num-examples": 10})
    second = make_reply(2, {"w": np.ones(3, np.float32)}, {"num-examples": 10})
    failed = make_reply(3, error="crashed")

    # Execute
    strategy.valid_train_replies(1, [first, failed])
    strategy.valid_train_replies(1, [second])

    # Assert: the round's counts are the sum of both batches.
    stats = strategy.stats[1]
    assert stats.succeeded == 2
    assert stats.failed == 1 and stats.failed_nodes == [3]


def test_record_counts_rejections_by_reason_and_failed_nodes() -> None:
    # Prepare
    stats = RoundStats(sampled=4)
    outcome = validate_train_replies(
        [
            make_reply(7, error="gone"),
            make_reply(8, {"w": np.full(3, np.inf, np.float32)}, {"num-examples": 1}),
        ],
        sent=None,
        spec=None,
        max_num_examples=10,
    )

    # Execute
    stats.record(outcome)
    stats.record(outcome)

    # Assert
    assert stats.rejected == {"non-finite": 2}
    assert stats.failed_nodes == [7, 7] and stats.failed == 2
    assert stats.succeeded == 0


def test_evaluate_replies_do_not_count_as_train_failures() -> None:
    # Prepare
    strategy = FedAvg(min_evaluate_nodes=1, min_available_nodes=1)
    bad = make_reply(5, error="crashed", message_type=MessageType.EVALUATE)

    # Execute
    strategy.aggregate_evaluate(1, [bad])

    # Assert
    assert strategy.stats[1].failed == 0 and strategy.stats[1].eval_succeeded == 0


def test_finish_counts_accepted_replies_per_reported_worker_not_per_node() -> None:
    # Arrange: 3 replies, two from Ray node "a", one from "b"; a fourth node reports no worker
    strategy = FedAvg(min_train_nodes=1, min_available_nodes=1)
    sent = _sent([1, 2, 3, 4])
    by_node = {m.metadata.dst_node_id: m for m in sent}
    workers = {1: "ray:a", 2: "ray:a", 3: "ray:b", 4: None}
    replies = [
        _answer(
            by_node[n],
            0.1,
            extra={"info": ConfigRecord({"device": "cpu", **({"worker": w} if w else {})})},
        )
        for n, w in workers.items()
    ]
    strategy.record_nodes(replies)
    stats = RoundStats()

    # Execute
    stats.finish(replies, strategy.nodes, train_loss=None)

    # Assert
    assert stats.workers == {"ray:a": 2, "ray:b": 1}
    assert stats.train_examples == 4 * 10  # every reply's num-examples
    assert strategy.nodes[3].worker == "ray:b" and strategy.nodes[4].worker == ""
