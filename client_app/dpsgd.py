"""A ``TorchClient`` that trains with DP-SGD (sample-level DP, Opacus).

The non-DP ``TorchClient`` is unchanged; this subclass only replaces the training
loop of ``fit`` with ``tasks.dp_train.DPSGDTrainer`` and adds the client's own
epsilon to the reply metrics as ``dp-sgd-epsilon``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from client_app.client import TorchClient
from strategies.records import DP_SGD_EPSILON_KEY
from tasks.dp_train import DPSGDTrainer
from tasks.loading import ClientData
from tasks.train import get_weights, set_weights

#: Reply metric: this client's epsilon (at its dp-sgd-delta) over all rounds it trained.
EPSILON_KEY = DP_SGD_EPSILON_KEY


class DPSGDClient(TorchClient):
    """Trains with per-example clipping and noise; reports its cumulative epsilon.

    Parameters
    ----------
    model, data, device, seed
        As for :class:`client_app.client.TorchClient`.
    noise_multiplier : float
        z > 0 (``dp-sgd-noise-multiplier``).
    max_grad_norm : float
        Per-example clipping norm (``dp-sgd-max-grad-norm``).
    delta : float
        delta of the reported epsilon (``dp-sgd-delta``).
    """

    def __init__(
        self,
        model: nn.Module,
        data: ClientData,
        device: torch.device,
        seed: int = 0,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        delta: float,
    ) -> None:
        super().__init__(model, data, device, seed=seed)
        self.trainer = DPSGDTrainer(
            noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, delta=delta
        )

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        set_weights(self.model, parameters)
        result = self.trainer.train(
            self.model,
            self.x_train,
            self.y_train,
            epochs=int(config["local-epochs"]),
            batch_size=int(config["batch-size"]),
            learning_rate=float(config["learning-rate"]),
            momentum=float(config.get("momentum", 0.0)),
            weight_decay=float(config.get("weight-decay", 0.0)),
            proximal_mu=float(config.get("proximal-mu", 0.0)),
        )
        metrics = {
            "train-loss": result.loss,
            "train-seconds": result.seconds,
            EPSILON_KEY: self.trainer.epsilon(),
        }
        return get_weights(self.model), result.num_examples, metrics
