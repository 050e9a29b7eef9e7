"""Shared pieces of the distributed and crash-safety tests: one tiny run config, runs in-process
or as subprocesses, and the weights a run ends with.

Every run here uses one torch thread (trainer.threads=1, OMP_NUM_THREADS=1): the same arithmetic
in-process and in a subprocess, so an interrupted-and-resumed run can equal an uninterrupted one.
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from typer.testing import CliRunner

from vaitrain.cli import app

# ResNet-20 at a quarter width on 16 px shapes: 2 epochs x 32 steps of 16 images. LayerNorm and no
# dropout, so 1 x 16 and 2 x 8 images per step compute the same gradients. GELU (smooth) and SGD
# with a small rate keep float rounding differences (1 vs 2 processes: sums in another order) from
# growing: ~3e-7 after the 64 steps. (With ReLU a unit flipping sign on a rounding difference
# makes that ~1e-3, as large as a real bug would.)
TINY = [
    "model=resnet20", "model.width_mult=0.25", "model.act=gelu", "norm=layer", "optim=sgd",
    "data.image_size=16", "data.num_train=512", "data.num_val=101",
    "trainer.batch_size=16", "trainer.epochs=2", "trainer.log_every=8", "optim.lr=0.02",
    "trainer.progress=none", "trainer.image_every=0", "trainer.threads=1", "trainer.device=cpu",
]
STEPS = 64
runner = CliRunner()


_reference: dict[str, Path] = {}


def reference_run(root: Path) -> Path:
    """An uninterrupted single-process run of TINY (made once per test session)."""
    if "run" not in _reference:
        out = Path(root) / "reference"
        result = invoke(["train", *TINY, f"out_dir={out}"])
        assert result.exit_code == 0, result.output
        _reference["run"] = the_run(out)
    return _reference["run"]


def invoke(args: list[str]) -> Any:
    """`vaitrain <args>` in this process, keeping torch's thread count as it was."""
    threads = torch.get_num_threads()
    try:
        return runner.invoke(app, args)
    finally:
        torch.set_num_threads(threads)


def _child(args: list[str], setup: Callable[[], None] | None) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if setup is not None:
        setup()
    os._exit(invoke(args).exit_code)


def fork(args: list[str], setup: Callable[[], None] | None = None) -> multiprocessing.Process:
    """`vaitrain <args>` in a forked copy of this process (after `setup()` there): a real process
    to kill, without the seconds a fresh interpreter spends importing torch. (The run uses one
    thread, so no OpenMP pool is needed after the fork.)"""
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(args, setup))
    proc.start()
    return proc


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e.update(extra)
    return e


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m vaitrain <args>` (or any `-m` module: args[0] == "-m") as a subprocess."""
    cmd = [sys.executable, *args] if args[0] == "-m" else [sys.executable, "-m", "vaitrain", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


def kill_group(proc: subprocess.Popen) -> None:
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def run_dirs(out_dir: Path) -> list[Path]:
    return sorted(p.parent for p in Path(out_dir).glob("*/*/config.yaml"))


def the_run(out_dir: Path) -> Path:
    runs = run_dirs(out_dir)
    assert len(runs) == 1, runs
    return runs[0]


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def weights(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load(Path(run_dir) / "checkpoints" / name)["model"]


def wait_until(pred: Callable[[], bool], proc: Any, timeout: float = 120) -> None:
    """Poll `pred` until it holds; fail if the process (Popen or multiprocessing) ends first."""
    deadline = time.monotonic() + timeout
    while not pred():
        ended = proc.poll() is not None if isinstance(proc, subprocess.Popen) else not proc.is_alive()
        if ended:
            out, err = finish(proc)[1:] if isinstance(proc, subprocess.Popen) else ("", "")
            raise AssertionError(f"the process ended before the moment to stop it\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the moment to stop the run")
        time.sleep(0.025)


_seen: dict[Path, tuple[int, tuple[int, int]]] = {}


def checkpoint_step(run_dir: Path | None) -> tuple[int, int]:
    """(step, batch_in_epoch) of a run's last.pt, (-1, -1) when there is none yet. The file is
    read again only when it changed, so polling costs the training process little CPU."""
    if run_dir is None:
        return -1, -1
    path = run_dir / "checkpoints" / "last.pt"
    try:
        mtime = path.stat().st_mtime_ns
        if path in _seen and _seen[path][0] == mtime:
            return _seen[path][1]
        state = load(path)
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1, -1
    _seen[path] = (mtime, (int(state["step"]), int(state["batch_in_epoch"])))
    return _seen[path][1]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 0.0,
                        atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=rtol, atol=atol), (
            k, (a[k].float() - b[k].float()).abs().max().item())


__all__ = ["TINY", "STEPS", "invoke", "fork", "start", "finish", "run_dirs", "the_run", "load", "weights",
           "wait_until", "checkpoint_step", "assert_same_weights", "reference_run"]
