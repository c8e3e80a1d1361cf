"""Geometric median aggregation (RFA) as an edgebloom strategy plug-in.

Pillutla, Kakade and Harchaoui 2022, "Robust Aggregation for Federated Learning" (arXiv:1912.13445): the new
model is the weighted geometric median argmin_z Σ_k α_k ‖w_k − z‖ (α_k = n_k / n), approximated by smoothed
Weiszfeld z ← Σ_k β_k w_k / Σ_k β_k, β_k = α_k / max(ν, ‖w_k − z‖), started at the weighted mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import numpy as np

from strategies.algorithms.fedavg import FedAvg, FedAvgOptions
from strategies.core.registry import StrategySpec, common_kwargs
from tasks.config import Section, at_least, declare, in_range


def geometric_median(points: np.ndarray, alphas: np.ndarray, *, iterations: int, nu: float) -> np.ndarray:
    """Smoothed Weiszfeld over the rows of ``points`` (one flattened model per client)."""
    z = alphas @ points / alphas.sum()
    for _ in range(iterations):
        betas = alphas / np.maximum(nu, np.linalg.norm(points - z, axis=1))
        z = betas @ points / betas.sum()
    return z


@dataclass(frozen=True)
class GeomedConfig(Section):
    """The plug-in's run-config keys: validated, listed and typed like edgebloom's own."""

    geomed_iterations: int = declare(3, "Weiszfeld iterations (0 = the weighted mean)", at_least(0))
    geomed_nu: float = declare(1e-6, "ν: smallest distance used in a weight", in_range(0, 1, lo_open=True))


class GeometricMedian(FedAvg):
    """FedAvg with the weighted geometric median in place of the weighted mean."""

    def __init__(self, *, own: GeomedConfig, **kwargs: Unpack[FedAvgOptions]) -> None:
        super().__init__(**kwargs)
        self.iterations, self.nu = own.geomed_iterations, own.geomed_nu

    def aggregate_layers(self, layers: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        points = np.stack([np.concatenate([np.ravel(a) for a in client]) for client in layers])
        alphas = np.asarray(weights, dtype=np.float64)
        z = geometric_median(points.astype(np.float64), alphas, iterations=self.iterations, nu=self.nu)
        parts = np.split(z, np.cumsum([a.size for a in layers[0]])[:-1])
        return [
            (np.rint(v) if like.dtype.kind in "iu" else v).reshape(like.shape).astype(like.dtype)
            for v, like in zip(parts, layers[0], strict=True)
        ]


SPEC = StrategySpec(
    name="geomed",
    summary="geometric median of client models (RFA, Pillutla et al. 2022)",
    build=lambda cfg: GeometricMedian(own=cfg.section(GeomedConfig), **common_kwargs(cfg)),
    config=GeomedConfig,
)
