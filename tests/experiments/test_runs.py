import json
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.runs import (
    INCOMPLETE,
    check_metrics,
    find_run_dirs,
    format_seconds,
    metric_summary,
    read_run,
    runs_table,
)
from server_app.run_dir import FAILED, RunDirectory
from tests.experiments.rundirs import reported_run, write_run


def test_metric_summary_final_best_and_first_round_reaching_the_target() -> None:
    points = [(0, 0.1), (1, 0.5), (2, 0.92), (3, 0.88), (4, 0.95)]
    elapsed = {0: 0.5, 1: 10.5, 2: 20.5, 3: 30.5, 4: 40.5}

    s = metric_summary(points, elapsed, target=0.9)

    assert (s.final, s.best, s.rounds_to_target, s.seconds_to_target) == (0.95, 0.95, 2, 20.5)
    assert metric_summary(points, elapsed, target=0.99).rounds_to_target is None
    loss = metric_summary([(0, 2.0), (1, 0.4), (2, 0.6)], {0: 1, 1: 2, 2: 3}, target=0.5, lower_better=True)
    assert (loss.best, loss.rounds_to_target, loss.seconds_to_target) == (0.4, 1, 2)
    assert metric_summary([], {}, target=0.9).final is None


def test_elapsed_sums_each_rounds_seconds(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path, [0.1, 0.6, 0.9], seconds=[0.5, 10.0, 12.0]))

    assert run.elapsed_by_round() == {0: 0.5, 1: 10.5, 2: 22.5}
    assert run.series("central_accuracy") == [(0, 0.1), (1, 0.6), (2, 0.9)]


def test_a_run_the_reporter_wrote_reads_back_with_wall_time(tmp_path: Path) -> None:
    run = read_run(reported_run(tmp_path, [0.1, 0.5, 0.8]))

    assert (
        run.status == "completed" and run.finished and run.strategy == "fedprox" and run.dataset == "digits"
    )
    assert run.last_round == 2 and run.planned_rounds == 2
    assert run.started_at is not None and run.updated_at is not None and run.updated_at >= run.started_at
    assert run.wall_seconds is not None and 0 <= run.wall_seconds < 60
    assert {"central_accuracy", "train_loss", "sampled", "seconds"} <= set(run.metrics())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "expected a JSON object"),
        ({"status": "done", "rounds": []}, "'status' is 'done'"),
        ({"status": "running"}, "'rounds' is missing"),
        ({"status": "running", "rounds": [{"round": "1"}]}, "rounds[0]: 'round' is not an integer"),
        ({"status": "running", "rounds": [{"round": 1}, {"round": 1}]}, "round 1 does not follow round 1"),
        ({"status": "running", "rounds": [], "started_at": "x"}, "'started_at' is not a number"),
    ],
)
def test_check_metrics_names_the_problem(payload: object, reason: str) -> None:
    assert reason in (check_metrics(payload) or "")


def test_partial_and_damaged_run_directories_are_listed_with_their_status(tmp_path: Path) -> None:
    good = write_run(tmp_path, [0.2, 0.7, 0.93], seconds=[0.1, 5, 5], planned=10)
    failed = RunDirectory.create(str(tmp_path), "median", "digits")
    failed.write_config({"strategy": "median", "dataset": "digits", "num-server-rounds": 5})
    failed.add_round({"round": 0, "central_accuracy": 0.1, "seconds": 0.1})
    failed.fail(RuntimeError("robust-num-byzantine=5 needs n > 10"))
    config_only = RunDirectory.create(str(tmp_path), "fedavg", "synthetic")
    config_only.write_config({"strategy": "fedavg", "dataset": "synthetic"})
    damaged = tmp_path / "20261130-101010-fedavg-digits"
    damaged.mkdir()
    (damaged / "metrics.json").write_text('{"status": "completed", "rounds": [')
    empty = tmp_path / "20261130-101011-fedavg-digits"
    empty.mkdir()
    (tmp_path / "not-a-run").mkdir()

    paths = find_run_dirs(tmp_path)
    runs = {p.name: read_run(p) for p in paths}

    assert set(runs) == {good.name, failed.path.name, config_only.path.name, damaged.name, empty.name}
    assert runs[failed.path.name].status == FAILED and "n > 10" in runs[failed.path.name].notes[0]
    assert runs[config_only.path.name].status == INCOMPLETE
    assert runs[empty.name].status == INCOMPLETE
    assert runs[damaged.name].status.startswith("unreadable: metrics.json: JSONDecodeError")
    table = runs_table([runs[p.name] for p in paths], tmp_path)
    row = next(line for line in table.splitlines() if good.name in line)
    assert "| fedavg " in row and "| completed " in row and "| 2/10 " in row and "| 0.9300 " in row
    assert "unreadable: metrics.json" in table and "| failed " in table


def test_runs_command_prints_the_table_and_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path, [0.2, 0.5], seconds=[0.1, 65.0], extra={"epsilon": 1.25, "delta": 1e-5})
    bad = tmp_path / "20261130-101010-fedavg-digits"
    bad.mkdir()
    (bad / "config.json").write_text("[1, 2")

    assert main(["runs", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    assert "| 1.250 " in out  # ε
    assert "unreadable: config.json" in out
    assert main(["runs", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_runs_lists_a_sweep_directory_recursively(tmp_path: Path) -> None:
    a = write_run(tmp_path / "runs" / "strategy-fedavg" / "seed-42", [0.1, 0.5])
    b = write_run(tmp_path / "runs" / "strategy-fedprox" / "seed-42", [0.1, 0.6])

    assert find_run_dirs(tmp_path) == sorted([a, b])
    assert find_run_dirs(a) == [a]


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (None, 4.4, 65, 3725)] == ["-", "4s", "1m05s", "1h02m"]


def test_metrics_json_records_start_and_last_write_times(tmp_path: Path) -> None:
    run = RunDirectory.create(str(tmp_path), "fedavg", "digits")
    run.add_round({"round": 0})

    metrics = json.loads((run.path / "metrics.json").read_text())

    assert metrics["started_at"] == run.started_at and metrics["updated_at"] >= metrics["started_at"]
