"""Shared behaviour of the robust aggregators: check the guarantee every round.

A robust rule only tolerates f Byzantine clients for some numbers of aggregated
clients n (e.g. Multi-Krum needs n > 2f + 2). The configuration is checked against
the sampled clients when a round is configured (a bad configuration fails before any
training, with the reason), and again against the valid replies before aggregating:
if too few valid replies remain for the guarantee, the round keeps the previous model.

Rules receive the floating-point parameters only: integer buffers (BatchNorm's
``num_batches_tracked``) enter no median, distance or norm (``strategies/core/buffers.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from strategies.algorithms.fedavg import FedAvg
from strategies.core.buffers import parameter_indices, select
from strategies.core.records import to_layers
from tasks.config import ConfigError, Section, at_least, declare


@dataclass(frozen=True)
class RobustConfig(Section):
    """The key every robust rule reads (strategies median, trimmed-mean, multi-krum)."""

    robust_num_byzantine: int = declare(1, "f: Byzantine clients to tolerate", at_least(0))


class RobustFedAvg(FedAvg):
    """FedAvg whose aggregation rule holds only for some client counts."""

    name = "robust"

    def check_guarantee(self, num_clients: int) -> None:
        """Raise ``ValueError`` with the reason if ``num_clients`` breaks the guarantee."""
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        try:
            self.check_guarantee(len(messages))
        except ValueError as exc:
            raise ConfigError(
                f"run config: strategy {self.name!r} with {len(messages)} sampled clients: {exc}; "
                f"sample more clients or lower robust-num-byzantine"
            ) from exc
        # The rules see parameters only (strategies/core/buffers.py): keep the global ones to match.
        layers = to_layers(arrays)
        self._global_layers = select(layers, parameter_indices(layers))
        return messages

    def too_few_replies(self, num_valid: int) -> str | None:
        problem = super().too_few_replies(num_valid)
        if problem is None:
            try:
                self.check_guarantee(num_valid)
            except ValueError as exc:
                problem = f"{num_valid} valid replies break the guarantee: {exc}"
        return problem

    def aggregate_layers(self, layers: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        return self.robust_rule(layers, weights)

    def robust_rule(self, layers: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        raise NotImplementedError  # pragma: no cover
