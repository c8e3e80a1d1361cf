"""FedAvgM: FedAvg with server momentum.

Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated
Visual Classification" (arXiv:1909.06335)::

    u_t = beta u_{t-1} + Delta_t
    w_{t+1} = w_t + eta u_t

with ``Delta_t`` FedAvg's example-weighted mean of ``w_k - w_t`` and ``u_{-1} = 0``
(``strategies/numeric/server_opt.py``). ``eta = 1, beta = 0`` is FedAvg; in steady state the
step is ``eta / (1 - beta)`` times FedAvg's (Hsu et al.'s effective learning rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

from strategies.algorithms.server_opt import ServerOptConfig, ServerOptFedAvg, ServerOptOptions
from strategies.numeric.server_opt import FedAvgMOptimizer
from tasks.config import declare, in_range


@dataclass(frozen=True)
class FedAvgMConfig(ServerOptConfig):
    """Keys of strategy ``fedavgm``: β, and η and μ from :class:`ServerOptConfig`."""

    server_momentum: float = declare(0.9, "β: FedAvgM server momentum", in_range(0, 1, hi_open=True))


class FedAvgM(ServerOptFedAvg):
    """FedAvg's aggregate applied with server-side momentum.

    Parameters
    ----------
    server_learning_rate : float
        eta > 0 (``server-learning-rate``).
    momentum : float
        beta in [0, 1) (``server-momentum``).
    **kwargs
        ``proximal_mu`` and the arguments of :class:`strategies.algorithms.fedavg.FedAvg`.
    """

    def __init__(
        self, *, server_learning_rate: float, momentum: float, **kwargs: Unpack[ServerOptOptions]
    ) -> None:
        optimizer = FedAvgMOptimizer(lr=server_learning_rate, momentum=momentum)
        super().__init__(optimizer=optimizer, **kwargs)
