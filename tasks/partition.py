"""Partition a dataset's training examples across clients with flwr-datasets.

The partitioners are Flower Datasets' own (``IidPartitioner``, ``DirichletPartitioner``,
``ShardPartitioner``, ``PathologicalPartitioner``) applied to an in-memory table of
labels, so simulation and the per-device file tool split data identically.
``shard`` is McMahan et al. 2017's split: sort by label, cut into equal shards, give
each client ``shards-per-client`` of them.

Partitions are index arrays into the one shared dataset, never copies of it:
:class:`PartitionTable` holds every partition in one flat index array (memory
O(total indices)) and hands out views; :class:`SampledPartitions` (``sampled``) holds
nothing per client and draws client ``i``'s ``partition-size`` indices from
``default_rng([seed, i])`` when asked, so a population larger than the dataset (10,000
clients on the 1,437 digits training images) costs O(1) memory. Sampled partitions
overlap across clients (each client draws without replacement from the whole training
set); the disjoint partitioners refuse more clients than examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

PARTITIONERS = ("iid", "dirichlet", "shard", "pathological", "natural", "sampled")
#: The partitioners that split the training set into disjoint index arrays.
DISJOINT_PARTITIONERS = ("iid", "dirichlet", "shard", "pathological")


class Partitions(Protocol):
    """Training-example indices of ``len(partitions)`` clients; ``partitions[i]`` is client ``i``'s."""

    def __len__(self) -> int: ...

    def __getitem__(self, partition_id: int) -> np.ndarray: ...


def _check_partition_id(partition_id: int, num_partitions: int) -> None:
    if not 0 <= partition_id < num_partitions:
        raise IndexError(f"partition {partition_id} is outside 0..{num_partitions - 1}")


class PartitionTable:
    """Every partition's sorted indices in one flat, read-only array; partition ``i`` is a view.

    Memory is the indices themselves plus one offset per partition, O(total indices);
    nothing is copied per partition, when the table is built or when a partition is read.

    Parameters
    ----------
    parts : sequence of np.ndarray
        Each partition's example indices.
    """

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=self.offsets[1:])
        flat = np.concatenate(parts).astype(np.int64, copy=False) if len(parts) else np.zeros(0, np.int64)
        self.indices = flat
        self.indices.setflags(write=False)  # views are handed out: nobody may change them
        self.offsets.setflags(write=False)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, partition_id: int) -> np.ndarray:
        _check_partition_id(partition_id, len(self))
        return self.indices[self.offsets[partition_id] : self.offsets[partition_id + 1]]

    @property
    def nbytes(self) -> int:
        """Bytes held: the flat indices and the offsets."""
        return int(self.indices.nbytes + self.offsets.nbytes)


class SampledPartitions:
    """``num_partitions`` clients of ``size`` examples each, drawn on demand; nothing stored per client.

    Client ``i`` gets ``size`` distinct indices of ``range(num_examples)`` drawn from
    ``default_rng([seed, i])`` (sorted): deterministic per seed and client, independent
    across clients (so clients overlap), and O(size) to compute.

    Parameters
    ----------
    num_examples : int
        Training examples to draw from.
    size : int
        Examples per client, ``1 <= size <= num_examples``.
    num_partitions : int
        Number of clients, >= 1 (may exceed ``num_examples``).
    seed : int
        Seed of every draw.
    """

    def __init__(self, *, num_examples: int, size: int, num_partitions: int, seed: int) -> None:
        if num_partitions < 1:
            raise ValueError(f"num-partitions={num_partitions} must be >= 1")
        if not 1 <= size <= num_examples:
            raise ValueError(
                f"partition-size={size} must be between 1 and the number of training "
                f"examples ({num_examples}); lower partition-size"
            )
        self.num_examples, self.size, self.num_partitions, self.seed = (
            num_examples,
            size,
            num_partitions,
            seed,
        )

    def __len__(self) -> int:
        return self.num_partitions

    def __getitem__(self, partition_id: int) -> np.ndarray:
        _check_partition_id(partition_id, self.num_partitions)
        rng = np.random.default_rng([self.seed, partition_id])
        return np.sort(rng.choice(self.num_examples, size=self.size, replace=False)).astype(np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes held per client: none (four integers in all)."""
        return 0


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
    if partitioner not in DISJOINT_PARTITIONERS:
        raise ValueError(
            f"partitioner={partitioner!r} is unknown here; use one of {', '.join(DISJOINT_PARTITIONERS)}"
        )
    if num_partitions < 1 or num_partitions > len(labels):
        raise ValueError(
            f"num-partitions={num_partitions} must be between 1 and the number of "
            f"training examples ({len(labels)}) for partitioner={partitioner!r}; for more "
            f"clients than examples use partitioner='sampled' (each client draws "
            f"partition-size examples, clients overlap)"
        )
    if partitioner == "iid":
        # IidPartitioner cuts contiguous blocks; shuffling first makes it random and seeded.
        order = np.random.default_rng(seed).permutation(len(labels))
        return [np.sort(block) for block in np.array_split(order, num_partitions)]

    # Imported here, not above: flwr_datasets' package import pulls in its plotting
    # helpers (seaborn, scipy.stats) and Hugging Face ``datasets``, about 2 s that every
    # simulation worker would pay on its first message even for ``iid``, which needs neither.
    import datasets
    from flwr_datasets import partitioner as fp

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
