"""compare-runs as a library: reading runs back, config diffs, best/final metrics, formats."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from fake_runs import merged, write_run
from vaitrain.compare import compare, config_diff, metric_mode, render
from vaitrain.track.runs import find_runs, flatten, load_run
from vaitrain.errors import ConfigError, RunDirError

# known curves: acc is best at epoch 2, loss at epoch 3
ACC = [0.50, 0.80, 0.70]
LOSS = [1.00, 0.70, 0.40]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    a = write_run(root, {"val/acc1": ACC, "val/loss": LOSS}, train_loss=[2.0, 1.5, 1.0],
                  config=merged(**{"out_dir": "/somewhere/a", "name": "a"}), name="a")
    b = write_run(root, {"val/acc1": [0.6, 0.65, 0.9], "val/loss": [0.9, 0.5, 0.55]},
                  config=merged(**{"optim.name": "adam", "optim.lr": 0.001, "out_dir": "/elsewhere",
                                   "name": "b"}),
                  name="b", params=999, wall_time=7.0, throughput=1000.0)
    return [a, b]


def test_flatten_nested_keys() -> None:
    assert flatten({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None, "f": {}}) == {
        "a.b.c": 1, "a.d": [1, 2], "e": None, "f": {}}


def test_config_diff_shows_only_differing_keys(two_runs: list[Path]) -> None:
    runs = [load_run(p) for p in two_runs]
    assert runs[0].config["model.width_mult"] == 1.0  # nested keys are flattened
    # optim differs; model/data/trainer are identical; out_dir and name are bookkeeping
    assert config_diff(runs) == ["optim.name", "optim.lr"]


def test_config_diff_key_missing_in_one_run_counts(tmp_path: Path) -> None:
    a = write_run(tmp_path, {"val/acc1": [0.1]}, config=merged(**{"model.extra.depth": 3}))
    b = write_run(tmp_path, {"val/acc1": [0.1]})
    assert config_diff([load_run(a), load_run(b)]) == ["model.extra.depth"]


def test_best_final_and_epoch_of_best_from_tensorboard(two_runs: list[Path]) -> None:
    run = load_run(two_runs[0])
    assert run.series["val/acc1"].source == "tb"  # read with tensorboard's EventAccumulator
    assert run.series["val/acc1"].steps == [10, 20, 30]
    comp = compare([run], sort=None)
    row = comp.rows[0]
    assert [m.tag for m in comp.metrics] == ["val/acc1", "val/loss"]  # classification defaults
    assert row["val/acc1.best"] == pytest.approx(0.80)  # TB stores float32
    assert row["val/acc1.final"] == pytest.approx(0.70)
    assert row["val/acc1.best_epoch"] == 2
    assert row["val/loss.best"] == pytest.approx(0.40)
    assert row["val/loss.final"] == pytest.approx(0.40)
    assert row["val/loss.best_epoch"] == 3
    assert (row["status"], row["epochs"]) == ("completed", "3/3")
    assert (row["wall_time"], row["img_per_s"], row["params"]) == (12.5, 800.0, 1234)


def test_jsonl_fallback_without_tensorboard(tmp_path: Path) -> None:
    path = write_run(tmp_path, {"val/acc1": ACC, "val/loss": LOSS}, train_loss=[3.0, 1.0, 2.0], tb=False)
    run = load_run(path)
    assert run.series["val/acc1"].source == "jsonl"
    comp = compare([run], metrics=["val/acc1", "train/loss"])
    row = comp.rows[0]
    assert (row["val/acc1.best"], row["val/acc1.final"], row["val/acc1.best_epoch"]) == (0.80, 0.70, 2)
    # train/loss logged mid-epoch (steps 5, 15, 25): its best belongs to epoch 2
    assert (row["train/loss.best"], row["train/loss.final"], row["train/loss.best_epoch"]) == (1.0, 2.0, 2)


def test_tensorboard_behind_jsonl_uses_jsonl(tmp_path: Path) -> None:
    """While a run goes on, TB (flushed every few seconds) can lag metrics.jsonl."""
    path = write_run(tmp_path, {"val/acc1": ACC})
    with open(path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "epoch", "epoch": 4, "step": 40, "time": 4.0, "val/acc1": 0.95}) + "\n")
    run = load_run(path)
    assert run.series["val/acc1"].source == "jsonl"
    assert run.series["val/acc1"].values[-1] == 0.95


def test_explicit_metric_mode_and_short_name(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path, {"val/acc1": ACC}, tb=False))
    row = compare([run], metrics=["acc1:min"]).rows[0]  # 'acc1' found as val/acc1
    assert (row["val/acc1.best"], row["val/acc1.best_epoch"]) == (0.50, 1)
    with pytest.raises(ConfigError, match="val/acc5"):
        compare([run], metrics=["val/acc5"])


def test_metric_modes() -> None:
    assert [metric_mode(t) for t in ("val/acc1", "val/miou", "val/dice", "val/loss", "val/rmse",
                                     "val/nll", "val/mae")] == ["max"] * 3 + ["min"] * 4
    assert metric_mode("val/best_of_k") == "min"  # an error (closest of K means), despite "best"


def test_segmentation_default_metric(tmp_path: Path) -> None:
    cfg = merged(**{"task.name": "segmentation"})
    run = load_run(write_run(tmp_path, {"val/miou": [0.2, 0.4], "val/loss": [1.0, 0.5]}, config=cfg, tb=False))
    assert [m.tag for m in compare([run]).metrics] == ["val/miou", "val/loss"]


def test_in_progress_and_stopped_runs_are_flagged(tmp_path: Path) -> None:
    going = write_run(tmp_path, {"val/acc1": ACC[:2]}, final=None, tb=False)
    stopped = write_run(tmp_path, {"val/acc1": ACC[:1]}, final="stopped", tb=False)
    done = write_run(tmp_path, {"val/acc1": ACC}, tb=False)
    rows = compare([load_run(p) for p in (going, stopped, done)]).rows
    assert [(r["status"], r["epochs"]) for r in rows] == [
        ("in progress", "2/3"), ("stopped", "1/3"), ("completed", "3/3")]
    assert rows[0]["wall_time"] == 2.0  # no final record: the last record's time


def test_find_runs_expands_folders_globs_and_skips_non_runs(tmp_path: Path) -> None:
    day = tmp_path / "runs" / "2026-11-27"
    sweep = day / "10-00-00-sweep-abc"
    sweep.mkdir(parents=True)
    jobs = [write_run(sweep, {"val/acc1": [0.1]}, name=f"job{i:02d}") for i in range(2)]
    single = write_run(day, {"val/acc1": [0.2]})
    junk = day / "notes"
    junk.mkdir()
    (junk / "readme.txt").write_text("not a run")
    # a sweep dir gives its jobs
    assert find_runs([sweep]) == (jobs, [])
    # a glob gives runs and the jobs of sweeps; the non-run folder is named in one warning
    found, warnings = find_runs([str(day / "*")])
    assert sorted(found) == sorted(jobs + [single])
    assert len(warnings) == 1 and "notes" in warnings[0] and "skipped" in warnings[0]
    # a run named twice appears once; a missing path is a warning
    found, warnings = find_runs([single, single, tmp_path / "nope"])
    assert found == [single] and len(warnings) == 1 and "nope" in warnings[0]
    with pytest.raises(RunDirError, match="notes"):
        load_run(junk)


def test_sort_best_first_and_reverse(two_runs: list[Path]) -> None:
    runs = [load_run(p) for p in two_runs]
    names = [p.name for p in two_runs]
    by = lambda spec: [r["run"] for r in compare(runs, sort=spec).rows]  # noqa: E731
    assert by("val/acc1") == [names[1], names[0]]  # best acc (0.9) first
    assert by("val/loss") == [names[0], names[1]]  # lowest loss (0.40) first
    assert by("wall_time") == [names[1], names[0]]
    assert by("-wall_time") == [names[0], names[1]]
    assert by("optim.name") == [names[1], names[0]]  # adam < sgd
    with pytest.raises(ConfigError, match="cannot sort by 'bogus'"):
        compare(runs, sort="bogus")


def test_formats(two_runs: list[Path]) -> None:
    comp = compare([load_run(p) for p in two_runs])
    rows = list(csv.DictReader(io.StringIO(render(comp, "csv"))))
    assert [r["optim.name"] for r in rows] == ["sgd", "adam"]
    assert float(rows[1]["val/acc1.best"]) == pytest.approx(0.9)
    data = json.loads(render(comp, "json"))
    assert data[0]["val/loss.best_epoch"] == 3 and data[1]["params"] == 999
    assert Path(data[0]["path"]) == two_runs[0]
    md = render(comp, "markdown").splitlines()
    assert md[0].startswith("| run | status | epochs | optim.name | optim.lr |")
    assert len(md) == 2 + 2 and "| adam |" in md[3]
    table = render(comp, "table")
    assert two_runs[0].name in table and "adam" in table and "0.9" in table
    with pytest.raises(ConfigError, match="choose one of"):
        render(comp, "xml")


def test_config_diff_with_copied_run_is_empty(tmp_path: Path, two_runs: list[Path]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(two_runs[0], copy)
    assert config_diff([load_run(two_runs[0]), load_run(copy)]) == []
