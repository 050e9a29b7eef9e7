"""Adversarial suite, fourth pass: the state a user's runs and folders get into over days of use
(config.yaml edited by hand, the data changed under a run), stop signals in bench and lab, and the
commands the earlier passes covered least (lab, bench, sweeps). A refusal is one line, exit 2 (or
128 + signal), no traceback, nothing half-written."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from adversarial import TINY, cli, refused


# ----- 1. stop signals in bench and lab -----------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_bench_is_one_line_and_128_plus_signal(monkeypatch, tmp_path, signum):
    import vaitrain.bench as bench

    def signalled(*_a, **_k):
        os.kill(os.getpid(), signum)
        raise AssertionError("the handler did not raise")

    monkeypatch.setattr(bench, "run_bench", signalled)
    refused(cli(["bench", "model=resnet20", "--out", tmp_path / "b.json"]),
            rf"^error: stopped by {signal.Signals(signum).name} before `vaitrain bench` finished; run it again$",
            code=128 + signum)
    assert not list(tmp_path.iterdir())


def _fake_sweep(status: str, interrupted: bool):
    """run_sweep as a lab sweep sees it when a job was stopped (or failed): its folder is kept."""
    from vaitrain.sweep import SweepJob, SweepResult

    def run_sweep(overrides, out_dir=None, progress=None, **_):
        sweep_dir = Path(out_dir) / "d" / "s"
        sweep_dir.mkdir(parents=True)
        (sweep_dir / "sweep.json").write_text("{}")
        jobs = [SweepJob(index=0, overrides=["optim.lr=0.1"], status="completed"),
                SweepJob(index=1, overrides=["optim.lr=0.2"], status=status, error="boom" if status == "failed" else None)]
        return SweepResult(sweep_dir, list(overrides), jobs, interrupted=interrupted,
                           signal=int(signal.SIGTERM) if interrupted else 0)

    return run_sweep


@pytest.mark.parametrize("status", ["stopped", "failed"])
def test_lab_sweep_stopped_or_failed_names_the_folder_to_resume(monkeypatch, tmp_path, status):
    """A SIGTERM in a lab's training run stopped the sweep; the lab went on and drew its findings from
    the runs that had finished (a silent wrong result). A failed job did the same."""
    import vaitrain.sweep as sweep

    monkeypatch.setattr(sweep, "run_sweep", _fake_sweep(status, interrupted=status == "stopped"))
    result = cli(["lab", "optimizers", "--size", "tiny", "--out-dir", tmp_path / "runs"])
    lab_dir = next((tmp_path / "runs").glob("*/*-lab-optimizers*"))
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.output and "report:" not in result.output
    if status == "stopped":
        assert result.exit_code == 143, result.output
        assert last == (f"error: stopped by SIGTERM before `vaitrain lab optimizers` finished; its runs so far are "
                        f"kept: continue with `vaitrain lab optimizers --resume {lab_dir}`")
    else:
        assert result.exit_code == 2, result.output
        assert last == (f"error: 1 of 2 runs of the lab's sweep 'sgd' failed (job 2: boom); its runs so far are "
                        f"kept: continue with `vaitrain lab optimizers --resume {lab_dir}`")
    assert not (lab_dir / "report.html").exists()


def test_sigterm_in_a_sweep_jobs_start_up_marks_the_sweep_interrupted(monkeypatch, tmp_path):
    """SIGTERM while a `train -m` job was starting (composing, building the data; the training loop's
    own handler not yet in place) was the default death: exit 143 without a word and sweep.json saying
    'running'. (An Interrupted raised there was counted as the job failing, and the sweep went on.)"""
    import json

    import vaitrain.engine

    calls = []

    def starting(cfg, overrides, **kw):
        calls.append(overrides)
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the handler did not raise")

    monkeypatch.setattr(vaitrain.engine, "train", starting)
    result = cli(["train", "-m", *TINY, "seed=1,2", f"out_dir={tmp_path}"])
    assert result.exit_code == 143, result.output
    assert "Traceback" not in result.output and len(calls) == 1
    sweep_json = next(tmp_path.rglob("sweep.json"))
    assert f"stopped by SIGTERM: continue with: vaitrain train -m resume={sweep_json.parent}" in result.stderr
    assert [j["status"] for j in json.loads(sweep_json.read_text())["jobs"]] == ["interrupted", "interrupted"]
