"""The sweep's bookkeeping: plan, resume, failures, interruption, the flwr command it builds.

The runner here stands in for ``flwr run`` only: it writes each run's directory with the
ServerApp's own writer (``RunDirectory``), as a real run would; the end-to-end tests in
``tests/e2e/test_sweep_simulation.py`` run the real thing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from experiments.cli import main
from experiments.runs import ExperimentError, find_run_dirs
from experiments.sweep import (
    DISABLE_INSTALL,
    MANIFEST,
    PlannedRun,
    SweepSpec,
    flwr_command,
    flwr_env,
    plan,
    run_sweep,
    seeds_from,
    stop_flwr_run,
)
from harness.processes import REPO, group_alive
from server_app.run_dir import RunDirectory
from tests.experiments.rundirs import write_run

GRID = {"strategy": ["fedavg", "fedprox"], "proximal-mu": [0.01, 0.1]}


class FakeFlwr:
    """Writes the run directory a run would write; ``fail`` names combinations whose ServerApp fails."""

    def __init__(self, fail: tuple[str, ...] = (), interrupt_at: int | None = None) -> None:
        self.calls: list[PlannedRun] = []
        self.fail = fail
        self.interrupt_at = interrupt_at

    def __call__(self, run: PlannedRun, output_dir: Path, log: Path) -> int:
        self.calls.append(run)
        if self.interrupt_at == len(self.calls):
            raise KeyboardInterrupt
        if run.label in self.fail:
            log.write_text("INFO: starting\nERROR: robust rule needs n > 2f: 10 sampled, f = 5\n")
            failed = RunDirectory.create(str(output_dir), str(run.combination["strategy"]), "digits")
            failed.write_config({"strategy": run.combination["strategy"], "dataset": "digits"})
            failed.fail(ValueError("median needs n > 2f"))
            return 1
        log.write_text("INFO: run completed\n")
        mu = float(run.combination["proximal-mu"])
        final = 0.8 + mu + (run.seed - 42) * 0.01  # known values: seeds differ by 0.01
        write_run(
            output_dir, [0.1, 0.5, final], seconds=[0.5, 10, 10], strategy=str(run.combination["strategy"])
        )
        return 0


def spec(**overrides: object) -> SweepSpec:
    values: dict = dict(grid=GRID, base={"num-server-rounds": 2}, seeds=[42, 43], app=REPO, target=0.85)
    return SweepSpec(**{**values, **overrides})


def test_plan_is_every_combination_times_seed() -> None:
    runs = plan(GRID, [42, 43])

    assert len(runs) == 8 and len({r.folder for r in runs}) == 8
    assert runs[0].folder == "strategy-fedavg_proximal-mu-0.01/seed-42"
    assert runs[1].combination == {"strategy": "fedavg", "proximal-mu": 0.01} and runs[1].seed == 43
    assert seeds_from({"seed": 7}, 3, 42) == [7, 8, 9] and seeds_from({}, 2, 42) == [42, 43]
    with pytest.raises(ExperimentError, match="at least 1 seed"):
        seeds_from({}, 0, 42)


def test_a_sweep_runs_everything_once_and_a_rerun_starts_nothing(tmp_path: Path) -> None:
    # Execute: a first sweep, then the same sweep again.
    flwr = FakeFlwr()
    first = run_sweep(spec(), tmp_path, runner=flwr, echo=lambda _: None)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.json")}
    again = FakeFlwr()
    lines: list[str] = []
    second = run_sweep(spec(), tmp_path, runner=again, echo=lines.append)

    # Assert: 8 runs, one directory each; the rerun skips them all and touches none.
    assert (first.ran, first.skipped, first.failed) == (8, 0, 0) and len(flwr.calls) == 8
    assert len(find_run_dirs(tmp_path / "runs")) == 8
    assert (second.ran, second.skipped) == (0, 8) and again.calls == []
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.json")} == mtimes
    assert "0 to run" in lines[0] and all("finished before, skipped" in line for line in lines[1:])
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert {e["status"] for e in manifest["runs"].values()} == {"completed"}
    assert all(e["attempts"] == 1 and e["exit_code"] == 0 for e in manifest["runs"].values())
    # Each row: mean and std over the 2 seeds (finals 0.8 + mu and 0.81 + mu).
    row = next(r for r in second.rows if r.label == "strategy=fedprox proximal-mu=0.1")
    assert (
        row.finished == 2
        and abs((row.final[0] or 0) - 0.905) < 1e-12
        and abs((row.final[1] or 0) - 0.00707) < 1e-5
    )
    summary = (tmp_path / "summary.md").read_text()
    cells = next(
        line for line in summary.splitlines() if line.startswith("| strategy=fedprox proximal-mu=0.1 ")
    )
    assert [c.strip() for c in cells.strip("|").split("|")][1:4] == ["2/2", "0", "0.9050 ± 0.0071"]
    assert (tmp_path / "summary.csv").read_text().count("\n") == 5 and (
        tmp_path / "compare.png"
    ).stat().st_size > 0


def test_a_failed_run_is_recorded_the_others_finish_and_a_rerun_retries_only_it(tmp_path: Path) -> None:
    failing = "strategy=fedprox proximal-mu=0.1"
    lines: list[str] = []
    result = run_sweep(spec(), tmp_path, runner=FakeFlwr(fail=(failing,)), echo=lines.append)

    assert (result.ran, result.failed) == (8, 2)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    entry = manifest["runs"]["strategy-fedprox_proximal-mu-0.1/seed-42"]
    assert entry["status"] == "failed" and entry["exit_code"] == 1
    assert "n > 2f" in entry["log_tail"] and "median needs n > 2f" in entry["reason"]
    assert any("failed (exit code 1)" in line for line in lines)
    rows = {r.label: r for r in result.rows}
    assert rows[failing].failed == 2 and rows[failing].finished == 0
    assert all(r.finished == 2 for name, r in rows.items() if name != failing)
    summary = (tmp_path / "summary.md").read_text()
    assert "## Failed runs" in summary and "ERROR: robust rule needs n > 2f" in summary

    retry = FakeFlwr()
    again = run_sweep(spec(), tmp_path, runner=retry, echo=lambda _: None)

    assert [r.label for r in retry.calls] == [failing, failing] and again.skipped == 6
    seed_dir = tmp_path / "runs" / "strategy-fedprox_proximal-mu-0.1" / "seed-42"
    assert len(find_run_dirs(seed_dir)) == 2  # the failed attempt is kept beside the new run
    assert (
        json.loads((tmp_path / MANIFEST).read_text())["runs"][
            seed_dir.relative_to(tmp_path / "runs").as_posix()
        ]["attempts"]
        == 2
    )
    assert all(r.failed == 0 and r.finished == 2 for r in again.rows)


def test_the_metrics_decide_what_is_finished_not_the_manifest(tmp_path: Path) -> None:
    run_sweep(
        spec(grid={"strategy": ["fedavg"], "proximal-mu": [0.1]}, seeds=[42]),
        tmp_path,
        runner=FakeFlwr(),
        echo=lambda _: None,
    )
    (run_dir,) = find_run_dirs(tmp_path / "runs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "running"}))  # killed mid-run

    flwr = FakeFlwr()
    run_sweep(
        spec(grid={"strategy": ["fedavg"], "proximal-mu": [0.1]}, seeds=[42]),
        tmp_path,
        runner=flwr,
        echo=lambda _: None,
    )

    assert len(flwr.calls) == 1


def test_more_seeds_or_values_reuse_finished_runs(tmp_path: Path) -> None:
    run_sweep(spec(seeds=[42]), tmp_path, runner=FakeFlwr(), echo=lambda _: None)
    flwr = FakeFlwr()

    result = run_sweep(spec(seeds=[42, 43]), tmp_path, runner=flwr, echo=lambda _: None)

    assert {r.seed for r in flwr.calls} == {43} and result.skipped == 4


def test_other_fixed_settings_in_the_same_sweep_directory_are_refused(tmp_path: Path) -> None:
    run_sweep(spec(seeds=[42]), tmp_path, runner=FakeFlwr(), echo=lambda _: None)

    with pytest.raises(ExperimentError, match="made with --run-config .*Use the same --run-config"):
        run_sweep(
            spec(seeds=[42], base={"num-server-rounds": 5}), tmp_path, runner=FakeFlwr(), echo=lambda _: None
        )
    with pytest.raises(ExperimentError, match="--federation-config"):
        run_sweep(
            spec(seeds=[42], federation_config="num-supernodes=4"),
            tmp_path,
            runner=FakeFlwr(),
            echo=lambda _: None,
        )


def test_interrupt_leaves_a_resumable_sweep(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec(), tmp_path, runner=FakeFlwr(interrupt_at=3), echo=lines.append)

    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert [e["status"] for e in manifest["runs"].values()] == ["completed", "completed", "interrupted"]
    assert "run the same command again to resume" in lines[-1] and (tmp_path / "summary.md").exists()
    flwr = FakeFlwr()
    result = run_sweep(spec(), tmp_path, runner=flwr, echo=lambda _: None)
    assert (result.skipped, result.ran, len(flwr.calls)) == (2, 6, 6)


def test_the_flwr_command_carries_seed_output_dir_connection_and_federation_config(tmp_path: Path) -> None:
    run = PlannedRun({"strategy": "fedprox", "proximal-mu": 0.1}, 43)
    s = spec(connection="local", federation_config="num-supernodes=4")

    cmd = flwr_command(s, run, tmp_path / "a dir")

    assert Path(cmd[0]).name == "flwr" and cmd[1:5] == ["run", str(REPO), "local", "--stream"]
    assert parse_config_args([cmd[cmd.index("--run-config") + 1]]) == {
        "num-server-rounds": 2,
        "strategy": "fedprox",
        "proximal-mu": 0.1,
        "seed": 43,
        "output-dir": str(tmp_path / "a dir"),
    }
    assert cmd[cmd.index("--federation-config") + 1] == "num-supernodes=4"
    assert "local" not in flwr_command(spec(), run, tmp_path)


def test_runtime_dependency_installation_is_off_unless_the_user_set_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DISABLE_INSTALL, raising=False)
    assert flwr_env()[DISABLE_INSTALL] == "1"
    monkeypatch.setenv(DISABLE_INSTALL, "0")
    assert flwr_env()[DISABLE_INSTALL] == "0"


def test_stopping_a_run_ends_its_whole_process_group(tmp_path: Path) -> None:
    log = tmp_path / "flwr.log"
    log.write_text("not submitted yet\n")
    proc = subprocess.Popen(["bash", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    try:
        stop_flwr_run(proc.pid, log, None, dict(os.environ))
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert not group_alive(proc.pid)


def test_sweep_command_refuses_an_unknown_key_before_creating_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"

    code = main(["sweep", "--grid", "strategy=fedavg num-rounds=2,3", "--out", str(out), "--app", str(REPO)])

    assert code == 2 and not out.exists()
    assert (
        "'num-rounds' is not a run-config key of this app (did you mean num-server-rounds"
        in capsys.readouterr().err
    )


def test_a_run_left_saying_running_is_recorded_incomplete_and_a_bad_manifest_refused(tmp_path: Path) -> None:
    def killed(run: PlannedRun, output_dir: Path, log: Path) -> int:
        log.write_text("Killed\n")
        RunDirectory.create(str(output_dir), "fedavg", "digits").add_round({"round": 0})  # never ended
        return 0

    one = spec(grid={"strategy": ["fedavg"], "proximal-mu": [0.1]}, seeds=[42])
    result = run_sweep(one, tmp_path, runner=killed, echo=lambda _: None)

    entry = json.loads((tmp_path / MANIFEST).read_text())["runs"]["strategy-fedavg_proximal-mu-0.1/seed-42"]
    assert result.failed == 1 and entry["status"] == "incomplete" and "Killed" in entry["log_tail"]
    (tmp_path / MANIFEST).write_text(
        json.dumps({**json.loads((tmp_path / MANIFEST).read_text()), "runs": {"x": 1}})
    )
    with pytest.raises(ExperimentError, match="runs\\['x'\\] is not an object; move it away"):
        run_sweep(one, tmp_path, runner=killed, echo=lambda _: None)
