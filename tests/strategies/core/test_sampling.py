import time

import pytest

from strategies.core.sampling import (
    NodeWaitTimeout,
    choose_stragglers,
    round_rng,
    sample_ids,
    sample_size,
    wait_for_nodes,
)


def test_sampling_is_reproducible_per_seed_and_round() -> None:
    ids = list(range(100, 200))
    a = sample_ids(ids, 10, round_rng(42, 3, 0))
    b = sample_ids(reversed(ids), 10, round_rng(42, 3, 0))  # order of discovery doesn't matter
    c = sample_ids(ids, 10, round_rng(42, 4, 0))
    assert a == b and a != c and len(set(a)) == 10 and set(a) <= set(ids)


def test_sample_size_respects_fraction_minimum_and_population() -> None:
    assert sample_size(10, 0.5, 2) == 5
    assert sample_size(10, 0.1, 3) == 3
    assert sample_size(4, 1.0, 10) == 4


def test_stragglers_run_between_one_and_e_minus_one_epochs() -> None:
    nodes = list(range(20))
    stragglers = choose_stragglers(nodes, fraction=0.5, local_epochs=5, rng=round_rng(1, 1, 1))
    assert len(stragglers) == 10 and set(stragglers) <= set(nodes)
    assert all(1 <= e <= 4 for e in stragglers.values())
    assert choose_stragglers(nodes, fraction=0.0, local_epochs=5, rng=round_rng(1, 1, 1)) == {}


def test_wait_for_nodes_gives_up_after_the_timeout_with_a_message() -> None:
    start = time.monotonic()
    with pytest.raises(NodeWaitTimeout, match="min-available-nodes=5"):
        wait_for_nodes(lambda: [1, 2], minimum=5, timeout=0.5, poll_interval=0.05)
    assert time.monotonic() - start < 3


def test_wait_for_nodes_returns_once_enough_are_connected() -> None:
    calls = iter([[1], [1, 2], [1, 2, 3]])
    assert wait_for_nodes(lambda: next(calls), minimum=3, timeout=5, poll_interval=0.01) == [1, 2, 3]
