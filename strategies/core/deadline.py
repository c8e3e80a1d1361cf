"""Grid calls bounded by a deadline, so a stalled or unreachable SuperLink fails the run.

Flower 1.41's Grid calls can block far past any timeout of ours:

- ``HttpGrid`` (what a ServerApp gets under ``flwr run``) retries a failed request
  forever: its ``RetryInvoker`` has ``max_tries=None, max_time=None``. An unreachable
  SuperLink makes ``get_node_ids``, ``push_messages`` and ``pull_messages`` hang.
- ``send_and_receive(timeout=T)`` checks ``T`` only between pulls (it sleeps 3 s between
  them), and a pull that hangs is never interrupted.

So every Grid call a strategy makes runs in a daemon worker thread and the caller waits
at most until its deadline (:func:`call_with_deadline`); past it the caller raises
:class:`GridTimeout`, which fails the run with a message naming the SuperLink and the
timeout. The ServerApp marks its run directory failed and keeps every round recorded
so far, and the last checkpoint can be resumed. The abandoned thread keeps retrying in
the background until the process exits (a daemon thread does not hold the exit up).

Rejected: Flower's own retry settings. ``HttpGrid`` builds its retry policy in
``__init__`` as a private attribute, and a retry limit would not bound a SuperLink that
accepts the connection and never answers.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

#: ``send_and_receive(timeout=T)`` legitimately returns a little after ``T`` (a pull is in
#: progress; HttpGrid sleeps 3 s between pulls; the last pull downloads replies), so its
#: deadline is ``T`` plus this grace: 10 % of ``T``, at least ``MIN_GRACE_S``, at most
#: ``MAX_GRACE_S`` seconds.
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


def send_and_receive_within(grid: Any, messages: Iterable[Any], *, timeout: float) -> list[Any]:
    """``grid.send_and_receive(messages, timeout=timeout)``, waited for at most ``timeout + grace``.

    Raises
    ------
    GridTimeout
        If the Grid has not returned by then (a stalled or unreachable SuperLink).
    """
    messages = list(messages)
    extra = grace(timeout)
    return list(
        call_with_deadline(
            lambda: grid.send_and_receive(messages=messages, timeout=timeout),
            timeout=timeout + extra,
            what="send_and_receive",
            budget=f"round-timeout={timeout:g}s + {extra:g}s grace",
        )
    )
