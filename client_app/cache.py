"""A small least-recently-used cache for the ClientApp's per-process objects.

A ClientApp process (a simulation worker, or a deployed SuperNode's long-lived app
process) keeps loaded data and built models between messages, so that it does not
rebuild them for every message. Such a cache must be bounded: a worker lives across
many runs, and nothing tells it that a run has ended. Nothing a node needs across
rounds is kept here (that lives in its ``context.state``), so an evicted entry is only
rebuilt, never lost.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """At most ``max_entries`` values; the least recently used one goes first.

    Parameters
    ----------
    max_entries : int
        Capacity, >= 1.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries} must be >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get_or_create(self, key: K, make: Callable[[], V]) -> V:
        """The value under ``key``, made by ``make()`` (and cached) if there is none."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = make()
        self._entries[key] = value
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def peek(self, key: K) -> V | None:
        """The value under ``key``, or ``None``; does not count as a use."""
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def values(self) -> list[V]:
        """The cached values, least recently used first."""
        return list(self._entries.values())

    def clear(self) -> None:
        """Drop every entry (as a fresh process would start)."""
        self._entries.clear()
