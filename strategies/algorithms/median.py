"""Coordinate-wise median aggregation.

Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates" (arXiv:1803.01498): each coordinate of the new model is the median of the
clients' values; it tolerates f < n/2 Byzantine clients. Example counts are ignored
(a client cannot buy influence by inflating ``num-examples``).
"""

from __future__ import annotations

from typing import Unpack

import numpy as np

from strategies.algorithms.fedavg import FedAvgOptions
from strategies.algorithms.robust_base import RobustFedAvg
from strategies.numeric.robust import coordinate_median, validate_median


class FedMedian(RobustFedAvg):
    """Coordinate-wise median of client models; ``num_byzantine`` is f."""

    name = "median"

    def __init__(self, *, num_byzantine: int = 1, **kwargs: Unpack[FedAvgOptions]) -> None:
        super().__init__(**kwargs)
        self.num_byzantine = num_byzantine

    def check_guarantee(self, num_clients: int) -> None:
        validate_median(num_clients=num_clients, num_byzantine=self.num_byzantine)

    def robust_rule(self, layers: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        return coordinate_median(layers)
