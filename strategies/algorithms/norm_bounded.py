"""Norm-bounded FedAvg: the server clips each client's update before averaging.

Each update Δ_k = w_k − w is scaled to L2 norm at most ``norm-bound``, then FedAvg's
example-weighted mean is applied (Sun et al. 2019, "Can You Really Backdoor Federated
Learning?", arXiv:1911.07963). It bounds any one client's influence; it does not
reject outliers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import numpy as np

from strategies.algorithms.fedavg import FedAvgOptions
from strategies.algorithms.robust_base import RobustFedAvg
from strategies.numeric.robust import norm_bounded_mean, validate_norm_bounded_mean
from tasks.config import Section, declare, in_range


@dataclass(frozen=True)
class NormBoundedConfig(Section):
    """Key of strategy ``norm-bounded``."""

    norm_bound: float = declare(1.0, "L2 bound on each client update", in_range(0, 1e9, lo_open=True))


class NormBoundedFedAvg(RobustFedAvg):
    """FedAvg over updates clipped to ``max_norm``."""

    name = "norm-bounded"

    def __init__(self, *, max_norm: float = 1.0, **kwargs: Unpack[FedAvgOptions]) -> None:
        validate_norm_bounded_mean(max_norm=max_norm)
        super().__init__(**kwargs)
        self.max_norm = max_norm

    def check_guarantee(self, num_clients: int) -> None:
        return None  # clipping bounds influence for any number of clients

    def robust_rule(self, layers: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        base = self._global_layers
        updates = [[_difference(w, g) for w, g in zip(client, base, strict=True)] for client in layers]
        mean_update = norm_bounded_mean(updates, weights, max_norm=self.max_norm)
        return [(g + u).astype(g.dtype) for g, u in zip(base, mean_update, strict=True)]


def _difference(w: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``w - g``, in float64 only where the float32 difference of finite values overflowed."""
    with np.errstate(over="ignore"):
        d = np.subtract(w, g)
    if d.dtype != np.float64 and not np.all(np.isfinite(d)):
        d = np.asarray(w, np.float64) - np.asarray(g, np.float64)
    return d
