"""A run's directory and checkpoints, and the stop signals that end a run with a checkpoint.

`RunStore` makes (or, on resume, reopens) the run directory, reads the checkpoint to resume from
and writes checkpoints atomically from the main rank. `StopFlag` turns SIGINT/SIGTERM into a
request the loop honours after the current step.
"""
from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from vaitrain.engine import dist
from vaitrain.engine.checkpoint import check_task, load_checkpoint, remove_partial_checkpoints, save_checkpoint
from vaitrain.errors import RunDirError
from vaitrain.track import rundir
from vaitrain.track.lock import RunLock

LAST = "last.pt"
BEST = "best.pt"


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop stops after the current step and writes last.pt."""

    def __init__(self) -> None:
        self.signum = 0

    def installed(self) -> ContextManager[None]:
        from vaitrain.interrupts import handling

        def handler(signum: int, _frame: Any) -> None:
            if self.signum and signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            # A repeated SIGTERM is the same request: SLURM signals every process of a job step
            # and torchrun forwards its own SIGTERM too; SIGKILL is the way to stop at once.
            self.signum = self.signum or signum

        return handling(handler)

    def agree(self) -> int:
        """The signal to stop on, the same on every rank: a signal that reached any rank stops all
        of them (one small CPU all-reduce per step when distributed); 0 for none."""
        return dist.agree_max(self.signum)


class RunStore:
    """One writer per run directory: the main rank holds its lock (track/lock.py) from open() to
    close(). A new run that fails or is stopped before its records open leaves no directory."""

    def __init__(self, ctx: dist.DistContext, resume_from: Path | None = None) -> None:
        self.ctx = ctx
        self.run_dir: Path | None = resume_from
        self.lock: RunLock | None = None
        self.created = False  # this store made the run directory (a new run)
        self._resumed_from: tuple[int, int] | None = None  # (size, mtime) of the last.pt read

    @property
    def folder(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / rundir.CKPT_DIR

    @property
    def last(self) -> Path:
        return self.folder / LAST

    def resume_state(self, task: str) -> dict[str, Any]:
        """The state to resume from (last.pt), refused when it was trained for another task."""
        stat = self.last.stat() if self.last.is_file() else None
        state = load_checkpoint(self.last, map_location="cpu")
        check_task(self.last, state, task)
        if stat is not None:
            self._resumed_from = (stat.st_size, stat.st_mtime_ns)
        return state

    def open(self, base: Path, *, model: str, data: str, name: str, dated: bool, config_yaml: str,
             overrides: list[str], device: torch.device, on_resume: Callable[[Path], None] | None = None) -> Path:
        """Only once everything is built and checked is anything written: a new run gets its
        directory (made and locked by rank 0, which tells the other ranks where it is, or the error
        on every rank); a resumed run's folder is locked first, then loses the temp files a killed
        save left, then `on_resume(run_dir)` records what this resume changed."""
        if self.run_dir is None:
            def make() -> Path:
                run = rundir.create_run_dir(base, model, data, name, dated=dated)
                try:
                    self.lock = RunLock(run).acquire()
                    rundir.write_run_files(run, config_yaml, overrides, device)
                except BaseException:  # e.g. the disk filled while writing config.yaml: no orphan
                    shutil.rmtree(run, ignore_errors=True)
                    self.close()
                    raise
                self.created = True
                return run

            self.run_dir = dist.on_main(make, self.ctx)
        else:
            def reopen() -> Path:
                assert self.run_dir is not None
                self.lock = RunLock(self.run_dir).acquire()
                self._check_unchanged()
                remove_partial_checkpoints(self.folder)
                if on_resume is not None:
                    on_resume(self.run_dir)
                return self.run_dir

            dist.on_main(reopen, self.ctx)
        return self.run_dir

    def _check_unchanged(self) -> None:
        """last.pt must still be the one read: another process may have written it meanwhile."""
        stat = self.last.stat() if self.last.is_file() else None
        if self._resumed_from is not None and (stat is None or (stat.st_size, stat.st_mtime_ns) != self._resumed_from):
            raise RunDirError(f"{self.last} changed while this resume started (another run wrote it); "
                              "run the same command again")

    def close(self) -> None:
        """Release the run directory (the lock; the kernel would at the process's end anyway)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def abandon(self) -> None:
        """Start-up failed or was interrupted before the run's records opened: a new run's
        directory holds only its config files, so it goes (no orphan); a resumed one is left as
        it was, apart from what on_resume recorded."""
        if self.created and self.run_dir is not None and self.ctx.is_main:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.close()

    def save(self, names: tuple[str, ...], state: dict[str, Any]) -> None:
        """The same state to each checkpoint named (in order), serialized once."""
        if self.ctx.is_main:
            first, *more = names
            save_checkpoint(self.folder / first, state, *(self.folder / name for name in more))
