"""SecAgg+ on the local deployment: a real SuperLink over TLS and SuperNodes with their own files.

The cluster comes from ``deploy/local-cluster.sh`` (the ``make_cluster`` fixture of
tests/deploy/conftest.py, which stops it and checks every PID dead afterwards). Every
stage of the protocol crosses the SuperLink as ordinary messages between separate
processes, each node with its own key pairs in its own ClientApp process; assertions
read the run's metrics.json.
"""

from __future__ import annotations

import pytest

from tests.deploy.cluster import Cluster, central_accuracy, run_id_of

pytestmark = pytest.mark.deploy

#: Small: a deployed SuperNode starts a ClientApp process for every message, and a SecAgg+
#: round sends each node four (setup, share keys, collect, unmask), so one round of three
#: nodes without federated evaluation is already a dozen ClientApp start-ups on two cores.
NODES = 3
ROUNDS = 1


def test_secagg_run_completes_over_tls_with_every_node_surviving(make_cluster) -> None:  # noqa: ANN001
    # Prepare: three nodes over TLS; each node shares its secrets with its ring neighbourhood
    # of 3 (itself and one on each side: all of them), 2 shares rebuild one.
    cluster: Cluster = make_cluster("--tls", nodes=NODES)

    # Execute
    proc, metrics = cluster.run_app(
        cluster.dir / "out-secagg",
        f"num-server-rounds={ROUNDS} round-timeout=300 fraction-train=1.0 fraction-evaluate=0.0 "
        f"min-train-nodes={NODES} "
        f"min-available-nodes={NODES} secure-aggregation='secagg+' secagg-num-shares=3 "
        "secagg-reconstruction-threshold=2",
    )

    # Assert: each round unmasked the sum of all three updates, and the model learned from it.
    rounds = {r["round"]: r for r in metrics["rounds"]}
    assert sorted(rounds) == list(range(ROUNDS + 1)), metrics["rounds"]
    for t in range(1, ROUNDS + 1):
        row = rounds[t]
        assert row["secagg_survivors"] == NODES and row["secagg_dropped"] == 0, row
        assert row["succeeded"] == NODES and row["failed"] == 0 and not row["kept_previous_model"], row
    accuracy = central_accuracy(metrics)
    # One round of one epoch on three nodes moves digits from 8% to about 15% (seeded: the
    # same data, initial model and training every run; only the quantization is random).
    assert accuracy[ROUNDS] > accuracy[0] + 0.03, accuracy
    run = cluster.flwr_json("ls", "--run-id", str(run_id_of(proc)))["runs"][0]
    assert run["status"] == "finished:completed"
