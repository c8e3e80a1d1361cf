"""Seeded node sampling, straggler selection, and a bounded wait for nodes.

Sampling is drawn from ``numpy.random.default_rng([seed, round, purpose])`` over the
sorted node ids, so two strategies run with the same seed see the same clients and
the same stragglers in every round (FedProx's systems-heterogeneity experiment, Li et
al. 2020, arXiv:1812.06127, seeds its stragglers per round the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO

import numpy as np
from flwr.supercore import log

from strategies.core.deadline import call_with_deadline

TRAIN, STRAGGLERS, EVALUATE = 0, 1, 2


class NodeWaitTimeout(RuntimeError):
    """Fewer nodes than required connected before the timeout."""


def round_rng(seed: int, server_round: int, purpose: int) -> np.random.Generator:
    """Independent, reproducible generator for one purpose in one round."""
    return np.random.default_rng([seed, server_round, purpose])


def sample_size(num_nodes: int, fraction: float, minimum: int) -> int:
    """max(int(fraction·N), minimum), capped at N."""
    return min(num_nodes, max(int(num_nodes * fraction), minimum))


def sample_ids(node_ids: Iterable[int], k: int, rng: np.random.Generator) -> list[int]:
    """``k`` distinct ids drawn uniformly, returned sorted."""
    ids = sorted(node_ids)
    if not 0 <= k <= len(ids):
        raise ValueError(f"cannot sample {k} of {len(ids)} nodes")
    return sorted(int(ids[i]) for i in rng.choice(len(ids), size=k, replace=False))


def choose_stragglers(
    node_ids: list[int], *, fraction: float, local_epochs: int, rng: np.random.Generator
) -> dict[int, int]:
    """Node id → epochs for round(fraction·K) stragglers, epochs uniform in 1..E−1."""
    count = int(round(fraction * len(node_ids)))
    if count == 0 or local_epochs < 2:
        return {}
    chosen = rng.choice(len(node_ids), size=count, replace=False)
    epochs = rng.integers(1, local_epochs, size=count)  # high is exclusive: 1..E-1
    return {int(node_ids[i]): int(e) for i, e in zip(chosen, epochs, strict=True)}


def wait_for_nodes(
    get_node_ids: Callable[[], Iterable[int]],
    *,
    minimum: int,
    timeout: float,
    poll_interval: float = 0.5,
    on_wait: Callable[[int], None] | None = None,
) -> list[int]:
    """Return connected node ids once at least ``minimum`` are connected.

    The one wait every strategy uses. While waiting it calls ``on_wait(connected)``;
    by default it logs ``Waiting for nodes: <connected> connected, <minimum> required``.

    The whole wait, Grid calls included, ends within ``timeout`` seconds: each
    ``get_node_ids`` call gets only the time left (a SuperLink that does not answer
    would otherwise hold the wait forever), and the pause between polls never sleeps
    past the deadline.

    Raises
    ------
    NodeWaitTimeout
        If fewer than ``minimum`` nodes are connected after ``timeout`` seconds.
    strategies.core.deadline.GridTimeout
        If a ``get_node_ids`` call has not returned by the deadline.
    """
    deadline = time.monotonic() + timeout

    def poll() -> list[int]:
        return list(
            call_with_deadline(
                get_node_ids,
                timeout=deadline - time.monotonic(),
                what="get_node_ids",
                budget=f"wait-for-nodes-timeout={timeout:g}s",
            )
        )

    ids = poll()
    while len(ids) < minimum:
        if time.monotonic() >= deadline:
            raise NodeWaitTimeout(
                f"only {len(ids)} node(s) connected after waiting {timeout:g}s, but "
                f"min-available-nodes={minimum} (or the round's sample size) is required; "
                f"start more SuperNodes, lower min-available-nodes / min-train-nodes, or "
                f"raise wait-for-nodes-timeout"
            )
        if on_wait is not None:
            on_wait(len(ids))
        else:
            log(INFO, "Waiting for nodes: %d connected, %d required", len(ids), minimum)
        time.sleep(max(0.0, min(poll_interval, deadline - time.monotonic())))
        if time.monotonic() < deadline:
            ids = poll()
    return ids
