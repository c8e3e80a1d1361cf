"""Local training and evaluation loops, with the FedProx proximal term.

Loss reduction is the mean per example and ``num_examples`` always counts training
examples (never batches): FedAvg's weighting depends on both.

FedProx (Li et al. 2020, arXiv:1812.06127) adds (μ/2)·‖w − w_global‖² (squared L2
norm over all parameters) to the local objective; its gradient is μ·(w − w_global).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class TrainResult:
    """What one call of :func:`train` did."""

    loss: float  # mean per-example loss over all local steps
    num_examples: int  # training examples (not batches)
    seconds: float


@dataclass(frozen=True)
class TestResult:
    """Evaluation of a model on a dataset; ``accuracy`` is None for regression."""

    loss: float
    accuracy: float | None
    num_examples: int


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA if present, else MPS, else CPU; ``requested`` other than auto overrides."""
    if requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={requested!r} was requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_kind(device: torch.device) -> str:
    """Human-readable device name for metrics, e.g. ``cuda:NVIDIA H100``."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def proximal_term(
    params: Sequence[torch.Tensor], global_params: Sequence[torch.Tensor], mu: float
) -> torch.Tensor:
    """(μ/2)·Σ‖w − w_global‖², the FedProx penalty (squared norm, as in the paper)."""
    total = torch.zeros((), device=params[0].device)
    for w, w0 in zip(params, global_params, strict=True):
        total = total + (w - w0).pow(2).sum()
    return 0.5 * mu * total


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> TrainResult:
    """Train ``model`` in place with SGD on tensors already on the model's device.

    ``batch_size <= 0`` means full batch: with ``epochs=1`` and ``momentum=0`` one
    call is one gradient step (FedSGD).
    """
    start = time.perf_counter()
    regression = y.dtype.is_floating_point
    criterion = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    params = [p for p in model.parameters() if p.requires_grad]
    global_params = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    n = len(x)
    bs = n if batch_size <= 0 else min(batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss_sum, seen = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(x.device)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x[idx]), y[idx])
            objective = loss + proximal_term(params, global_params, proximal_mu) if global_params else loss
            objective.backward()
            optimizer.step()
            # Report the data loss (not the proximal penalty) so FedAvg and FedProx compare.
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
    return TrainResult(loss=loss_sum / max(seen, 1), num_examples=n, seconds=time.perf_counter() - start)


@torch.no_grad()
def test(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024) -> TestResult:
    """Mean per-example loss and accuracy (classification) of ``model`` on ``(x, y)``."""
    model.eval()
    regression = y.dtype.is_floating_point
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])
        target = y[i : i + batch_size]
        if regression:
            loss_sum += float(F.mse_loss(out, target, reduction="sum"))
        else:
            loss_sum += float(F.cross_entropy(out, target, reduction="sum"))
            correct += int((out.argmax(1) == target).sum())
    n = len(x)
    return TestResult(
        loss=loss_sum / max(n, 1),
        accuracy=None if regression else correct / max(n, 1),
        num_examples=n,
    )


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's state (parameters and buffers) as NumPy arrays, in state_dict order."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Copy NumPy arrays (state_dict order) into ``model`` in place, checking shapes."""
    state = model.state_dict()
    if len(weights) != len(state):
        raise ValueError(f"expected {len(state)} arrays for the model, got {len(weights)}")
    with torch.no_grad(), warnings.catch_warnings():
        # Incoming arrays may be read-only views of the message buffer; we only read them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for (name, current), w in zip(state.items(), weights, strict=True):
            if tuple(w.shape) != tuple(current.shape):
                raise ValueError(
                    f"array {name!r} has shape {tuple(w.shape)}, the model needs {tuple(current.shape)}"
                )
            current.copy_(torch.as_tensor(w))
