from pathlib import Path

import pytest
from PIL import Image

from experiments.cli import main
from experiments.compare import compare, unique_labels
from experiments.runs import ExperimentError
from tests.experiments.rundirs import reported_run, write_run


def table_rows(table: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    return {r[0]: r[1:] for r in rows}


def test_compare_two_runs_writes_a_png_and_names_both_with_rounds_and_seconds_to_target(
    tmp_path: Path,
) -> None:
    # Prepare: one run as the reporter writes it, one with known per-round seconds.
    reported = reported_run(tmp_path / "a", [0.10, 0.55, 0.91, 0.95])
    timed = write_run(tmp_path / "b", [0.10, 0.60, 0.85, 0.93, 0.97], seconds=[0.5, 10.0, 10.0, 12.0, 9.0])
    out = tmp_path / "figs" / "compare.png"

    # Execute
    table = compare([reported, timed], metric="central_accuracy", target=0.9, out=out)

    # Assert: the figure exists and is a real PNG; both runs are named with their figures.
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 400
    by_run = table_rows(table)
    assert set(by_run) == {reported.name, timed.name}  # fedprox and fedavg: the names differ
    # status, rounds, final, best, rounds to 0.9, seconds to 0.9
    assert by_run[reported.name][:5] == ["completed", "3", "0.9500", "0.9500", "2"]
    assert by_run[timed.name] == ["completed", "4", "0.9700", "0.9700", "3", "32s"]  # 0.5 + 10 + 10 + 12


def test_unknown_metric_lists_the_metrics_the_runs_have(tmp_path: Path) -> None:
    run = write_run(tmp_path, [0.1, 0.5])

    with pytest.raises(ExperimentError, match="'accuracy' is not recorded.*central_accuracy, central_loss"):
        compare([run], metric="accuracy", target=0.9, out=tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_compare_by_loss_counts_the_target_as_reached_below_it(tmp_path: Path) -> None:
    run = write_run(tmp_path, [0.1, 0.5, 0.8], seconds=[1.0, 2.0, 3.0])  # central_loss = 1 - acc

    rows = table_rows(compare([run], metric="central_loss", target=0.3, out=tmp_path / "c.png"))

    assert rows[run.name][2:5] == ["0.2000", "0.2000", "2"]


def test_compare_command_refuses_a_run_without_rounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "20261130-101010-fedavg-digits"
    empty.mkdir()

    assert main(["compare", str(empty), "--out", str(tmp_path / "c.png")]) == 2
    assert "no rounds to compare" in capsys.readouterr().err


def test_labels_tell_runs_apart_with_as_little_path_as_needed(tmp_path: Path) -> None:
    paths = [tmp_path / "x" / "seed-1" / "run", tmp_path / "y" / "seed-1" / "run", tmp_path / "z" / "other"]

    assert unique_labels(paths) == ["x/seed-1/run", "y/seed-1/run", f"{tmp_path.name}/z/other"]
    assert unique_labels(paths[2:]) == ["other"]


def test_a_folder_of_run_directories_stands_for_its_runs(tmp_path: Path) -> None:
    a = write_run(tmp_path / "sweep" / "seed-42", [0.1, 0.95])
    (tmp_path / "sweep" / "seed-42" / "flwr.log").write_text("log")
    b = write_run(tmp_path / "sweep" / "seed-43", [0.1, 0.5])

    rows = table_rows(
        compare([tmp_path / "sweep"], metric="central_accuracy", target=0.9, out=tmp_path / "c.png")
    )

    assert set(rows) == {f"seed-42/{a.name}", f"seed-43/{b.name}"}
