"""Sweeps with a fast fake train_fn: job count, layout, sweep.json, up-front validation, failures."""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from vaitrain.errors import ConfigError, TrainingError
from vaitrain.sweep import SWEEP_FILE, run_sweep
from vaitrain.track.metrics_log import MetricsLog
from vaitrain.track.rundir import create_run_dir


@dataclass
class FakeResult:
    run_dir: Path
    status: str
    metrics: dict[str, float]
    signal: int = 0


class FakeTrain:
    """Writes a minimal run (config.yaml + metrics.jsonl) the way the engine names it."""

    def __init__(self, fail_when: dict[str, Any] | None = None, signal_at: int | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_when = fail_when or {}
        self.signal_at = signal_at

    def __call__(self, cfg: Any, overrides: list[str], *, out_dir: Path, dated: bool, name: str) -> FakeResult:
        self.calls.append({"overrides": overrides, "out_dir": out_dir, "dated": dated, "name": name})
        run = create_run_dir(out_dir, cfg.model.name, cfg.data.name, name, dated=dated)
        (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        log = MetricsLog(run / "metrics.jsonl")
        log.write({"kind": "epoch", "epoch": 1, "step": 1, "time": 0.1, "val/acc1": 0.5, "val/loss": 1.0})
        if any(OmegaConf.select(cfg, k) == v for k, v in self.fail_when.items()):
            log.write({"kind": "final", "epoch": 1, "step": 1, "time": 0.1, "status": "failed"})
            log.close()
            raise TrainingError("the loss became non-finite (NaN/inf) by step 1")
        log.write({"kind": "final", "epoch": 1, "step": 1, "time": 0.1, "status": "completed"})
        log.close()
        stopped = self.signal_at is not None and len(self.calls) - 1 == self.signal_at
        return FakeResult(run, "stopped" if stopped else "completed", {"val/acc1": 0.5}, 2 if stopped else 0)


def _doc(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / SWEEP_FILE).read_text())


def test_job_count_and_layout(tmp_path: Path) -> None:
    fake = FakeTrain()
    out = tmp_path / "runs"
    res = run_sweep(["optim=sgd,adam", "norm=batch,group", "trainer.epochs=1"], train_fn=fake, out_dir=out)
    assert len(fake.calls) == 4 and len(res.jobs) == 4
    # <out>/<date>/<time>-sweep-<id>/ with sweep.json and one run dir per job inside
    assert res.sweep_dir.parent == out / dt.date.today().strftime("%Y-%m-%d")
    assert re.fullmatch(r"\d\d-\d\d-\d\d-sweep-[0-9a-f]{6}", res.sweep_dir.name)
    assert sorted(p.name for p in res.sweep_dir.iterdir() if p.is_file()) == [SWEEP_FILE]
    runs = sorted((p for p in res.sweep_dir.iterdir() if p.is_dir()), key=lambda p: p.name.split("_job")[1])
    assert len(runs) == 4 and res.run_dirs == runs
    assert [f"_job{i:02d}-" in p.name for i, p in enumerate(runs)] == [True] * 4
    assert {(c["out_dir"], c["dated"]) for c in fake.calls} == {(res.sweep_dir, False)}
    # the names carry the swept values (shown as TensorBoard's run names too)
    assert [c["name"] for c in fake.calls] == ["sgd_batch_job00", "sgd_group_job01", "adam_batch_job02",
                                               "adam_group_job03"]
    # the Cartesian product, each job's own overrides, recorded with status and run dir
    doc = _doc(res.sweep_dir)
    assert doc["overrides"] == ["optim=sgd,adam", "norm=batch,group", "trainer.epochs=1"]
    combos = {tuple(j["overrides"]) for j in doc["jobs"]}
    assert combos == {(f"optim={o}", f"norm={n}", "trainer.epochs=1") for o in ("sgd", "adam") for n in ("batch", "group")}
    assert all(j["status"] == "completed" and (res.sweep_dir / j["run_dir"]).is_dir() for j in doc["jobs"])


def test_range_and_choice_grammar(tmp_path: Path) -> None:
    fake = FakeTrain()
    run_sweep(["seed=range(1,3)", "optim=choice(sgd,adam)"], train_fn=fake, out_dir=tmp_path)
    assert {tuple(c["overrides"]) for c in fake.calls} == {
        (f"seed={s}", f"optim={o}") for s in (1, 2) for o in ("sgd", "adam")}


@pytest.mark.parametrize("bad", ["optim=sgd,adma", "trainer.epochs=1,x", "trainer.epoch=1,2"])
def test_typo_in_one_value_fails_before_anything_is_written(tmp_path: Path, bad: str) -> None:
    fake = FakeTrain()
    out = tmp_path / "runs"
    with pytest.raises(ConfigError):
        run_sweep(["norm=batch,group", bad], train_fn=fake, out_dir=out)
    assert fake.calls == [] and not out.exists()


def test_error_names_the_bad_job(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.epochs=0 .*out of range"):
        run_sweep(["trainer.epochs=2,0"], train_fn=FakeTrain(), out_dir=tmp_path)


def test_failing_job_is_recorded_and_the_rest_go_on(tmp_path: Path) -> None:
    fake = FakeTrain(fail_when={"optim.name": "adam"})
    res = run_sweep(["optim=sgd,adam,adamw"], train_fn=fake, out_dir=tmp_path)
    assert len(fake.calls) == 3
    assert [j.status for j in res.jobs] == ["completed", "failed", "completed"]
    assert "non-finite" in res.jobs[1].error and res.failed == [res.jobs[1]]
    doc = _doc(res.sweep_dir)
    assert doc["jobs"][1]["status"] == "failed" and "non-finite" in doc["jobs"][1]["error"]
    # the failed job's run dir (made before it failed) is still found and listed
    assert doc["jobs"][1]["run_dir"] and "_job01-" in doc["jobs"][1]["run_dir"]
    assert len(res.run_dirs) == 3


def test_a_bug_in_one_job_does_not_end_the_sweep(tmp_path: Path) -> None:
    calls = []

    def broken(cfg: Any, overrides: list[str], **kw: Any) -> None:
        calls.append(overrides)
        raise RuntimeError("boom\nsecond line")

    res = run_sweep(["seed=1,2"], train_fn=broken, out_dir=tmp_path)
    assert len(calls) == 2
    assert [j.error for j in res.jobs] == ["RuntimeError: boom second line"] * 2
    assert [j.run_dir for j in res.jobs] == [None, None]


def test_stopped_by_signal_stops_the_sweep(tmp_path: Path) -> None:
    fake = FakeTrain(signal_at=1)
    res = run_sweep(["seed=range(3)"], train_fn=fake, out_dir=tmp_path)
    assert len(fake.calls) == 2 and res.interrupted
    assert [j["status"] for j in _doc(res.sweep_dir)["jobs"]] == ["completed", "stopped", "interrupted"]


def test_out_dir_defaults_to_the_config(tmp_path: Path) -> None:
    fake = FakeTrain()
    res = run_sweep([f"out_dir={tmp_path / 'mine'}", "seed=1,2"], train_fn=fake)
    assert res.sweep_dir.parent.parent == tmp_path / "mine" and len(res.run_dirs) == 2


def test_named_sweep_progress_lines_and_failed_job_dir(tmp_path: Path) -> None:
    lines: list[str] = []
    fake = FakeTrain(fail_when={"seed": 2})
    res = run_sweep(["name=cmp", "seed=1,2"], train_fn=fake, out_dir=tmp_path, progress=lines.append)
    assert [c["name"] for c in fake.calls] == ["cmp-seed_1_job00", "cmp-seed_2_job01"]
    # the engine's slug turns the name's '-' into '_': the failed job's dir is still found
    assert res.jobs[1].status == "failed" and "_job01-" in res.jobs[1].run_dir
    assert (res.sweep_dir / res.jobs[1].run_dir).is_dir()
    assert lines[0] == "sweep job 1/2: seed=1"  # the swept values only
    assert lines[-1].startswith("sweep job 2/2 failed: the loss became non-finite")


@pytest.mark.parametrize("bad, message", [("resume=runs/x", "without -m"), ("trainer.devices=2", "one process")])
def test_options_a_sweep_cannot_run(tmp_path: Path, bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_sweep(["seed=1,2", bad], train_fn=FakeTrain(), out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_cli_multirun_typo_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vaitrain.cli import app

    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["train", "-m", "optim=sgd,adma", "norm=batch,group", f"out_dir={out}"])
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("error:") and "adma" in res.stderr and res.stderr.count("\n") == 1
    assert not out.exists()
