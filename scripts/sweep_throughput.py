"""Jobs per hour of a sweep run one job at a time (sweep.parallel=1, in this process) vs N at once
(sweep.parallel=N, child processes with cores/N... here 1 thread each), from sweep.json's start/end
records. Order A B B A; the two A runs' ratio is the A/A control (the noise of this machine).

    OMP_NUM_THREADS=1 python scripts/sweep_throughput.py [--parallel 2] [--jobs 4] [overrides...]

On a multi-GPU machine: pass trainer.device=cuda and --parallel <number of GPUs> (each job is pinned
to its own GPU); jobs/hour should scale close to the GPU count while the input pipeline per job
is not CPU-bound (watch `nvidia-smi` utilisation per GPU) — give each job a real size, e.g.
data=cifar10 trainer.epochs=5, so process start-up (~3 s) is small against the job.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from vaitrain.sweep import SWEEP_FILE, run_sweep

DEFAULT = ["model=resnet20", "model.width_mult=0.5", "data.num_train=1024", "data.num_val=256",
           "data.image_size=16", "trainer.batch_size=64", "trainer.epochs=2", "trainer.threads=1",
           "trainer.progress=none", "trainer.image_every=0"]


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one(parallel: int, jobs: int, overrides: list[str], out: Path) -> dict[str, float]:
    c0, t0 = cpu_seconds(), time.perf_counter()
    res = run_sweep([f"seed=range({jobs})", f"sweep.parallel={parallel}", *overrides], out_dir=out)
    wall = time.perf_counter() - t0
    doc = json.loads((res.sweep_dir / SWEEP_FILE).read_text())
    assert all(j["status"] == "completed" for j in doc["jobs"]), doc["jobs"]
    span = max(j["ended_at"] for j in doc["jobs"]) - min(j["started_at"] for j in doc["jobs"])
    return {"parallel": parallel, "jobs_per_hour": jobs / span * 3600, "span_s": span, "wall_s": wall,
            "cpu_s": cpu_seconds() - c0, "mean_job_s": sum(j["seconds"] for j in doc["jobs"]) / jobs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    overrides = [*DEFAULT, *args.overrides]
    print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, parallel in enumerate([1, args.parallel, args.parallel, 1]):
            row = one(parallel, args.jobs, overrides, Path(tmp) / str(i))
            rows.append(row)
            print(json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
    a = [r["jobs_per_hour"] for r in rows if r["parallel"] == 1]
    b = [r["jobs_per_hour"] for r in rows if r["parallel"] != 1]
    print(f"jobs/hour: parallel=1 {sum(a) / 2:.0f}, parallel={args.parallel} {sum(b) / 2:.0f}, "
          f"ratio {sum(b) / sum(a):.2f} (A/A control: {a[0] / a[1]:.2f}, B/B: {b[0] / b[1]:.2f}); "
          f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
