"""The local PyTorch client, as a Flower ``NumPyClient``.

It is thin over the framework-free ``tasks.train`` loops: ``fit`` and ``evaluate``
take and return lists of NumPy arrays in the model's ``state_dict`` order. The
ClientApp (``client_app.app``) adapts it to the Message API.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import RecordDict
from flwr.client import NumPyClient
from torch import nn

from tasks import wire
from tasks.loading import ClientData
from tasks.train import get_weights, set_weights, test, train


class TorchClient(NumPyClient):
    """Trains and evaluates ``model`` on one client's data.

    Parameters
    ----------
    model : nn.Module
        The model; it is moved to ``device`` and reused across calls.
    data : ClientData
        Local training and evaluation arrays.
    device : torch.device
        Where training runs.
    seed : int
        Base seed for local shuffling (combined with the round number).
    """

    def __init__(self, model: nn.Module, data: ClientData, device: torch.device, seed: int = 0) -> None:
        self.model = model.to(device)
        self.device = device
        self.seed = seed
        regression = np.issubdtype(data.y_train.dtype, np.floating)
        ydt = torch.float32 if regression else torch.int64

        def put(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype).to(device)

        self.x_train, self.y_train = put(data.x_train, torch.float32), put(data.y_train, ydt)
        if len(data.x_val):
            self.x_val, self.y_val = put(data.x_val, torch.float32), put(data.y_val, ydt)
        else:  # val-fraction=0: evaluate on the training data (reported as such)
            self.x_val, self.y_val = self.x_train, self.y_train

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return get_weights(self.model)

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        set_weights(self.model, parameters)
        result = train(
            self.model,
            self.x_train,
            self.y_train,
            epochs=int(config[wire.LOCAL_EPOCHS]),
            batch_size=int(config[wire.BATCH_SIZE]),
            learning_rate=float(config[wire.LEARNING_RATE]),
            momentum=float(config.get(wire.MOMENTUM, 0.0)),
            weight_decay=float(config.get(wire.WEIGHT_DECAY, 0.0)),
            proximal_mu=float(config.get(wire.PROXIMAL_MU, 0.0)),
            seed=self.seed * 100_003 + int(config.get(wire.SERVER_ROUND, 0)),
        )
        metrics = {wire.TRAIN_LOSS: result.loss, wire.TRAIN_SECONDS: result.seconds}
        return get_weights(self.model), result.num_examples, metrics

    def fit_on_node(
        self, parameters: list[np.ndarray], config: dict[str, Any], state: RecordDict
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """``fit`` for the node whose ``context.state`` is ``state``.

        The plain client keeps nothing per node, so this is ``fit``; a client that does
        (DP-SGD's privacy history, ``client_app.dpsgd``) overrides it.
        """
        return self.fit(parameters, config)

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        set_weights(self.model, parameters)
        result = test(self.model, self.x_val, self.y_val)
        metrics: dict[str, Any] = {}
        if result.accuracy is not None:
            metrics[wire.ACCURACY] = result.accuracy
        return result.loss, result.num_examples, metrics
