"""Grid calls bounded by a deadline, so a stalled or unreachable SuperLink fails the run.

Flower 1.41's Grid calls can block far past any timeout of ours:

- ``HttpGrid`` (what a ServerApp gets under ``flwr run``) retries a failed request
  forever: its ``RetryInvoker`` has ``max_tries=None, max_time=None``. An unreachable
  SuperLink makes ``get_node_ids``, ``push_messages`` and ``pull_messages`` hang.
- ``send_and_receive(timeout=T)`` checks ``T`` only between pulls, and a pull that hangs
  is never interrupted. It also sleeps a fixed interval between pulls: 3 s in ``HttpGrid``
  (``flwr/superlink/grid/http_grid.py:412``, what a deployed ServerApp gets), 0.1 s in the
  simulation's ``InMemoryGrid`` (``inmemory_grid.py:177``), so a round that is done waits
  up to that long before the ServerApp sees its last reply.

So a round's stage is our own push + pull loop (:func:`send_and_receive_within`): one
``push_messages``, then ``pull_messages`` at a short interval that starts at
:data:`MIN_PULL_INTERVAL_S` after every pull that brought replies and backs off to
:data:`MAX_PULL_INTERVAL_S` while none come (:func:`next_pull_interval`), until every message
is answered or the round's timeout; the same replies and the same timeout semantics as
``send_and_receive``. Every Grid call a strategy makes runs in a daemon worker thread and
the caller waits at most until its deadline (:func:`call_with_deadline`); past it the
caller raises :class:`GridTimeout`, which fails the run with a message naming the
SuperLink call and the timeout. The ServerApp marks its run directory failed and keeps every round recorded
so far, and the last checkpoint can be resumed. The abandoned thread keeps retrying in
the background until the process exits (a daemon thread does not hold the exit up).

Rejected: Flower's own retry settings. ``HttpGrid`` builds its retry policy in
``__init__`` as a private attribute, and a retry limit would not bound a SuperLink that
accepts the connection and never answers.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

#: A stage bounded by ``T`` legitimately returns a little after ``T`` (a pull is in
#: progress; the last pull downloads replies), so its deadline is ``T`` plus this grace:
#: 10 % of ``T``, at least ``MIN_GRACE_S``, at most ``MAX_GRACE_S`` seconds.
GRACE_FRACTION = 0.1
MIN_GRACE_S = 10.0
MAX_GRACE_S = 120.0

_HINT = (
    "Check that the SuperLink is running and reachable from the ServerApp (its log, "
    "`flwr ls`); the run directory keeps the rounds so far, and its checkpoint can be "
    'resumed (README "Reliability").'
)


class GridTimeout(RuntimeError):
    """The SuperLink did not answer a Grid call before the call's deadline."""


def grace(timeout: float) -> float:
    """Seconds a call bounded by ``timeout`` may overrun it (see :data:`GRACE_FRACTION`)."""
    return min(max(MIN_GRACE_S, GRACE_FRACTION * timeout), MAX_GRACE_S)


def call_with_deadline(fn: Callable[[], T], *, timeout: float, what: str, budget: str) -> T:
    """Return ``fn()``, or raise :class:`GridTimeout` if it has not returned after ``timeout`` s.

    Parameters
    ----------
    fn : callable
        The Grid call, without arguments (a ``lambda`` or bound method).
    timeout : float
        Seconds to wait for it (a value <= 0 still lets a call that is already done return).
    what : str
        The call, for the message (``"get_node_ids"``).
    budget : str
        Where the timeout comes from, for the message (``"round-timeout=600s"``).

    Returns
    -------
    object
        What ``fn`` returned. An exception raised by ``fn`` is re-raised here.

    Raises
    ------
    GridTimeout
        If ``fn`` is still running at the deadline.
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()  # Flower's logging context follows the call

    def work() -> None:
        try:
            outcome["value"] = context.run(fn)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=f"grid-{what}", daemon=True).start()
    if not done.wait(max(timeout, 0.0)):
        raise GridTimeout(
            f"the SuperLink did not answer Grid.{what} within {timeout:.1f}s ({budget}). {_HINT}"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


#: Seconds between pulls right after a pull that brought replies (replies come in bursts:
#: the simulation's workers finish one message after another).
MIN_PULL_INTERVAL_S = 0.01
#: The longest wait between pulls, reached while no reply comes (each HttpGrid pull is a
#: request to the SuperLink: 5 per second at most).
MAX_PULL_INTERVAL_S = 0.2
#: Factor by which the interval grows after each pull that brought nothing.
PULL_BACKOFF = 1.5


def next_pull_interval(current: float, *, got_replies: bool) -> float:
    """Seconds to wait before the next pull: back to the minimum after replies, else back off.

    Parameters
    ----------
    current : float
        The interval waited before the last pull.
    got_replies : bool
        Whether the last pull brought any reply.

    Returns
    -------
    float
        :data:`MIN_PULL_INTERVAL_S` after replies, else ``current`` × :data:`PULL_BACKOFF`,
        within [:data:`MIN_PULL_INTERVAL_S`, :data:`MAX_PULL_INTERVAL_S`].
    """
    if got_replies:
        return MIN_PULL_INTERVAL_S
    return min(max(current * PULL_BACKOFF, MIN_PULL_INTERVAL_S), MAX_PULL_INTERVAL_S)


def send_and_receive_within(
    grid: Any,
    messages: Iterable[Any],
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Any]:
    """Push ``messages`` and pull their replies until all are answered or ``timeout`` s passed.

    What ``grid.send_and_receive(messages, timeout=timeout)`` does (the replies received by
    the timeout; at least one pull), with pulls at :func:`next_pull_interval` instead of
    Flower's fixed interval, and every Grid call bounded: the whole stage fails at
    ``timeout + grace`` even if the SuperLink stops answering. No messages: no Grid call.

    Parameters
    ----------
    grid : Grid
        Where the messages go (``push_messages`` / ``pull_messages``).
    messages : iterable of Message
        The stage's messages.
    timeout : float
        Seconds to wait for replies (``round-timeout``).
    clock, sleep : callable, optional
        Time source and sleep, for tests.

    Returns
    -------
    list of Message
        The replies received, in the order pulled.

    Raises
    ------
    GridTimeout
        If a Grid call has not returned by ``timeout + grace`` (a stalled or unreachable
        SuperLink).
    """
    messages = list(messages)
    if not messages:
        return []
    extra = grace(timeout)
    budget = f"round-timeout={timeout:g}s + {extra:g}s grace"
    start = clock()
    end, hard_end = start + timeout, start + timeout + extra

    def bounded(fn: Callable[[], Iterable[T]], what: str) -> list[T]:
        return list(
            call_with_deadline(lambda: list(fn()), timeout=hard_end - clock(), what=what, budget=budget)
        )

    # HttpGrid returns None in place of a message it could not push: nothing will answer it.
    waiting = {str(i) for i in bounded(lambda: grid.push_messages(messages), "push_messages") if i}
    replies: list[Any] = []
    interval = MIN_PULL_INTERVAL_S
    while waiting:
        got = bounded(lambda: grid.pull_messages(sorted(waiting)), "pull_messages")
        replies.extend(got)
        waiting.difference_update(str(m.metadata.reply_to_message_id) for m in got)
        if not waiting or clock() >= end:
            break
        interval = next_pull_interval(interval, got_replies=bool(got))
        sleep(max(min(interval, end - clock()), 0.0))
    return replies
