"""Tests for strategies.algorithms.fedbuff: the asynchronous FedBuff loop over Grid push/pull.

A :class:`ScriptedGrid` plays the federation: each node answers a fixed time (in
pulls) after it was sent work, with the model it received plus its own fixed update,
and replies that arrive in the same pull come back in reverse node order. Every model
below is then hand arithmetic on tiny arrays whose values are exact in float32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MessageType

from strategies.algorithms.fedbuff import DISPATCH, TOO_STALE, FedBuff
from strategies.core.records import from_layers, to_layers
from strategies.core.registry import build_strategy
from tasks.config import AppConfig, ConfigError
from tests.conftest import FakeGrid, config_record, make_reply

NAMES = ["w"]


def model(*values: float) -> ArrayRecord:
    return from_layers(NAMES, [np.array(values, dtype=np.float32)])


def values(record: ArrayRecord) -> list[float]:
    return [float(v) for v in to_layers(record)[0]]


class ScriptedGrid:
    """Nodes that reply ``durations[node]`` pulls after being sent work.

    A node in ``errors`` replies with an error; a node in ``silent`` never replies.
    """

    def __init__(
        self,
        updates: dict[int, list[float]],
        durations: dict[int, int],
        *,
        errors: frozenset[int] = frozenset(),
        silent: frozenset[int] = frozenset(),
    ) -> None:
        self.updates, self.durations, self.errors, self.silent = updates, durations, errors, silent
        self.tick = 0
        self.sent: list[tuple[int, int, dict[str, Any]]] = []  # (tick, node, config) per message
        self.ttls: list[float] = []
        self._outstanding: dict[str, tuple[int, Any]] = {}  # id -> (ready tick, reply)

    def get_node_ids(self) -> list[int]:
        return sorted(self.updates)

    def push_messages(self, messages: Any) -> list[str]:
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            assert msg.metadata.message_type == MessageType.TRAIN
            self.sent.append((self.tick, node, dict(msg.content["config"])))
            self.ttls.append(msg.metadata.ttl)
            msg_id = f"m{len(self.sent)}"
            ids.append(msg_id)
            if node in self.silent:
                continue
            if node in self.errors:
                reply = make_reply(node, error="client crashed")
            else:
                received = to_layers(msg.content["arrays"])[0]
                new = (received + np.array(self.updates[node], np.float32)).astype(np.float32)
                reply = make_reply(node, {"w": new}, {"num-examples": 10, "train-loss": float(node)})
            reply.metadata.__dict__["_reply_to_message_id"] = msg_id
            self._outstanding[msg_id] = (self.tick + self.durations[node], reply)
        return ids

    def pull_messages(self, message_ids: Any) -> list[Any]:
        self.tick += 1
        ready = [i for i in message_ids if i in self._outstanding and self._outstanding[i][0] <= self.tick]
        replies = [self._outstanding.pop(i)[1] for i in ready]
        return sorted(replies, key=lambda r: -r.metadata.src_node_id)  # not the order they were sent


def fedbuff(**overrides: Any) -> FedBuff:
    settings: dict[str, Any] = {
        "concurrency": 3,
        "buffer_size": 2,
        "max_staleness": 10,
        "server_learning_rate": 1.0,
        "poll_interval": 0.0,
        "min_available_nodes": 1,
        "fraction_evaluate": 0.0,
        "seed": 7,
    }
    return FedBuff(**{**settings, **overrides})


def run(strategy: FedBuff, grid: Any, num_rounds: int, **kwargs: Any) -> dict[int, list[float]]:
    """Run the loop; the global model after each round (0 = the initial one)."""
    seen: dict[int, list[float]] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> None:
        seen[server_round] = values(arrays)

    start = kwargs.pop("initial", model(0.0, 0.0))
    strategy.start(grid, start, num_rounds=num_rounds, evaluate_fn=evaluate_fn, **kwargs)
    return seen


# Two fast nodes (1 pull) and a slow one (4 pulls): by the time node 3's first update
# arrives, three versions have been published without it: tau = 3, s(3) = 1/2.
UPDATES = {1: [1.0, 0.0], 2: [0.0, 1.0], 3: [4.0, 4.0]}
DURATIONS = {1: 1, 2: 1, 3: 4}


@pytest.mark.parametrize(
    ("tau", "weight"), [(0, 1.0), (1, 1 / math.sqrt(2)), (3, 0.5), (8, 1 / 3), (24, 0.2)]
)
def test_staleness_weight_known_values(tau: int, weight: float) -> None:
    from strategies.numeric.fedbuff import staleness_weight

    assert staleness_weight(tau) == pytest.approx(weight, rel=1e-15)


def test_buffer_applications_match_hand_math_with_out_of_order_replies() -> None:
    # Prepare
    strategy, grid = fedbuff(), ScriptedGrid(UPDATES, DURATIONS)

    # Execute
    seen = run(strategy, grid, num_rounds=4)

    # Assert: rounds 1-3 average the fast nodes' fresh updates: w += ([1,0] + [0,1]) / 2.
    assert seen[0] == [0.0, 0.0]
    assert seen[1] == [0.5, 0.5] and seen[2] == [1.0, 1.0] and seen[3] == [1.5, 1.5]
    # Round 4: node 3 (tau = 3, weight 1/2) and node 2 (reverse order: 3, 2, 1) fill the buffer:
    # w += (0.5 * [4, 4] + 1 * [0, 1]) / 2 = [1.0, 1.5].
    assert seen[4] == [2.5, 3.0]
    assert [strategy.round_metrics(r)["staleness_max"] for r in (1, 2, 3, 4)] == [0, 0, 0, 3]
    assert strategy.round_metrics(4)["staleness_mean"] == 1.5
    assert strategy.round_metrics(4)["model_version"] == 4 == strategy.version
    assert [strategy.stats[r].succeeded for r in (1, 2, 3, 4)] == [2, 2, 2, 2]
    # Work was dispatched at once to every returned node: 3, then 2 per round.
    assert [strategy.stats[r].sampled for r in (1, 2, 3, 4)] == [3, 2, 2, 2]
    assert strategy.stats[4].train_loss == pytest.approx(2.5)  # mean of nodes 3 and 2's losses


def test_a_server_learning_rate_scales_the_step() -> None:
    strategy = fedbuff(server_learning_rate=0.5)

    seen = run(strategy, ScriptedGrid(UPDATES, DURATIONS), num_rounds=1)

    assert seen[1] == [0.25, 0.25]  # 0.5 * ([1,0] + [0,1]) / 2


def test_an_update_older_than_max_staleness_is_dropped_and_counted() -> None:
    # Prepare: node 3's update is 3 versions old; at most 2 are allowed.
    strategy = fedbuff(max_staleness=2)

    # Execute
    seen = run(strategy, ScriptedGrid(UPDATES, DURATIONS), num_rounds=4)

    # Assert: round 4 averages nodes 2 and 1 instead: w += ([0,1] + [1,0]) / 2.
    assert seen[4] == [2.0, 2.0]
    assert strategy.stats[4].rejected == {TOO_STALE: 1}
    assert strategy.stats[4].succeeded == 2 and strategy.round_metrics(4)["staleness_max"] == 0
    assert all(strategy.stats[r].rejected == {} for r in (1, 2, 3))


def test_messages_carry_the_model_version_a_unique_serial_and_the_timeout_as_ttl() -> None:
    grid = ScriptedGrid(UPDATES, DURATIONS)

    run(fedbuff(), grid, num_rounds=2, timeout=123.0)

    serials = [config["server-round"] for _, _, config in grid.sent]
    assert serials == list(range(1, len(grid.sent) + 1))
    assert [(node, config["model-version"]) for _, node, config in grid.sent] == [
        (1, 0),
        (2, 0),
        (3, 0),
        (1, 1),
        (2, 1),
    ]  # nothing is sent once the last round is published
    assert set(grid.ttls) == {123.0}


def test_errors_count_as_failed_and_the_node_gets_new_work() -> None:
    # Prepare: node 3 always crashes, at once.
    grid = ScriptedGrid(UPDATES, {1: 1, 2: 1, 3: 1}, errors=frozenset({3}))
    strategy = fedbuff()

    # Execute
    seen = run(strategy, grid, num_rounds=2)

    # Assert: the crashes are counted, never aggregated; the fast nodes carry the rounds.
    assert seen[1] == [0.5, 0.5] and seen[2] == [1.0, 1.0]
    assert strategy.stats[1].failed == 1 and strategy.stats[1].failed_nodes == [3]
    assert strategy.stats[1].succeeded == 2
    assert sum(1 for _, node, _ in grid.sent if node == 3) >= 2  # dispatched again after failing


def test_silent_nodes_time_out_and_a_round_short_of_updates_keeps_the_model() -> None:
    # Prepare: nobody ever answers; replies are due within 0.05 s and so is each round.
    grid = ScriptedGrid(UPDATES, DURATIONS, silent=frozenset({1, 2, 3}))
    strategy = fedbuff(poll_interval=0.005)

    # Execute: must finish, not wait forever.
    seen = run(strategy, grid, num_rounds=2, timeout=0.05)

    # Assert
    assert seen == {0: [0.0, 0.0], 1: [0.0, 0.0], 2: [0.0, 0.0]}
    assert strategy.stats[1].kept_previous_model and strategy.stats[2].kept_previous_model
    assert strategy.version == 0
    # A message expires `timeout` after it was sent, a hair after its round began (the Grid
    # calls before it take time): its failure may fall in round 1 or round 2.
    failed = strategy.stats[1].failed_nodes + strategy.stats[2].failed_nodes
    assert len(failed) >= 3 and set(failed) == {1, 2, 3}


def test_nodes_are_chosen_by_the_seed_among_idle_nodes() -> None:
    # Prepare: 6 equally fast nodes, 2 at a time.
    updates = {n: [1.0, 1.0] for n in range(1, 7)}
    durations = dict.fromkeys(updates, 1)

    def dispatched(seed: int) -> list[int]:
        grid = ScriptedGrid(updates, durations)
        run(fedbuff(concurrency=2, seed=seed), grid, num_rounds=6)
        return [node for _, node, _ in grid.sent]

    # Execute
    first, again, other = dispatched(1), dispatched(1), dispatched(2)

    # Assert: reproducible, seed-dependent, and spread over the federation.
    assert first == again and first != other
    assert len(set(first)) >= 4
    assert DISPATCH not in (0, 1, 2)  # its own stream, apart from sampling.py's purposes


def test_state_round_trip_and_resume_at_a_later_round() -> None:
    # Prepare: two rounds, state through a checkpoint, resume at round 3 from that model.
    first = fedbuff()
    seen = run(first, ScriptedGrid(UPDATES, DURATIONS), num_rounds=2)
    state = first.state_dict()
    resumed = fedbuff()
    resumed.load_state_dict(state)

    # Execute
    later = run(
        resumed, ScriptedGrid(UPDATES, DURATIONS), num_rounds=3, start_round=3, initial=model(*seen[2])
    )

    # Assert
    assert state["fedbuff-version"] == 2 and state["fedbuff-dispatched"] == first.dispatched > 0
    assert sorted(later) == [3]  # no round-0 evaluation on resume; rounds numbered on
    assert later[3] == [1.5, 1.5] and resumed.version == 3
    assert resumed.dispatched > state["fedbuff-dispatched"]


def test_synchronous_round_averages_fresh_updates_times_eta() -> None:
    # Prepare: the Message-API hooks (a synchronous driver) with two replies.
    strategy = fedbuff(server_learning_rate=0.5)
    start = {"w": np.array([1.0, 2.0], np.float32)}
    list(strategy.configure_train(1, model(1.0, 2.0), config_record(), FakeGrid([1, 2])))
    replies = [
        make_reply(1, {"w": start["w"] + np.float32([2.0, 0.0])}, {"num-examples": 10}),
        make_reply(2, {"w": start["w"] + np.float32([0.0, 4.0])}, {"num-examples": 30}),
    ]

    # Execute
    new, _ = strategy.aggregate_train(1, replies)

    # Assert: unweighted by examples, tau = 0: w + 0.5 * ([2,0] + [0,4]) / 2.
    assert new is not None and values(new) == [1.5, 3.0]
    assert strategy.round_metrics(1) == {"staleness_mean": 0.0, "staleness_max": 0, "model_version": 1}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"compression": "int8"}, "compression='int8' cannot be combined with strategy='fedbuff'"),
        ({"straggler-fraction": 0.5, "local-epochs": 2}, "straggler-fraction=0.5 does not apply to fedbuff"),
        ({"fedbuff-buffer-size": 0}, "fedbuff-buffer-size=0 is invalid"),
        ({"fedbuff-max-staleness": -1}, "fedbuff-max-staleness=-1 is invalid"),
    ],
)
def test_bad_settings_fail_before_training_naming_the_key(overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        build_strategy(AppConfig.from_run_config({"strategy": "fedbuff", **overrides}))


def test_registry_builds_fedbuff_from_the_run_config() -> None:
    strategy = build_strategy(
        AppConfig.from_run_config(
            {
                "strategy": "fedbuff",
                "fedbuff-concurrency": 4,
                "fedbuff-buffer-size": 3,
                "fedbuff-max-staleness": 6,
                "fedbuff-server-learning-rate": 0.7,
            }
        )
    )

    assert isinstance(strategy, FedBuff)
    assert (strategy.concurrency, strategy.buffer_size, strategy.max_staleness) == (4, 3, 6)
    assert strategy.server_learning_rate == 0.7


def test_config_record_defaults_are_kept() -> None:
    # The train config the ServerApp passes reaches clients with FedBuff's own keys added.
    grid = ScriptedGrid(UPDATES, DURATIONS)

    run(fedbuff(local_epochs=3), grid, num_rounds=1, train_config=ConfigRecord({"learning-rate": 0.05}))

    config = grid.sent[0][2]
    assert config["learning-rate"] == 0.05 and config["local-epochs"] == 3


class IntrudingGrid(ScriptedGrid):
    """A ScriptedGrid whose transport also delivers, with node 1's replies: a copy of the
    reply (duplicate), the same update from node 1 answering slow node 3's message id, the
    update again from a node that was never sent work, and an evaluate reply."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent_ids: dict[str, int] = {}

    def push_messages(self, messages: Any) -> list[str]:
        messages = list(messages)
        ids = super().push_messages(messages)
        self.sent_ids.update({i: m.metadata.dst_node_id for i, m in zip(ids, messages, strict=True)})
        return ids

    def pull_messages(self, message_ids: Any) -> list[Any]:
        replies = super().pull_messages(message_ids)
        extra = []
        for reply in replies:
            if reply.metadata.src_node_id != 1 or reply.has_error():
                continue
            arrays = {"w": np.array(to_layers(reply.content["arrays"])[0]) + 100}
            metrics = {"num-examples": 10, "train-loss": 1.0}
            other = next(i for i, n in reversed(self.sent_ids.items()) if n == 3)  # still in flight
            extra += [
                make_reply(1, arrays, metrics, reply_to=reply.metadata.reply_to_message_id),
                make_reply(1, arrays, metrics, reply_to=other),
                make_reply(99, arrays, metrics, reply_to="never-sent"),
                make_reply(1, None, {"num-examples": 10, "loss": 0.1}, message_type=MessageType.EVALUATE),
            ]
        return replies + extra


def test_replies_that_are_not_one_per_message_in_flight_are_dropped_and_counted() -> None:
    # Prepare: the same run twice, once over a transport that adds intruding replies.
    clean = run(fedbuff(), ScriptedGrid(UPDATES, DURATIONS), num_rounds=2)
    strategy = fedbuff()

    # Execute
    seen = run(strategy, IntrudingGrid(UPDATES, DURATIONS), num_rounds=2)

    # Assert: the same models, and every intruder counted by its reason.
    assert seen == clean
    rejected: dict[str, int] = {}
    for r in (1, 2):
        for reason, count in strategy.stats[r].rejected.items():
            rejected[reason] = rejected.get(reason, 0) + count
    assert set(rejected) == {"duplicate", "unknown-reply-to", "not-sampled", "wrong-message-type"}
    assert all(count >= 1 for count in rejected.values())
