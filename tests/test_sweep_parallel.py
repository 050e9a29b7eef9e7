"""sweep.parallel=N (issue 15): jobs in child processes at once, the same results as one after another;
a killed job recorded while the others go on; Ctrl-C stops all with last.pt; the sweep resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from vaitrain.compare import load_run
from vaitrain.errors import ConfigError
from vaitrain.sweep import SWEEP_FILE, run_sweep

TINY = ["data.num_train=64", "data.num_val=32", "data.image_size=16", "trainer.batch_size=32", "model=resnet20",
        "model.width_mult=0.25", "trainer.threads=1", "trainer.progress=none", "trainer.image_every=0", "optim=sgd"]


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _doc(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / SWEEP_FILE).read_text())


def _final(run_dir: Path) -> dict[str, Any]:
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]


def test_parallel_jobs_overlap_and_equal_the_sequential_results(tmp_path: Path) -> None:
    args = ["seed=0,1,2,3", "trainer.epochs=1", *TINY]
    seq = run_sweep(args, out_dir=tmp_path / "seq")
    par = run_sweep([*args, "sweep.parallel=2"], out_dir=tmp_path / "par")
    assert [j.status for j in par.jobs] == ["completed"] * 4
    # at most 2 at once, and the jobs did run side by side (from sweep.json's start/end records)
    spans = [(j["started_at"], j["ended_at"]) for j in _doc(par.sweep_dir)["jobs"]]
    def overlap(a: tuple, b: tuple) -> bool:  # noqa: E306
        return a[0] < b[1] and b[0] < a[1]
    assert overlap(spans[0], spans[1]) and overlap(spans[2], spans[3])
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 2  # never 3 at once
    # same seeds -> the same metrics as the sequential sweep (each job had 1 thread both times)
    for a, b in zip(seq.jobs, par.jobs):
        fa, fb = _final(seq.sweep_dir / a.run_dir), _final(par.sweep_dir / b.run_dir)
        assert fa["val/loss"] == pytest.approx(fb["val/loss"], rel=1e-6, abs=1e-7)
        assert fa["val/acc1"] == fb["val/acc1"] and fa["train/loss"] == pytest.approx(fb["train/loss"], rel=1e-6)
    # the job's records are a normal run's: compare-runs reads them
    assert load_run(par.sweep_dir / par.jobs[0].run_dir).status == "completed"


def _child_pid(tag: str) -> int | None:
    """The pid of the child process running the sweep job `tag` (its command line names its spec)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"vaitrain.jobs" in cmd and any(c.endswith(f"{tag}.spec.json".encode()) for c in cmd):
                return int(proc.name)
    return None


def _wait_for(predicate: Any, proc: subprocess.Popen, what: str) -> Any:
    deadline = time.time() + 180
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_job_is_recorded_ctrl_c_stops_all_and_the_sweep_resumes(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    epochs = 4
    proc = subprocess.Popen([sys.executable, "-m", "vaitrain", "train", "-m", "seed=0,1,2", "sweep.parallel=2",
                             f"trainer.epochs={epochs}", *TINY, "data.num_train=256", f"out_dir={out}"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)

    def checkpointed(tag: str) -> Path | None:
        found = [p for p in out.glob(f"*/*-sweep-*/*{tag}-*") if (p / "checkpoints" / "last.pt").is_file()]
        return found[0] if found else None

    # SIGKILL job00's process after its first checkpoint: recorded as failed, the sweep goes on
    killed_dir = _wait_for(lambda: checkpointed("job00"), proc, "job00's first checkpoint")
    os.kill(_wait_for(lambda: _child_pid("job00"), proc, "job00's pid"), signal.SIGKILL)
    # job02 takes the free slot; once it has a checkpoint, Ctrl-C (SIGINT to the whole group)
    _wait_for(lambda: checkpointed("job02"), proc, "job02's first checkpoint")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err.decode()[-2000:]
    (sweep_dir,) = out.glob("*/*-sweep-*")
    assert f"continue with: vaitrain train -m resume={sweep_dir}" in err.decode()
    jobs = _doc(sweep_dir)["jobs"]
    assert jobs[0]["status"] == "failed" and "SIGKILL" in jobs[0]["error"]
    assert jobs[0]["run_dir"] == killed_dir.name
    assert jobs[1]["status"] in ("completed", "stopped") and jobs[2]["status"] == "stopped"
    for job in jobs:
        assert (sweep_dir / job["run_dir"] / "checkpoints" / "last.pt").is_file()
    assert _final(sweep_dir / jobs[2]["run_dir"])["status"] == "stopped"

    # resume (one at a time, in this process): completed skipped, killed/stopped continue from last.pt
    before = {j["run_dir"]: (sweep_dir / j["run_dir"] / "metrics.jsonl").read_text() for j in jobs}
    res = run_sweep([f"resume={sweep_dir}", "sweep.parallel=1"])
    assert [j.status for j in res.jobs] == ["completed"] * 3
    for job in res.jobs:
        run_dir = sweep_dir / job.run_dir
        assert job.run_dir in before  # the same run directories, no new ones
        records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records if r["kind"] == "epoch"] == list(range(1, epochs + 1))
    if jobs[1]["status"] == "completed":  # a completed job was not run again
        assert (sweep_dir / jobs[1]["run_dir"] / "metrics.jsonl").read_text() == before[jobs[1]["run_dir"]]


def test_resume_takes_only_sweep_settings(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    (sweep_dir / SWEEP_FILE).write_text(json.dumps({"overrides": ["seed=1,2"], "started": "", "jobs": [
        {"index": 0, "overrides": ["seed=1"], "status": "completed"}]}))
    with pytest.raises(ConfigError, match="only sweep"):
        run_sweep([f"resume={sweep_dir}", "optim=adam"])
    assert run_sweep([f"resume={sweep_dir}"]).jobs[0].status == "completed"  # nothing left to run


def test_sweep_settings_cannot_be_swept(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sweep.*one value"):
        run_sweep(["seed=1,2", "sweep.parallel=1,2"], out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_each_job_is_pinned_to_a_gpu_or_a_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from vaitrain.jobs import JobSpec, place, visible_gpus

    on_gpus = [place(JobSpec(["seed=1"], "o", f"job{i}"), slot, 3, ["4", "6"]) for i, slot in enumerate((0, 1, 2))]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in on_gpus] == ["4", "6", "4"]  # round robin over the GPUs
    assert all(s.overrides == ["seed=1"] for s in on_gpus)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    on_cpu = place(JobSpec(["seed=1"], "o", "job0"), 0, 2, [])
    assert on_cpu.overrides == ["seed=1", "trainer.threads=4"] and on_cpu.env == {"OMP_NUM_THREADS": "4"}
    mine = place(JobSpec(["trainer.threads=1"], "o", "job0"), 0, 2, [])
    assert mine.overrides == ["trainer.threads=1"]  # the user's own setting wins
    # an outer CUDA_VISIBLE_DEVICES (e.g. SLURM's) is what jobs are spread over
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]


def test_missing_submitit_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ConfigError, match=r"submitit is not installed; install the extra: pip install 'vaitrain\[search\]'"):
        run_sweep(["seed=1,2", "sweep.launcher=slurm", *TINY], out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()  # refused before anything is written


def _job_signalled_before_training(spec_file: str, result_file: str) -> None:
    """A job process whose stop request arrives while it composes its config (before the loop)."""
    from vaitrain import config, jobs

    real = config.compose

    def compose(*a: Any, **kw: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)

    config.compose = compose  # type: ignore[assignment]
    jobs._child_main(spec_file, result_file)


def _job_signalled_after_its_loop(spec_file: str, result_file: str) -> None:
    """A job process whose stop request arrives after its training loop, as the sweep's SIGTERM
    does right after the group's Ctrl-C stopped the loop (CI lost this race once)."""
    from vaitrain import jobs
    from vaitrain.engine.records import Records

    real = Records.final

    def final(self: Any, **kw: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered here, between the loop and the final record
        return real(self, **kw)

    Records.final = final  # type: ignore[method-assign]
    jobs._child_main(spec_file, result_file)


@pytest.mark.parametrize("when", ["after_the_loop", "before_training"])
def test_a_late_or_early_stop_request_gives_a_job_result_not_a_death(tmp_path: Path, when: str) -> None:
    import multiprocessing
    from dataclasses import asdict

    from vaitrain.jobs import JobSpec

    spec = JobSpec([*TINY, "trainer.epochs=1"], str(tmp_path), "job00")
    spec_file, result_file = tmp_path / "spec.json", tmp_path / "result.json"
    spec_file.write_text(json.dumps(asdict(spec)))
    ctx = multiprocessing.get_context("fork")
    target = _job_signalled_after_its_loop if when == "after_the_loop" else _job_signalled_before_training
    proc = ctx.Process(target=target, args=(str(spec_file), str(result_file)))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0, f"the job's process died (exit {proc.exitcode}) instead of writing its result"
    outcome = json.loads(result_file.read_text())
    if when == "after_the_loop":  # the run trained to its end: the late request changes nothing
        assert outcome["status"] == "completed" and load_run(outcome["run_dir"]).status == "completed"
    else:
        assert outcome["status"] == "stopped" and outcome["signal"] == signal.SIGTERM, outcome
