"""The wrapper base: a strategy around another one, forwarding the strategy protocol once.

A wrapper (DP, compression) changes some Message-API hooks of the strategy it holds
(``inner``) and keeps the rest. :class:`StrategyWrapper` forwards every member of
:class:`strategies.core.protocol.EdgeStrategy` to ``inner`` — ``stats``, ``nodes``,
``state_dict`` / ``load_state_dict`` / ``check_state``, ``round_metrics``, ``summary``,
``add_reply_transform``, ``train_exchange`` and the four hooks — so a wrapper overrides only what it changes
and merges its own state or metrics with ``super()``.

``start`` is the round driver over the *wrapper* (:func:`strategies.core.loop.run_rounds`),
so the loop calls the wrapper's hooks; it is composed, not a mixin, so base-class order
does not matter. The inner strategy's own ``start`` is not used: a strategy whose
``start`` is more than the synchronous round loop (FedBuff's asynchronous loop) cannot
be wrapped by a wrapper that changes its hooks, and such a wrapper refuses it.

A wrapper reaches the inner strategy through public members only (the protocol, and
the FedAvg hooks its docstring names); no module reads another object's private
attributes (``tests/strategies/test_private_access.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from strategies.core.ledger import NodeReport, RoundStats
from strategies.core.loop import EvaluateFn, run_rounds
from strategies.core.protocol import EdgeStrategy, ReplyTransform

#: The wrapped strategy's type: any EdgeStrategy (compression), or what a wrapper needs (DP: FedAvg).
InnerT = TypeVar("InnerT", bound=EdgeStrategy)


class StrategyWrapper(Strategy, Generic[InnerT]):
    """A strategy around ``inner`` (an :class:`~strategies.core.protocol.EdgeStrategy`).

    A subclass's constructor takes the wrapped strategy and sets ``self.inner`` (a
    subclass may make ``inner`` a property that checks what it accepts, as DP does).
    """

    inner: InnerT

    # ------------------------------------------------------------ the inner's state
    @property
    def stats(self) -> dict[int, RoundStats]:
        """The inner strategy's round ledger (per-round participation counts)."""
        return self.inner.stats

    @property
    def nodes(self) -> dict[int, NodeReport]:
        """The inner strategy's last report of every node that trained."""
        return self.inner.nodes

    def round_metrics(self, server_round: int) -> dict[str, Any]:
        """The inner strategy's per-round metrics (a wrapper adds its own with ``super()``)."""
        return dict(self.inner.round_metrics(server_round))

    def state_dict(self) -> dict[str, Any]:
        """The inner strategy's checkpoint state (a wrapper adds its own with ``super()``)."""
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the inner strategy's state."""
        self.inner.load_state_dict(state)

    def check_state(self, names: Sequence[str], arrays: Sequence[np.ndarray]) -> str | None:
        """The inner strategy's check of its restored state against the model."""
        return self.inner.check_state(names, arrays)

    def summary(self) -> None:
        self.inner.summary()

    def add_reply_transform(self, transform: ReplyTransform) -> None:
        """Register ``transform`` where replies are validated: in the inner strategy."""
        self.inner.add_reply_transform(transform)

    # ------------------------------------------------------------ the round driver
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
    ) -> Result:
        """The synchronous round loop over this wrapper's hooks, from ``start_round``."""
        return run_rounds(
            self,
            grid,
            initial_arrays,
            num_rounds,
            timeout,
            train_config,
            evaluate_config,
            evaluate_fn,
            start_round,
            train_exchange=self.train_exchange,
        )

    def train_exchange(
        self, grid: Grid, server_round: int, messages: list[Message], timeout: float
    ) -> list[Message]:
        """The inner strategy's train exchange (secure aggregation overrides it)."""
        return self.inner.train_exchange(grid, server_round, messages, timeout)

    # ------------------------------------------------------------ the four hooks
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)
