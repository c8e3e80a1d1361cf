"""The run configuration: one typed, validated object built once per app.

Keys are the kebab-case keys of ``[tool.flwr.app.config]`` in ``pyproject.toml``;
:data:`KEYS` declares each key's type, default and valid range in one place, and a
test checks that pyproject's defaults equal these. Bad values raise
:class:`ConfigError` naming the key, the value and what is allowed, before any
training starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.data import BUILTIN_DATASETS, HUB_DATASETS, DatasetError, check_dataset_name
from tasks.models import MODELS
from tasks.partition import PARTITIONERS

Scalar = bool | int | float | str


class ConfigError(ValueError):
    """A run-config value is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Key:
    """One run-config key: its type, default, and a check returning an error or None."""

    name: str
    type: type
    default: Scalar
    help: str
    check: Callable[[Any], str | None] = lambda v: None

    @property
    def valid(self) -> str:
        """The allowed values in words (``>= 1``, ``(0, 1]``, ``one of a, b``), or ``""``."""
        return str(getattr(self.check, "valid", ""))


def _described(check: Callable[[Any], str | None], valid: str) -> Callable[[Any], str | None]:
    """Attach the allowed values in words to ``check`` (``python -m strategies list`` prints them)."""
    check.valid = valid  # type: ignore[attr-defined]
    return check


def at_least(lo: float) -> Callable[[Any], str | None]:
    return _described(lambda v: None if v >= lo else f"must be >= {lo}", f">= {lo}")


def in_range(
    lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[Any], str | None]:
    valid = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def check(v: Any) -> str | None:
        ok_lo = v > lo if lo_open else v >= lo
        ok_hi = v < hi if hi_open else v <= hi
        if ok_lo and ok_hi:
            return None
        return f"must be in {valid}"

    return _described(check, valid)


def one_of(*allowed: str) -> Callable[[Any], str | None]:
    return _described(
        lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}",
        f"one of {', '.join(allowed)}",
    )


def _check_dataset(value: str) -> str | None:
    try:
        check_dataset_name(value)
    except DatasetError as exc:
        return str(exc).split("; ", 1)[-1]
    return None


def _check_device(value: str) -> str | None:
    if value in ("auto", "cpu", "mps") or value == "cuda" or value.startswith("cuda:"):
        return None
    return "must be auto, cpu, cuda, cuda:N or mps"


#: Longest ``round-timeout`` / ``wait-for-nodes-timeout``: one day. Longer is a typo (ms for s)
#: or "forever", and a run then hangs on a dead SuperLink or node for days; a day also
#: stays below what a thread wait (``threading.TIMEOUT_MAX``) accepts.
MAX_TIMEOUT_S = 86_400.0

KEYS: tuple[Key, ...] = (
    Key("num-server-rounds", int, 10, "federated rounds", at_least(1)),
    Key("strategy", str, "fedavg", "server strategy, by registry name (python -m strategies list)"),
    Key(
        "fraction-train",
        float,
        1.0,
        "fraction of nodes sampled to train each round",
        in_range(0, 1, lo_open=True),
    ),
    Key(
        "fraction-evaluate",
        float,
        0.5,
        "fraction of nodes sampled for federated evaluation (0 = no federated evaluation)",
        in_range(0, 1),
    ),
    Key("min-train-nodes", int, 2, "minimum nodes sampled for training", at_least(1)),
    Key("min-evaluate-nodes", int, 2, "minimum nodes sampled for evaluation", at_least(1)),
    Key("min-available-nodes", int, 2, "nodes that must be connected before a round starts", at_least(1)),
    Key(
        "wait-for-nodes-timeout",
        float,
        120.0,
        "seconds to wait for min-available-nodes",
        in_range(0, MAX_TIMEOUT_S, lo_open=True),
    ),
    Key(
        "round-timeout",
        float,
        600.0,
        "seconds to wait for replies in one round; also the messages' TTL",
        in_range(0, MAX_TIMEOUT_S, lo_open=True),
    ),
    Key(
        "max-num-examples", int, 1_000_000, "replies claiming more training examples are dropped", at_least(1)
    ),
    Key("min-valid-replies", int, 1, "fewer valid train replies keep the previous model", at_least(1)),
    Key("local-epochs", int, 5, "local epochs per round (E)", at_least(1)),
    Key(
        "batch-size",
        int,
        10,
        "local batch size (B); 0 = full batch (FedSGD with local-epochs=1)",
        at_least(0),
    ),
    Key("learning-rate", float, 0.1, "client SGD learning rate", in_range(0, 1e6, lo_open=True)),
    Key("momentum", float, 0.0, "client SGD momentum", in_range(0, 1, hi_open=True)),
    Key("weight-decay", float, 0.0, "client SGD weight decay", at_least(0)),
    Key("proximal-mu", float, 0.0, "FedProx μ: clients add (μ/2)‖w − w_global‖²", at_least(0)),
    Key(
        "straggler-fraction", float, 0.0, "fraction of sampled clients that run fewer epochs", in_range(0, 1)
    ),
    Key("seed", int, 42, "seed for data splits, sampling, stragglers and local shuffling"),
    Key(
        "dataset",
        str,
        "digits",
        f"{', '.join([*BUILTIN_DATASETS, *HUB_DATASETS])} or a path to .npz",
        _check_dataset,
    ),
    Key("model", str, "auto", f"auto or one of {', '.join(MODELS)}", one_of("auto", *MODELS)),
    Key(
        "partitioner",
        str,
        "auto",
        "how training data is split across nodes (auto: natural for synthetic, else iid)",
        one_of("auto", *PARTITIONERS),
    ),
    Key(
        "dirichlet-alpha",
        float,
        0.5,
        "Dirichlet concentration (dirichlet partitioner)",
        in_range(0, 1e9, lo_open=True),
    ),
    Key("shards-per-client", int, 2, "shards per client (shard partitioner)", at_least(1)),
    Key("classes-per-client", int, 2, "classes per client (pathological partitioner)", at_least(1)),
    Key(
        "test-fraction",
        float,
        0.2,
        "share of digits held out as the server's test set",
        in_range(0, 1, lo_open=True, hi_open=True),
    ),
    Key(
        "val-fraction",
        float,
        0.1,
        "share of each client's data kept for federated evaluation",
        in_range(0, 1, hi_open=True),
    ),
    Key("synthetic-alpha", float, 1.0, "Synthetic(α, β): model heterogeneity α", at_least(0)),
    Key("synthetic-beta", float, 1.0, "Synthetic(α, β): data heterogeneity β", at_least(0)),
    Key("synthetic-devices", int, 30, "Synthetic: number of devices (one partition each)", at_least(1)),
    Key("synthetic-iid", bool, False, "Synthetic: the IID variant"),
    Key("device", str, "auto", "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps", _check_device),
    Key(
        "threads-per-client",
        int,
        0,
        "torch threads per client process; 0 = leave torch's default",
        at_least(0),
    ),
    Key("output-dir", str, "outputs", "where run directories go (relative: see README)"),
    Key("central-eval", bool, True, "evaluate the global model on the server's test set each round"),
    Key(
        "resume",
        str,
        "",
        "run directory whose checkpoint to continue from ('' = a fresh run; README \"Reliability\")",
    ),
    # Attack simulation (simulation engine only; README "Reliability").
    Key(
        "attack",
        str,
        "none",
        "Byzantine clients: none, sign-flip (−cΔ), scale (cΔ), gaussian (N(0, c²)), label-flip",
        one_of("none", "sign-flip", "scale", "gaussian", "label-flip"),
    ),
    Key("attack-fraction", float, 0.2, "share of partitions that attack (chosen by seed)", in_range(0, 1)),
    Key(
        "attack-scale",
        float,
        10.0,
        "c of sign-flip / scale; noise std of gaussian",
        in_range(0, 1e6, lo_open=True),
    ),
    # Robust aggregation (strategies median, trimmed-mean, multi-krum, norm-bounded).
    Key("robust-num-byzantine", int, 1, "f: Byzantine clients to tolerate", at_least(0)),
    Key("trimmed-mean-beta", float, 0.2, "β: share trimmed at each end", in_range(0, 0.5, hi_open=True)),
    Key("krum-num-selected", int, 0, "m: clients Multi-Krum averages (0 = n − f)", at_least(0)),
    Key("norm-bound", float, 1.0, "L2 bound on each client update", in_range(0, 1e9, lo_open=True)),
    # Server optimizers (strategies fedadam, fedyogi, fedadagrad, fedavgm; Reddi et al. 2021).
    Key(
        "server-learning-rate",
        float,
        0.1,
        "η: server step size (FedAvgM: η/(1 − β) is the steady-state step relative to FedAvg)",
        in_range(0, 1e6, lo_open=True),
    ),
    Key(
        "server-beta1",
        float,
        0.9,
        "β₁: first-moment decay (FedAdam/FedYogi/FedAdagrad)",
        in_range(0, 1, hi_open=True),
    ),
    Key(
        "server-beta2", float, 0.99, "β₂: second-moment decay (FedAdam/FedYogi)", in_range(0, 1, hi_open=True)
    ),
    Key(
        "server-tau",
        float,
        1e-3,
        "τ: adaptivity added to √v (FedAdam/FedYogi/FedAdagrad); v starts at τ²",
        in_range(0, 1e6, lo_open=True),
    ),
    Key("server-momentum", float, 0.9, "β: FedAvgM server momentum", in_range(0, 1, hi_open=True)),
    # Differential privacy (strategies dp-fedavg, dp-fedprox; README "Privacy").
    Key(
        "dp-estimator",
        str,
        "fixed",
        "fixed (Σw_kΔ_k/(qW)), clipped (…/max(qW_min, Σw_k)), uniform (σ=zS/m) or model-noise",
        one_of("fixed", "clipped", "uniform", "model-noise"),
    ),
    Key(
        "dp-clipping",
        str,
        "server",
        "where updates are clipped to S: server or client",
        one_of("server", "client"),
    ),
    Key(
        "dp-clip-norm",
        float,
        1.0,
        "S: L2 clipping norm (initial C with adaptive clipping)",
        in_range(0, 1e9, lo_open=True),
    ),
    Key(
        "dp-noise-multiplier",
        float,
        1.0,
        "z: noise std in units of the sensitivity",
        in_range(0, 1e9, lo_open=True),
    ),
    Key(
        "dp-weight-cap", float, 100.0, "ŵ: client weight w_k = min(n_k/ŵ, 1)", in_range(0, 1e12, lo_open=True)
    ),
    Key(
        "dp-population", int, 0, "N: clients in the population (0 = connected nodes at round 1)", at_least(0)
    ),
    Key("dp-min-total-weight", float, 0.0, "W_min of the clipped estimator (0 = W)", at_least(0)),
    Key(
        "dp-sampling",
        str,
        "poisson",
        "client sampling: poisson (rate q) or fixed-size (round(qN))",
        one_of("poisson", "fixed-size"),
    ),
    Key("dp-sampling-rate", float, 0.1, "q: client sampling rate", in_range(0, 1, lo_open=True)),
    Key("dp-adaptive-clipping", bool, False, "adapt C to a quantile of update norms (Andrew et al. 2021)"),
    Key("dp-target-quantile", float, 0.5, "γ: target share of unclipped updates", in_range(0, 1)),
    Key(
        "dp-count-noise-std",
        float,
        0.0,
        "σ_b: noise on the unclipped count (0 = expected clients/20)",
        at_least(0),
    ),
    Key("dp-accountant", str, "rdp", "privacy accountant (dp-accounting): rdp or pld", one_of("rdp", "pld")),
    Key(
        "dp-delta",
        float,
        1e-5,
        "δ of the reported (ε, δ); must be < 1/population",
        in_range(0, 1, lo_open=True, hi_open=True),
    ),
    Key(
        "dp-max-epsilon",
        float,
        0.0,
        "stop before the round that would exceed this ε (0 = no limit)",
        at_least(0),
    ),
    Key(
        "dp-noise-seed",
        int,
        -1,
        "seed for DP noise (-1 = OS entropy; a known seed voids the guarantee)",
        at_least(-1),
    ),
    Key(
        "dp-secure-noise",
        bool,
        False,
        "DP noise from a CSPRNG-seeded generator with floating-point mitigation (server and DP-SGD clients)",
    ),
    Key(
        "dp-sgd-noise-multiplier",
        float,
        0.0,
        "client DP-SGD noise multiplier (0 = no DP-SGD; Opacus, sample-level DP)",
        at_least(0),
    ),
    Key(
        "dp-sgd-max-grad-norm",
        float,
        1.0,
        "client DP-SGD per-example clipping norm",
        in_range(0, 1e9, lo_open=True),
    ),
    Key(
        "dp-sgd-delta",
        float,
        1e-5,
        "δ of the client's reported DP-SGD ε",
        in_range(0, 1, lo_open=True, hi_open=True),
    ),
    # Update compression, a wrapper around any strategy (README "Update compression").
    Key(
        "compression",
        str,
        "none",
        "client updates sent as: none (the model), int8 (quantized) or topk (sparsified)",
        one_of("none", "int8", "topk"),
    ),
    Key(
        "topk-fraction",
        float,
        0.01,
        "share of each layer's entries top-k sends (compression='topk')",
        in_range(0, 1, lo_open=True),
    ),
    # Asynchronous buffered aggregation (strategy fedbuff; README "Asynchronous FedBuff").
    Key("fedbuff-concurrency", int, 10, "FedBuff: clients kept training at once", at_least(1)),
    Key("fedbuff-buffer-size", int, 5, "FedBuff: K, updates per buffer application (= round)", at_least(1)),
    Key(
        "fedbuff-max-staleness",
        int,
        10,
        "FedBuff: updates more model versions old than this are dropped",
        at_least(0),
    ),
    Key(
        "fedbuff-server-learning-rate",
        float,
        1.0,
        "FedBuff: η_g in w ← w + η_g·buffer/K (1 = plain mean of the buffered updates)",
        in_range(0, 1e6, lo_open=True),
    ),
    # Simulated device heterogeneity (client side; README "Asynchronous FedBuff").
    Key(
        "device-slowdown",
        str,
        "none",
        "simulated slow devices: none, uniform (f ~ U[1, max]) or lognormal (f = min(e^{σ|z|}, max))",
        one_of("none", "uniform", "lognormal"),
    ),
    Key("device-slowdown-max", float, 4.0, "largest slowdown factor f", in_range(1, 1000)),
    Key("device-slowdown-sigma", float, 1.0, "σ of the lognormal slowdown", in_range(0, 10, lo_open=True)),
)
KEYS_BY_NAME = {k.name: k for k in KEYS}


def validated(key: Key, value: Any) -> Any:
    """``value`` coerced to ``key.type`` and checked; ``ConfigError`` names the key, value and fix.

    ``AppConfig`` validates the keys of :data:`KEYS`; the strategy registry uses this for
    the keys that plug-in strategies declare themselves.
    """
    value = _coerce(key, value)
    problem = key.check(value)
    if problem:
        raise ConfigError(_message(key, value, problem))
    return value


def _coerce(key: Key, value: Any) -> Any:
    """Check ``value``'s type against ``key``; ints are accepted where floats are."""
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if key.type is int and isinstance(value, bool):
        raise ConfigError(_message(key, value, "must be an integer, not a boolean"))
    if not isinstance(value, key.type):
        raise ConfigError(_message(key, value, f"must be of type {key.type.__name__}"))
    return value


def _message(key: Key, value: Any, problem: str) -> str:
    return (
        f"run config: {key.name}={value!r} is invalid: {problem}. Fix it in pyproject.toml "
        f'[tool.flwr.app.config] or override it with --run-config "{key.name}=..."'
    )


def _attr(name: str) -> str:
    return name.replace("-", "_")


@dataclass(frozen=True)
class AppConfig:
    """Validated run configuration (see :data:`KEYS` for meanings and ranges)."""

    num_server_rounds: int
    strategy: str
    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    wait_for_nodes_timeout: float
    round_timeout: float
    max_num_examples: int
    min_valid_replies: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    weight_decay: float
    proximal_mu: float
    straggler_fraction: float
    seed: int
    dataset: str
    model: str
    partitioner: str
    dirichlet_alpha: float
    shards_per_client: int
    classes_per_client: int
    test_fraction: float
    val_fraction: float
    synthetic_alpha: float
    synthetic_beta: float
    synthetic_devices: int
    synthetic_iid: bool
    device: str
    threads_per_client: int
    output_dir: str
    central_eval: bool
    resume: str
    attack: str
    attack_fraction: float
    attack_scale: float
    robust_num_byzantine: int
    trimmed_mean_beta: float
    krum_num_selected: int
    norm_bound: float
    server_learning_rate: float
    server_beta1: float
    server_beta2: float
    server_tau: float
    server_momentum: float
    dp_estimator: str
    dp_clipping: str
    dp_clip_norm: float
    dp_noise_multiplier: float
    dp_weight_cap: float
    dp_population: int
    dp_min_total_weight: float
    dp_sampling: str
    dp_sampling_rate: float
    dp_adaptive_clipping: bool
    dp_target_quantile: float
    dp_count_noise_std: float
    dp_accountant: str
    dp_delta: float
    dp_max_epsilon: float
    dp_noise_seed: int
    dp_secure_noise: bool
    dp_sgd_noise_multiplier: float
    dp_sgd_max_grad_norm: float
    dp_sgd_delta: float
    compression: str
    topk_fraction: float
    fedbuff_concurrency: int
    fedbuff_buffer_size: int
    fedbuff_max_staleness: int
    fedbuff_server_learning_rate: float
    device_slowdown: str
    device_slowdown_max: float
    device_slowdown_sigma: float
    extra: Mapping[str, Scalar] = field(default_factory=dict)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> AppConfig:
        """Build and validate the config; keys not declared in :data:`KEYS` go to ``extra``."""
        values: dict[str, Any] = {}
        for key in KEYS:
            value = _coerce(key, run_config.get(key.name, key.default))
            problem = key.check(value)
            if problem:
                raise ConfigError(_message(key, value, problem))
            values[_attr(key.name)] = value
        extra = {k: v for k, v in run_config.items() if k not in KEYS_BY_NAME}
        config = cls(**values, extra=extra)
        config._check_combinations()
        return config

    def _check_combinations(self) -> None:
        if self.resolved_partitioner == "natural" and self.dataset != "synthetic":
            raise ConfigError(
                f"run config: partitioner='natural' needs a dataset with a natural "
                f"per-device split (dataset='synthetic'), got dataset={self.dataset!r}; "
                f"use partitioner='iid', 'dirichlet', 'shard' or 'pathological'"
            )
        if self.straggler_fraction > 0 and self.local_epochs < 2:
            raise ConfigError(
                f"run config: straggler-fraction={self.straggler_fraction} needs "
                f"local-epochs >= 2 (stragglers run 1..E-1 epochs), got local-epochs="
                f"{self.local_epochs}"
            )

    @property
    def resolved_partitioner(self) -> str:
        """``partitioner``, with ``auto`` meaning natural for synthetic data, else iid."""
        if self.partitioner != "auto":
            return self.partitioner
        return "natural" if self.dataset == "synthetic" else "iid"

    def resolved_model(self, input_shape: tuple[int, ...]) -> str:
        """The model to use: ``model`` itself, or for ``auto`` the one fitting the data."""
        if self.model != "auto":
            return self.model
        by_dataset = {
            "digits": "digits-cnn",
            "ylecun/mnist": "mnist-cnn",
            "uoft-cs/cifar10": "cifar-mobilenet",
            "synthetic": "logreg",
            "linreg": "linreg",
        }
        if self.dataset in by_dataset:
            return by_dataset[self.dataset]
        by_shape = {(1, 8, 8): "digits-cnn", (1, 28, 28): "mnist-cnn", (3, 32, 32): "cifar-mobilenet"}
        return by_shape.get(tuple(input_shape), "logreg")

    def to_dict(self) -> dict[str, Scalar]:
        """The resolved config with kebab-case keys (for config.json)."""
        out: dict[str, Scalar] = {k.name: getattr(self, _attr(k.name)) for k in KEYS}
        out.update(self.extra)
        return out
