import csv
import math
from pathlib import Path

from PIL import Image

from experiments.runs import read_run
from experiments.summary import band, mean_std, plot_sweep, summarize, summary_markdown, write_summary_csv
from tests.experiments.rundirs import write_run


def test_mean_and_sample_std_on_known_values() -> None:
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])

    assert mean == 2.5 and math.isclose(std or 0, math.sqrt(5 / 3))  # Σ(x−2.5)² = 5, n − 1 = 3
    assert mean_std([0.9]) == (0.9, None)
    assert mean_std([]) == (None, None)


def test_band_is_mean_min_max_per_round_over_the_seeds() -> None:
    curves = [[(0, 0.1), (1, 0.5), (2, 0.9)], [(0, 0.3), (1, 0.7)]]

    assert band(curves) == [(0, 0.2, 0.1, 0.3), (1, 0.6, 0.5, 0.7), (2, 0.9, 0.9, 0.9)]


def test_summary_over_seeds_counts_failures_and_the_seeds_reaching_the_target(tmp_path: Path) -> None:
    # Prepare: 3 seeds planned; two finished (one reaches 0.9 in round 2), one failed.
    a = read_run(write_run(tmp_path / "a", [0.1, 0.8, 0.92, 0.94], seconds=[1, 10, 10, 10]))
    b = read_run(write_run(tmp_path / "b", [0.1, 0.7, 0.85, 0.88], seconds=[1, 10, 10, 10]))

    # Execute
    row = summarize(
        "strategy=fedavg",
        {"strategy": "fedavg"},
        [a, b, None],
        metric="central_accuracy",
        target=0.9,
        failed=1,
    )

    # Assert
    assert (row.planned, row.finished, row.failed, row.reached) == (3, 2, 1, 1)
    assert math.isclose(row.final[0] or 0, 0.91) and math.isclose(row.final[1] or 0, math.sqrt(2) * 0.03)
    assert math.isclose(row.best[0] or 0, 0.91)
    assert row.rounds_to_target == (2.0, None) and row.seconds_to_target == (21.0, None)
    table = summary_markdown([row], metric="central_accuracy", target=0.9)
    assert "| strategy=fedavg | 2/3" in table and "0.9100 ± 0.0424" in table and "(1/2 reached)" in table


def test_summary_files(tmp_path: Path) -> None:
    a = read_run(write_run(tmp_path / "a", [0.1, 0.95], seconds=[1, 10]))
    b = read_run(write_run(tmp_path / "b", [0.1, 0.85], seconds=[1, 10]))
    rows = [
        summarize("mu=0.1", {"proximal-mu": 0.1}, [a, b], metric="central_accuracy", target=0.9, failed=0),
        summarize(
            "mu=1.0", {"proximal-mu": 1.0}, [None, None], metric="central_accuracy", target=0.9, failed=2
        ),
    ]

    write_summary_csv(tmp_path / "summary.csv", rows, ["proximal-mu"])
    plot_sweep(
        tmp_path / "compare.png",
        {"mu=0.1": [a.series("central_accuracy"), b.series("central_accuracy")], "mu=1.0": []},
        metric="central_accuracy",
        target=0.9,
    )

    with (tmp_path / "summary.csv").open() as fh:
        got = list(csv.DictReader(fh))
    assert got[0]["proximal-mu"] == "0.1" and math.isclose(float(got[0]["final_mean"]), 0.9)
    assert math.isclose(float(got[0]["final_std"]), math.sqrt(0.005))
    assert got[1]["failed"] == "2" and got[1]["final_mean"] == ""
    with Image.open(tmp_path / "compare.png") as img:
        assert img.format == "PNG" and img.size[0] > 400
