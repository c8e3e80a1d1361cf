"""What each app loads: a client's partition, a device's own file, the server's test set.

Results are cached per process, so a simulation worker that serves many virtual
clients loads and partitions the dataset once, not on every train/evaluate call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tasks.config import AppConfig
from tasks.data import DataBundle, DatasetError, bundle_from_raw, load_dataset, read_npz, split_holdout
from tasks.partition import partition_indices


@dataclass(frozen=True)
class ClientData:
    """One client's local arrays: training data and a held-out evaluation split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def dataset_for(cfg: AppConfig) -> DataBundle:
    """The configured dataset, loaded once per process."""
    return load_dataset(
        cfg.dataset,
        seed=cfg.seed,
        test_fraction=cfg.test_fraction,
        synthetic_alpha=cfg.synthetic_alpha,
        synthetic_beta=cfg.synthetic_beta,
        synthetic_devices_count=cfg.synthetic_devices,
        synthetic_iid=cfg.synthetic_iid,
    )


@functools.lru_cache(maxsize=8)
def _partitions(
    dataset_key: tuple,
    partitioner: str,
    num_partitions: int,
    seed: int,
    alpha: float,
    shards: int,
    classes: int,
) -> tuple[np.ndarray, ...]:
    bundle = load_dataset(dataset_key[0], **dict(dataset_key[1]))
    if partitioner == "natural":
        parts = bundle.natural_partitions
        if parts is None or len(parts) != num_partitions:
            have = 0 if parts is None else len(parts)
            raise DatasetError(
                f"partitioner='natural' gives one partition per device ({have} devices) "
                f"but there are {num_partitions} nodes; set synthetic-devices={num_partitions} "
                f"or use another partitioner"
            )
        return tuple(parts)
    return tuple(
        partition_indices(
            bundle.y_train,
            partitioner=partitioner,
            num_partitions=num_partitions,
            seed=seed,
            alpha=alpha,
            shards_per_client=shards,
            classes_per_client=classes,
        )
    )


def partition_for(cfg: AppConfig, num_partitions: int) -> tuple[np.ndarray, ...]:
    """Training-example indices of every partition (cached)."""
    key = (
        cfg.dataset,
        tuple(
            sorted(
                {
                    "seed": cfg.seed,
                    "test_fraction": cfg.test_fraction,
                    "synthetic_alpha": cfg.synthetic_alpha,
                    "synthetic_beta": cfg.synthetic_beta,
                    "synthetic_devices_count": cfg.synthetic_devices,
                    "synthetic_iid": cfg.synthetic_iid,
                }.items()
            )
        ),
    )
    return _partitions(
        key,
        cfg.resolved_partitioner,
        num_partitions,
        cfg.seed,
        cfg.dirichlet_alpha,
        cfg.shards_per_client,
        cfg.classes_per_client,
    )


def client_data(cfg: AppConfig, partition_id: int, num_partitions: int) -> ClientData:
    """Partition ``partition_id`` of the configured dataset, split for local evaluation."""
    if not 0 <= partition_id < num_partitions:
        raise DatasetError(f"partition-id={partition_id} is outside 0..{num_partitions - 1}")
    bundle = dataset_for(cfg)
    idx = partition_for(cfg, num_partitions)[partition_id]
    train_pos, val_pos = split_holdout(len(idx), fraction=cfg.val_fraction, seed=cfg.seed + partition_id)
    tr, va = idx[train_pos], idx[val_pos]
    return ClientData(bundle.x_train[tr], bundle.y_train[tr], bundle.x_train[va], bundle.y_train[va])


@functools.lru_cache(maxsize=2)
def device_file_data(path: str) -> ClientData:
    """A deployed device's own .npz file, used whole: train on x_train, evaluate on x_test."""
    bundle = bundle_from_raw(path, *read_npz(path))
    return ClientData(bundle.x_train, bundle.y_train, bundle.x_test, bundle.y_test)
