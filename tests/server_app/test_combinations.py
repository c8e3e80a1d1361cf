"""Features meet: strategies × compression × DP × SecAgg+ × a BatchNorm model, through the real apps.

Each feature has its own tests; this file runs them *together*, as a user would, with the
real ServerApp and ClientApp in this process (:class:`AppGrid`) on a model with BatchNorm
(torchvision's MobileNetV3-small: integer ``num_batches_tracked`` counters next to float
weights) and a small offline dataset of random 32×32 RGB images. Every supported combination
must finish with only valid replies, a finite model that moved, and the counters of the
initial model (the integer-buffer rule); every combination the app cannot make sound must be
refused before a run directory exists, with a message naming why.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from safetensors.numpy import load_file

from server_app.app import main, prepare
from tasks.config import AppConfig, ConfigError
from tests.conftest import DP_RUN_CONFIG, AppGrid

#: Two-round runs of a MobileNet on four clients: about ten seconds each on 2 cores.
pytestmark = pytest.mark.slow

NUM_CLIENTS = 4
SETTINGS = {
    "model": "cifar-mobilenet",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "batch-size": 16,
    "learning-rate": 0.05,
    "threads-per-client": 1,
    "fraction-evaluate": 0.0,
    "central-eval": False,
    "min-available-nodes": NUM_CLIENTS,
    "min-train-nodes": NUM_CLIENTS,
    "robust-num-byzantine": 0,
}
#: SecAgg+ among the four clients: neighbourhoods of 3, two shares rebuild a secret.
SECAGG = {"secure-aggregation": "secagg+", "secagg-num-shares": 3, "secagg-reconstruction-threshold": 2}
SUPPORTED = {
    "fedavg-topk": {"strategy": "fedavg", "compression": "topk", "topk-fraction": 0.1},
    "fedadam-int8": {"strategy": "fedadam", "compression": "int8"},
    "multikrum-int8": {"strategy": "multi-krum", "compression": "int8"},
    "normbounded": {"strategy": "norm-bounded", "norm-bound": 1.0},
    "dpfedavg-client-clipping-topk": {
        "strategy": "dp-fedavg",
        "dp-clipping": "client",
        "compression": "topk",
        "topk-fraction": 0.1,
        **DP_RUN_CONFIG,
    },
    "dpfedprox-int8": {"strategy": "dp-fedprox", "proximal-mu": 0.01, "compression": "int8", **DP_RUN_CONFIG},
    "fedavg-secagg": {"strategy": "fedavg", **SECAGG},
    "fedadam-secagg": {"strategy": "fedadam", **SECAGG},
    "dpfedavg-client-clipping-secagg": {
        "strategy": "dp-fedavg",
        "dp-clipping": "client",
        **DP_RUN_CONFIG,
        **SECAGG,
        "secagg-max-weight": 1,  # = dp-weight-cap
    },
}
REFUSED = {
    "fedbuff-compression": ({"strategy": "fedbuff", "compression": "int8"}, "compression"),
    "dp-stragglers": ({"strategy": "dp-fedavg", "straggler-fraction": 0.5, **DP_RUN_CONFIG}, "straggler"),
    "dp-uniform-poisson": ({"strategy": "dp-fedavg", "dp-estimator": "uniform"}, "uniform"),
    "secagg-median": ({"strategy": "median", **SECAGG}, "secure aggregation hides"),
    "secagg-int8": ({"strategy": "fedavg", "compression": "int8", **SECAGG}, "secure-aggregation"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random 32×32 RGB images (uint8, channels last, as the loader takes them) of 10 classes."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "images.npz"

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8), rng.integers(0, 10, n).astype(np.int64)

    x_train, y_train = split(160)
    x_test, y_test = split(40)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def run_server(out: Path, run_config: dict) -> Path:
    grid = AppGrid(NUM_CLIENTS, run_config=run_config)
    context = Context(
        run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    main(grid, context)  # type: ignore[arg-type]
    (run_dir,) = [p.parent for p in out.glob("*/metrics.json")]
    return run_dir


@pytest.mark.parametrize("name", list(SUPPORTED))
def test_supported_combinations_train_and_keep_the_integer_counters(
    name: str, images: Path, tmp_path: Path
) -> None:
    # Prepare
    config = {**SETTINGS, "dataset": str(images), "output-dir": str(tmp_path), **SUPPORTED[name]}

    # Execute
    run_dir = run_server(tmp_path, config)

    # Assert: every round aggregated valid replies only, and the model moved but kept its counters.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    rounds = [r for r in metrics["rounds"] if r["round"] >= 1]
    assert [r["round"] for r in rounds] == [1, 2]
    for row in rounds:
        assert row["succeeded"] == row["sampled"] == NUM_CLIENTS, row
        assert row["failed"] == 0 and not row["rejected"], row
        assert not row["kept_previous_model"], row
    final = load_file(str(run_dir / "model.safetensors"))
    counters = [k for k in final if k.endswith("num_batches_tracked")]
    assert counters, "the model has BatchNorm counters"
    assert all(int(final[k]) == 0 for k in counters)  # the initial model's value, never aggregated
    floats = {k: v for k, v in final.items() if np.issubdtype(v.dtype, np.floating)}
    assert all(np.isfinite(v).all() for v in floats.values())
    _, _, initial = prepare(AppConfig.from_run_config(config))  # the same seeded initial model
    start = {k: t.numpy() for k, t in initial.state_dict().items()}
    assert any(not np.array_equal(floats[k], start[k]) for k in floats), "the model never moved"
    checkpoint = np.load(run_dir / "checkpoint.npz", allow_pickle=False)
    assert len(checkpoint.files) > 0


@pytest.mark.parametrize("name", list(REFUSED))
def test_unsound_combinations_are_refused_before_a_run_directory_exists(
    name: str, images: Path, tmp_path: Path
) -> None:
    overrides, reason = REFUSED[name]
    config = {**SETTINGS, "dataset": str(images), "output-dir": str(tmp_path), **overrides}

    with pytest.raises((ConfigError, ValueError), match=reason):
        run_server(tmp_path, config)

    assert not list(tmp_path.glob("*/config.json"))
