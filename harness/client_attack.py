"""Simulated Byzantine clients for robustness experiments (run config ``attack``).

In the simulation engine, ``attack-fraction`` of the partitions are attackers, chosen
by ``seed`` (:func:`harness.attacks.choose_attacked`: the same partitions for the
same seed in every process, and a larger fraction attacks a superset). An attacker
trains like everyone else and then replaces its update Δ = w_local − w_global:

- ``sign-flip``: sends w_global − c·Δ;
- ``scale``: sends w_global + c·Δ;
- ``gaussian``: sends w_global + N(0, c²) noise;
- ``label-flip``: trains on labels y ↦ K − 1 − y and sends its honest-looking update;

with c = ``attack-scale``. The attack is applied last, after any client-side DP
clipping: a Byzantine client does not follow the protocol. Every train reply of a run
with an attack configured says in its info record whether the node attacked and its
partition id, so the ServerApp can record the attackers in the run directory.

Attacks need partitions: a deployed SuperNode (``data-path``) never attacks.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from harness.attacks import choose_attacked, flip_labels, gaussian_update, scale_update, sign_flip
from tasks.config import AppConfig
from tasks.loading import ClientData

#: Info-record keys of a train reply in a run with an attack configured.
ATTACKER_KEY = "attacker"
PARTITION_KEY = "partition-id"
NUM_PARTITIONS_KEY = "num-partitions"


@functools.lru_cache(maxsize=64)
def _attacked(num_partitions: int, fraction: float, seed: int) -> frozenset[int]:
    return frozenset(choose_attacked(num_partitions, fraction=fraction, seed=seed))


def is_attacker(cfg: AppConfig, node_config: Mapping[str, Any]) -> bool:
    """Whether this node is one of the run's attackers (never without partitions)."""
    if cfg.attack == "none" or "partition-id" not in node_config or node_config.get("data-path"):
        return False
    partitions = int(node_config["num-partitions"])
    return int(node_config["partition-id"]) in _attacked(partitions, cfg.attack_fraction, cfg.seed)


def poison_data(cfg: AppConfig, data: ClientData, num_classes: int) -> ClientData:
    """Label flipping: the attacker's training labels (evaluation data stays honest)."""
    if cfg.attack != "label-flip" or num_classes < 2:
        return data
    return replace(data, y_train=flip_labels(data.y_train, num_classes=num_classes))


def poison_update(
    cfg: AppConfig,
    global_params: list[np.ndarray],
    local_params: list[np.ndarray],
    rng_seed: tuple[int, ...],
) -> list[np.ndarray]:
    """The model an attacker sends instead of ``local_params`` (update attacks only).

    ``rng_seed`` (seed, partition, round) seeds the gaussian attack's noise: attackers
    draw different noise, reproducibly.
    """
    if cfg.attack not in ("sign-flip", "scale", "gaussian"):
        return local_params
    delta = [
        np.asarray(n, np.float64) - np.asarray(g, np.float64)
        for g, n in zip(global_params, local_params, strict=True)
    ]
    if cfg.attack == "sign-flip":
        bad = sign_flip(delta, scale=cfg.attack_scale)
    elif cfg.attack == "scale":
        bad = scale_update(delta, scale=cfg.attack_scale)
    else:
        bad = gaussian_update(delta, scale=cfg.attack_scale, rng=np.random.default_rng(list(rng_seed)))
    out = []
    for g, d, n in zip(global_params, bad, local_params, strict=True):
        dtype = np.asarray(n).dtype
        if np.issubdtype(dtype, np.floating):
            out.append((np.asarray(g, np.float64) + d).astype(dtype))
        else:  # integer buffers (e.g. BatchNorm's step count) are sent as trained
            out.append(np.asarray(n))
    return out


def attack_info(cfg: AppConfig, node_config: Mapping[str, Any]) -> dict[str, int | bool]:
    """What a train reply says about attacks (nothing unless an attack is configured)."""
    if cfg.attack == "none" or "partition-id" not in node_config:
        return {}
    return {
        ATTACKER_KEY: is_attacker(cfg, node_config),
        PARTITION_KEY: int(node_config["partition-id"]),
        NUM_PARTITIONS_KEY: int(node_config["num-partitions"]),
    }
