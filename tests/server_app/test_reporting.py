"""The end-of-run node table: lost nodes are marked, not omitted."""

from __future__ import annotations

from server_app.reporting import node_status, node_table
from strategies.algorithms.fedavg import NodeReport, RoundStats


def rows_by_node(table: str) -> dict[int, str]:
    return {int(line.split()[0]): line for line in table.splitlines()[1:]}


def test_node_lost_mid_run_is_listed_with_the_round_it_was_lost_in() -> None:
    # Prepare: three nodes trained in round 1; node 3 died in round 2 and is gone.
    nodes = {n: NodeReport(device="cpu", num_examples=100 * n, train_seconds=1.5) for n in (1, 2, 3)}
    stats = {1: RoundStats(sampled=3, succeeded=3), 2: RoundStats(sampled=3, succeeded=2, failed_nodes=[3])}

    # Execute
    table = node_table(nodes, stats=stats, connected={1, 2})

    # Assert
    rows = rows_by_node(table)
    assert "status" in table.splitlines()[0]
    assert sorted(rows) == [1, 2, 3]
    assert "lost in round 2" in rows[3] and "300" in rows[3]  # its last report is kept
    assert "ok" in rows[1].split() and "ok" in rows[2].split()


def test_node_that_never_trained_but_was_sent_work_is_listed() -> None:
    nodes = {1: NodeReport(device="cuda:0", num_examples=50, train_seconds=0.25)}
    stats = {1: RoundStats(failed_nodes=[7]), 2: RoundStats()}

    rows = rows_by_node(node_table(nodes, stats=stats, connected={1}))

    assert sorted(rows) == [1, 7]
    assert rows[7].split()[1:] == ["lost", "in", "round", "1", "-", "-", "-"]


def test_failed_node_still_connected_is_failed_not_lost_and_the_last_failure_counts() -> None:
    stats = {1: RoundStats(failed_nodes=[5]), 3: RoundStats(failed_nodes=[5]), 2: RoundStats()}

    assert node_status(5, stats, connected={5}) == "failed in round 3"
    assert node_status(5, stats, connected=set()) == "lost in round 3"
    assert node_status(5, stats, connected=None) == "lost in round 3"
    assert node_status(6, stats, connected=set()) == "ok"


def test_no_node_trained_or_failed_gives_no_table() -> None:
    assert node_table({}, stats={1: RoundStats()}, connected=set()) == ""


def test_serverapp_end_of_run_table_marks_the_node_lost_mid_run(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # Prepare: the real ServerApp and ClientApp in process; the second node dies in
    # round 1 (its message comes back as an error) and leaves the SuperLink's node list.
    from flwr.app import Context, Error, Message, RecordDict

    import server_app.app as server_app_module
    from tests.conftest import AppGrid

    class LosingGrid(AppGrid):
        def __init__(self) -> None:
            super().__init__(2, run_config=config)
            self.victim = self.node_ids[1]

        def get_node_ids(self) -> list[int]:
            return [n for n in self.node_ids if n != self.victim or not self.sent]

        def send_and_receive(self, messages, timeout=None):  # noqa: ANN001, ANN202
            messages = list(messages)
            lost = [m for m in messages if m.metadata.dst_node_id == self.victim]
            replies = super().send_and_receive([m for m in messages if m not in lost], timeout)
            self.sent.extend(lost)
            return replies + [Message(Error(code=0, reason="node lost"), reply_to=m) for m in lost]

    config = {
        "output-dir": str(tmp_path),
        "num-server-rounds": 1,
        "local-epochs": 1,
        "threads-per-client": 1,
        "fraction-evaluate": 0.0,
        "min-available-nodes": 1,
        "min-train-nodes": 1,
    }
    logged: list[str] = []
    monkeypatch.setattr(server_app_module, "log", lambda level, msg, *args: logged.append(msg % args))
    grid = LosingGrid()
    context = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=config)

    # Execute
    server_app_module.main(grid, context)  # type: ignore[arg-type]

    # Assert
    (table,) = [m for m in logged if m.startswith("Nodes (last training report)")]
    rows = rows_by_node(table.split("\n", 1)[1])
    assert sorted(rows) == sorted(grid.node_ids)
    assert "lost in round 1" in rows[grid.victim]
    assert rows[grid.node_ids[0]].split()[1] == "ok"


def test_a_round_row_counts_examples_and_replies_per_ray_worker_not_per_node(tmp_path) -> None:  # noqa: ANN001
    import json

    from flwr.app import ArrayRecord

    from server_app.reporting import RoundReporter
    from server_app.run_dir import RunDirectory

    # Prepare: a round of 100 accepted replies from two Ray nodes
    run = RunDirectory.create(str(tmp_path), "fedavg", "digits")
    stats = {
        1: RoundStats(sampled=100, succeeded=100, train_examples=1300, workers={"ray:b": 40, "ray:a": 60})
    }
    reporter = RoundReporter(stats, run, None, 1)

    # Execute
    reporter(1, ArrayRecord())

    # Assert: one entry per worker (sorted), not one per node
    (row,) = json.loads((run.path / "metrics.json").read_text())["rounds"]
    assert row["train_examples"] == 1300
    assert row["workers"] == {"ray:a": 60, "ray:b": 40}
    assert "workers" not in json.dumps(RoundStats().as_dict()) or RoundStats().workers == {}
