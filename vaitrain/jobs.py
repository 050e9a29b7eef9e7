"""Training jobs in other processes: N at once on this machine, or SLURM jobs through submitit.

A job is a `JobSpec` (its overrides, where its run directory goes, its name tag, and for a search
trial how to report to Optuna). `run_job(spec)` runs in the job's own process (a local child
started as `python -m vaitrain.jobs SPEC RESULT`, or a submitit job) and returns an outcome dict:
{"status", "run_dir", "metrics", "error", "signal"}. `run_jobs` keeps up to N jobs in flight:

- local: each child gets its own GPU (CUDA_VISIBLE_DEVICES, round robin over the visible ones) or,
  on the CPU, `cores / N` threads (trainer.threads, unless the job sets it). A child that crashes or
  is killed is recorded as failed (with its run directory, so it can be resumed) and the rest go on.
- slurm: submitit's AutoExecutor, logs under <folder>/logs/slurm/<job id>/; where `sbatch` is absent submitit
  runs the same job path locally (its LocalExecutor), which is how the tests run it.

Ctrl-C / SIGTERM: no job starts after it; the running ones get SIGTERM (the loop's own stop
request: they finish the step and write last.pt) and are waited for.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from vaitrain.errors import ConfigError, Interrupted

POLL_SECONDS = 0.2
LOGS_DIR = "logs"  # in the sweep/search folder: each job's output, spec and result (SLURM's under slurm/)


@dataclass
class JobSpec:
    overrides: list[str]
    out_dir: str  # the job's run directory is made inside (dated=False)
    name: str  # run-directory tag, e.g. job03 / trial0007
    env: dict[str, str] = field(default_factory=dict)  # set in the job's process before it trains
    trial: dict[str, Any] | None = None  # search trials: see vaitrain.search.trial_reporter


def missing_extra(module: str) -> ConfigError:
    return ConfigError(f"{module} is not installed; install the extra: pip install 'vaitrain[search]'")


# ----- inside the job's process -------------------------------------------------------------------
def run_job(spec: JobSpec | dict[str, Any], train_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Compose the job's config and train it (with `train_fn`, default vaitrain.engine.train); the
    outcome as a JSON-able dict (never raises for a failed run: a crash is an outcome too)."""
    if isinstance(spec, dict):
        spec = JobSpec(**spec)
    os.environ.update(spec.env)
    outcome: dict[str, Any] = {"status": "failed", "run_dir": None, "metrics": {}, "error": None, "signal": 0}
    try:
        from vaitrain.config import compose

        if train_fn is None:
            from vaitrain.engine import train as train_fn

        cfg = compose(spec.overrides)
        on_epoch = None
        if spec.trial is not None:
            from vaitrain.search import trial_reporter

            on_epoch = trial_reporter(spec.trial, cfg)
        run = train_fn(cfg, spec.overrides, out_dir=Path(spec.out_dir), dated=False, name=spec.name, on_epoch=on_epoch)
        outcome.update(status=run.status, run_dir=str(run.run_dir), metrics=dict(run.metrics),
                       signal=int(run.signal))
    except KeyboardInterrupt:
        outcome.update(status="stopped", error="interrupted", signal=int(signal.SIGINT))
    except Interrupted as err:  # a stop signal before training began (see _child_main)
        outcome.update(status="stopped", error=str(err), signal=int(err.signum))
    except Exception as err:  # one job's failure (even a bug) is its outcome
        outcome["error"] = one_line(err)
    if not outcome["run_dir"]:
        outcome["run_dir"] = find_run_dir(Path(spec.out_dir), spec.name)
    return outcome


def one_line(err: BaseException) -> str:
    from vaitrain.errors import VaitrainError

    text = " ".join(str(err).split())
    if isinstance(err, VaitrainError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def find_run_dir(folder: Path, tag: str) -> str | None:
    """The run directory a job made, found by its name tag (a crashed job returns no result).
    create_run_dir names it <time>-<model>-<data>-[<name>_]<tag>-<id>."""
    import re

    pattern = re.compile(rf"[-_]{re.escape(tag)}-[0-9a-f]+$")
    try:
        found = sorted(p for p in Path(folder).iterdir() if p.is_dir() and pattern.search(p.name))
    except OSError:
        return None
    return str(found[-1]) if found else None


def _child_main(spec_file: str, result_file: str) -> None:
    from vaitrain.track.files import write_text_atomic

    from vaitrain.interrupts import handling

    ended = [False]

    def handler(signum: int, _frame: Any) -> None:
        # before the loop's own handler: the job's outcome is "stopped" (not a death by the default
        # SIGTERM action); once the run has ended, a late request (the sweep's SIGTERM right after
        # the group's Ctrl-C) changes nothing and must not cost the result file
        if not ended[0]:
            raise Interrupted(f"stopped by {signal.Signals(signum).name} before training began", signum)

    spec = JobSpec(**json.loads(Path(spec_file).read_text()))
    with handling(handler):
        outcome = run_job(spec)
        ended[0] = True
        write_text_atomic(Path(result_file), json.dumps(outcome) + "\n")


# ----- the scheduler -------------------------------------------------------------------------------
@dataclass
class Running:
    spec: JobSpec
    key: Any  # the caller's handle for this job
    handle: Any  # subprocess.Popen or submitit.Job
    result_file: Path | None = None


class _StopRequest:
    """First SIGINT/SIGTERM: start no more jobs and ask the running ones to stop."""

    def __init__(self) -> None:
        self.signum = 0

    def installed(self) -> Any:
        from vaitrain.interrupts import handling

        def handler(signum: int, _frame: Any) -> None:
            self.signum = self.signum or signum

        return handling(handler)


def cpu_threads(parallel: int) -> int:
    return max(1, (os.cpu_count() or 1) // parallel)


def visible_gpus() -> list[str]:
    """The GPU ids jobs can be pinned to (respecting an outer CUDA_VISIBLE_DEVICES)."""
    import torch

    if not torch.cuda.is_available():
        return []
    outer = os.environ.get("CUDA_VISIBLE_DEVICES")
    if outer:
        return [g.strip() for g in outer.split(",") if g.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def place(spec: JobSpec, slot: int, parallel: int, gpus: list[str]) -> JobSpec:
    """Pin a local job: its GPU by slot, or its share of the CPU cores."""
    if gpus:
        spec.env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    elif not any(o.startswith("trainer.threads=") for o in spec.overrides):
        threads = cpu_threads(parallel)
        spec.overrides = [*spec.overrides, f"trainer.threads={threads}"]
        spec.env["OMP_NUM_THREADS"] = str(threads)
    return spec


class LocalLauncher:
    def __init__(self, parallel: int, folder: Path, uses_gpu: bool) -> None:
        self.parallel = parallel
        self.folder = folder
        self.gpus = visible_gpus() if uses_gpu else []
        self._slots: dict[int, Any] = {}

    def start(self, spec: JobSpec, key: Any) -> Running:
        slot = next(i for i in range(self.parallel) if i not in self._slots)
        spec = place(spec, slot, self.parallel, self.gpus)
        work = self.folder / LOGS_DIR
        work.mkdir(exist_ok=True)
        spec_file, result_file = work / f"{spec.name}.spec.json", work / f"{spec.name}.result.json"
        result_file.unlink(missing_ok=True)
        spec_file.write_text(json.dumps(asdict(spec)))
        env = {**os.environ, **spec.env}
        log = open(work / f"{spec.name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "vaitrain.jobs", str(spec_file), str(result_file)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self._slots[slot] = key
        running = Running(spec, key, proc, result_file)
        running.slot = slot  # type: ignore[attr-defined]
        return running

    def done(self, r: Running) -> bool:
        return r.handle.poll() is not None

    def outcome(self, r: Running) -> dict[str, Any]:
        self._slots.pop(r.slot, None)  # type: ignore[attr-defined]
        assert r.result_file is not None
        if r.result_file.is_file():
            return json.loads(r.result_file.read_text())
        code = r.handle.returncode
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        log = r.result_file.with_name(f"{r.spec.name}.log")
        return {"status": "failed", "run_dir": find_run_dir(Path(r.spec.out_dir), r.spec.name), "metrics": {},
                "error": f"the job's process ended without a result ({how}); its output: {log}", "signal": 0}

    def stop(self, r: Running) -> None:
        if r.handle.poll() is None:
            r.handle.send_signal(signal.SIGTERM)  # the loop's stop request: finish the step, last.pt


class SlurmLauncher:
    def __init__(self, folder: Path, slurm: Any, parallel: int, progress: Callable[[str], None] | None) -> None:
        try:
            import submitit
        except ImportError:
            raise missing_extra("submitit") from None
        cluster = None if shutil.which("sbatch") else "local"
        if cluster and progress:
            progress("no sbatch on this machine: submitit runs the jobs here (its local executor)")
        self.executor = submitit.AutoExecutor(folder=str(folder / LOGS_DIR / "slurm" / "%j"), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": int(slurm.timeout_min), "gpus_per_node": int(slurm.gpus_per_job),
                                  "cpus_per_task": int(slurm.cpus_per_job), "name": "vaitrain"}
        if slurm.mem_gb:
            params["mem_gb"] = int(slurm.mem_gb)
        for key in ("partition", "account", "qos", "constraint"):
            if slurm[key]:
                params[f"slurm_{key}"] = str(slurm[key])
        if cluster == "local":  # submitit's local executor knows only the generic parameters
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        self.executor.update_parameters(**params)
        self.parallel = parallel

    def start(self, spec: JobSpec, key: Any) -> Running:
        return Running(spec, key, self.executor.submit(run_job, asdict(spec)))

    def done(self, r: Running) -> bool:
        return bool(r.handle.done())

    def outcome(self, r: Running) -> dict[str, Any]:
        try:
            return dict(r.handle.result())
        except Exception as err:  # the job died (timeout, node failure, cancel)
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            return {"status": "failed", "run_dir": find_run_dir(Path(r.spec.out_dir), r.spec.name), "metrics": {},
                    "error": f"SLURM job {r.handle.job_id}: {first.strip()[:200]}", "signal": 0}

    def stop(self, r: Running) -> None:
        r.handle.cancel(check=False)  # scancel: SIGTERM to the job, whose loop writes last.pt


def check_launcher(launch_cfg: Any) -> None:
    """Before anything is written: the launcher's library is there (one line naming the extra), and
    local jobs at once are no more than the cores (sweep.parallel=999 started 999 processes)."""
    parallel = int(launch_cfg.parallel)
    from vaitrain.process_env import usable_cores

    cores = usable_cores()
    if str(launch_cfg.launcher) == "local" and parallel > 4 * cores:  # a few more than cores can still pay
        key = "search" if "trials" in launch_cfg else "sweep"
        raise ConfigError(f"{key}.parallel={parallel} runs {parallel} jobs at once on this machine, which has {cores} "
                          f"CPU cores: use {key}.parallel <= {cores} (or {key}.launcher=slurm)")
    if str(launch_cfg.launcher) == "slurm":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise missing_extra("submitit") from None


def make_launcher(launch_cfg: Any, folder: Path, uses_gpu: bool, progress: Callable[[str], None] | None = None) -> Any:
    if str(launch_cfg.launcher) == "slurm":
        return SlurmLauncher(folder, launch_cfg.slurm, int(launch_cfg.parallel), progress)
    return LocalLauncher(int(launch_cfg.parallel), folder, uses_gpu)


def run_jobs(
    launcher: Any,
    next_job: Callable[[], tuple[Any, JobSpec] | None],
    on_start: Callable[[Any, Running], None],
    on_done: Callable[[Any, dict[str, Any]], None],
) -> int:
    """Keep up to launcher.parallel jobs running until next_job() returns None and all are done.
    Returns the stop signal's number when SIGINT/SIGTERM ended it early (0 otherwise)."""
    stop = _StopRequest()
    running: list[Running] = []
    exhausted = False
    with stop.installed():
        while True:
            while not stop.signum and not exhausted and len(running) < launcher.parallel:
                job = next_job()
                if job is None:
                    exhausted = True
                    break
                key, spec = job
                r = launcher.start(spec, key)
                running.append(r)
                on_start(key, r)
            if not running:
                break
            if stop.signum and not getattr(stop, "forwarded", False):
                for r in running:
                    launcher.stop(r)
                stop.forwarded = True  # type: ignore[attr-defined]
            time.sleep(POLL_SECONDS)
            for r in [r for r in running if launcher.done(r)]:
                running.remove(r)
                outcome = launcher.outcome(r)
                if outcome.get("signal"):  # a job stopped by Ctrl-C/SIGTERM (the in-process one): stop all
                    stop.signum = stop.signum or int(outcome["signal"])
                on_done(r.key, outcome)
    return stop.signum


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
