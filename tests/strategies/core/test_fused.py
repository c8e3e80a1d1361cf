"""Fused evaluation: the pure functions (known values), and FedAvg recording it from train replies."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MessageType

from strategies.algorithms.fedavg import FedAvg
from strategies.core.fused import FusedResult, aggregate_fused, check_fused, split_fused
from strategies.core.records import from_layers, to_layers
from strategies.core.reply_checks import (
    INVALID_METRIC_TYPE,
    NON_FINITE_METRIC,
    NUM_EXAMPLES_MISSING,
    NUM_EXAMPLES_TOO_LARGE,
)
from tasks import wire
from tests.conftest import FakeGrid, config_record, make_reply, push


def fused(loss: float, n: int, accuracy: float | None = None) -> dict[str, float | int]:
    out: dict[str, float | int] = {wire.FUSED_LOSS: loss, wire.FUSED_NUM_EXAMPLES: n}
    if accuracy is not None:
        out[wire.FUSED_ACCURACY] = accuracy
    return out


# --------------------------------------------------------------------- pure functions
def test_split_fused_separates_the_fused_keys_from_the_train_metrics() -> None:
    train, part = split_fused({"num-examples": 90, "train-loss": 0.5, **fused(2.0, 10, 0.3)})
    assert train == {"num-examples": 90, "train-loss": 0.5}
    assert part == fused(2.0, 10, 0.3)
    assert split_fused({"num-examples": 90}) == ({"num-examples": 90}, None)


def test_aggregate_fused_is_the_example_weighted_mean() -> None:
    # 10 examples at loss 1 / acc 0.5 and 30 at loss 3 / acc 0.9: weights 1/4, 3/4.
    result = aggregate_fused([fused(1.0, 10, 0.5), fused(3.0, 30, 0.9)])
    assert result == FusedResult(loss=pytest.approx(2.5), accuracy=pytest.approx(0.8), num_examples=40)
    assert aggregate_fused([]) is None
    # Regression (no accuracy): loss only.
    assert aggregate_fused([fused(4.0, 2)]) == FusedResult(loss=4.0, accuracy=None, num_examples=2)


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        ({wire.FUSED_LOSS: 1.0}, NUM_EXAMPLES_MISSING),
        (fused(1.0, 10**7), NUM_EXAMPLES_TOO_LARGE),
        (fused(math.nan, 10), NON_FINITE_METRIC),
        (fused(1.0, 10, math.inf), NON_FINITE_METRIC),
        ({wire.FUSED_NUM_EXAMPLES: 10}, INVALID_METRIC_TYPE),
    ],
)
def test_check_fused_names_what_is_wrong(part: dict[str, object], reason: str) -> None:
    rejection = check_fused(part, max_num_examples=1000)
    assert rejection is not None and rejection.reason == reason
    assert check_fused(fused(1.0, 10, 0.5), max_num_examples=1000) is None


# ----------------------------------------------------------------- FedAvg, fused mode
def model() -> ArrayRecord:
    return from_layers(["w"], [np.zeros(2, np.float32)])


def test_fused_mode_asks_for_evaluation_in_train_messages_and_sends_no_evaluate_messages() -> None:
    grid = FakeGrid([1, 2, 3])
    fused_avg = FedAvg(min_available_nodes=1, fused_evaluate=True)
    off = FedAvg(min_available_nodes=1, fused_evaluate=True, fraction_evaluate=0.0)

    train = list(fused_avg.configure_train(2, model(), config_record(), grid))
    evaluate = list(fused_avg.configure_evaluate(2, model(), config_record(), grid))
    train_off = list(off.configure_train(2, model(), config_record(), grid))

    assert train and all(m.content["config"][wire.FUSED_EVALUATE] is True for m in train)
    assert evaluate == []
    # fraction-evaluate=0 turns federated evaluation off in fused mode too.
    assert all(wire.FUSED_EVALUATE not in m.content["config"] for m in train_off)


def test_fused_replies_record_the_previous_model_evaluation_and_count_malformed_ones() -> None:
    # Prepare: three nodes train; node 1 and 2 evaluated fine, node 3's loss is NaN.
    grid = FakeGrid([1, 2, 3])
    strategy = FedAvg(min_available_nodes=1, fused_evaluate=True)
    sent = {
        m.metadata.dst_node_id: m
        for m in grid_push(strategy.configure_train(4, model(), config_record(), grid))
    }
    replies = [
        reply(sent[1], [1.0, 1.0], 100, fused(1.0, 10, 0.5)),
        reply(sent[2], [3.0, 3.0], 100, fused(3.0, 30, 0.9)),
        reply(sent[3], [5.0, 5.0], 100, fused(math.nan, 10, 0.1)),
    ]

    # Execute
    arrays, metrics = strategy.aggregate_train(4, replies)

    # Assert: training used all three updates and its metrics carry no fused key; the
    # evaluation counted two nodes (weights 1/4, 3/4) and rejected the NaN one by reason.
    stats = strategy.stats[4]
    np.testing.assert_allclose(to_layers(arrays)[0], [3.0, 3.0])
    assert stats.succeeded == 3 and not any(k in metrics for k in (wire.FUSED_LOSS, wire.FUSED_ACCURACY))
    assert (stats.fused_eval_sampled, stats.fused_eval_succeeded) == (3, 2)
    assert stats.fused_federated_loss == pytest.approx(2.5)
    assert stats.fused_federated_accuracy == pytest.approx(0.8)
    assert stats.rejected == {NON_FINITE_METRIC: 1}


def test_fused_evaluation_of_failed_or_unknown_replies_is_not_counted() -> None:
    grid = FakeGrid([1, 2])
    strategy = FedAvg(min_available_nodes=1, fused_evaluate=True)
    sent = {
        m.metadata.dst_node_id: m
        for m in grid_push(strategy.configure_train(1, model(), config_record(), grid))
    }
    replies = [
        reply(sent[1], [1.0, 1.0], 100, fused(1.0, 10, 0.5)),
        make_reply(2, error="crashed", reply_to=sent[2].metadata.message_id),
        make_reply(
            9, {"w": np.ones(2, np.float32)}, {"num-examples": 5, **fused(0.0, 10, 1.0)}, reply_to="x"
        ),
    ]

    strategy.aggregate_train(1, replies)

    stats = strategy.stats[1]
    assert (stats.fused_eval_sampled, stats.fused_eval_succeeded) == (2, 1)
    assert stats.fused_federated_loss == pytest.approx(1.0)


def grid_push(messages: Iterable[Message]) -> list[Message]:
    """The messages with ids, as a Grid pushes them."""
    return push(list(messages))


def reply(sent: Message, w: list[float], n: int, part: dict[str, float | int]) -> Message:
    """Node ``sent.dst_node_id``'s train reply: model ``w``, ``n`` examples, fused metrics ``part``."""
    return make_reply(
        sent.metadata.dst_node_id,
        {"w": np.asarray(w, np.float32)},
        {"num-examples": n, "train-loss": 0.1, **part},
        reply_to=sent.metadata.message_id,
        message_type=MessageType.TRAIN,
    )
