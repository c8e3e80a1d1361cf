"""fused-evaluate through Flower's simulation engine: one round trip per round, evaluation per round.

Asserts on metrics.json (what the strategy recorded from real client replies that went
through Ray and the ClientApp's mods), never only on the exit code.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import LocalFlower
from tests.e2e.test_simulation import finished_run


def test_fused_evaluate_records_the_previous_model_federated_evaluation_every_round(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    _, metrics = finished_run(
        local_flower, tmp_path, "num-server-rounds=3 local-epochs=1 fused-evaluate=true"
    )

    rounds = [r for r in metrics["rounds"] if r["round"] > 0]
    assert [r["fused_eval_of_round"] for r in rounds] == [0, 1, 2]
    for row in rounds:
        # Every node that trained also evaluated the model it received; no evaluate stage ran.
        assert (
            row["sampled"]
            == row["succeeded"]
            == row["fused_eval_sampled"]
            == row["fused_eval_succeeded"]
            == 10
        )
        assert 0.0 <= row["fused_federated_accuracy"] <= 1.0 and row["fused_federated_loss"] > 0
        assert row["eval_sampled"] == 0 and row["federated_accuracy"] is None
        assert "evaluate_stage" not in row["phases"] and row["phases"]["train_stage"] > 0
    # Training works: the model evaluated in round 3 (round 2's) beats the initial one (round 1's).
    assert rounds[2]["fused_federated_accuracy"] > rounds[0]["fused_federated_accuracy"]
