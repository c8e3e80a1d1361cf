"""What each app loads: a client's partition, a device's own file, the server's test set.

Results are cached per process, so a simulation worker that serves many virtual
clients loads and partitions the dataset once, not on every train/evaluate call. The
dataset is held once; partitions are index views into it or drawn on demand
(``tasks.partition``), and a client's own examples are gathered only when it is served,
so a population of 10,000 virtual clients costs no memory per client that is not sampled.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tasks.config import AppConfig
from tasks.data import (
    DataBundle,
    DatasetError,
    SyntheticSpec,
    bundle_from_raw,
    load_dataset,
    read_npz,
    split_holdout,
    synthetic_device,
)
from tasks.partition import Partitions, PartitionTable, SampledPartitions, partition_indices


@dataclass(frozen=True)
class ClientData:
    """One client's local arrays: training data and a held-out evaluation split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def dataset_for(cfg: AppConfig) -> DataBundle:
    """The configured dataset, loaded once per process.

    Raises
    ------
    DatasetError
        ``partition-size`` larger than the training set (``sampled`` partitioner): the
        ServerApp loads the dataset before training, so the run fails there, not in a client.
    """
    bundle = load_dataset(cfg.dataset, **_dataset_kwargs(cfg))
    if cfg.resolved_partitioner == "sampled" and cfg.partition_size > len(bundle.y_train):
        raise DatasetError(
            f"partition-size={cfg.partition_size} exceeds the {len(bundle.y_train)} training "
            f"examples of dataset={cfg.dataset!r}; lower partition-size"
        )
    return bundle


def _dataset_kwargs(cfg: AppConfig) -> dict[str, float | int | bool]:
    """``load_dataset``'s keyword arguments, always in one order.

    ``functools.lru_cache`` keys keyword arguments in the order given: two call sites
    passing them in different orders would load the dataset twice per process.
    """
    kwargs = {
        "seed": cfg.seed,
        "test_fraction": cfg.test_fraction,
        "synthetic_alpha": cfg.synthetic_alpha,
        "synthetic_beta": cfg.synthetic_beta,
        "synthetic_devices_count": cfg.synthetic_devices,
        "synthetic_iid": cfg.synthetic_iid,
    }
    return dict(sorted(kwargs.items()))


@functools.lru_cache(maxsize=8)
def _partitions(
    dataset_key: tuple,
    partitioner: str,
    num_partitions: int,
    seed: int,
    alpha: float,
    shards: int,
    classes: int,
    size: int,
) -> Partitions:
    labels = load_dataset(dataset_key[0], **dict(dataset_key[1])).y_train
    if partitioner == "sampled":
        return SampledPartitions(
            num_examples=len(labels), size=size, num_partitions=num_partitions, seed=seed
        )
    return PartitionTable(
        partition_indices(
            labels,
            partitioner=partitioner,
            num_partitions=num_partitions,
            seed=seed,
            alpha=alpha,
            shards_per_client=shards,
            classes_per_client=classes,
        )
    )


def partition_for(cfg: AppConfig, num_partitions: int) -> Partitions:
    """Training-example indices of every partition, as index views or drawn on demand (cached).

    Not for ``natural``: a Synthetic device's data is its own (:func:`client_data`).
    """
    if cfg.resolved_partitioner == "natural":
        raise DatasetError(
            "partitioner='natural' has no index partitions: each device generates its own data"
        )
    key = (cfg.dataset, tuple(_dataset_kwargs(cfg).items()))
    return _partitions(
        key,
        cfg.resolved_partitioner,
        num_partitions,
        cfg.seed,
        cfg.dirichlet_alpha,
        cfg.shards_per_client,
        cfg.classes_per_client,
        cfg.partition_size,
    )


def client_data(cfg: AppConfig, partition_id: int, num_partitions: int) -> ClientData:
    """Partition ``partition_id`` of the configured dataset, split for local evaluation.

    Only this client's examples are gathered (from index views into the shared dataset,
    or, for Synthetic's natural split, by generating its one device); nothing is built
    for the other clients.
    """
    if not 0 <= partition_id < num_partitions:
        raise DatasetError(f"partition-id={partition_id} is outside 0..{num_partitions - 1}")
    if cfg.resolved_partitioner == "natural":
        if cfg.synthetic_devices != num_partitions:
            raise DatasetError(
                f"partitioner='natural' gives one partition per device ({cfg.synthetic_devices} "
                f"devices) but there are {num_partitions} nodes; set synthetic-devices="
                f"{num_partitions} or use another partitioner"
            )
        spec = SyntheticSpec(cfg.synthetic_alpha, cfg.synthetic_beta, cfg.synthetic_iid, cfg.seed)
        x, y, _, _ = synthetic_device(spec, partition_id)
        train_pos, val_pos = split_holdout(len(y), fraction=cfg.val_fraction, seed=cfg.seed + partition_id)
        return ClientData(x[train_pos], y[train_pos], x[val_pos], y[val_pos])
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
