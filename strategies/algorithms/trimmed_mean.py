"""Coordinate-wise β-trimmed mean.

Yin et al. 2018 (arXiv:1803.01498): per coordinate, drop the ⌊βn⌋ largest and smallest
client values and average the rest; it needs β ≥ f/n and 2⌊βn⌋ < n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import numpy as np

from strategies.algorithms.fedavg import FedAvgOptions
from strategies.algorithms.robust_base import RobustConfig, RobustFedAvg
from strategies.numeric.robust import trimmed_mean, validate_trimmed_mean
from tasks.config import declare, in_range


@dataclass(frozen=True)
class TrimmedMeanConfig(RobustConfig):
    """Keys of strategy ``trimmed-mean``: β, and f from :class:`RobustConfig`."""

    trimmed_mean_beta: float = declare(0.2, "β: share trimmed at each end", in_range(0, 0.5, hi_open=True))


class FedTrimmedMean(RobustFedAvg):
    """β-trimmed mean of client models; ``beta`` is β, ``num_byzantine`` is f."""

    name = "trimmed-mean"

    def __init__(self, *, beta: float = 0.2, num_byzantine: int = 1, **kwargs: Unpack[FedAvgOptions]) -> None:
        if not 0 <= beta < 0.5:
            raise ValueError(f"trimmed-mean-beta={beta} must be in [0, 0.5)")
        super().__init__(**kwargs)
        self.beta = beta
        self.num_byzantine = num_byzantine

    def check_guarantee(self, num_clients: int) -> None:
        validate_trimmed_mean(num_clients=num_clients, beta=self.beta, num_byzantine=self.num_byzantine)

    def robust_rule(self, layers: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        return trimmed_mean(layers, beta=self.beta)
