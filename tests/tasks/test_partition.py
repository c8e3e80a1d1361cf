"""Partitions are index views into one shared dataset, or drawn on demand: O(1) per unsampled client."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tasks.config import AppConfig
from tasks.data import DatasetError, SyntheticSpec, load_dataset, synthetic_device
from tasks.loading import client_data, dataset_for, partition_for
from tasks.partition import PartitionTable, SampledPartitions, partition_indices


def test_a_partition_table_hands_out_views_of_one_flat_index_array() -> None:
    parts = [np.array([0, 4, 7]), np.array([1, 2]), np.array([3, 5, 6, 8])]

    table = PartitionTable(parts)

    assert len(table) == 3
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(table[i], part)
        assert np.shares_memory(table[i], table.indices)  # a view, not a copy
    # O(total indices): the 9 indices and 4 offsets, nothing per partition beyond that.
    assert table.nbytes == 8 * (9 + 4)
    with pytest.raises(ValueError):
        table[0][0] = 99  # read-only: a client cannot corrupt another's view


def test_a_partition_table_refuses_a_partition_outside_the_population() -> None:
    table = PartitionTable([np.array([0]), np.array([1])])

    with pytest.raises(IndexError, match="partition 2 is outside 0..1"):
        table[2]


def test_configured_iid_partitions_are_views_and_deterministic_per_seed() -> None:
    cfg = AppConfig.from_run_config({"dataset": "digits", "seed": 7})

    table = partition_for(cfg, 100)
    again = partition_for(AppConfig.from_run_config({"dataset": "digits", "seed": 7}), 100)
    other = partition_for(AppConfig.from_run_config({"dataset": "digits", "seed": 8}), 100)

    assert isinstance(table, PartitionTable) and len(table) == 100
    assert all(np.shares_memory(table[i], table.indices) for i in (0, 50, 99))
    assert table.nbytes == 8 * (len(dataset_for(cfg).y_train) + 101)
    assert all(np.array_equal(table[i], again[i]) for i in range(100))
    assert not np.array_equal(table[0], other[0])


def test_disjoint_partitioners_refuse_more_clients_than_examples_and_name_sampled() -> None:
    labels = np.repeat(np.arange(10), 5)

    with pytest.raises(ValueError, match="partitioner='sampled'"):
        partition_indices(labels, partitioner="iid", num_partitions=51, seed=0)


def test_sampled_partitions_store_nothing_per_client_and_are_drawn_deterministically() -> None:
    parts = SampledPartitions(num_examples=1437, size=14, num_partitions=10_000, seed=3)

    first, last = parts[0], parts[9_999]

    assert parts.nbytes == 0 and len(parts) == 10_000
    for p in (first, last):
        assert len(p) == 14 and len(set(p.tolist())) == 14  # distinct within a client
        assert p.min() >= 0 and p.max() < 1437 and np.all(np.diff(p) > 0)
    # Same seed and client: the same draw, from a fresh object; another client or seed differs.
    np.testing.assert_array_equal(
        SampledPartitions(num_examples=1437, size=14, num_partitions=10_000, seed=3)[9_999], last
    )
    assert not np.array_equal(first, last)
    assert not np.array_equal(
        SampledPartitions(num_examples=1437, size=14, num_partitions=10_000, seed=4)[0], first
    )


def test_sampled_partitions_refuse_a_size_beyond_the_dataset() -> None:
    with pytest.raises(
        ValueError, match="partition-size=20 must be between 1 and the number of training examples"
    ):
        SampledPartitions(num_examples=10, size=20, num_partitions=5, seed=0)


def test_ten_thousand_digits_clients_cost_no_memory_per_client() -> None:
    # Arrange: digits (1,437 training images) served to 10,000 clients of 14 examples each
    cfg = AppConfig.from_run_config(
        {"dataset": "digits", "partitioner": "sampled", "partition-size": 14, "val-fraction": 0.0}
    )
    dataset_for(cfg)  # the shared dataset, loaded once per process

    # Execute: the partition table for the whole population, then one client's data
    tracemalloc.start()
    parts = partition_for(cfg, 10_000)
    data = client_data(cfg, 9_999, 10_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # Assert: a few KiB in all, not 10,000 index arrays (10,000 × 14 int64 alone is 1.1 MB)
    assert peak < 64 * 1024, peak
    assert isinstance(parts, SampledPartitions)
    assert len(data.y_train) == 14
    bundle = dataset_for(cfg)
    np.testing.assert_array_equal(data.x_train, bundle.x_train[parts[9_999]])


def test_a_partition_size_beyond_the_dataset_fails_when_the_dataset_is_loaded() -> None:
    cfg = AppConfig.from_run_config({"dataset": "digits", "partitioner": "sampled", "partition-size": 5000})

    with pytest.raises(DatasetError, match="partition-size=5000 exceeds the 1437 training examples"):
        dataset_for(cfg)


def test_a_synthetic_device_is_generated_alone_and_equal_whatever_the_population() -> None:
    spec = SyntheticSpec(alpha=1.0, beta=1.0, iid=False, seed=42)
    small = AppConfig.from_run_config({"dataset": "synthetic", "synthetic-devices": 30, "val-fraction": 0.0})
    large = AppConfig.from_run_config(
        {"dataset": "synthetic", "synthetic-devices": 10_000, "val-fraction": 0.0}
    )

    alone = synthetic_device(spec, 7)
    in_small, in_large = client_data(small, 7, 30), client_data(large, 7, 10_000)

    np.testing.assert_array_equal(in_small.x_train, alone[0])
    np.testing.assert_array_equal(in_large.x_train, alone[0])
    np.testing.assert_array_equal(in_large.y_train, alone[1])
    # Device 9,999 exists without generating the others.
    assert client_data(large, 9_999, 10_000).x_train.shape[1] == 60


def test_the_synthetic_server_set_comes_from_a_bounded_number_of_devices() -> None:
    spec = SyntheticSpec(alpha=1.0, beta=1.0, iid=False, seed=42)

    bundle = load_dataset("synthetic", seed=42, synthetic_devices_count=10_000)

    assert bundle.natural_partitions is not None and len(bundle.natural_partitions) == 100
    np.testing.assert_array_equal(
        bundle.x_test[: len(synthetic_device(spec, 0)[2])], synthetic_device(spec, 0)[2]
    )


def test_natural_partitions_must_match_the_number_of_nodes() -> None:
    cfg = AppConfig.from_run_config({"dataset": "synthetic", "synthetic-devices": 30})

    with pytest.raises(DatasetError, match="set synthetic-devices=40"):
        client_data(cfg, 0, 40)


def test_the_dataset_is_loaded_once_per_process_for_the_server_and_every_client() -> None:
    cfg = AppConfig.from_run_config({"dataset": "digits", "seed": 11})
    load_dataset.cache_clear()

    dataset_for(cfg)
    partition_for(cfg, 10)
    client_data(cfg, 3, 10)

    assert load_dataset.cache_info().misses == 1
