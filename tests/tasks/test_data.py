import numpy as np
import pytest

from tasks.data import DatasetError, bundle_from_raw, load_dataset, read_npz, synthetic_devices
from tasks.partition import partition_indices


def test_digits_is_offline_8x8_and_split_for_the_server() -> None:
    bundle = load_dataset("digits", seed=0, test_fraction=0.2)
    assert bundle.x_train.shape[1:] == (1, 8, 8) and bundle.num_classes == 10
    assert len(bundle.x_test) == 360 and len(bundle.x_train) == 1437
    assert 0.0 <= bundle.x_train.min() and bundle.x_train.max() <= 1.0


def test_synthetic_follows_the_fedprox_generator() -> None:
    dev = synthetic_devices(alpha=1.0, beta=1.0, num_devices=30, iid=False, seed=0)
    sizes = [len(a) + len(b) for a, b in zip(dev.y_train, dev.y_test, strict=True)]
    assert len(sizes) == 30 and min(sizes) >= 50
    assert all(x.shape[1] == 60 for x in dev.x_train)
    # 90/10 split per device
    assert all(len(tr) == int(0.9 * n) for tr, n in zip(dev.y_train, sizes, strict=True))
    # Σ_jj = j^(-1.2): later features vary far less than the first within a device.
    big = int(np.argmax(sizes))
    x = dev.x_train[big]
    assert x[:, -1].std() < 0.5 * x[:, 0].std()
    assert set(np.concatenate(dev.y_train)) <= set(range(10))


def test_synthetic_iid_shares_one_model_and_zero_mean_features() -> None:
    dev = synthetic_devices(alpha=0.0, beta=0.0, num_devices=5, iid=True, seed=1)
    x = np.concatenate(dev.x_train)
    assert abs(float(x[:, 0].mean())) < 0.2


def test_synthetic_is_seeded() -> None:
    a = synthetic_devices(alpha=1, beta=1, num_devices=3, iid=False, seed=5)
    b = synthetic_devices(alpha=1, beta=1, num_devices=3, iid=False, seed=5)
    np.testing.assert_array_equal(a.x_train[0], b.x_train[0])


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "shard", "pathological"])
def test_partitions_are_disjoint_cover_and_seeded(partitioner: str) -> None:
    labels = np.repeat(np.arange(10), 60)
    parts = partition_indices(labels, partitioner=partitioner, num_partitions=10, seed=3, alpha=0.3)
    again = partition_indices(labels, partitioner=partitioner, num_partitions=10, seed=3, alpha=0.3)
    flat = np.concatenate(parts)
    assert len(flat) == len(set(flat.tolist()))  # disjoint
    if partitioner != "pathological":
        assert sorted(flat.tolist()) == list(range(len(labels)))  # every example used
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_shard_and_pathological_limit_classes_per_client() -> None:
    labels = np.repeat(np.arange(10), 60)
    shard = partition_indices(labels, partitioner="shard", num_partitions=10, seed=0, shards_per_client=2)
    patho = partition_indices(
        labels, partitioner="pathological", num_partitions=10, seed=0, classes_per_client=2
    )
    assert all(len(np.unique(labels[p])) <= 2 for p in shard)
    assert all(len(np.unique(labels[p])) <= 2 for p in patho)


def test_dirichlet_is_more_skewed_than_iid() -> None:
    labels = np.repeat(np.arange(10), 100)

    def skew(parts: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(labels[p], minlength=10).max() / max(len(p), 1) for p in parts]))

    iid = partition_indices(labels, partitioner="iid", num_partitions=10, seed=0)
    dirichlet = partition_indices(labels, partitioner="dirichlet", num_partitions=10, seed=0, alpha=0.1)
    assert skew(dirichlet) > 2 * skew(iid)


def _write(path, **arrays) -> str:  # noqa: ANN001
    np.savez(path, **arrays)
    return str(path)


def good_arrays() -> dict[str, np.ndarray]:
    return {
        "x_train": np.zeros((4, 28, 28), np.uint8),
        "y_train": np.array([0, 1, 2, 3]),
        "x_test": np.zeros((2, 28, 28), np.uint8),
        "y_test": np.array([1, 2]),
    }


def test_npz_round_trip_gives_channels_first_floats(tmp_path) -> None:  # noqa: ANN001
    arrays = good_arrays()
    arrays["x_train"][0, 0, 0] = 255
    bundle = bundle_from_raw("f", *read_npz(_write(tmp_path / "d.npz", **arrays)))
    assert bundle.x_train.shape == (4, 1, 28, 28) and bundle.x_train[0, 0, 0, 0] == 1.0
    rgb = {
        **good_arrays(),
        "x_train": np.zeros((4, 32, 32, 3), np.uint8),
        "x_test": np.zeros((2, 32, 32, 3), np.uint8),
    }
    assert bundle_from_raw("f", *read_npz(_write(tmp_path / "rgb.npz", **rgb))).input_shape == (3, 32, 32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_train": None}, "lacks arrays"),
        ({"x_train": np.zeros((4, 28, 28), np.float64)}, "must be uint8"),
        ({"y_train": np.array([0, 1])}, "one label per row"),
        ({"x_test": np.zeros((2,), np.uint8)}, "expected images"),
    ],
)
def test_malformed_npz_files_fail_with_the_reason(tmp_path, change: dict, message: str) -> None:  # noqa: ANN001
    arrays = {k: v for k, v in {**good_arrays(), **change}.items() if v is not None}
    with pytest.raises(DatasetError, match=message):
        read_npz(_write(tmp_path / "bad.npz", **arrays))


def test_missing_and_non_npz_files_fail_clearly(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(DatasetError, match="does not exist"):
        read_npz(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        read_npz(junk)


def test_hub_dataset_offline_fails_with_how_to_use_a_local_file(monkeypatch) -> None:  # noqa: ANN001
    # The hub libraries read HF_HUB_OFFLINE once, at import, and an earlier test may have
    # imported them (tasks.partition does): set their flags too, or the environment variables
    # alone leave a real network attempt in place (a 20 s timeout with no network).
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    from tasks.data import hub_arrays

    with pytest.raises(DatasetError, match="dataset='/path/to/file.npz'") as info:
        hub_arrays("ylecun/mnist")
    assert "OfflineModeIsEnabled" in str(info.value)  # offline indeed: no network was tried
