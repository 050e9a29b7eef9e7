"""Sweeps: the Cartesian product of Hydra sweep overrides, one run directory per job.

Every job is composed and validated before the first starts, so a typo in one value fails with
nothing written. The jobs run one after another in this process under one sweep directory
<out_dir>/<date>/<time>-sweep-<id>/ whose sweep.json records each job's status as it finishes.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig

from vaitrain.config import compose, expand_sweep
from vaitrain.errors import ConfigError, RunDirError, VaitrainError
from vaitrain.track.files import write_text_atomic
from vaitrain.track.rundir import check_writable

SWEEP_FILE = "sweep.json"

TrainFn = Callable[..., Any]  # train(cfg, overrides, *, out_dir, dated, name) -> RunResult
Progress = Callable[[str], None]


@dataclass
class SweepJob:
    index: int
    overrides: list[str]
    status: str = "pending"  # pending | running | completed | stopped | failed | interrupted
    run_dir: str | None = None  # relative to the sweep directory
    error: str | None = None
    seconds: float | None = None


@dataclass
class SweepResult:
    sweep_dir: Path
    overrides: list[str]
    jobs: list[SweepJob] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C stopped a job; the jobs after it did not run

    @property
    def run_dirs(self) -> list[Path]:
        """The jobs' run directories that exist, in job order."""
        return [self.sweep_dir / j.run_dir for j in self.jobs if j.run_dir and (self.sweep_dir / j.run_dir).is_dir()]

    @property
    def failed(self) -> list[SweepJob]:
        return [j for j in self.jobs if j.status == "failed"]


def plan_sweep(overrides: Sequence[str]) -> list[tuple[list[str], DictConfig]]:
    """Every job's overrides and composed, validated config; raises ConfigError on the first bad one."""
    if any(o.split("=", 1)[0].lstrip("+~") == "resume" for o in overrides):
        raise ConfigError("resume= continues one run: use it without -m/--multirun")
    jobs = expand_sweep(overrides)
    planned = []
    for job in jobs:
        try:
            cfg = compose(job)
        except ConfigError as err:
            if len(jobs) == 1:
                raise
            raise ConfigError(f"sweep job {' '.join(job)}: {err}") from None
        if int(cfg.trainer.devices) > 1:  # the jobs run in this process, one after another
            raise ConfigError("a sweep runs its jobs in one process: drop trainer.devices (>1) with -m")
        planned.append((job, cfg))
    return planned


def _create_sweep_dir(out_dir: Path) -> Path:
    check_writable(out_dir)
    now = _dt.datetime.now()
    day = Path(out_dir) / now.strftime("%Y-%m-%d")
    for _ in range(100):
        path = day / f"{now.strftime('%H-%M-%S')}-sweep-{secrets.token_hex(3)}"
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        except OSError as err:
            raise RunDirError(f"cannot create sweep directory '{path}': {err.strerror or err}") from None
        return path
    raise RunDirError(f"could not find a free sweep directory name under {day}")


def _write(result: SweepResult, started: str) -> None:
    doc = {
        "overrides": result.overrides,
        "started": started,
        "jobs": [asdict(j) for j in result.jobs],
    }
    write_text_atomic(result.sweep_dir / SWEEP_FILE, json.dumps(doc, indent=2) + "\n")


def _job_dir(sweep_dir: Path, tag: str) -> str | None:
    """The run directory a job made, found by its name tag (a failed job returns no result)."""
    # create_run_dir names it <time>-<model>-<data>-[<name>_]<tag>-<id> (its slug turns '-' into '_')
    pattern = re.compile(rf"[-_]{tag}-[0-9a-f]+$")
    found = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and pattern.search(p.name))
    return found[-1] if found else None


def _relative(run_dir: Any, sweep_dir: Path) -> str | None:
    if not run_dir:
        return None
    run_dir = Path(run_dir)
    return run_dir.name if run_dir.parent.resolve() == sweep_dir.resolve() else str(run_dir)


def _stop_after(result: SweepResult, job: SweepJob) -> None:
    result.interrupted = True
    for later in result.jobs[job.index + 1:]:
        later.status = "interrupted"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, VaitrainError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run_sweep(
    overrides: Sequence[str],
    *,
    train_fn: TrainFn | None = None,
    out_dir: Path | str | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Run every job of the sweep; a failing job is recorded in sweep.json and the rest go on.

    `out_dir` defaults to the composed config's out_dir (the same for every job); `progress`
    gets one line as each job starts and ends (the CLI prints them). `train_fn` defaults to
    vaitrain.engine.train, imported once every job has been composed."""
    import time

    planned = plan_sweep(overrides)
    if train_fn is None:
        from vaitrain.engine import train as train_fn
    if out_dir is None:
        dirs = {str(cfg.out_dir) for _, cfg in planned}
        if len(dirs) > 1:
            raise ConfigError("out_dir cannot be swept: give one out_dir for the whole sweep")
        out_dir = dirs.pop()
    sweep_dir = _create_sweep_dir(Path(out_dir))
    result = SweepResult(sweep_dir, list(overrides), [SweepJob(i, job) for i, (job, _) in enumerate(planned)])
    started = _dt.datetime.now().isoformat(timespec="seconds")
    _write(result, started)
    common = set.intersection(*(set(j.overrides) for j in result.jobs)) if len(result.jobs) > 1 else set()
    for job, (job_overrides, cfg) in zip(result.jobs, planned):
        tag = f"job{job.index:02d}"
        name = f"{cfg.name}-{tag}" if cfg.get("name") else tag
        job.status = "running"
        _write(result, started)
        if progress:  # only the swept values: the rest is the same for every job
            swept = [o for o in job_overrides if o not in common] or job_overrides
            progress(f"sweep job {job.index + 1}/{len(result.jobs)}: {' '.join(swept)}")
        t0 = time.perf_counter()
        try:
            run = train_fn(cfg, job_overrides, out_dir=sweep_dir, dated=False, name=name)
        except KeyboardInterrupt:
            job.status, job.run_dir = "interrupted", _job_dir(sweep_dir, tag)
            _stop_after(result, job)
            _write(result, started)
            raise
        except Exception as err:  # one job's failure (even a bug) must not end the sweep
            job.status, job.error = "failed", _one_line(err)
            job.run_dir = _job_dir(sweep_dir, tag)
        else:
            job.status = str(getattr(run, "status", "completed"))
            job.run_dir = _relative(getattr(run, "run_dir", None), sweep_dir) or _job_dir(sweep_dir, tag)
            if getattr(run, "signal", 0):  # Ctrl-C/SIGTERM stopped this job: stop the sweep too
                _stop_after(result, job)
        job.seconds = round(time.perf_counter() - t0, 3)
        _write(result, started)
        if progress and job.status == "failed":
            progress(f"sweep job {job.index + 1}/{len(result.jobs)} failed: {job.error}")
        if result.interrupted:
            break
    return result
