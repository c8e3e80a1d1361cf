"""SecAgg+ end to end through Flower's simulation engine (10 virtual SuperNodes, digits).

Every run is ``flwr run`` against the session's real SuperLink; the assertions read the
run directory's metrics.json (what the strategy aggregated from real, masked client
replies), never only exit codes. Dropouts are simulated by ``harness.dropout``: the
chosen partitions answer SecAgg+'s setup and share-keys stages, then stop answering,
so the server must recover their masks from the survivors' shares (or, with fewer
survivors than the reconstruction threshold, keep the previous model).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LocalFlower
from tests.e2e.test_simulation import finished_run

ROUNDS = 3
NODES = 10
#: Small and quick: no federated evaluation, the central test set decides. Two local epochs
#: cost next to nothing on digits (each run's time is the engine's start-up) and take the
#: model well past chance in 3 rounds, so equal accuracies mean equal training.
BASE = f"num-server-rounds={ROUNDS} local-epochs=2 fraction-train=1.0 fraction-evaluate=0.0 seed=42"
SECAGG = "secure-aggregation='secagg+'"
#: Each node shares its secrets with its 9-node neighbourhood (itself and 4 on each side of
#: the ring), 7 shares rebuild one: any 2 nodes may be lost after key sharing (9 − 7), and
#: with 4 lost only 6 < 7 nodes survive, so no secret can be rebuilt at all.
SHARES = "secagg-num-shares=9 secagg-reconstruction-threshold=7"


def rounds_of(metrics: dict) -> dict[int, dict]:
    rounds = {r["round"]: r for r in metrics["rounds"]}
    assert sorted(rounds) == list(range(ROUNDS + 1)), metrics["rounds"]
    return rounds


def test_secagg_trains_as_plain_fedavg_within_a_point(local_flower: LocalFlower, tmp_path: Path) -> None:
    # Execute: the same run (same seed, same partitions, same clients) without and with SecAgg+.
    _, plain = finished_run(local_flower, tmp_path / "plain", BASE)
    _, secure = finished_run(local_flower, tmp_path / "secagg", f"{BASE} {SECAGG}")

    # Assert: every round aggregated all 10 masked updates, and accuracy matches within 1 point.
    plain_rounds, secure_rounds = rounds_of(plain), rounds_of(secure)
    for t in range(1, ROUNDS + 1):
        row = secure_rounds[t]
        assert row["secagg_survivors"] == NODES and row["secagg_dropped"] == 0, row
        assert not row["kept_previous_model"] and row["succeeded"] == NODES, row
    assert secure_rounds[0]["central_accuracy"] == plain_rounds[0]["central_accuracy"]  # same initial model
    final_plain, final_secure = (
        plain_rounds[ROUNDS]["central_accuracy"],
        secure_rounds[ROUNDS]["central_accuracy"],
    )
    assert (
        final_plain > plain_rounds[0]["central_accuracy"] + 0.3
    )  # it learned: the comparison means something
    assert final_secure == pytest.approx(final_plain, abs=0.01)


def test_nodes_lost_after_key_sharing_are_recovered(local_flower: LocalFlower, tmp_path: Path) -> None:
    lost = 2  # as many as a neighbourhood of 9 with threshold 7 can lose
    # Execute
    _, metrics = finished_run(
        local_flower, tmp_path, f"{BASE} {SECAGG} {SHARES} secagg-drop-after-share-keys={lost}"
    )

    # Assert: every round completes with the survivors' sum; the lost nodes are counted.
    rounds = rounds_of(metrics)
    for t in range(1, ROUNDS + 1):
        row = rounds[t]
        assert row["secagg_survivors"] == NODES - lost and row["secagg_dropped"] == lost, row
        assert not row["kept_previous_model"], row
    assert rounds[ROUNDS]["central_accuracy"] > rounds[0]["central_accuracy"] + 0.3


def test_more_lost_than_the_threshold_allows_keeps_the_model_and_the_run_goes_on(
    local_flower: LocalFlower, tmp_path: Path
) -> None:
    # Execute: 4 lost of 10 with threshold 7: 6 survivors cannot unmask.
    _, metrics = finished_run(
        local_flower, tmp_path, f"{BASE} {SECAGG} {SHARES} secagg-drop-after-share-keys=4"
    )

    # Assert: no round released a model; each is counted as kept, and the run completed.
    rounds = rounds_of(metrics)
    for t in range(1, ROUNDS + 1):
        row = rounds[t]
        assert row["kept_previous_model"] and row["secagg_kept_reason"], row
        assert row["secagg_survivors"] == NODES - 4 and row["secagg_dropped"] == 4, row
        assert row["central_accuracy"] == rounds[0]["central_accuracy"], row  # the initial model, unchanged
    assert sum(rounds[t]["kept_previous_model"] for t in range(1, ROUNDS + 1)) == ROUNDS


def test_distributed_dp_records_the_accountants_epsilon(local_flower: LocalFlower, tmp_path: Path) -> None:
    import dp_accounting

    # Prepare: every node sampled every round (Poisson with q = 1), noise z = 1.1 on the secure sum.
    z, q, delta = 1.1, 1.0, 1e-5
    expected = []
    for t in range(1, ROUNDS + 1):
        accountant = dp_accounting.rdp.RdpAccountant()
        accountant.compose(
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), t
            )
        )
        expected.append(accountant.get_epsilon(delta))

    # Execute
    _, metrics = finished_run(
        local_flower,
        tmp_path,
        f"{BASE} {SECAGG} strategy='dp-fedavg' dp-clipping='client' dp-clip-norm=1.0 "
        f"dp-noise-multiplier={z} dp-sampling='poisson' dp-sampling-rate={q} dp-population={NODES} "
        f"dp-delta={delta} dp-accountant='rdp' dp-weight-cap=100.0 secagg-max-weight=100",
    )

    # Assert: each round aggregated securely and recorded the accountant's ε for (z, q, t rounds).
    rounds = rounds_of(metrics)
    for t in range(1, ROUNDS + 1):
        row = rounds[t]
        assert row["secagg_survivors"] == NODES and not row["kept_previous_model"], row
        assert row["epsilon"] == pytest.approx(expected[t - 1], rel=1e-6), (t, row["epsilon"], expected)
        assert row["delta"] == delta
    assert expected[0] < expected[1] < expected[2]
