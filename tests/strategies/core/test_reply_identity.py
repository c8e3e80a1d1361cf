"""One contribution per sampled client, and an order of replies that depends on content only.

Unit tests of the pure matcher (``strategies.core.reply_identity``), then the promise through
every registered strategy: duplicates, replies from nodes not sampled, replies of another
stage and replies to unknown messages are dropped and counted, never aggregated; and the
aggregate of a model with an integer counter (BatchNorm's ``num_batches_tracked``) is the
same bits whatever order the replies arrive in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import MessageType

from strategies.core.records import from_layers, to_layers
from strategies.core.reply_identity import (
    DUPLICATE,
    NOT_SAMPLED,
    UNKNOWN_REPLY_TO,
    WRONG_MESSAGE_TYPE,
    ReplyHeader,
    Sent,
    match_replies,
)
from tests.conftest import FakeGrid, config_record, make_reply, push
from tests.strategies.test_contract import (
    GLOBAL,
    NAMES,
    NAMES_OF_LAYERS,
    NUM_EXAMPLES,
    assert_models_close,
    build,
    example_plugin,  # noqa: F401  (fixture used by spec_for)
    num_valid_replies,
    shifted,
    small_update,
    spec_for,
)

# --------------------------------------------------------------------------- #
# The matcher                                                                 #
# --------------------------------------------------------------------------- #

SENT = [Sent("a", 1), Sent("b", 2), Sent("c", 3)]


def header(reply_to: str, src: int, kind: str = "train", error: bool = False) -> ReplyHeader:
    return ReplyHeader(reply_to, src, kind, error)


def test_each_message_accepts_one_reply_and_the_rest_are_named() -> None:
    # Prepare: good replies for nodes 1 and 2, then a duplicate, an unsampled node,
    # another stage's reply, a reply to an unknown message, and node 3 answering node 2's.
    replies = [
        header("a", 1),
        header("b", 2),
        header("a", 1),
        header("z", 9),
        header("c", 3, kind="evaluate"),
        header("zz", 3),
        header("b", 3),
    ]

    # Execute
    matches = match_replies(SENT, replies, message_type="train")

    # Assert
    assert [m.node for m in matches[:2]] == [1, 2]
    assert [m.rejection.reason if m.rejection else None for m in matches] == [
        None,
        None,
        DUPLICATE,
        NOT_SAMPLED,
        WRONG_MESSAGE_TYPE,
        UNKNOWN_REPLY_TO,
        UNKNOWN_REPLY_TO,
    ]


def test_an_error_written_for_a_lost_node_is_attributed_to_that_node() -> None:
    # The SuperLink (node id 1 in Flower) writes the error reply for lost node 3.
    matches = match_replies([Sent("m3", 3)], [header("m3", 1, error=True)], message_type="train")
    assert matches[0].node == 3 and matches[0].rejection is None


def test_messages_never_pushed_are_matched_by_node() -> None:
    # Unit use: a strategy driven without a Grid has messages without ids.
    sent = [Sent("", 1), Sent("", 2)]
    matches = match_replies(sent, [header("q", 2), header("q", 2), header("q", 7)], message_type="train")
    assert matches[0].node == 2 and matches[0].rejection is None
    assert [m.rejection.reason for m in matches[1:] if m.rejection] == [DUPLICATE, NOT_SAMPLED]


# --------------------------------------------------------------------------- #
# Every registered strategy                                                   #
# --------------------------------------------------------------------------- #


def sent_round(strategy: Any, nodes: list[int], server_round: int = 1) -> dict[int, str]:
    """Configure a round and push its messages like a Grid; node → message id."""
    arrays = from_layers(NAMES_OF_LAYERS, list(GLOBAL.values()))
    messages = push(list(strategy.configure_train(server_round, arrays, config_record(), FakeGrid(nodes))))
    assert {m.metadata.dst_node_id for m in messages} == set(nodes)
    return {m.metadata.dst_node_id: m.metadata.message_id for m in messages}


def reply_to(ids: dict[int, str], node: int, arrays: dict[str, np.ndarray], **kw: Any) -> Any:
    return make_reply(
        node,
        arrays,
        {"num-examples": NUM_EXAMPLES, "train-loss": 0.5},
        reply_to=kw.pop("to", ids.get(node, "x")),
        **kw,
    )


@pytest.mark.parametrize("name", NAMES)
def test_replies_that_are_not_one_per_sampled_client_are_dropped_and_counted(
    name: str, request: pytest.FixtureRequest
) -> None:
    # Prepare: n valid replies, then a second reply from node 1 with a huge update, a reply
    # from a node that was not sampled, an evaluate reply, and a reply to an unknown message.
    spec = spec_for(name, request)
    n = num_valid_replies(spec)
    nodes = list(range(1, n + 1))
    rng = np.random.default_rng(3)
    updates = [shifted(GLOBAL, small_update(rng)) for _ in nodes]
    hostile = shifted(GLOBAL, {k: np.full(v.shape, 0.5, np.float32) for k, v in GLOBAL.items()})

    # Execute
    clean = build(spec)
    ids = sent_round(clean, nodes)
    expected, _ = clean.aggregate_train(
        1, [reply_to(ids, node, u) for node, u in zip(nodes, updates, strict=True)]
    )
    strategy = build(spec)
    ids = sent_round(strategy, nodes)
    good = [reply_to(ids, node, u) for node, u in zip(nodes, updates, strict=True)]
    bad = [
        reply_to(ids, 1, hostile),
        reply_to(ids, 999, hostile, to="unsent"),
        reply_to(ids, 2, hostile, message_type=MessageType.EVALUATE),
        reply_to(ids, 3, hostile, to="another-round"),
    ]
    result, _ = strategy.aggregate_train(1, good + bad)

    # Assert: the model of the good replies alone, and each intruder counted by reason.
    assert result is not None and expected is not None
    assert_models_close(result, expected)
    stats = strategy.stats[1]
    assert stats.succeeded == n
    assert stats.rejected == {DUPLICATE: 1, NOT_SAMPLED: 1, WRONG_MESSAGE_TYPE: 1, UNKNOWN_REPLY_TO: 1}
    assert stats.failed == 0


def test_a_duplicate_evaluate_reply_is_not_counted_twice() -> None:
    # Prepare
    from strategies.algorithms.fedavg import FedAvg

    strategy = FedAvg(fraction_evaluate=1.0, min_evaluate_nodes=2, min_available_nodes=2)
    arrays = from_layers(NAMES_OF_LAYERS, list(GLOBAL.values()))
    messages = push(list(strategy.configure_evaluate(1, arrays, config_record(), FakeGrid([1, 2]))))
    ids = {m.metadata.dst_node_id: m.metadata.message_id for m in messages}

    def evaluate_reply(node: int, accuracy: float) -> Any:
        metrics = {"num-examples": 10, "loss": 1.0 - accuracy, "accuracy": accuracy}
        return make_reply(node, None, metrics, message_type=MessageType.EVALUATE, reply_to=ids[node])

    # Execute: node 2 answers twice, the second time with a perfect score.
    metrics = strategy.aggregate_evaluate(
        1, [evaluate_reply(1, 0.5), evaluate_reply(2, 0.7), evaluate_reply(2, 1.0)]
    )

    # Assert
    assert metrics is not None and metrics["accuracy"] == pytest.approx(0.6)
    assert strategy.stats[1].rejected == {DUPLICATE: 1}
    assert strategy.stats[1].eval_succeeded == 2


def test_a_lost_nodes_error_names_the_lost_node(caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: the SuperLink (src 1) writes the error reply for node 7's message.
    from strategies.algorithms.fedavg import FedAvg

    strategy = FedAvg(min_train_nodes=2, min_available_nodes=2)
    ids = sent_round(strategy, [5, 7])
    replies = [
        reply_to(ids, 5, shifted(GLOBAL, small_update(np.random.default_rng(0)))),
        make_reply(1, error="Node Unavailable", reply_to=ids[7]),
    ]
    caplog.set_level("WARNING")

    # Execute
    strategy.aggregate_train(1, replies)

    # Assert: node 7 is named and counted failed; node 1 appears nowhere.
    assert strategy.stats[1].failed_nodes == [7]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "node 7 failed: Node Unavailable" in text
    assert "node 1 " not in text


# --------------------------------------------------------------------------- #
# Order                                                                       #
# --------------------------------------------------------------------------- #

COUNTER = "bn.num_batches_tracked"
ORDER_NAMES = [n for n in NAMES if n != "geomed"]


@pytest.mark.parametrize("name", ORDER_NAMES)
def test_every_arrival_order_gives_the_same_bits_with_an_integer_counter(
    name: str, request: pytest.FixtureRequest
) -> None:
    # Prepare: a BatchNorm-like model whose smallest array is a 0-d counter every client
    # reports equally, with updates of mixed magnitudes so that float sums depend on order.
    spec = spec_for(name, request)
    n = max(num_valid_replies(spec), 5)
    nodes = list(range(1, n + 1))
    base = {**GLOBAL, COUNTER: np.array(7, np.int64)}
    rng = np.random.default_rng(5)
    updates = []
    for i in nodes:
        delta = {
            k: (rng.normal(0, 0.02, v.shape) * 10.0 ** (i % 3 - 1)).astype(np.float32)
            for k, v in GLOBAL.items()
        }
        updates.append({**shifted(GLOBAL, delta), COUNTER: np.array(8, np.int64)})
    arrays = from_layers(list(base), list(base.values()))
    shuffler = np.random.default_rng(6)
    orders = [tuple(range(n)), tuple(reversed(range(n)))] + [
        tuple(shuffler.permutation(n)) for _ in range(38)
    ]

    # Execute
    results = set()
    for order in orders:
        strategy = build(spec)
        messages = push(list(strategy.configure_train(1, arrays, config_record(), FakeGrid(nodes))))
        ids = {m.metadata.dst_node_id: m.metadata.message_id for m in messages}
        replies = [reply_to(ids, nodes[i], updates[i]) for i in order]
        result, _ = strategy.aggregate_train(1, replies)
        assert result is not None
        results.add(b"".join(np.ascontiguousarray(a).tobytes() for a in to_layers(result)))

    # Assert
    assert len(results) == 1, f"{len(results)} distinct models over {len(orders)} arrival orders"


def test_identical_replies_tie_only_when_identical() -> None:
    # Two replies that share num-examples and the counter, differing only in a large array.
    from strategies.algorithms.fedavg import reply_digest

    a = make_reply(1, {"w": np.zeros(3, np.float32)}, {"num-examples": 5})
    b = make_reply(2, {"w": np.array([0, 0, 1e-30], np.float32)}, {"num-examples": 5})
    key = lambda m: reply_digest(m, [np.array(x) for x in to_layers(m.content["arrays"])])  # noqa: E731
    assert key(a) != key(b)
    assert key(a) == key(make_reply(3, {"w": np.zeros(3, np.float32)}, {"num-examples": 5}))


def test_replies_sharing_their_smallest_parameter_are_ordered_by_everything_else() -> None:
    # Two clients with the same bias (and counter) but different weights: the cheap key ties,
    # the full digest decides, and the same content always gives the same place.
    from strategies.core.ledger import ContentKey

    bias, counter = np.zeros(2, np.float32), np.array(3, np.int64)
    a = ContentKey(5.0, [np.ones((4, 2), np.float32), bias, counter])
    b = ContentKey(5.0, [np.full((4, 2), 2.0, np.float32), bias, counter])
    same_as_a = ContentKey(5.0, [np.ones((4, 2), np.float32), bias, counter])

    assert a.quick == b.quick and a != b and (a < b) != (b < a)
    assert a == same_as_a and not a < same_as_a and not same_as_a < a


def test_the_full_digest_is_computed_only_for_ties() -> None:
    # Hashing every array of every reply costs more than aggregating them: only ties pay it.
    from strategies.core.ledger import ContentKey

    a = ContentKey(5.0, [np.ones(3, np.float32)])
    b = ContentKey(6.0, [np.ones(3, np.float32)])

    assert a < b
    assert a._full is None and b._full is None
