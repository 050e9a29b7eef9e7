"""`vaitrain compare-runs` through Typer's CliRunner (stdout and stderr apart)."""
from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fake_runs import merged, write_run
from vaitrain.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    day = tmp_path_factory.mktemp("runs") / "2026-11-27"
    write_run(day, {"val/acc1": [0.4, 0.9, 0.8], "val/loss": [1.0, 0.5, 0.6]}, tb=False,
              config=merged(**{"optim.name": "sgd"}), name="a")
    write_run(day, {"val/acc1": [0.6, 0.7, 0.95], "val/loss": [0.9, 0.8, 0.3]}, tb=False,
              config=merged(**{"optim.name": "adam"}), name="b")
    (day / "scratch").mkdir()
    return day


def test_csv_rows_and_warning_for_non_run(day: Path) -> None:
    res = runner.invoke(app, ["compare-runs", str(day / "*"), "--format", "csv", "--sort", "val/acc1"])
    assert res.exit_code == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["optim.name"] for r in rows] == ["adam", "sgd"]  # best val/acc1 first
    assert [(r["val/acc1.best"], r["val/acc1.best_epoch"]) for r in rows] == [("0.95", "3"), ("0.9", "2")]
    assert "model.name" not in rows[0]  # identical keys hidden
    warnings = res.stderr.strip().splitlines()
    assert len(warnings) == 1 and "scratch" in warnings[0] and warnings[0].startswith("warning:")


def test_json_with_chosen_metric(day: Path) -> None:
    res = runner.invoke(app, ["compare-runs", str(day), "--format", "json", "--metric", "val/loss"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert [(d["optim.name"], d["val/loss.best"], d["val/loss.best_epoch"]) for d in data] == [
        ("sgd", 0.5, 2), ("adam", 0.3, 3)]
    assert not any(k.startswith("val/acc1") for k in data[0])


def test_table_and_markdown(day: Path) -> None:
    table = runner.invoke(app, ["compare-runs", str(day)])
    assert table.exit_code == 0 and "adam" in table.stdout and "val/acc1.best" in table.stdout
    md = runner.invoke(app, ["compare-runs", str(day), "--format", "markdown"])
    assert md.exit_code == 0 and md.stdout.startswith("| run |") and md.stdout.count("\n") == 4


def test_plot_writes_png(day: Path, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    res = runner.invoke(app, ["compare-runs", str(day), "--plot", str(out), "--format", "csv"])
    assert res.exit_code == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "curves.png" in res.stderr


def test_plot_without_matplotlib(day: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    res = runner.invoke(app, ["compare-runs", str(day), "--plot", str(tmp_path / "c.png")])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0 and re.search(r"-m pip install .*\[plot\]", res.stderr)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "xml"], "choose one of"),
        (["--metric", "val/nope"], "no run has the metric 'val/nope'"),
        (["--sort", "nope"], "cannot sort by 'nope'"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(day: Path, args: list[str], message: str) -> None:
    res = runner.invoke(app, ["compare-runs", str(day), *args])
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("error:") and message in res.stderr and res.stderr.count("\n") == 1


def test_no_runs_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["compare-runs", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no run directories found" in res.stderr
    assert "empty" in res.stderr  # the warning names the folder too


def test_serve_prints_the_tensorboard_line(day: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vaitrain.compare as cmp

    started = []

    class Done:  # stands in for the server process: wait() returns at once
        def wait(self) -> int:
            return 0

        def terminate(self) -> None:
            pass

    monkeypatch.setattr(cmp, "start_tensorboard", lambda logdir, port: started.append((logdir, port)) or Done())
    res = runner.invoke(app, ["compare-runs", str(day), "--serve", "--port", "0", "--format", "csv"])
    assert res.exit_code == 0, res.stderr
    (logdir, port), = started
    assert logdir == day.resolve() and port > 0
    assert f"tensorboard --logdir {day.resolve()} --host 127.0.0.1 --port {port}" in res.stderr
