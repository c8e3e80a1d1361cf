"""Partition a dataset's training examples across clients with flwr-datasets.

The partitioners are Flower Datasets' own (``IidPartitioner``, ``DirichletPartitioner``,
``ShardPartitioner``, ``PathologicalPartitioner``) applied to an in-memory table of
labels, so simulation and the per-device file tool split data identically.
``shard`` is McMahan et al. 2017's split: sort by label, cut into equal shards, give
each client ``shards-per-client`` of them.
"""

from __future__ import annotations

import numpy as np

PARTITIONERS = ("iid", "dirichlet", "shard", "pathological", "natural")


def partition_indices(
    labels: np.ndarray,
    *,
    partitioner: str,
    num_partitions: int,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    classes_per_client: int = 2,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_partitions`` index arrays.

    Parameters
    ----------
    labels : np.ndarray
        One integer label per training example.
    partitioner : str
        One of ``iid``, ``dirichlet``, ``shard``, ``pathological``.
    num_partitions : int
        Number of clients.
    seed : int
        Seed for every random choice; equal seeds give equal partitions.
    alpha : float
        Dirichlet concentration (smaller is more heterogeneous).
    shards_per_client : int
        Shards per client for ``shard``.
    classes_per_client : int
        Classes per client for ``pathological``.

    Returns
    -------
    list[np.ndarray]
        Sorted example indices of each partition.
    """
    import datasets
    from flwr_datasets import partitioner as fp

    if partitioner not in PARTITIONERS or partitioner == "natural":
        raise ValueError(
            f"partitioner={partitioner!r} is unknown here; use one of iid, dirichlet, shard, pathological"
        )
    if num_partitions < 1 or num_partitions > len(labels):
        raise ValueError(
            f"num-partitions={num_partitions} must be between 1 and the number of "
            f"training examples ({len(labels)})"
        )
    if partitioner == "iid":
        # IidPartitioner cuts contiguous blocks; shuffling first makes it random and seeded.
        order = np.random.default_rng(seed).permutation(len(labels))
        return [np.sort(block) for block in np.array_split(order, num_partitions)]

    table = datasets.Dataset.from_dict(
        {"label": np.asarray(labels).tolist(), "index": list(range(len(labels)))}
    )
    part: fp.Partitioner
    if partitioner == "dirichlet":
        if alpha <= 0:
            raise ValueError(f"dirichlet-alpha={alpha} must be > 0")
        part = fp.DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=alpha,
            min_partition_size=min(10, len(labels) // (2 * num_partitions)),
            self_balancing=False,
            seed=seed,
        )
    elif partitioner == "shard":
        if shards_per_client < 1:
            raise ValueError(f"shards-per-client={shards_per_client} must be >= 1")
        part = fp.ShardPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_shards_per_partition=shards_per_client,
            seed=seed,
        )
    else:
        num_classes = len(np.unique(labels))
        if not 1 <= classes_per_client <= num_classes:
            raise ValueError(
                f"classes-per-client={classes_per_client} must be between 1 and the "
                f"number of classes ({num_classes})"
            )
        part = fp.PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_classes_per_partition=classes_per_client,
            # Give each client's first class deterministically so every class is used.
            class_assignment_mode="first-deterministic",
            seed=seed,
        )
    part.dataset = table
    return [
        np.sort(np.asarray(part.load_partition(i)["index"], dtype=np.int64)) for i in range(num_partitions)
    ]
