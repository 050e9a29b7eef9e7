"""Crash safety: SIGKILL at random moments, SIGINT stops, mid-epoch resume, non-finite losses and
fp16 overflow steps. A resumed run must end with the weights of an uninterrupted one. (SIGTERM to a
real process tree, exit 143 and the resume line: tests/test_distributed.py.)"""
from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import random
import re
import signal
import time

import pytest
import torch

from crash_runs import (
    STEPS, TINY, assert_same_weights, checkpoint_step, fork, invoke, load, reference_run, run_dirs, the_run,
    wait_until, weights,
)
from vaitrain.engine.checkpoint import load_checkpoint, remove_partial_checkpoints, save_checkpoint

train_mod = importlib.import_module("vaitrain.engine.train")  # the module (the package exports a train())

RESUME_LINE = re.compile(r"stopped (?:in|after|before) epoch (\d+)/\d+ at step (\d+); continue with: vaitrain train resume=(\S+)")


@pytest.fixture
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory.getbasetemp())


def records(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def assert_finished_once(run_dir):
    recs = records(run_dir)
    finals = [r for r in recs if r["kind"] == "final"]
    assert [r["status"] for r in finals] == ["completed"], finals
    assert finals[0]["step"] == STEPS
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [1, 2]
    steps = [r["step"] for r in recs if r["kind"] == "train"]
    assert steps == sorted(set(steps)), "a resumed run must not log a step twice"


def test_sigint_mid_epoch_stops_cleanly_and_resume_matches_uninterrupted(tmp_path, reference, monkeypatch):
    """Ctrl-C at step 29 (mid-epoch): last.pt written, the resume command printed, exit 130;
    resume= continues at batch 29 of epoch 1 and ends with the uninterrupted run's weights."""
    agree = train_mod.Trainer._agree_stop

    def interrupt_at_29(self, stop):
        if self.step == 29 and not stop.signum:
            os.kill(os.getpid(), signal.SIGINT)
        return agree(self, stop)

    monkeypatch.setattr(train_mod.Trainer, "_agree_stop", interrupt_at_29)
    out = tmp_path / "runs"
    result = invoke(["train", *TINY, f"out_dir={out}"])
    assert result.exit_code == 128 + signal.SIGINT, result.output
    run = the_run(out)
    assert RESUME_LINE.search(result.stderr).groups() == ("1", "29", str(run)), result.stderr  # in epoch 1
    state = load(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (0, 29, 29)
    monkeypatch.undo()

    result = invoke(["train", f"resume={run}"])
    assert result.exit_code == 0, result.output
    assert run_dirs(out) == [run]
    assert_same_weights(weights(run), weights(reference))
    assert_finished_once(run)


def test_repeated_sigterm_in_an_epochs_last_step(tmp_path, reference, monkeypatch):
    """Two SIGTERMs (SLURM signals every process of a step and torchrun forwards its own) are one
    request, not an abort; arriving in an epoch's last step, they stop the run at the epoch's end
    (validated, recorded, checkpointed), and resume= goes on from the next epoch."""
    agree = train_mod.Trainer._agree_stop

    def terminate_twice_at_32(self, stop):
        if self.step == STEPS // 2 and not stop.signum:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return agree(self, stop)

    monkeypatch.setattr(train_mod.Trainer, "_agree_stop", terminate_twice_at_32)
    out = tmp_path / "runs"
    result = invoke(["train", *TINY, f"out_dir={out}"])
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    run = the_run(out)
    assert RESUME_LINE.search(result.stderr).groups() == ("1", str(STEPS // 2), str(run))
    state = load(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (1, 0, STEPS // 2)
    monkeypatch.undo()

    assert invoke(["train", f"resume={run}"]).exit_code == 0
    assert_finished_once(run)
    assert_same_weights(weights(run), weights(reference))


def test_sigkill_at_random_moments_then_resume_finishes(tmp_path, reference):
    """Three SIGKILLs (random steps, random delays, checkpoints every step so some land mid-save):
    each leaves a last.pt that loads with weights_only; resume= finishes with the same weights."""
    out = tmp_path / "runs"
    run = None
    last = 0
    for seed in range(3):
        rng = random.Random(seed)
        target = last + rng.randint(5, 15)
        args = ["train", *TINY, "trainer.checkpoint_every=1", f"out_dir={out}"] if run is None else [
            "train", f"resume={run}"]
        proc = fork(args)

        def reached() -> bool:
            nonlocal run
            runs = run_dirs(out)
            run = runs[0] if runs else None
            step, batch = checkpoint_step(run)
            return step >= target and (seed > 0 or batch > 0)  # the first kill is mid-epoch

        wait_until(reached, proc)
        time.sleep(rng.uniform(0.0, 0.05))
        proc.kill()
        proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL
        state = load(run / "checkpoints" / "last.pt")  # weights_only: a whole, valid checkpoint
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
        assert state["step"] >= target
        last = state["step"]
    assert last < STEPS

    result = invoke(["train", f"resume={run}"])
    assert result.exit_code == 0, result.output
    assert run_dirs(out) == [run]
    assert not list((run / "checkpoints").glob(".*.tmp")), "temp files of a killed save are cleaned up"
    assert_same_weights(weights(run), weights(reference))
    assert_finished_once(run)


def _die_before_first_epoch_checkpoint() -> None:
    save = train_mod.Trainer._save

    def save_or_die(self, *names):
        if self.epoch == 1 and self.batch_in_epoch == 0:  # epoch 1 validated and recorded, not saved
            os.kill(os.getpid(), signal.SIGKILL)
        save(self, *names)

    train_mod.Trainer._save = save_or_die


def test_kill_between_epoch_record_and_checkpoint_records_the_epoch_once(tmp_path, reference):
    """The window where metrics.jsonl has the epoch's line but last.pt does not have the epoch:
    resume redoes the epoch's last step and writes its line once, with the same final weights."""
    out = tmp_path / "runs"
    proc = fork(["train", *TINY, "trainer.checkpoint_every=1", f"out_dir={out}"],
                setup=_die_before_first_epoch_checkpoint)
    proc.join(timeout=300)
    assert proc.exitcode == -signal.SIGKILL
    run = the_run(out)
    assert [r["kind"] for r in records(run)].count("epoch") == 1
    result = invoke(["train", f"resume={run}"])
    assert result.exit_code == 0, result.output
    assert_finished_once(run)
    assert_same_weights(weights(run), weights(reference))


def _save_then_die_mid_save(path) -> None:
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "step": 1})
    os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # die with the new bytes half-way to disk
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 2})


def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    proc = multiprocessing.get_context("fork").Process(target=_save_then_die_mid_save, args=(path,))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL
    assert load_checkpoint(path)["step"] == 1  # the good one, whole
    assert list(path.parent.glob(".last.pt.*.tmp"))  # the unfinished write is a temp file ...
    remove_partial_checkpoints(path.parent)  # ... that resume deletes
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_nonfinite_loss_stops_with_one_line_naming_step_and_checkpoint(tmp_path):
    out = tmp_path / "runs"
    result = invoke(["train", *TINY, "norm=none", "optim.lr=1e6", "trainer.log_every=1",
                     "trainer.checkpoint_every=1", f"out_dir={out}"])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    m = re.match(r"error: the loss became non-finite \(NaN/inf\) by step (\d+); "
                 r"the last good checkpoint is (\S+last\.pt); lower optim\.lr", result.stderr)
    assert m, result.stderr
    step, path = int(m.group(1)), m.group(2)
    state = load(path)
    assert state["step"] == step - 1  # the checkpoint before the bad step, never a poisoned one
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    final = records(the_run(out))[-1]
    assert (final["kind"], final["status"]) == ("final", "failed")


def _poison_step(monkeypatch, at: int) -> None:
    """Make the loss of optimizer step `at` infinite (as an fp16 overflow would)."""
    build = train_mod.build_components

    def build_poisoned(*args, **kwargs):
        c = build(*args, **kwargs)
        objective, calls = c.opt.objective, {"n": 0}

        def poisoned(model, x, y):
            loss, out = objective(model, x, y)
            calls["n"] += 1
            return (loss * float("inf") if calls["n"] == at else loss), out

        c.opt.objective = poisoned
        return c

    monkeypatch.setattr(train_mod, "build_components", build_poisoned)


SHORT = ["data.num_train=128", "trainer.epochs=1"]


def test_fp16_overflow_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    _poison_step(monkeypatch, at=3)
    out = tmp_path / "runs"
    result = invoke(["train", *TINY, *SHORT, "trainer.precision=fp16", f"out_dir={out}"])
    assert result.exit_code == 0, result.output
    final = records(the_run(out))[-1]
    assert final["status"] == "completed" and final["skipped_steps"] >= 1


def test_fp32_infinite_loss_is_fatal(tmp_path, monkeypatch):
    _poison_step(monkeypatch, at=3)
    out = tmp_path / "runs"
    result = invoke(["train", *TINY, *SHORT, "trainer.precision=fp32", f"out_dir={out}"])
    assert result.exit_code == 2, result.output
    assert re.match(r"error: the loss became non-finite \(NaN/inf\) by step \d+; no checkpoint was written yet",
                    result.stderr), result.stderr
