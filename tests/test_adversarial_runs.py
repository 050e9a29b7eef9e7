"""Adversarial suite, runs: resume rules, checkpoints that point the wrong way or carry code, two
writers on one run directory, signals during start-up, runs that fail before their first
checkpoint, memory and disk exhaustion. Each case asserts the exit code, one line without a
traceback, and what is (not) on disk afterwards."""
from __future__ import annotations

import errno
import importlib
import json
import math
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adversarial import TINY, cli, refused, snapshot, the_run
from vaitrain.engine import step as step_module
from vaitrain.errors import DataError
from vaitrain.track.lock import RunLock
from vaitrain.track.metrics_log import read_metrics

STEPS_PER_EPOCH = 4  # 64 images / batch 16


def _records(run: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == kind]


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    """A finished 2-epoch run (never changed by the tests that use it directly)."""
    out = tmp_path_factory.mktemp("completed") / "runs"
    result = cli(["train", *TINY, f"out_dir={out}"])
    assert result.exit_code == 0, result.output
    return the_run(out)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A 3-epoch run stopped after its first epoch (trainer.stop_after=1)."""
    out = tmp_path_factory.mktemp("stopped") / "runs"
    result = cli(["train", *TINY, "trainer.epochs=3", "trainer.stop_after=1", f"out_dir={out}"])
    assert result.exit_code == 0, result.output
    return the_run(out)


def copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


# ----- resume rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [[], ["trainer.epochs=2"]], ids=["plain", "same_epochs"])
def test_resuming_a_completed_run_says_so_and_rewrites_nothing(completed, extra):
    before = snapshot(completed)
    refused(cli(["train", f"resume={completed}", *extra]),
            r"^error: run \S+ is complete: it trained all 2 epochs, nothing is left to resume; to train longer, "
            r"resume with trainer.epochs=N \(N > 2\); the added epochs get a new cosine cycle")
    assert snapshot(completed) == before


def test_fewer_epochs_than_trained(completed):
    before = snapshot(completed)
    refused(cli(["train", f"resume={completed}", "trainer.epochs=1"]),
            r"^error: trainer.epochs=1: the run already trained 2 epochs; to train longer, give trainer.epochs=N \(N > 2\)")
    assert snapshot(completed) == before


def test_fewer_epochs_than_planned(stopped):
    before = snapshot(stopped)
    refused(cli(["train", f"resume={stopped}", "trainer.epochs=2"]),
            r"^error: trainer.epochs=2 is fewer than the 3 the run was planned for .*use trainer.stop_after=N")
    assert snapshot(stopped) == before


@pytest.mark.parametrize("override, key", [
    ("model.width_mult=0.5", "model.width_mult"), ("norm=batch", "norm.name"), ("data.num_train=48", "data.num_train"),
    ("data.image_size=32", "data.image_size"), ("task.label_smoothing=0.1", "task.label_smoothing"),
    ("optim.lr=0.1", "optim.lr"), ("optim=adam", "optim.name"), ("sched=constant", "sched.name"),
    ("seed=1", "seed"), ("trainer.batch_size=8", "trainer.batch_size"), ("trainer.grad_accum=2", "trainer.grad_accum"),
    ("model=resnet32", "model.name"),
])
def test_resume_refuses_what_changes_model_data_task_batch_or_optimizer(stopped, override, key):
    before = snapshot(stopped)
    refused(cli(["train", f"resume={stopped}", override]),
            rf"^error: resume=\S+: {key}=\S+ differs from the run's {key}=\S+; a resumed run keeps its model, "
            r"data, task, batch size, optimizer and schedule")
    assert snapshot(stopped) == before


def test_mid_epoch_resume_with_another_batch_size(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    state = _state(run / "checkpoints" / "last.pt")
    state.update(epoch=0, batch_in_epoch=2, step=2)  # as if stopped 2 batches into epoch 1
    torch.save(state, run / "checkpoints" / "last.pt")
    before = snapshot(run)
    refused(cli(["train", f"resume={run}", "trainer.batch_size=32"]),
            r"^error: resume=\S+ mid-epoch \(2 batches into epoch 1\): trainer.batch_size=32 differs from the run's "
            r"trainer.batch_size=16")
    assert snapshot(run) == before


def test_allowed_change_is_recorded_with_its_step(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    result = cli(["train", f"resume={run}", "trainer.log_every=2"])
    assert result.exit_code == 0, result.output
    lines = (run / "overrides.txt").read_text().splitlines()
    assert "# resumed at epoch 1, step 4: trainer.log_every: 1 -> 2" in lines
    assert lines[-1] == "trainer.log_every=2"
    assert "log_every: 2" in (run / "config.yaml").read_text()
    # the steps after the resume were logged every 2 steps, the first epoch's every step; the run's
    # own trainer.stop_after=1 still holds (each invocation trains one epoch)
    steps = [r["step"] for r in _records(run, "train")]
    assert steps == [1, 2, 3, 4, 6, 8]
    assert _records(run, "final")[-1]["status"] == "stopped"


def test_extending_a_completed_run_restarts_the_cosine_over_the_added_epochs(completed, tmp_path):
    run = copy(completed, tmp_path)
    result = cli(["train", f"resume={run}", "trainer.epochs=3"])
    assert result.exit_code == 0, result.output
    notes = [l for l in (run / "overrides.txt").read_text().splitlines() if l.startswith("#")]
    assert notes == ["# resumed at epoch 2, step 8: trainer.epochs: 2 -> 3"]
    assert "epochs: 3" in (run / "config.yaml").read_text()
    lr = {r["step"]: r["train/lr"] if "train/lr" in r else r["lr"] for r in _records(run, "train")}
    base = 0.05
    # the first 8 steps: one cosine from 0.05 to 0 (lr logged after the step's schedule update)
    for s in range(1, 9):
        assert math.isclose(lr[s], base * (1 + math.cos(math.pi * s / 8)) / 2, abs_tol=1e-9), (s, lr[s])
    # the added epoch: a new cosine over its 4 steps, from the base rate again (a warm restart)
    for s in range(9, 13):
        assert math.isclose(lr[s], base * (1 + math.cos(math.pi * (s - 8) / 4)) / 2, abs_tol=1e-9), (s, lr[s])
    assert [r["epoch"] for r in _records(run, "epoch")] == [1, 2, 3]
    # the extension is the plan now: a plain resume says complete at 3
    refused(cli(["train", f"resume={run}"]), r"^error: run \S+ is complete: it trained all 3 epochs")


# ----- checkpoints that point the wrong way --------------------------------------------------------

def test_last_missing_but_best_present(completed, tmp_path):
    run = copy(completed, tmp_path)
    (run / "checkpoints" / "last.pt").unlink()
    before = snapshot(run)
    pattern = r"^error: no checkpoint at '\S+last.pt', but best.pt is in \S+checkpoints: use it \(vaitrain eval RUN " \
              r"--checkpoint best\), or copy it to last.pt to resume from it"
    refused(cli(["train", f"resume={run}"]), pattern)
    refused(cli(["eval", str(run), "--checkpoint", "last"]), pattern)
    assert snapshot(run) == before


class _Code:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("write, pattern", [
    (lambda s, p: torch.save(s, p, _use_new_zipfile_serialization=False),
     r" \(a plain pickle, not torch's zip format\) refers to code \((posix|os)\.system\)"),
    (lambda s, p: p.write_bytes(pickle.dumps(s, protocol=4)),
     r" \(a plain pickle, not torch's zip format\) refers to code \((posix|os)\.system\)"),
    (lambda s, p: p.write_bytes(pickle.dumps(s, protocol=0)),
     r" \(a plain pickle, not torch's zip format\) refers to code \((posix|os)\.system\)"),
    (lambda s, p: torch.save(s, p), r" refers to code \((posix|os)\.system\)"),
], ids=["torch_legacy", "pickle4", "pickle0", "torch_zip"])
def test_checkpoint_with_code_is_named_as_such(completed, tmp_path, write, pattern):
    marker = tmp_path / "ran"
    state = _state(completed / "checkpoints" / "last.pt")
    state["model"]["evil"] = _Code(marker)
    evil = tmp_path / "evil.pt"
    write(state, evil)
    line = refused(cli(["eval", str(completed), "--checkpoint", str(evil)]), rf"^error: checkpoint '\S+evil.pt'{pattern}")
    assert "truncated" not in line and not marker.exists()


def test_legacy_checkpoint_without_code_is_not_a_vaitrain_checkpoint(completed, tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path, _use_new_zipfile_serialization=False)
    refused(cli(["eval", str(completed), "--checkpoint", str(path)]), r"^error: '\S+old.pt' is not a vaitrain checkpoint")


def test_overrides_file_naming_code_is_refused(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    marker = tmp_path / "ran"
    with open(run / "overrides.txt", "a") as f:
        f.write(f"+model._target_=os.system\n+model._args_=[touch {marker}]\n")
    before = snapshot(run)
    refused(cli(["train", f"resume={run}"]), rf"^error: {run}/overrides.txt \(the run's saved overrides, one per line\): "
            r"config key 'model._target_' asks Hydra to instantiate 'os.system'")
    assert snapshot(run) == before and not marker.exists()


def test_run_config_with_a_python_tag_cannot_run_code(completed, tmp_path):
    run = copy(completed, tmp_path)
    marker = tmp_path / "ran"
    (run / "config.yaml").write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    result = cli(["compare-runs", str(run)])
    assert "Traceback" not in result.output and not marker.exists()
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output


# ----- one run directory, one writer --------------------------------------------------------------

def test_second_writer_in_the_same_process_is_refused(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    lock = RunLock(run).acquire()
    try:
        before = snapshot(run)
        refused(cli(["train", f"resume={run}"]),
                rf"^error: run directory '\S+' is in use by process {os.getpid()} \(a `vaitrain train` writing it\); "
                rf"wait for it to end or stop it \(kill -TERM {os.getpid()}\)")
        assert snapshot(run) == before
    finally:
        lock.release()


def _hold_lock(run: str, conn) -> None:
    RunLock(Path(run)).acquire()
    conn.send("held")
    time.sleep(60)


def test_lock_held_by_another_process_then_stale_after_its_crash(stopped, tmp_path):
    run = copy(stopped, tmp_path)
    parent, child = multiprocessing.get_context("fork").Pipe()
    holder = multiprocessing.get_context("fork").Process(target=_hold_lock, args=(str(run), child))
    holder.start()
    try:
        assert parent.poll(30) and parent.recv() == "held"
        refused(cli(["train", f"resume={run}"]), rf"^error: run directory '\S+' is in use by process {holder.pid} ")
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: the kernel drops the lock
        holder.join()
    result = cli(["train", f"resume={run}"])
    assert result.exit_code == 0, result.output
    assert (run / ".lock").read_text() == ""  # released at the end, naming no holder


# ----- signals during start-up --------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_before_the_run_directory_exists(tmp_path, monkeypatch, signum):
    train_module = importlib.import_module("vaitrain.engine.train")

    real = train_module.build_components

    def build_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signum)  # arrives while the data and model are built
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "build_components", build_then_signal)
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, f"out_dir={out}"]),
            rf"^error: stopped by {signal.Signals(signum).name} during start-up, before training began; nothing was "
            r"trained", code=128 + signum)
    assert not list(out.rglob("config.yaml"))


def test_signal_after_the_run_directory_exists_leaves_no_orphan(tmp_path, monkeypatch):
    real = step_module.OptimizerStep.__init__

    def init_then_signal(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the run directory was made just before
        real(self, *args, **kwargs)

    monkeypatch.setattr(step_module.OptimizerStep, "__init__", init_then_signal)
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, f"out_dir={out}"]), r"^error: stopped by SIGTERM during start-up", code=143)
    assert not list(out.rglob("config.yaml")) and not list(out.rglob("*.lock"))


def test_sigterm_while_python_imports_in_a_real_process(tmp_path):
    """The one real-process case: SIGTERM a fresh `python -m vaitrain train` during its imports."""
    out = tmp_path / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "vaitrain", "train", *TINY, f"out_dir={out}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # torch is still importing (several seconds here)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, stderr)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error: stopped by SIGTERM during start-up")
    assert not list(out.rglob("config.yaml"))


# ----- runs that fail before their first checkpoint -----------------------------------------------

def test_non_finite_loss_at_step_two_leaves_a_failed_run_saying_why(tmp_path):
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, "optim.lr=1e30", "sched=constant", f"out_dir={out}"]),
            r"^error: the (loss|weights) became non-finite \(NaN/inf\) by step \d; no checkpoint was written yet")
    run = the_run(out)
    final = _records(run, "final")[-1]
    assert final["status"] == "failed" and "non-finite" in final["error"]
    assert not list((run / "checkpoints").glob("*.pt"))
    table = cli(["compare-runs", str(run), "--format", "json"])
    assert table.exit_code == 0 and '"failed"' in table.stdout


def test_start_up_failure_after_the_run_directory_exists_removes_it(tmp_path, monkeypatch):
    from vaitrain.engine import records

    def broken(*args, **kwargs):
        raise DataError("a data error found while opening the records")

    monkeypatch.setattr(records.Records, "__init__", broken)
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, f"out_dir={out}"]), r"^error: a data error found while opening the records$")
    assert not list(out.rglob("config.yaml"))


def test_data_error_found_late_is_recorded(tmp_path, monkeypatch):
    real = step_module.OptimizerStep.backward
    calls = []

    def backward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # in the second epoch, after the first checkpoint
            raise DataError("cannot read image /data/x.png: truncated")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(step_module.OptimizerStep, "backward", backward)
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, f"out_dir={out}"]), r"^error: cannot read image /data/x.png: truncated$")
    run = the_run(out)
    final = _records(run, "final")[-1]
    assert final["status"] == "failed" and final["error"] == "cannot read image /data/x.png: truncated"
    assert _state(run / "checkpoints" / "last.pt")["epoch"] == 1


# ----- memory and disk ----------------------------------------------------------------------------

@pytest.mark.parametrize("error, where", [
    (lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "GPU"),
    (lambda: MemoryError(), "CPU"),
    (lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), "CPU"),
    (lambda: RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "), "CPU"),
])
def test_out_of_memory_in_the_step_keeps_the_last_checkpoint(tmp_path, monkeypatch, error, where):
    real = step_module.OptimizerStep.backward
    calls = []

    def backward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise error()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(step_module.OptimizerStep, "backward", backward)
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, f"out_dir={out}"]),
            rf"^error: out of {where} memory; the last good checkpoint is \S+last.pt: lower trainer.batch_size or "
            r"data.image_size .*resume=RUN_DIR")
    run = the_run(out)
    assert _state(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert _records(run, "final")[-1]["status"] == "failed"


def test_out_of_memory_while_loading_data(tmp_path, monkeypatch):
    from vaitrain.data import shapes

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(shapes, "render_scenes", no_memory, raising=False)
    monkeypatch.setattr(shapes, "generate", no_memory, raising=False)
    train_module = importlib.import_module("vaitrain.engine.train")

    monkeypatch.setattr(train_module, "build_components", no_memory)
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, f"out_dir={out}"]),
            r"^error: out of CPU memory; no checkpoint was written yet: lower trainer.batch_size or data.image_size")
    assert not out.exists()


def _fail_fsync_for(name_part: str, after: int):
    """os.fsync that raises ENOSPC for files whose name holds name_part, from the after-th such call."""
    real = os.fsync
    seen = []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if name_part in target:
            seen.append(target)
            if len(seen) >= after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    return fsync


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_last(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _fail_fsync_for(".last.pt.", after=2))  # epoch 2's last.pt
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, f"out_dir={out}"]),
            r"^error: cannot write checkpoint '\S+last.pt' \(No space left on device\); the previous last.pt is kept: "
            r"free space on that disk \(or start on another with out_dir=DIR\), then continue with resume=RUN_DIR")
    monkeypatch.undo()
    run = the_run(out)
    assert _state(run / "checkpoints" / "last.pt")["epoch"] == 1  # whole, and the previous one
    assert not list((run / "checkpoints").glob(".*tmp"))
    assert _records(run, "final")[-1]["status"] == "failed"
    result = cli(["train", f"resume={run}"])  # space again: the run goes on from it
    assert result.exit_code == 0, result.output


def test_disk_full_while_writing_records(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _fail_fsync_for("metrics.jsonl", after=6))
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, f"out_dir={out}"]),
            r"^error: the disk is full \(No space left on device\); the last good checkpoint is \S+last.pt: free space, "
            r"or set out_dir=DIR")
    monkeypatch.undo()
    run = the_run(out)
    assert _state(run / "checkpoints" / "last.pt")["epoch"] == 1


def _slow_steps() -> None:
    real = step_module.OptimizerStep.backward

    def slow(self, *args, **kwargs):
        time.sleep(0.3)
        return real(self, *args, **kwargs)

    step_module.OptimizerStep.backward = slow


def test_two_resumes_of_the_same_run_cannot_both_write(stopped, tmp_path):
    """Two real processes: the first `train resume=RUN` trains (slowly), the second is refused naming it."""
    from crash_runs import fork

    run = copy(stopped, tmp_path)
    first = fork(["train", f"resume={run}"], setup=_slow_steps)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (run / ".lock").read_text().strip() != str(first.pid):
            time.sleep(0.05)
        refused(cli(["train", f"resume={run}"]), rf"^error: run directory '\S+' is in use by process {first.pid} ")
    finally:
        first.join(120)
    assert first.exitcode == 0
    assert [r["epoch"] for r in _records(run, "epoch")] == [1, 2]  # one writer: each epoch once


def test_disk_full_while_writing_the_run_files_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _fail_fsync_for(".config.yaml.", after=1))
    out = tmp_path / "runs"
    refused(cli(["train", *TINY, f"out_dir={out}"]),
            r"^error: the disk is full \(No space left on device\); no checkpoint was written yet: free space, or set "
            r"out_dir=DIR")
    monkeypatch.undo()
    assert not [p for p in out.rglob("*") if p.is_file()]
