"""Multi-Krum.

Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant Gradient
Descent" (arXiv:1703.02757): score each client by the summed squared distance to its
n − f − 2 nearest neighbours, average the m best-scored clients (m = 1 is Krum). The
guarantee needs n > 2f + 2 and 1 ≤ m ≤ n − f.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import numpy as np

from strategies.algorithms.fedavg import FedAvgOptions
from strategies.algorithms.robust_base import RobustConfig, RobustFedAvg
from strategies.numeric.robust import multi_krum, validate_krum
from tasks.config import at_least, declare


@dataclass(frozen=True)
class MultiKrumConfig(RobustConfig):
    """Keys of strategy ``multi-krum``: m, and f from :class:`RobustConfig`."""

    krum_num_selected: int = declare(0, "m: clients Multi-Krum averages (0 = n − f)", at_least(0))


class MultiKrum(RobustFedAvg):
    """Multi-Krum; ``num_selected`` m = 0 means n − f."""

    name = "multi-krum"

    def __init__(
        self, *, num_byzantine: int = 1, num_selected: int = 0, **kwargs: Unpack[FedAvgOptions]
    ) -> None:
        if num_selected < 0:
            raise ValueError(f"krum-num-selected={num_selected} must be >= 0 (0 means n - f)")
        super().__init__(**kwargs)
        self.num_byzantine = num_byzantine
        self.num_selected = num_selected

    def _m(self, n: int) -> int:
        return self.num_selected or n - self.num_byzantine

    def check_guarantee(self, num_clients: int) -> None:
        validate_krum(
            num_clients=num_clients, num_byzantine=self.num_byzantine, num_selected=self._m(num_clients)
        )

    def robust_rule(self, layers: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        aggregate, _ = multi_krum(layers, num_byzantine=self.num_byzantine, num_selected=self._m(len(layers)))
        return aggregate
