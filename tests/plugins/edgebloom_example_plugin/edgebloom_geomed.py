"""Geometric median aggregation (RFA) as an edgebloom strategy plug-in.

Pillutla, Kakade and Harchaoui 2022, "Robust Aggregation for Federated Learning"
(arXiv:1912.13445): the new model is the weighted geometric median
argmin_z Σ_k α_k ‖w_k − z‖ (α_k = n_k / n), approximated by the smoothed Weiszfeld
iteration z ← Σ_k β_k w_k / Σ_k β_k with β_k = α_k / max(ν, ‖w_k − z‖), started at the
weighted mean.
"""

from __future__ import annotations

import numpy as np

from strategies.algorithms.fedavg import FedAvg
from strategies.core.registry import StrategySpec, common_kwargs
from tasks.config import Key, at_least, in_range


def geometric_median(points: np.ndarray, alphas: np.ndarray, *, iterations: int, nu: float) -> np.ndarray:
    """Smoothed Weiszfeld over the rows of ``points`` (one flattened model per client)."""
    z = alphas @ points / alphas.sum()
    for _ in range(iterations):
        betas = alphas / np.maximum(nu, np.linalg.norm(points - z, axis=1))
        z = betas @ points / betas.sum()
    return z


class GeometricMedian(FedAvg):
    """FedAvg with the weighted geometric median in place of the weighted mean."""

    def __init__(self, *, iterations: int, nu: float, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.iterations, self.nu = iterations, nu

    def aggregate_layers(self, layers: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        points = np.stack([np.concatenate([np.ravel(a) for a in client]) for client in layers])
        alphas = np.asarray(weights, dtype=np.float64)
        z = geometric_median(points.astype(np.float64), alphas, iterations=self.iterations, nu=self.nu)
        out, start = [], 0
        for like in layers[0]:
            values = z[start : start + like.size].reshape(like.shape)
            out.append((np.rint(values) if like.dtype.kind in "iu" else values).astype(like.dtype))
            start += like.size
        return out


SPEC = StrategySpec(
    name="geomed",
    summary="geometric median of client models (RFA, Pillutla et al. 2022)",
    build=lambda cfg: GeometricMedian(
        iterations=cfg.extra["geomed-iterations"], nu=cfg.extra["geomed-nu"], **common_kwargs(cfg)
    ),
    keys=(
        Key("geomed-iterations", int, 3, "Weiszfeld iterations (0 = the weighted mean)", at_least(0)),
        Key("geomed-nu", float, 1e-6, "ν: smallest distance used in a weight", in_range(0, 1, lo_open=True)),
    ),
)
