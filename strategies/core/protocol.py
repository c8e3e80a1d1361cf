"""The strategy protocol: everything the ServerApp (and a wrapper) may call on a strategy.

The ServerApp drives a strategy through :class:`EdgeStrategy` only: no ``hasattr`` /
``getattr`` probes, no ``inspect.signature``. Every built-in strategy satisfies it — the
FedAvg family by inheriting :class:`strategies.algorithms.fedavg.FedAvg`, the wrappers
(DP, compression) by inheriting :class:`strategies.wrappers.base.StrategyWrapper`, which
forwards the protocol to the wrapped strategy once. A plug-in strategy that subclasses
neither is refused before training by :func:`require_edge_strategy`, naming what it lacks.

Members, and why the ServerApp needs each:

- ``stats`` (round → :class:`~strategies.core.ledger.RoundStats`) and ``nodes`` (node →
  :class:`~strategies.core.ledger.NodeReport`): the round log, metrics.json, the node table.
- ``round_metrics(round)``: a strategy's own per-round figures (DP: ε; FedBuff:
  staleness; compression: bytes) merged into metrics.json; ``{}`` when it has none.
- ``state_dict()`` / ``load_state_dict(state)`` / ``check_state(names, arrays)``:
  checkpoint and resume (``check_state`` refuses state that does not fit the model).
- ``start(..., start_round=k)``: the run, from round ``k`` (resume).
- ``train_exchange(grid, round, messages, timeout)``: how the round driver turns a round's
  train messages into replies; one bounded ``send_and_receive`` except under secure
  aggregation, whose four SecAgg+ stages replace it (``strategies/wrappers/secagg.py``).
- ``summary()``: the start-up log.
- ``add_reply_transform(transform)``: the reply-transform hook. A wrapper that changes
  what replies carry (compression decodes updates) registers a transform once; the
  strategy that validates replies applies it to each batch of train replies before
  validating them. A transform keeps each reply's metadata (replies are still matched to
  the messages sent) and reports the replies it cannot transform by index; those count
  as rejected with the transform's reason (the node answered), not as failed nodes.
- the four Message-API hooks (``configure_train`` … ``aggregate_evaluate``), which the
  round driver (:func:`strategies.core.loop.run_rounds`) and wrappers call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from strategies.core.ledger import NodeReport, RoundStats
from strategies.core.loop import EvaluateFn
from strategies.core.reply_checks import Rejection

#: ``(round, replies) -> (replies, rejected)``: the replies transformed (same length and
#: order) and, by index, the ones dropped with the reason.
ReplyTransform = Callable[[int, list[Message]], tuple[list[Message], dict[int, Rejection]]]


@runtime_checkable
class EdgeStrategy(Protocol):
    """What the ServerApp uses of a strategy (see the module docstring)."""

    @property
    def stats(self) -> dict[int, RoundStats]: ...

    @property
    def nodes(self) -> dict[int, NodeReport]: ...

    def round_metrics(self, server_round: int) -> Mapping[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def check_state(self, names: Sequence[str], arrays: Sequence[np.ndarray]) -> str | None: ...

    def summary(self) -> None: ...

    def add_reply_transform(self, transform: ReplyTransform) -> None: ...

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
        start_round: int = 1,
    ) -> Result: ...

    def train_exchange(
        self, grid: Grid, server_round: int, messages: list[Message], timeout: float
    ) -> list[Message]: ...

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]: ...

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]: ...

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]: ...

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None: ...


#: The protocol's members, for the error message of :func:`require_edge_strategy`.
MEMBERS = (
    "stats",
    "nodes",
    "round_metrics",
    "state_dict",
    "load_state_dict",
    "check_state",
    "summary",
    "add_reply_transform",
    "start",
    "train_exchange",
    "configure_train",
    "aggregate_train",
    "configure_evaluate",
    "aggregate_evaluate",
)


def missing_members(strategy: object) -> list[str]:
    """The protocol members ``strategy`` lacks (empty when it satisfies :class:`EdgeStrategy`)."""
    return [name for name in MEMBERS if not hasattr(strategy, name)]


def require_edge_strategy(strategy: object, name: str) -> EdgeStrategy:
    """``strategy`` as an :class:`EdgeStrategy`, or ``TypeError`` naming what it lacks and the fix.

    Called once, before training, where a strategy is built from the run config.
    """
    missing = missing_members(strategy)
    if missing or not isinstance(strategy, EdgeStrategy):
        raise TypeError(
            f"strategy {name!r} ({type(strategy).__name__}) does not implement the EdgeStrategy protocol "
            f"(strategies/core/protocol.py): it lacks {', '.join(missing) or 'a member'}. Subclass "
            "strategies.algorithms.fedavg.FedAvg (see docs/writing-a-strategy.md) or wrap it in a "
            "strategies.wrappers.base.StrategyWrapper"
        )
    return strategy
