"""Datasets as NumPy arrays, all loadable offline except the hub datasets.

Every dataset comes back as a :class:`DataBundle` of model-ready arrays: images as
float32 ``[N, C, H, W]`` in [0, 1], features as float32 ``[N, D]``, labels as int64
(or float32 targets for regression).

Synthetic(α, β) follows Li et al. 2020, "Federated Optimization in Heterogeneous
Networks" (arXiv:1812.06127, §5.1 and its ``generate_synthetic.py``), with α and β
used as standard deviations as the reference code does. Unlike the reference code, which
draws every device from one random stream, each device here has its own seeded stream
(same distribution): one device of 10,000 is generated alone, when its client is sampled.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HUB_DATASETS = {"ylecun/mnist": ("image", "label"), "uoft-cs/cifar10": ("img", "label")}
BUILTIN_DATASETS = ("digits", "synthetic", "linreg")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class DataBundle:
    """Model-ready train/test arrays of one dataset.

    ``natural_partitions`` holds per-device train indices for datasets that come
    split by device (Synthetic: of the first :data:`SYNTHETIC_SERVER_DEVICES` devices,
    the ones the bundle holds; a client generates its own device with
    :func:`synthetic_device`); ``num_classes`` is 0 for regression.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    natural_partitions: tuple[np.ndarray, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def is_hub_dataset(name: str) -> bool:
    return name in HUB_DATASETS


def is_file_dataset(name: str) -> bool:
    return name.endswith(".npz")


def check_dataset_name(name: str) -> None:
    """Raise :class:`DatasetError` unless ``name`` names a dataset we can load."""
    if name in BUILTIN_DATASETS or is_hub_dataset(name) or is_file_dataset(name):
        return
    known = ", ".join([*BUILTIN_DATASETS, *HUB_DATASETS])
    raise DatasetError(
        f"dataset={name!r} is unknown; use one of {known}, or a path to an .npz file "
        f"with arrays {', '.join(NPZ_KEYS)}"
    )


# --------------------------------------------------------------------------- digits
def digits_arrays(*, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits as uint8 images, split into train and test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16; scale to the 0..255 of the .npz image format.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return x_train, y_train, x_test, y_test


# ------------------------------------------------------------------------ synthetic
#: Devices whose held-out 10% form the server's Synthetic test set (and the bundle's
#: training table): the first ``min(synthetic-devices, SYNTHETIC_SERVER_DEVICES)``. With
#: 10,000 devices the server generates 100 of them, not all (clients generate their own).
SYNTHETIC_SERVER_DEVICES = 100


@dataclass(frozen=True)
class SyntheticSpec:
    """The parameters of Synthetic(α, β); device ``k`` is a pure function of them and ``k``."""

    alpha: float
    beta: float
    iid: bool
    seed: int
    num_features: int = 60
    num_classes: int = 10


@dataclass(frozen=True)
class SyntheticDevices:
    """Per-device train/test arrays of Synthetic(α, β)."""

    x_train: tuple[np.ndarray, ...]
    y_train: tuple[np.ndarray, ...]
    x_test: tuple[np.ndarray, ...]
    y_test: tuple[np.ndarray, ...]


@functools.lru_cache(maxsize=8)
def _shared_model(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """The IID variant's one (W, b), drawn from the seed alone."""
    rng = np.random.default_rng([spec.seed, 0])
    return rng.normal(0, 1, (spec.num_features, spec.num_classes)), rng.normal(0, 1, spec.num_classes)


def synthetic_device(spec: SyntheticSpec, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Device ``k`` of Synthetic(α, β) of Li et al. 2020: (x_train, y_train, x_test, y_test).

    Device ``k`` draws from its own generator, ``default_rng([seed, 1, k])``, so any one
    device is generated alone, on demand, and identically whichever other devices exist:
    a population of 10,000 devices costs nothing until a device is sampled.

    n_k = int(lognormal(4, 2)) + 50; u_k ~ N(0, α), B_k ~ N(0, β); W_k ~ N(u_k, 1),
    b_k ~ N(u_k, 1); v_k ~ N(B_k, 1); x ~ N(v_k, Σ) with Σ_jj = j^(-1.2);
    y = argmax(x W_k + b_k). The IID variant shares one W, b ~ N(0, 1) and uses v = 0.
    The device keeps 90% for training, 10% for testing.
    """
    if k < 0:
        raise DatasetError(f"synthetic device {k} does not exist; devices are numbered from 0")
    rng = np.random.default_rng([spec.seed, 1, k])
    n_k = int(rng.lognormal(4, 2)) + 50
    nf = spec.num_features
    std_x = np.sqrt(np.arange(1, nf + 1, dtype=np.float64) ** -1.2)
    if spec.iid:
        (w, b), v = _shared_model(spec), np.zeros(nf)
    else:
        u_k = rng.normal(0, spec.alpha)
        big_b_k = rng.normal(0, spec.beta)
        w = rng.normal(u_k, 1, (nf, spec.num_classes))
        b = rng.normal(u_k, 1, spec.num_classes)
        v = rng.normal(big_b_k, 1, nf)
    x = rng.normal(v, std_x, (n_k, nf))
    y = np.argmax(x @ w + b, axis=1)
    n_train = int(0.9 * n_k)
    x32, y64 = x.astype(np.float32), y.astype(np.int64)
    return x32[:n_train], y64[:n_train], x32[n_train:], y64[n_train:]


def synthetic_devices(
    *,
    alpha: float,
    beta: float,
    num_devices: int,
    iid: bool,
    seed: int,
    num_features: int = 60,
    num_classes: int = 10,
) -> SyntheticDevices:
    """Devices ``0 .. num_devices - 1`` of Synthetic(α, β) (:func:`synthetic_device` each)."""
    spec = SyntheticSpec(alpha, beta, iid, seed, num_features, num_classes)
    devices = [synthetic_device(spec, k) for k in range(num_devices)]
    return SyntheticDevices(*(tuple(d[i] for d in devices) for i in range(4)))


# --------------------------------------------------------------- linear regression
LINREG_FEATURES = 5
LINREG_TRAIN_SIZE = 400
LINREG_TEST_SIZE = 200


def linreg_arrays(*, seed: int, noise_std: float = 0.1) -> tuple[np.ndarray, ...]:
    """Y = x·w* + b* + noise, with w*, b* drawn from the seed."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(0, 1, LINREG_FEATURES)
    b_true = rng.normal(0, 1)
    x = rng.normal(0, 1, (LINREG_TRAIN_SIZE + LINREG_TEST_SIZE, LINREG_FEATURES))
    y = x @ w_true + b_true + rng.normal(0, noise_std, len(x))
    x, y = x.astype(np.float32), y.astype(np.float32)
    n = LINREG_TRAIN_SIZE
    return x[:n], y[:n], x[n:], y[n:]


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Closed-form least-squares weights and bias for ``y ≈ x·w + b``."""
    design = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    solution, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    return solution[:-1], float(solution[-1])


# ---------------------------------------------------------------------- .npz files
def read_npz(path: str | Path) -> tuple[np.ndarray, ...]:
    """Read and check an .npz dataset file; return raw (x_train, y_train, x_test, y_test)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(
            f"data file {str(path)!r} does not exist; pass an existing .npz file with "
            f"arrays {', '.join(NPZ_KEYS)} (deploy/split_dataset.py writes such files)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DatasetError(
                    f"data file {str(path)!r} lacks arrays {missing}; it must hold "
                    f"{', '.join(NPZ_KEYS)} (found: {', '.join(npz.files) or 'nothing'})"
                )
            arrays = tuple(npz[k] for k in NPZ_KEYS)
    except DatasetError:
        raise
    except Exception as exc:  # zipfile/pickle/format errors all mean "not a valid npz"
        raise DatasetError(
            f"data file {str(path)!r} is not a readable .npz file ({exc}); write it with "
            f"numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        ) from exc
    for split, (x, y) in {"train": arrays[0:2], "test": arrays[2:4]}.items():
        _check_split(path, split, x, y)
    return arrays


def _check_split(path: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    where = f"data file {str(path)!r}"
    if x.ndim not in (2, 3, 4):
        raise DatasetError(
            f"{where}: x_{split} has shape {x.shape}; expected images uint8 [N,H,W] or "
            f"[N,H,W,C], or features [N,D]"
        )
    if x.ndim in (3, 4) and x.dtype != np.uint8:
        raise DatasetError(f"{where}: images x_{split} must be uint8 (0..255), got {x.dtype}")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(
            f"{where}: y_{split} must be 1-D with one label per row of x_{split} "
            f"({len(x)}), got shape {y.shape}"
        )
    if len(x) == 0:
        raise DatasetError(f"{where}: x_{split} is empty")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise DatasetError(f"{where}: x_{split} must be finite numbers")


# ------------------------------------------------------------------------- hub
def hub_arrays(name: str) -> tuple[np.ndarray, ...]:
    """Download ``name`` through flwr-datasets (needs internet) as raw uint8 arrays."""
    image_key, label_key = HUB_DATASETS[name]
    try:
        from flwr_datasets import FederatedDataset

        fds = FederatedDataset(dataset=name, partitioners={"train": 1})
        splits = [fds.load_split(s).with_format("numpy") for s in ("train", "test")]
    except Exception as exc:  # network, hub or cache failures surface here
        raise DatasetError(
            f"dataset={name!r} could not be loaded from the Hugging Face hub ({type(exc).__name__}: "
            f"{exc}). Offline, use a local file instead: write an .npz with arrays "
            f"{', '.join(NPZ_KEYS)} and pass dataset='/path/to/file.npz' (plus "
            f"model='mnist-cnn' or model='cifar-mobilenet')"
        ) from exc
    out: list[np.ndarray] = []
    for split in splits:
        out += [np.asarray(split[image_key], dtype=np.uint8), np.asarray(split[label_key])]
    return tuple(out)


# -------------------------------------------------------------------- conversion
def images_to_float(x: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W] / [N,H,W,C] images to float32 [N,C,H,W] in [0, 1]; features as float32."""
    if x.ndim == 2:
        return x.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None, :, :]
    else:
        x = np.transpose(x, (0, 3, 1, 2))
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def load_arrays(dataset: str, *, seed: int = 42, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """Raw (x_train, y_train, x_test, y_test) in the .npz file format (images uint8)."""
    check_dataset_name(dataset)
    if dataset == "digits":
        return digits_arrays(test_fraction=test_fraction, seed=seed)
    if dataset == "linreg":
        return linreg_arrays(seed=seed)
    if dataset == "synthetic":
        dev = synthetic_devices(alpha=1.0, beta=1.0, num_devices=30, iid=False, seed=seed)
        return tuple(np.concatenate(parts) for parts in (dev.x_train, dev.y_train, dev.x_test, dev.y_test))
    if is_hub_dataset(dataset):
        return hub_arrays(dataset)
    return read_npz(dataset)


@functools.lru_cache(maxsize=4)
def load_dataset(
    dataset: str,
    *,
    seed: int = 42,
    test_fraction: float = 0.2,
    synthetic_alpha: float = 1.0,
    synthetic_beta: float = 1.0,
    synthetic_devices_count: int = 30,
    synthetic_iid: bool = False,
) -> DataBundle:
    """Load ``dataset`` once per process (cached) as model-ready arrays."""
    check_dataset_name(dataset)
    if dataset == "synthetic":
        # The server's test set and the bundle's training table come from the first
        # SYNTHETIC_SERVER_DEVICES devices only; every client generates its own device.
        dev = synthetic_devices(
            alpha=synthetic_alpha,
            beta=synthetic_beta,
            num_devices=min(synthetic_devices_count, SYNTHETIC_SERVER_DEVICES),
            iid=synthetic_iid,
            seed=seed,
        )
        bounds = np.cumsum([0] + [len(y) for y in dev.y_train])
        parts = tuple(np.arange(bounds[i], bounds[i + 1]) for i in range(len(dev.y_train)))
        return DataBundle(
            name=dataset,
            x_train=np.concatenate(dev.x_train),
            y_train=np.concatenate(dev.y_train),
            x_test=np.concatenate(dev.x_test),
            y_test=np.concatenate(dev.y_test),
            num_classes=10,
            natural_partitions=parts,
        )
    if dataset == "linreg":
        x_tr, y_tr, x_te, y_te = linreg_arrays(seed=seed)
        return DataBundle(dataset, x_tr, y_tr, x_te, y_te, num_classes=0)
    x_tr, y_tr, x_te, y_te = load_arrays(dataset, seed=seed, test_fraction=test_fraction)
    return bundle_from_raw(dataset, x_tr, y_tr, x_te, y_te)


def bundle_from_raw(
    name: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray
) -> DataBundle:
    """Turn raw .npz-format arrays into a classification :class:`DataBundle`."""
    for split, y in (("train", y_tr), ("test", y_te)):
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise DatasetError(
                f"dataset {name!r}: y_{split} must hold non-negative integer class labels, "
                f"got dtype {y.dtype}"
            )
    x_train, x_test = images_to_float(x_tr), images_to_float(x_te)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"dataset {name!r}: train examples have shape {x_train.shape[1:]} but test "
            f"examples {x_test.shape[1:]}; both splits must share one shape"
        )
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return DataBundle(name, x_train, y_tr.astype(np.int64), x_test, y_te.astype(np.int64), num_classes)


def split_holdout(num_examples: int, *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(num_examples)`` into (train, held-out) index arrays, seeded.

    At least one example is kept for training; the held-out part may be empty.
    """
    order = np.random.default_rng(seed).permutation(num_examples)
    n_out = min(int(round(fraction * num_examples)), max(num_examples - 1, 0))
    return np.sort(order[n_out:]), np.sort(order[:n_out])
