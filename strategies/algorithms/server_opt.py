"""Server optimizers as strategies: FedAvg's mean client update drives a server-side optimizer.

Reddi et al. 2021, "Adaptive Federated Optimization" (arXiv:2003.00295), Algorithm 2
(FedAdagrad, FedAdam, FedYogi), and Hsu et al. 2019, "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification"
(arXiv:1909.06335) (FedAvgM). Each round::

    Delta_t = sum_k (n_k / n) (w_k - w_t)     FedAvg's example-weighted mean update
    w_{t+1} = optimizer.step(w_t, Delta_t)    strategies/numeric/server_opt.py

``-Delta_t`` is the papers' pseudo-gradient; the optimizer's state (m, v, step) is
float64 and checkpointed by :meth:`ServerOptFedAvg.state_dict`. Everything else —
seeded sampling, reply validation, ``min-valid-replies``, stragglers — is FedAvg's.

Choices
-------
- The global model of the round is kept from ``configure_train``; when a round keeps
  the previous model (too few valid replies), the optimizer does not step and its
  state is unchanged.
- Only floating-point parameters are optimized. Integer buffers (BatchNorm's
  ``num_batches_tracked``) follow the rule of every strategy (``strategies/core/buffers.py``):
  the released model carries the previous global model's buffers unchanged. A counter
  has no gradient, and Adam's ``eta * sign``-sized step would be meaningless on it.
- When the stepped model is not finite (``non-finite-model``), the round keeps the
  previous model and the optimizer's state is restored, as when too few replies arrive.
- Composable with FedProx's client term: with ``proximal_mu > 0`` the strategy sends
  ``proximal-mu`` to clients as FedProx does and, as FedProx, aggregates stragglers'
  partial work instead of dropping it. With ``proximal_mu = 0`` it is FedAvg on the
  client side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO
from typing import Any, Unpack

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.supercore import log

from strategies.algorithms.fedavg import FedAvg, FedAvgOptions
from strategies.algorithms.fedprox import FedProxConfig
from strategies.core.buffers import is_parameter, parameter_indices, select
from strategies.core.records import to_layers
from strategies.numeric.server_opt import ServerOptimizer, ServerOptState
from tasks import wire
from tasks.config import declare, in_range


@dataclass(frozen=True)
class ServerOptConfig(FedProxConfig):
    """Keys every server optimizer reads: η, and FedProx's μ (:class:`FedProxConfig`)."""

    server_learning_rate: float = declare(
        0.1,
        "η: server step size (FedAvgM: η/(1 − β) is the steady-state step relative to FedAvg)",
        in_range(0, 1e6, lo_open=True),
    )


@dataclass(frozen=True)
class AdaptiveOptConfig(ServerOptConfig):
    """Keys of the adaptive optimizers (FedAdagrad; FedAdam and FedYogi add β₂)."""

    server_beta1: float = declare(
        0.9, "β₁: first-moment decay (FedAdam/FedYogi/FedAdagrad)", in_range(0, 1, hi_open=True)
    )
    server_tau: float = declare(
        1e-3,
        "τ: adaptivity added to √v (FedAdam/FedYogi/FedAdagrad); v starts at τ²",
        in_range(0, 1e6, lo_open=True),
    )


@dataclass(frozen=True)
class SecondMomentOptConfig(AdaptiveOptConfig):
    """Keys of FedAdam and FedYogi: the adaptive ones plus β₂."""

    server_beta2: float = declare(
        0.99, "β₂: second-moment decay (FedAdam/FedYogi)", in_range(0, 1, hi_open=True)
    )


#: Key of the optimizer's state in :meth:`ServerOptFedAvg.state_dict`.
STATE_KEY = "server-optimizer"


class ServerOptOptions(FedAvgOptions, total=False):
    """The keyword arguments a server optimizer's strategy passes on: FedAvg's and ``proximal_mu``."""

    proximal_mu: float


class ServerOptFedAvg(FedAvg):
    """FedAvg whose aggregate is applied through a :class:`ServerOptimizer`.

    Parameters
    ----------
    optimizer : ServerOptimizer
        The update rule, with no state yet (it is created at the first step).
    proximal_mu : float, default 0.0
        FedProx's μ >= 0, sent to clients as ``proximal-mu`` when > 0.
    **kwargs
        As for :class:`strategies.algorithms.fedavg.FedAvg`.
    """

    def __init__(
        self, *, optimizer: ServerOptimizer, proximal_mu: float = 0.0, **kwargs: Unpack[FedAvgOptions]
    ) -> None:
        if proximal_mu < 0:
            raise ValueError(f"proximal-mu={proximal_mu} must be >= 0")
        super().__init__(**kwargs)
        self.optimizer = optimizer
        self.proximal_mu = proximal_mu
        # FedProx aggregates stragglers' partial work; plain FedOpt, like FedAvg, drops them.
        self.aggregates_stragglers = proximal_mu > 0
        self._global: dict[int, list[np.ndarray]] = {}

    def summary(self) -> None:
        settings = {k: v for k, v in vars(self.optimizer).items() if k != "state"}
        log(INFO, "\t├──> Server optimizer %s: %s", self.optimizer.name, settings)
        if self.proximal_mu > 0:
            log(INFO, "\t├──> FedProx client term: proximal-mu = %s", self.proximal_mu)
        super().summary()

    # ------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus the optimizer's ``{"name", "m", "v", "step"}`` (None before round 1)."""
        state = self.optimizer.state
        saved = None if state is None else {"name": self.optimizer.name, **state.state_dict()}
        return {**super().state_dict(), STATE_KEY: saved}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; a checkpoint of another optimizer is refused."""
        super().load_state_dict(state)
        saved = state.get(STATE_KEY)
        if saved is None:
            self.optimizer.state = None
            return
        if saved.get("name") != self.optimizer.name:
            raise ValueError(
                f"checkpoint holds {saved.get('name')!r} server-optimizer state, this run uses "
                f"{self.optimizer.name!r}"
            )
        self.optimizer.state = ServerOptState.from_state_dict(saved)

    def check_state(self, names: Sequence[str], arrays: Sequence[np.ndarray]) -> str | None:
        """Whether the optimizer's moments have the shapes of the model's floating-point layers."""
        state = self.optimizer.state
        if state is None:
            return None
        optimized = [
            (n, np.shape(a)) for n, a in zip(names, arrays, strict=True) if is_parameter(np.asarray(a).dtype)
        ]
        expected = [shape for _, shape in optimized]
        expected_v = expected if self.optimizer.uses_second_moment else []
        for key, moments, want in (("m", state.m, expected), ("v", state.v, expected_v)):
            shapes = [a.shape for a in moments]
            if shapes != want:
                return (
                    f"{self.optimizer.name} state {key!r} has layer shapes {shapes}, but this model's "
                    f"floating-point layers {[n for n, _ in optimized]} have {want}"
                )
        return None

    # ------------------------------------------------------------------ training
    def prepare_train_config(self, server_round: int, config: ConfigRecord) -> None:
        super().prepare_train_config(server_round, config)
        if self.proximal_mu > 0:
            config[wire.PROXIMAL_MU] = self.proximal_mu

    def remember_global(self, server_round: int, arrays: ArrayRecord) -> None:
        super().remember_global(server_round, arrays)
        # Copies of the parameters (the record's buffers belong to the caller); the optimizer
        # never steps a buffer (strategies/core/buffers.py). Only this round's model is kept.
        layers = to_layers(arrays)
        self._global = {server_round: [np.array(a) for a in select(layers, parameter_indices(layers))]}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # step() replaces the state object, never mutates it: keeping a reference restores it.
        state = self.optimizer.state
        try:
            aggregated, metrics = super().aggregate_train(server_round, replies)
        finally:
            self._global.pop(server_round, None)
        if aggregated is None:  # no model released (too few replies, or non-finite): no step either
            self.optimizer.state = state
        return aggregated, metrics

    def apply_aggregate(self, server_round: int, aggregate: list[np.ndarray]) -> list[np.ndarray]:
        """One optimizer step from the round's global parameters along ``mean - global``."""
        global_parameters = self._global.get(server_round)
        if global_parameters is None:
            raise RuntimeError(f"aggregate_train({server_round}) without configure_train for that round")
        delta = [np.asarray(m, np.float64) - g for m, g in zip(aggregate, global_parameters, strict=True)]
        if not all(np.all(np.isfinite(d)) for d in delta):
            # Not a step the optimizer can take: hand the aggregate on, the final check rejects it.
            return aggregate
        return self.optimizer.step(global_parameters, delta)
