"""Sweeps: the Cartesian product of Hydra sweep overrides, one run directory per job.

Every job is composed and validated before the first starts, so a typo in one value fails with
nothing written. The jobs run under one sweep directory <out_dir>/<date>/<time>-sweep-<id>/ whose
sweep.json records each job's status as it starts and ends: one after another in this process
(sweep.parallel=1), N at once in child processes (sweep.parallel=N), or as SLURM jobs
(sweep.launcher=slurm; see vaitrain.jobs). `resume=<sweep dir>` continues a sweep: completed jobs
are skipped, stopped or killed ones resume from their last.pt, the others start.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from vaitrain.config import GROUPS, compose, expand_sweep
from vaitrain.errors import ConfigError, Interrupted, RunDirError
from vaitrain.file_kinds import NotRegularFile, read_text, special_kind
from vaitrain.jobs import JobSpec, check_launcher, find_run_dir, make_launcher, one_line, run_jobs
from vaitrain.track.lock import FolderLock
from vaitrain.track.files import write_text_atomic
from vaitrain.track.rundir import CKPT_DIR, check_writable, create_unique_dir

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
    started_at: float | None = None  # wall-clock (time.time()) of its start and end: overlaps show
    ended_at: float | None = None


@dataclass
class SweepResult:
    sweep_dir: Path
    overrides: list[str]
    jobs: list[SweepJob] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C stopped a job; the jobs after it did not run
    signal: int = 0  # the signal that stopped it (SIGINT 2, SIGTERM 15), when known

    @property
    def run_dirs(self) -> list[Path]:
        """The jobs' run directories that exist, in job order."""
        return [self.sweep_dir / j.run_dir for j in self.jobs if j.run_dir and (self.sweep_dir / j.run_dir).is_dir()]

    @property
    def failed(self) -> list[SweepJob]:
        return [j for j in self.jobs if j.status == "failed"]


def _compose_jobs(jobs: list[list[str]]) -> list[tuple[list[str], DictConfig]]:
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
    if len({OmegaConf.to_yaml(cfg.sweep) for _, cfg in planned}) > 1:
        raise ConfigError("sweep.* says how the whole sweep runs: give it one value, not a list")
    return planned


def plan_sweep(overrides: Sequence[str]) -> list[tuple[list[str], DictConfig]]:
    """Every job's overrides and composed, validated config; raises ConfigError on the first bad one."""
    if any(o.split("=", 1)[0].lstrip("+~") == "resume" for o in overrides):
        raise ConfigError("resume= continues one run: use it without -m/--multirun "
                          "(with -m it continues a sweep: resume=<sweep folder holding sweep.json>)")
    return _compose_jobs(expand_sweep(overrides))


def _create_sweep_dir(out_dir: Path) -> Path:
    check_writable(out_dir)
    now = _dt.datetime.now()
    return create_unique_dir(Path(out_dir) / now.strftime("%Y-%m-%d"), f"{now.strftime('%H-%M-%S')}-sweep", "sweep")


def _write(result: SweepResult, started: str) -> None:
    doc = {
        "overrides": result.overrides,
        "started": started,
        "jobs": [asdict(j) for j in result.jobs],
    }
    write_text_atomic(result.sweep_dir / SWEEP_FILE, json.dumps(doc, indent=2) + "\n")


def _relative(run_dir: Any, sweep_dir: Path) -> str | None:
    if not run_dir:
        return None
    run_dir = Path(run_dir)
    return run_dir.name if run_dir.parent.resolve() == sweep_dir.resolve() else str(run_dir)


def _stop_after(result: SweepResult, job: SweepJob) -> None:
    result.interrupted = True
    for later in result.jobs[job.index + 1:]:
        later.status = "interrupted"


def _is_resume(overrides: Sequence[str]) -> Path | None:
    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "resume"]
    # a sweep.json that is a FIFO or device is a sweep folder too: plan_resume refuses to read it
    if given and ((Path(given[-1]) / SWEEP_FILE).is_file() or special_kind(Path(given[-1]) / SWEEP_FILE)):
        return Path(given[-1])
    return None


def plan_resume(sweep_dir: Path, extra: Sequence[str]) -> tuple[SweepResult, str, list[tuple[list[str], DictConfig]]]:
    """A stopped sweep's jobs still to run, each composed: a job with a last.pt resumes from it."""
    from vaitrain.engine.resume import resume_overrides

    others = [o for o in extra if o.split("=", 1)[0] != "resume"]
    bad = [o for o in others if not o.split("=", 1)[0].startswith("sweep.")]
    if bad:
        raise ConfigError(f"'{bad[0]}': resuming a sweep runs its jobs as they were; only sweep.* "
                          "(e.g. sweep.parallel=2) may be given with resume=")
    try:
        doc = json.loads(read_text(sweep_dir / SWEEP_FILE))
        jobs = [SweepJob(**j) for j in doc["jobs"]]
        # an edited or cut sweep.json: no jobs said 'sweep: 0 jobs' and exit 0; a repeated or renumbered
        # job ran twice; overrides that are no list of text were a TypeError traceback
        if not jobs:
            raise ValueError("it lists no jobs")
        if [job.index for job in jobs] != list(range(len(jobs))):
            raise ValueError(f"its jobs are numbered {[job.index for job in jobs][:6]}, not 0..{len(jobs) - 1} in order")
        overrides = doc.get("overrides", [])
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ValueError("its overrides are not a list of text")
        for job in jobs:
            if isinstance(job.overrides, list) and any(str(o).split("=", 1)[0] == "resume" for o in job.overrides):
                raise ValueError(f"job {job.index} holds a resume= override, which vaitrain never writes there")  # as vaitrain writes them: overrides as text, a run_dir inside the sweep folder
            if not isinstance(job.overrides, list) or not all(isinstance(o, str) for o in job.overrides) \
                    or not isinstance(job.status, str) or not isinstance(job.run_dir, (str, type(None))):
                raise ValueError(f"job {job.index} is not as vaitrain writes it")
            if job.run_dir and not (sweep_dir / job.run_dir).resolve().is_relative_to(sweep_dir.resolve()):
                raise ValueError(f"job {job.index}'s run_dir {job.run_dir} is outside the sweep folder")
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as err:
        reason = err.strerror if isinstance(err, NotRegularFile) else err
        raise RunDirError(f"cannot read {sweep_dir / SWEEP_FILE} ({reason}); is it a vaitrain sweep folder?") from None
    result = SweepResult(sweep_dir, list(doc.get("overrides", [])), jobs)
    todo = []
    for job in jobs:
        if job.status == "completed":
            continue
        run_dir = sweep_dir / job.run_dir if job.run_dir else None
        if run_dir is not None and (run_dir / CKPT_DIR / "last.pt").is_file():
            todo.append(resume_overrides(run_dir, list(others)))
        else:
            job.run_dir = None
            todo.append([*job.overrides, *others])
    planned = _compose_jobs(todo) if todo else []
    started = str(doc.get("started", ""))
    return result, started, planned


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
    vaitrain.engine.train, imported once every job has been composed; it is used when the jobs
    run in this process (sweep.parallel=1, sweep.launcher=local). With resume=<sweep dir> the
    sweep's unfinished jobs run (see plan_resume)."""
    sweep_dir = _is_resume(overrides)
    if sweep_dir is not None:
        # one process per sweep folder: two resumes at once (or a resume of a sweep still running)
        # ran the same jobs twice and overwrote each other's sweep.json
        lock = _lock(sweep_dir)
        try:
            result, started, planned = plan_resume(sweep_dir, overrides)
            pending = [j for j in result.jobs if j.status != "completed"]
            settings = compose([*(pending[0].overrides if pending else []),
                                *[o for o in overrides if o.startswith("sweep.")]]).sweep
            check_launcher(settings)
        except BaseException:
            lock.release()
            raise
    else:
        planned = plan_sweep(overrides)
        settings = planned[0][1].sweep
        check_launcher(settings)  # before the sweep folder is made
        if out_dir is None:
            dirs = {str(cfg.out_dir) for _, cfg in planned}
            if len(dirs) > 1:
                raise ConfigError("out_dir cannot be swept: give one out_dir for the whole sweep")
            out_dir = dirs.pop()
        sweep_dir = _create_sweep_dir(Path(out_dir))
        lock = _lock(sweep_dir)
        result = SweepResult(sweep_dir, list(overrides), [SweepJob(i, job) for i, (job, _) in enumerate(planned)])
        pending = list(result.jobs)
        started = _dt.datetime.now().isoformat(timespec="seconds")
    try:
        _run_pending(result, started, pending, planned, settings, train_fn, progress)
    finally:
        lock.release()
    return result


def _lock(sweep_dir: Path) -> FolderLock:
    """One process per sweep folder: two resumes at once (or a resume of a sweep still running) ran the
    same jobs twice, and each rewrote sweep.json over the other's."""
    return FolderLock(sweep_dir, name="sweep folder", busy=(
        f"sweep folder '{sweep_dir}' is in use by another `vaitrain train -m` (the sweep still running, or "
        "a resume of it): wait for it to end or stop it (Ctrl-C, kill -TERM), then resume"))


def _run_pending(result: SweepResult, started: str, pending: list[SweepJob], planned: list, settings: DictConfig,
                 train_fn: TrainFn | None, progress: Progress | None) -> None:
    for job in pending:
        job.status, job.error, job.seconds, job.started_at, job.ended_at = "pending", None, None, None, None
    _write(result, started)
    if not pending:
        return
    in_process = int(settings.parallel) == 1 and str(settings.launcher) == "local"
    try:
        if in_process:
            _run_in_process(result, started, list(zip(pending, planned)), train_fn, progress)
        else:
            _run_in_processes(result, started, list(zip(pending, planned)), settings, progress)
    except Interrupted as err:  # a stop signal outside a training loop (a job's start-up, between jobs)
        result.interrupted, result.signal = True, result.signal or int(err.signum)
        for job in result.jobs:  # sweep.json said 'running' for a job no process was running any more
            if job.status in ("pending", "running"):
                job.status = "interrupted"
        _write(result, started)


def _swept(result: SweepResult, job: SweepJob) -> list[str]:
    """The job's overrides that differ between the jobs (the rest is the same for every job)."""
    common = set.intersection(*(set(j.overrides) for j in result.jobs)) if len(result.jobs) > 1 else set()
    return [o for o in job.overrides if o not in common] or job.overrides


def _announce(result: SweepResult, job: SweepJob, progress: Progress | None) -> None:
    if progress:
        progress(f"sweep job {job.index + 1}/{len(result.jobs)}: {' '.join(_swept(result, job))}")


def _tag(job: SweepJob, cfg: DictConfig, swept: Sequence[str] = ()) -> tuple[str, str]:
    """(the tag that finds the job's run directory, its name): the name carries the swept values
    before the tag, so run directories and TensorBoard's run list read `sgd_group_job01`
    (`model.act=relu` -> `act_relu`), cut to fit the run directory name."""
    tag = f"job{job.index:02d}"
    values = "_".join(v if k in GROUPS else f"{k.rsplit('.', 1)[-1]}_{v}"  # optim=sgd -> sgd, seed=1 -> seed_1
                      for k, _, v in (o.lstrip("+~").partition("=") for o in swept if "=" in o))
    prefix = f"{cfg.name}-" if cfg.get("name") else ""
    room = 40 - len(prefix) - len(tag) - 1  # run directory names keep 40 characters of the name
    values = "".join(c if c.isalnum() or c in "_." else "_" for c in values)[:max(room, 0)].strip("_.")
    return tag, prefix + (f"{values}_{tag}" if values else tag)


def _run_in_process(result: SweepResult, started: str, work: list[tuple[SweepJob, tuple[list[str], DictConfig]]],
                    train_fn: TrainFn | None, progress: Progress | None) -> None:
    import time

    if train_fn is None:
        from vaitrain.engine import train as train_fn
    sweep_dir = result.sweep_dir
    for job, (job_overrides, cfg) in work:
        tag, name = _tag(job, cfg, _swept(result, job))
        job.status, job.started_at = "running", time.time()
        _write(result, started)
        _announce(result, job, progress)
        t0 = time.perf_counter()
        try:
            run = train_fn(cfg, job_overrides, out_dir=sweep_dir, dated=False, name=name)
        except KeyboardInterrupt:
            job.status, job.run_dir = "interrupted", job.run_dir or _found(sweep_dir, tag)
            _stop_after(result, job)
            _write(result, started)
            raise
        except Interrupted:  # a stop signal in the job's start-up (`train -m` turns one into this): not a failure
            job.run_dir = job.run_dir or _found(sweep_dir, tag)
            raise
        except Exception as err:  # one job's failure (even a bug) must not end the sweep
            job.status, job.error = "failed", one_line(err)
            job.run_dir = job.run_dir or _found(sweep_dir, tag)
        else:
            job.status = str(getattr(run, "status", "completed"))
            job.run_dir = _relative(getattr(run, "run_dir", None), sweep_dir) or _found(sweep_dir, tag)
            if getattr(run, "signal", 0):  # Ctrl-C/SIGTERM stopped this job: stop the sweep too
                _stop_after(result, job)
                result.signal = int(run.signal)
        job.seconds, job.ended_at = round(time.perf_counter() - t0, 3), time.time()
        _write(result, started)
        if progress and job.status == "failed":
            progress(f"sweep job {job.index + 1}/{len(result.jobs)} failed: {job.error}")
        if result.interrupted:
            break


def _found(sweep_dir: Path, tag: str) -> str | None:
    found = find_run_dir(sweep_dir, tag)
    return Path(found).name if found else None


def _run_in_processes(result: SweepResult, started: str, work: list[tuple[SweepJob, tuple[list[str], DictConfig]]],
                      settings: DictConfig, progress: Progress | None) -> None:
    """sweep.parallel=N / sweep.launcher=slurm: each job in its own process (vaitrain.jobs)."""
    import time

    sweep_dir = result.sweep_dir
    uses_gpu = any(str(cfg.trainer.device) != "cpu" for _, (_, cfg) in work)
    launcher = make_launcher(settings, sweep_dir, uses_gpu, progress)
    queue = list(work)
    t0: dict[int, float] = {}

    def next_job() -> tuple[SweepJob, JobSpec] | None:
        if not queue:
            return None
        job, (job_overrides, cfg) = queue.pop(0)
        _, name = _tag(job, cfg, _swept(result, job))
        return job, JobSpec(list(job_overrides), str(sweep_dir), name)

    def on_start(job: SweepJob, _running: object) -> None:
        job.status, job.started_at = "running", time.time()
        t0[job.index] = time.perf_counter()
        _write(result, started)
        _announce(result, job, progress)

    def on_done(job: SweepJob, outcome: dict) -> None:
        job.status = str(outcome["status"])
        job.error = outcome.get("error") if job.status == "failed" else None
        job.run_dir = _relative(outcome.get("run_dir"), sweep_dir) or job.run_dir
        job.seconds, job.ended_at = round(time.perf_counter() - t0[job.index], 3), time.time()
        _write(result, started)
        if progress and job.status == "failed":
            progress(f"sweep job {job.index + 1}/{len(result.jobs)} failed: {job.error}")

    signum = run_jobs(launcher, next_job, on_start, on_done)
    if signum:
        result.interrupted, result.signal = True, int(signum)
        for job, _ in queue:
            job.status = "interrupted"
        _write(result, started)
