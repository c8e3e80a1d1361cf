"""Top-k compression end to end: ``flwr run`` through Flower's simulation engine.

The bytes in metrics.json are checked against what the model's shapes say each reply
and each broadcast must weigh, so a client that silently sent full models (or a wrapper
that counted the wrong thing) fails here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from strategies.numeric.compression import topk_count
from tasks.models import build_model
from tasks.train import get_weights
from tests.conftest import LocalFlower
from tests.e2e.test_simulation import finished_run

HEADER = 128  # .npy header of every array of this model and its encoding


def test_topk_run_sends_a_quarter_of_the_bytes_and_still_learns(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    fraction = 0.1
    run_dir, metrics = finished_run(
        local_flower, tmp_path, f"num-server-rounds=3 compression='topk' topk-fraction={fraction}"
    )

    torch.manual_seed(0)
    layers = get_weights(build_model("digits-cnn", (1, 8, 8), 10))
    model_bytes = sum(a.size * 4 + HEADER for a in layers)
    # Per layer: k int32 indices, k float32 values, the int64 shape; three arrays.
    reply_bytes = sum(topk_count(a.size, fraction) * 8 + a.ndim * 8 + 3 * HEADER for a in layers)
    rounds = {r["round"]: r for r in metrics["rounds"]}
    assert sorted(rounds) == [0, 1, 2, 3]
    for rnd in (1, 2, 3):
        row = rounds[rnd]
        assert row["succeeded"] == 10 and row["failed"] == 0 and row["rejected"] == {}
        assert row["bytes_up"] == 10 * reply_bytes
        assert row["bytes_up_uncompressed"] == 10 * model_bytes
        assert row["bytes_down"] == (10 + row["eval_sampled"]) * model_bytes
        assert row["bytes_up"] < 0.3 * row["bytes_up_uncompressed"]
    assert rounds[3]["central_accuracy"] > rounds[0]["central_accuracy"] + 0.4
    assert (run_dir / "config.json").read_text().count('"compression": "topk"') == 1
