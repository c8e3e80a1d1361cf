"""Load one partition the quickstart way: from the file, every time, with no cache."""

from __future__ import annotations

import torch

from tasks.data import bundle_from_raw, read_npz, split_holdout
from tasks.partition import partition_indices


def load_partition(path: str, partition_id: int, num_partitions: int, *, seed: int, val_fraction: float):
    """(x_train, y_train, x_val, y_val) tensors of one IID partition, read from ``path`` now.

    Same partitions as edgebloom's ``tasks.loading.client_data`` for an IID split.
    """
    bundle = bundle_from_raw(path, *read_npz(path))
    idx = partition_indices(bundle.y_train, partitioner="iid", num_partitions=num_partitions, seed=seed)[
        partition_id
    ]
    train_pos, val_pos = split_holdout(len(idx), fraction=val_fraction, seed=seed + partition_id)
    tr, va = idx[train_pos], idx[val_pos]
    if len(va) == 0:
        va = tr
    x, y = torch.as_tensor(bundle.x_train), torch.as_tensor(bundle.y_train)
    return x[tr], y[tr], x[va], y[va]
