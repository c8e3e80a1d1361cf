"""FedProx: FedAvg with a proximal term on the clients and partial work aggregated.

Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (arXiv:1812.06127).
Each client minimizes F_k(w) + (μ/2)·‖w − w_global‖² (squared L2 norm; gradient
μ·(w − w_global)); the server sends μ as ``proximal-mu`` every round. Stragglers'
partial work (1..E−1 epochs) is aggregated, weighted by n_k, where FedAvg drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Unpack

from flwr.app import ConfigRecord
from flwr.supercore import log

from strategies.algorithms.fedavg import FedAvg, FedAvgOptions
from tasks import wire
from tasks.config import Section, at_least, declare


@dataclass(frozen=True)
class FedProxConfig(Section):
    """FedProx's key; dp-fedprox and the server optimizers share it (their configs subclass this)."""

    proximal_mu: float = declare(0.0, "FedProx μ: clients add (μ/2)‖w − w_global‖²", at_least(0))


class FedProx(FedAvg):
    """FedAvg plus ``proximal-mu`` in every train config; stragglers are aggregated.

    Parameters
    ----------
    proximal_mu : float
        μ >= 0 (0 with full local work is FedAvg).
    **kwargs
        As for :class:`strategies.algorithms.fedavg.FedAvg`.
    """

    aggregates_stragglers = True

    def __init__(self, *, proximal_mu: float = 0.0, **kwargs: Unpack[FedAvgOptions]) -> None:
        if proximal_mu < 0:
            raise ValueError(f"proximal-mu={proximal_mu} must be >= 0")
        super().__init__(**kwargs)
        self.proximal_mu = proximal_mu
        if proximal_mu == 0:
            log(WARNING, "FedProx with proximal-mu=0 differs from FedAvg only in keeping stragglers")

    def summary(self) -> None:
        log(INFO, "\t├──> FedProx: proximal-mu = %s", self.proximal_mu)
        super().summary()

    def prepare_train_config(self, server_round: int, config: ConfigRecord) -> None:
        super().prepare_train_config(server_round, config)
        config[wire.PROXIMAL_MU] = self.proximal_mu
