"""FedYogi: Yogi on the server over the mean client update.

Reddi et al. 2021, "Adaptive Federated Optimization" (arXiv:2003.00295), Algorithm 2::

    m_t = beta1 m_{t-1} + (1 - beta1) Delta_t
    v_t = v_{t-1} - (1 - beta2) Delta_t**2 sign(v_{t-1} - Delta_t**2)
    w_{t+1} = w_t + eta m_t / (sqrt(v_t) + tau)

``v`` moves towards ``Delta_t**2`` by an additive step instead of Adam's decay, so a
burst of large updates raises it less abruptly. ``Delta_t`` is FedAvg's example-weighted
mean of ``w_k - w_t``; ``m_{-1} = 0``, ``v_{-1} = tau**2`` (``strategies/numeric/server_opt.py``).
"""

from __future__ import annotations

from typing import Unpack

from strategies.algorithms.server_opt import ServerOptFedAvg, ServerOptOptions
from strategies.numeric.server_opt import FedYogiOptimizer


class FedYogi(ServerOptFedAvg):
    """FedAvg's aggregate applied with server-side Yogi.

    Parameters
    ----------
    server_learning_rate : float
        eta > 0 (``server-learning-rate``).
    beta1, beta2 : float
        Moment decays in [0, 1) (``server-beta1``, ``server-beta2``).
    tau : float
        Adaptivity constant > 0 (``server-tau``).
    **kwargs
        ``proximal_mu`` and the arguments of :class:`strategies.algorithms.fedavg.FedAvg`.
    """

    def __init__(
        self,
        *,
        server_learning_rate: float,
        beta1: float,
        beta2: float,
        tau: float,
        **kwargs: Unpack[ServerOptOptions],
    ) -> None:
        optimizer = FedYogiOptimizer(lr=server_learning_rate, beta1=beta1, beta2=beta2, tau=tau)
        super().__init__(optimizer=optimizer, **kwargs)
