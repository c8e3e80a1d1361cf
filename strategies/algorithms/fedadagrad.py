"""FedAdagrad: Adagrad on the server over the mean client update.

Reddi et al. 2021, "Adaptive Federated Optimization" (arXiv:2003.00295), Algorithm 2::

    m_t = beta1 m_{t-1} + (1 - beta1) Delta_t
    v_t = v_{t-1} + Delta_t**2
    w_{t+1} = w_t + eta m_t / (sqrt(v_t) + tau)

``Delta_t`` is FedAvg's example-weighted mean of ``w_k - w_t``; ``m_{-1} = 0``,
``v_{-1} = tau**2`` (``strategies/numeric/server_opt.py``). ``v`` only grows, so steps shrink
over the run; ``server-beta2`` is not used.
"""

from __future__ import annotations

from typing import Unpack

from strategies.algorithms.server_opt import ServerOptFedAvg, ServerOptOptions
from strategies.numeric.server_opt import FedAdagradOptimizer


class FedAdagrad(ServerOptFedAvg):
    """FedAvg's aggregate applied with server-side Adagrad.

    Parameters
    ----------
    server_learning_rate : float
        eta > 0 (``server-learning-rate``).
    beta1 : float
        First-moment decay in [0, 1) (``server-beta1``).
    tau : float
        Adaptivity constant > 0 (``server-tau``).
    **kwargs
        ``proximal_mu`` and the arguments of :class:`strategies.algorithms.fedavg.FedAvg`.
    """

    def __init__(
        self, *, server_learning_rate: float, beta1: float, tau: float, **kwargs: Unpack[ServerOptOptions]
    ) -> None:
        optimizer = FedAdagradOptimizer(lr=server_learning_rate, beta1=beta1, tau=tau)
        super().__init__(optimizer=optimizer, **kwargs)
