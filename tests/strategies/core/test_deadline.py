"""Grid calls bounded by deadlines: a stalled SuperLink fails the run in time, messages carry a TTL.

These tests measure elapsed time on purpose: what they check *is* a deadline. The
stalled grids block on an event for a few seconds (never forever, so the code as it was
fails the test instead of hanging), and the slack allowed is generous (a loaded CI box).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord

from strategies.algorithms.fedavg import FedAvg
from strategies.algorithms.fedbuff import FedBuff
from strategies.core import deadline
from strategies.core.deadline import GridTimeout, call_with_deadline, grace
from strategies.core.loop import run_rounds
from strategies.core.records import from_layers
from strategies.core.sampling import NodeWaitTimeout, wait_for_nodes
from tests.conftest import FakeGrid

STALL_S = 4.0  # how long a stalled call blocks: far beyond every deadline below
SLACK_S = 1.0


@pytest.fixture
def release() -> Any:
    """An event the stalled calls wait on; set at teardown so no thread outlives the test by much."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.2 s grace instead of at least 10 s, so a stalled round fails in well under a second."""
    monkeypatch.setattr(deadline, "MIN_GRACE_S", 0.2)


def model() -> ArrayRecord:
    return from_layers(["w"], [np.zeros(2, np.float32)])


class StalledGrid(FakeGrid):
    """Nodes 1..3; the calls named in ``stall`` block (until released or STALL_S)."""

    def __init__(self, release: threading.Event, stall: set[str]) -> None:
        super().__init__([1, 2, 3])
        self.release, self.stall = release, stall
        self.sent: list[Any] = []

    def _maybe_stall(self, name: str) -> None:
        if name in self.stall:
            self.release.wait(STALL_S)

    def get_node_ids(self) -> list[int]:
        self._maybe_stall("get_node_ids")
        return super().get_node_ids()

    def send_and_receive(self, messages: Any, timeout: float | None = None) -> list[Any]:
        self.sent.extend(messages)
        return []

    def push_messages(self, messages: Any) -> list[str]:
        self._maybe_stall("push_messages")
        return super().push_messages(messages)

    def pull_messages(self, message_ids: Any) -> list[Any]:
        self._maybe_stall("pull_messages")
        return super().pull_messages(message_ids)


def test_grace_is_a_tenth_of_the_timeout_within_bounds() -> None:
    assert grace(5.0) == deadline.MIN_GRACE_S == 10.0
    assert grace(600.0) == 60.0
    assert grace(86_400.0) == deadline.MAX_GRACE_S == 120.0


def test_a_call_that_returns_in_time_gives_its_value_and_its_exception() -> None:
    assert call_with_deadline(lambda: [1, 2], timeout=5, what="get_node_ids", budget="b") == [1, 2]

    def broken() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError, match="refused"):
        call_with_deadline(broken, timeout=5, what="get_node_ids", budget="b")


def test_wait_for_nodes_is_bounded_even_when_get_node_ids_blocks(release: threading.Event) -> None:
    # Prepare: the SuperLink never answers get_node_ids (the code as it was waited it out).
    grid = StalledGrid(release, {"get_node_ids"})
    start = time.monotonic()

    # Execute
    with pytest.raises(GridTimeout) as info:
        wait_for_nodes(grid.get_node_ids, minimum=2, timeout=0.5, poll_interval=0.1)

    # Assert: gave up at the 0.5 s timeout, saying what did not answer and what to do.
    assert time.monotonic() - start < 0.5 + SLACK_S
    message = str(info.value)
    assert "SuperLink did not answer Grid.get_node_ids within 0.5s" in message
    assert "wait-for-nodes-timeout=0.5s" in message and "resumed" in message


def test_slow_polls_never_overrun_the_wait_timeout() -> None:
    # Prepare: each poll takes 0.3 s and never finds enough nodes.
    def slow_ids() -> list[int]:
        time.sleep(0.3)
        return [1]

    start = time.monotonic()

    # Execute
    with pytest.raises((NodeWaitTimeout, GridTimeout)):
        wait_for_nodes(slow_ids, minimum=2, timeout=0.5, poll_interval=0.4)

    # Assert: the code as it was slept a whole poll interval past the deadline, then polled again.
    assert time.monotonic() - start < 0.5 + 0.25


def test_round_messages_carry_the_round_timeout_as_ttl() -> None:
    # Prepare
    grid = StalledGrid(threading.Event(), stall=set())
    strategy = FedAvg(min_available_nodes=1, min_train_nodes=1, min_evaluate_nodes=1)

    # Execute
    run_rounds(strategy, grid, model(), num_rounds=1, timeout=37.0, train_config=ConfigRecord())

    # Assert: train and evaluate messages expire with the round, not after Flower's 12 h.
    assert len(grid.sent) == 6
    assert [m.metadata.ttl for m in grid.sent] == [37.0] * 6


@pytest.mark.parametrize("stalled", ["push_messages", "pull_messages"])
def test_a_stalled_grid_call_fails_the_round_at_its_deadline(
    stalled: str, release: threading.Event, short_grace: None
) -> None:
    # Prepare: the SuperLink accepts nothing and never returns (HttpGrid retries forever).
    grid = StalledGrid(release, {stalled})
    strategy = FedAvg(min_available_nodes=1, min_train_nodes=1, min_evaluate_nodes=1)
    start = time.monotonic()

    # Execute
    with pytest.raises(GridTimeout) as info:
        run_rounds(strategy, grid, model(), num_rounds=2, timeout=0.3)

    # Assert: failed at round-timeout + grace, naming the SuperLink call and the timeout.
    assert time.monotonic() - start < 0.3 + 0.2 + SLACK_S
    assert f"SuperLink did not answer Grid.{stalled}" in str(info.value)
    assert "round-timeout=0.3s + 0.2s grace" in str(info.value)


class ScriptedPulls:
    """Pushes get ids m0..; each pull returns the next scripted batch of replies (by message index)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = list(batches)
        self.pulls: list[list[str]] = []

    def push_messages(self, messages: Any) -> list[str]:
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Any) -> list[Any]:
        self.pulls.append(list(message_ids))
        batch = self.batches.pop(0) if self.batches else []
        return [Reply(f"m{i}") for i in batch]


class Reply:
    """What the loop reads of a reply: ``metadata.reply_to_message_id``."""

    def __init__(self, reply_to: str) -> None:
        self.metadata = type("Meta", (), {"reply_to_message_id": reply_to})()


class FakeClock:
    """A clock that moves only when the loop sleeps: the pull schedule without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_next_pull_interval_resets_after_replies_and_backs_off_to_the_cap() -> None:
    assert deadline.next_pull_interval(0.2, got_replies=True) == deadline.MIN_PULL_INTERVAL_S
    assert deadline.next_pull_interval(0.01, got_replies=False) == pytest.approx(0.015)
    assert deadline.next_pull_interval(0.19, got_replies=False) == deadline.MAX_PULL_INTERVAL_S
    assert deadline.next_pull_interval(0.0, got_replies=False) == deadline.MIN_PULL_INTERVAL_S


def test_push_and_pull_stops_as_soon_as_every_message_is_answered() -> None:
    # Prepare: three messages; nothing on the first two pulls, then two replies, then the last.
    grid, clock = ScriptedPulls([[], [], [0, 2], [1]]), FakeClock()

    # Execute
    replies = deadline.send_and_receive_within(
        grid, ["a", "b", "c"], timeout=60, clock=clock, sleep=clock.sleep
    )

    # Assert: all three replies, four pulls, each asking only for what is still unanswered,
    # and the waits back off while nothing comes (never Flower's 3 s), then reset.
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert grid.pulls == [["m0", "m1", "m2"], ["m0", "m1", "m2"], ["m0", "m1", "m2"], ["m1"]]
    assert clock.sleeps == pytest.approx([0.015, 0.0225, 0.01])


def test_push_and_pull_returns_what_came_by_the_timeout() -> None:
    # Prepare: one of two messages is never answered.
    grid, clock = ScriptedPulls([[0]]), FakeClock()

    # Execute
    replies = deadline.send_and_receive_within(grid, ["a", "b"], timeout=1.0, clock=clock, sleep=clock.sleep)

    # Assert: the one reply, returned at the timeout (not later), with pulls at most 0.2 s apart.
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert clock.now == pytest.approx(1.0)
    assert max(clock.sleeps) <= deadline.MAX_PULL_INTERVAL_S


def test_no_messages_make_no_grid_call() -> None:
    grid = ScriptedPulls([])
    assert deadline.send_and_receive_within(grid, [], timeout=1.0) == []
    assert grid.pulls == []


@pytest.mark.parametrize("stalled", ["get_node_ids", "push_messages", "pull_messages"])
def test_fedbuff_fails_when_the_superlink_stalls_any_grid_call(
    stalled: str, release: threading.Event, short_grace: None
) -> None:
    # Prepare: the first wait for nodes passes; then one kind of call stalls.
    grid = StalledGrid(release, set())
    strategy = FedBuff(concurrency=2, buffer_size=2, min_available_nodes=1, fraction_evaluate=0.0)
    original = grid.get_node_ids
    calls = {"n": 0}

    def get_node_ids() -> list[int]:  # the wait before the loop answers; the rest may stall
        calls["n"] += 1
        if calls["n"] > 1:
            grid.stall = {stalled}
        return original()

    grid.get_node_ids = get_node_ids  # type: ignore[method-assign]
    start = time.monotonic()

    # Execute
    with pytest.raises(GridTimeout, match=f"Grid.{stalled}"):
        strategy.start(grid, model(), num_rounds=1, timeout=0.3)

    # Assert: the round's deadline (0.3 s) plus the grace (0.2 s) bounded the stalled call.
    assert time.monotonic() - start < 0.3 + 0.2 + SLACK_S
