"""Client-side pieces of differential privacy, configured by the server's train message.

- Client-side clipping for user-level DP-FedAvg (McMahan et al. 2018): when the
  server's train config carries ``dp-clip-norm`` = C, :func:`dp_clipping_mod` makes the
  reply ``w_global + clip(w_local − w_global, C)`` and reports ``dp-unclipped`` =
  1[‖Δ‖ ≤ C], the bit adaptive clipping (Andrew et al. 2021) counts. The server
  then only adds noise, so it never needs to see an unclipped update.
- Sample-level DP-SGD (Abadi et al. 2016) with Opacus: when the train config carries
  ``dp-sgd-noise-multiplier`` > 0 (with ``dp-sgd-max-grad-norm``, ``dp-sgd-delta`` and
  ``dp-secure-noise``, :class:`DPSGDSettings`), :func:`make_client` returns a
  :class:`client_app.dpsgd.DPSGDClient`, else the plain ``TorchClient`` (the non-DP
  path is unchanged); the node's privacy history is kept in ``context.state``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable
from torch import nn

from client_app.client import TorchClient
from strategies.core.records import from_layers, to_layers
from strategies.numeric.dp import clip_update
from tasks import wire
from tasks.loading import ClientData

#: Train-config key of the clipping norm, and the reply metric of the unclipped bit.
CLIP_NORM_KEY = wire.CLIP_NORM
UNCLIPPED_KEY = wire.UNCLIPPED

__all__ = [
    "CLIP_NORM_KEY",
    "UNCLIPPED_KEY",
    "DPSGDSettings",
    "clip_own_update",
    "dp_clipping_mod",
    "make_client",
]


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


def dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: clip the node's own update when the train config carries ``dp-clip-norm``.

    Like Flower's ``fixedclipping_mod``, but with this project's clipping (the model's
    dtypes kept, the norm over the whole update) and the ``dp-unclipped`` bit of
    adaptive clipping in the reply's metrics. It sits inside the attack mod and the
    compression mod: honest nodes clip what they trained, a simulated attacker then
    breaks the protocol, and compression encodes the clipped update.
    """
    config = msg.content.config_records.get(wire.CONFIG)
    if config is None or CLIP_NORM_KEY not in config:
        return call_next(msg, context)
    clip_norm = wire.as_float(config[CLIP_NORM_KEY])
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"train config {CLIP_NORM_KEY}={clip_norm!r} must be > 0")
    reply = call_next(msg, context)
    if reply.has_error() or wire.ARRAYS not in reply.content.array_records:
        return reply
    names = list(reply.content.array_records[wire.ARRAYS].keys())
    global_layers = to_layers(msg.content.array_records[wire.ARRAYS], names)
    local_layers = to_layers(reply.content.array_records[wire.ARRAYS], names)
    clipped, unclipped = clip_own_update(global_layers, local_layers, clip_norm)
    reply.content[wire.ARRAYS] = from_layers(names, clipped)
    metrics = reply.content.metric_records.get(wire.METRICS)
    reply.content[wire.METRICS] = MetricRecord({**(metrics or {}), UNCLIPPED_KEY: int(unclipped)})
    return reply


@dataclass(frozen=True)
class DPSGDSettings:
    """Sample-level DP-SGD as the server's train config asks for it.

    Parameters
    ----------
    noise_multiplier : float
        z > 0 (``dp-sgd-noise-multiplier``).
    max_grad_norm : float
        Per-example clipping norm (``dp-sgd-max-grad-norm``).
    delta : float
        δ of the reported ε (``dp-sgd-delta``).
    secure_mode : bool
        Opacus's ``secure_mode`` (``dp-secure-noise``).
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    secure_mode: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DPSGDSettings | None:
        """DP-SGD in a train config, or ``None`` when it asks for none (no key, or z = 0).

        With z > 0 the server must send the other three too (``client_configs`` does):
        the client has no defaults of its own for them. Their values are checked by
        the trainer (``tasks.dp_train``), which names the key of a bad one.

        Raises
        ------
        ValueError
            If ``dp-sgd-noise-multiplier`` is negative or not finite, or another key is missing.
        """
        z = float(config.get(wire.DP_SGD_NOISE_MULTIPLIER, 0.0))
        if not (math.isfinite(z) and z >= 0):
            raise ValueError(
                f"train config {wire.DP_SGD_NOISE_MULTIPLIER}={z!r} must be >= 0 (0 = no DP-SGD)"
            )
        if z == 0:
            return None
        missing = [
            k for k in (wire.DP_SGD_MAX_GRAD_NORM, wire.DP_SGD_DELTA, wire.DP_SECURE_NOISE) if k not in config
        ]
        if missing:
            raise ValueError(
                f"train config has {wire.DP_SGD_NOISE_MULTIPLIER}={z} but no {', '.join(missing)}: "
                "the server sends every DP-SGD setting (server_app.app.client_configs); "
                "run a ServerApp of the same version as this ClientApp"
            )
        return cls(
            noise_multiplier=z,
            max_grad_norm=float(config[wire.DP_SGD_MAX_GRAD_NORM]),
            delta=float(config[wire.DP_SGD_DELTA]),
            secure_mode=bool(config[wire.DP_SECURE_NOISE]),
        )


def make_client(
    dp_sgd: DPSGDSettings | None, model: nn.Module, data: ClientData, device: torch.device, seed: int
) -> TorchClient:
    """The NumPyClient the server's message asks for: DP-SGD when ``dp_sgd`` is set, else the plain one."""
    if dp_sgd is not None:
        from client_app.dpsgd import DPSGDClient  # Opacus is imported only when used

        return DPSGDClient(
            model,
            data,
            device,
            seed=seed,
            noise_multiplier=dp_sgd.noise_multiplier,
            max_grad_norm=dp_sgd.max_grad_norm,
            delta=dp_sgd.delta,
            secure_mode=dp_sgd.secure_mode,
        )
    return TorchClient(model, data, device, seed=seed)
