"""The strategy protocol: every registered strategy and both wrappers satisfy ``EdgeStrategy``.

``isinstance`` with a ``runtime_checkable`` protocol checks only that the members exist,
so each strategy is also driven through the protocol alone (one round of the Message-API
hooks, the ledger, the node reports, per-round metrics and a JSON checkpoint round trip),
as the ServerApp drives it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from strategies.algorithms.fedavg import FedAvg
from strategies.core.protocol import EdgeStrategy, missing_members, require_edge_strategy
from strategies.wrappers.compressed import CompressedStrategy
from strategies.wrappers.dp_config import DPConfig
from strategies.wrappers.dp_fedavg import DPFedAvg
from tests.strategies.test_contract import (
    GLOBAL,
    NAMES,
    build,
    example_plugin,  # noqa: F401  (fixture spec_for requests for the plug-in)
    num_valid_replies,
    reply,
    run_round,
    shifted,
    small_update,
    spec_for,
)


def _wrapped(kind: str) -> EdgeStrategy:
    inner = FedAvg(min_train_nodes=1, min_available_nodes=1, seed=1)
    if kind == "compression":
        return CompressedStrategy(inner, scheme="int8")
    return DPFedAvg(
        inner,
        DPConfig(
            noise_multiplier=0.01,
            clip_norm=10.0,
            sampling_rate=1.0,
            delta=1e-5,
            sampling="fixed-size",
            noise_seed=0,
            weight_cap=1.0,
        ),
    )


def _drive(strategy: Any, num_nodes: int) -> None:
    """One round through the protocol only; checks what the ServerApp reads afterwards."""
    rng = np.random.default_rng(0)
    nodes = list(range(1, num_nodes + 1))
    replies = [reply(n, shifted(GLOBAL, small_update(rng))) for n in nodes]
    run_round(strategy, nodes, replies)
    assert strategy.stats[1].sampled == num_nodes
    assert strategy.stats[1].succeeded == num_nodes
    assert strategy.stats[1].failed == 0
    assert set(strategy.nodes) == set(nodes)
    assert isinstance(strategy.round_metrics(1), Mapping)
    state = json.loads(json.dumps(strategy.state_dict(), default=lambda a: np.asarray(a).tolist()))
    assert isinstance(state, dict)
    assert strategy.check_state(list(GLOBAL), list(GLOBAL.values())) is None
    assert "start_round" in inspect.signature(strategy.start).parameters


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_strategy_satisfies_the_protocol(name: str, request: pytest.FixtureRequest) -> None:
    # Prepare
    spec = spec_for(name, request)
    strategy = build(spec)

    # Execute / Assert: structurally, and driven through the protocol alone.
    assert isinstance(strategy, EdgeStrategy)
    assert missing_members(strategy) == []
    assert require_edge_strategy(strategy, name) is strategy
    _drive(strategy, num_valid_replies(spec))


@pytest.mark.parametrize("kind", ["compression", "dp"])
def test_both_wrappers_satisfy_the_protocol_and_forward_the_inner_ledger(kind: str) -> None:
    # Prepare
    strategy = _wrapped(kind)

    # Execute
    _drive(strategy, 3)

    # Assert: the wrapper forwards the inner's ledger and reports (no copies).
    assert isinstance(strategy, EdgeStrategy)
    assert strategy.stats is strategy.inner.stats
    assert strategy.nodes is strategy.inner.nodes


def test_a_strategy_without_the_protocol_is_refused_naming_what_it_lacks() -> None:
    # Prepare: Flower's own FedAvg has the four hooks but none of the ServerApp's members.
    strategy = FlowerFedAvg()

    # Execute
    with pytest.raises(TypeError) as excinfo:
        require_edge_strategy(strategy, "flower-fedavg")

    # Assert
    message = str(excinfo.value)
    assert "'flower-fedavg'" in message and "EdgeStrategy" in message
    for member in ("stats", "nodes", "state_dict", "round_metrics"):
        assert member in message
    assert "Subclass strategies.algorithms.fedavg.FedAvg" in message
