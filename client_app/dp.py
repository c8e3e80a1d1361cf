"""Client-side pieces of differential privacy.

- Client-side clipping for user-level DP-FedAvg (McMahan et al. 2018): when the
  server's train config carries ``dp-clip-norm`` = C, the client sends
  ``w_global + clip(w_local − w_global, C)`` and reports ``dp-unclipped`` =
  1[‖Δ‖ ≤ C], the bit adaptive clipping (Andrew et al. 2021) counts. The server
  then only adds noise, so it never needs to see an unclipped update.
- Sample-level DP-SGD (Abadi et al. 2016) with Opacus: :func:`make_client` returns a
  :class:`client_app.dpsgd.DPSGDClient` when ``dp-sgd-noise-multiplier`` > 0, else the
  plain ``TorchClient`` (the non-DP path is unchanged); :func:`fit_client` trains it
  with the node's privacy history kept in ``context.state``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import RecordDict
from torch import nn

from client_app.client import TorchClient
from strategies.numeric.dp import CLIP_NORM_KEY, UNCLIPPED_KEY, clip_update
from tasks.config import AppConfig
from tasks.loading import ClientData

__all__ = ["CLIP_NORM_KEY", "UNCLIPPED_KEY", "clip_own_update", "fit_client", "make_client"]


def clip_own_update(
    global_layers: list[np.ndarray], local_layers: list[np.ndarray], clip_norm: float
) -> tuple[list[np.ndarray], bool]:
    """``global + clip(local − global, clip_norm)`` in the model's dtypes, and whether it was unclipped."""
    delta = [
        np.asarray(n, np.float64) - np.asarray(g, np.float64)
        for g, n in zip(global_layers, local_layers, strict=True)
    ]
    clipped, unclipped = clip_update(delta, clip_norm=clip_norm)
    out = [
        (np.asarray(g, np.float64) + d).astype(np.asarray(n).dtype)
        for g, d, n in zip(global_layers, clipped, local_layers, strict=True)
    ]
    return out, unclipped


def make_client(
    cfg: AppConfig, model: nn.Module, data: ClientData, device: torch.device, seed: int
) -> TorchClient:
    """The NumPyClient for this run: DP-SGD when configured, else the plain one."""
    if cfg.dp_sgd_noise_multiplier > 0:
        from client_app.dpsgd import DPSGDClient  # Opacus is imported only when used

        return DPSGDClient(
            model,
            data,
            device,
            seed=seed,
            noise_multiplier=cfg.dp_sgd_noise_multiplier,
            max_grad_norm=cfg.dp_sgd_max_grad_norm,
            delta=cfg.dp_sgd_delta,
            secure_mode=cfg.dp_secure_noise,
        )
    return TorchClient(model, data, device, seed=seed)


def fit_client(
    cfg: AppConfig,
    client: TorchClient,
    parameters: list[np.ndarray],
    config: dict[str, Any],
    state: RecordDict,
) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """``client.fit``; a DP-SGD client keeps its privacy history in the node's ``state``.

    Parameters
    ----------
    cfg : AppConfig
        The run config (``dp-sgd-noise-multiplier`` > 0 means ``client`` is a DP-SGD one).
    client : TorchClient
        The node's client, from :func:`make_client`.
    parameters, config
        As for ``NumPyClient.fit``.
    state : RecordDict
        The node's ``context.state``.

    Returns
    -------
    tuple
        ``fit``'s (parameters, num_examples, metrics).
    """
    if cfg.dp_sgd_noise_multiplier > 0:
        from client_app.dpsgd import DPSGDClient  # Opacus is imported only when used

        assert isinstance(client, DPSGDClient), type(client)
        return client.fit_on_node(parameters, config, state)
    return client.fit(parameters, config)
