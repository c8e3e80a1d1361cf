"""A ``TorchClient`` that trains with DP-SGD (sample-level DP, Opacus).

The non-DP ``TorchClient`` is unchanged; this subclass only replaces the training
loop of ``fit`` with ``tasks.dp_train.DPSGDTrainer`` and adds the client's own
epsilon to the reply metrics as ``dp-sgd-epsilon``.

A node's epsilon must cover every round it ever trained, but no process sees all of
them: the simulation engine hands each message to whichever worker is idle, and a
deployed SuperNode may start a fresh ClientApp process per message. So the node's
privacy history (per run of rounds: noise multiplier, sample rate, steps) lives in
its ``context.state``, as the top-k residual does (``client_app.compression``), and
:meth:`DPSGDClient.fit_on_node` restores it into Opacus's RDP accountant before
training, reports epsilon over the whole history and stores it back. The trainer
cached in a process is never the source of truth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, RecordDict
from torch import nn

from client_app.client import TorchClient
from tasks import wire
from tasks.dp_train import DPSGDTrainer, check_delta
from tasks.loading import ClientData
from tasks.train import get_weights, set_weights

#: Reply metric: this client's epsilon (at its dp-sgd-delta) over all rounds it trained.
EPSILON_KEY = wire.DP_SGD_EPSILON
#: ``context.state`` record holding the node's DP-SGD privacy history.
HISTORY_KEY = "dp-sgd-history"

#: One accountant entry: (noise multiplier, sample rate, steps), Opacus's history format.
HistoryEntry = tuple[float, float, int]


def _column(record: ConfigRecord, key: str) -> list[object]:
    """One column of the saved history (a list); TypeError if it is not one."""
    value = record[key]
    if not isinstance(value, list):
        raise TypeError(f"{key!r} is a {type(value).__name__}, not a list")
    return list(value)


def load_privacy_history(state: RecordDict) -> list[HistoryEntry]:
    """The node's DP-SGD history from ``context.state`` (empty before its first round).

    Raises
    ------
    ValueError
        If the record is malformed: a lost history cannot be replaced by a shorter one
        without under-reporting epsilon, so the client refuses to train.
    """
    record = state.config_records.get(HISTORY_KEY)
    if record is None:
        return []
    try:
        columns = [_column(record, key) for key in ("noise-multiplier", "sample-rate", "steps")]
        rows = zip(*columns, strict=True)
        history = [(wire.as_float(z), wire.as_float(q), wire.as_int(n)) for z, q, n in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"context.state[{HISTORY_KEY!r}] is malformed ({exc}); this node's DP-SGD privacy "
            "history is lost and its epsilon cannot be computed: start a new run"
        ) from exc
    for z, q, n in history:
        if not (math.isfinite(z) and z > 0 and 0 < q <= 1 and n >= 1):
            raise ValueError(
                f"context.state[{HISTORY_KEY!r}] has an invalid entry (z={z}, q={q}, steps={n}); "
                "this node's DP-SGD privacy history is lost: start a new run"
            )
    return history


def store_privacy_history(state: RecordDict, history: list[HistoryEntry]) -> None:
    """Write the node's DP-SGD history into ``context.state`` (one list per column)."""
    state[HISTORY_KEY] = ConfigRecord(
        {
            "noise-multiplier": [float(z) for z, _, _ in history],
            "sample-rate": [float(q) for _, q, _ in history],
            "steps": [int(n) for _, _, n in history],
        }
    )


class DPSGDClient(TorchClient):
    """Trains with per-example clipping and noise; reports its cumulative epsilon.

    Parameters
    ----------
    model, data, device, seed
        As for :class:`client_app.client.TorchClient`.
    noise_multiplier : float
        z > 0 (``dp-sgd-noise-multiplier`` of the server's train config).
    max_grad_norm : float
        Per-example clipping norm (``dp-sgd-max-grad-norm``).
    delta : float
        delta of the reported epsilon (``dp-sgd-delta``), < 1 / training examples.
    secure_mode : bool, default False
        Opacus's ``secure_mode`` (``dp-secure-noise``).

    Raises
    ------
    ValueError
        If ``delta`` is not below 1 / (this client's training examples), or on an
        invalid DP-SGD parameter.
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
        secure_mode: bool = False,
    ) -> None:
        super().__init__(model, data, device, seed=seed)
        self.trainer = DPSGDTrainer(
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            delta=delta,
            secure_mode=secure_mode,
        )
        check_delta(delta, len(self.x_train))  # before any training

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """One round of DP-SGD; epsilon over the history in the trainer's accountant.

        Under the ClientApp use :meth:`fit_on_node`, which first loads the node's
        whole history; ``fit`` alone only knows this object's rounds.
        """
        set_weights(self.model, parameters)
        result = self.trainer.train(
            self.model,
            self.x_train,
            self.y_train,
            epochs=int(config[wire.LOCAL_EPOCHS]),
            batch_size=int(config[wire.BATCH_SIZE]),
            learning_rate=float(config[wire.LEARNING_RATE]),
            momentum=float(config.get(wire.MOMENTUM, 0.0)),
            weight_decay=float(config.get(wire.WEIGHT_DECAY, 0.0)),
            proximal_mu=float(config.get(wire.PROXIMAL_MU, 0.0)),
        )
        metrics = {
            wire.TRAIN_LOSS: result.loss,
            wire.TRAIN_SECONDS: result.seconds,
            EPSILON_KEY: self.trainer.epsilon(),
        }
        return get_weights(self.model), result.num_examples, metrics

    def fit_on_node(
        self, parameters: list[np.ndarray], config: dict[str, Any], state: RecordDict
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """``fit`` with the node's privacy history read from and written back to ``state``."""
        self.trainer.restore_privacy_state(load_privacy_history(state))
        result = self.fit(parameters, config)
        store_privacy_history(state, self.trainer.privacy_state())
        return result
