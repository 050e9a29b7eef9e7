"""Timing primitives: per-step times (CUDA events on a GPU, perf_counter elsewhere) and their summary.

clock="process" (bench.clock=process, CPU only) times with time.process_time instead: the CPU
seconds of this process, which other programs on a shared machine do not inflate the way they
inflate wall-clock time (a wall-clock ratio read 1.42 where the CPU-time ratio was 1.006).

A step is timed alone: whatever runs `before` it (zero_grad) is outside the timed span. On CUDA the
host does not wait between steps; events recorded on the stream give each step's device time and
one synchronize at the end of a repeat makes them readable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], n: int, device: torch.device,
               before: Optional[Callable[[], object]] = None, clock: str = "wall") -> list[float]:
    """Run `step` n times and return each step's seconds; `before` runs untimed before each."""
    if device.type == "cuda":
        synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            if before is not None:
                before()
            starts[i].record()
            step()
            ends[i].record()
        synchronize(device)
        return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]
    now = CLOCKS[clock]
    times = []
    for _ in range(n):
        if before is not None:
            before()
        t0 = now()
        step()
        times.append(now() - t0)
    return times


def wall(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds `fn` takes, synchronized on both ends (CPU seconds with clock="process")."""
    now = CLOCKS[clock]
    synchronize(device)
    t0 = now()
    fn()
    synchronize(device)
    return now() - t0


@dataclass
class Timing:
    """Summary of timed repeats: img/s is the median over repeats of batch * steps / seconds."""

    img_s: float
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats_img_s: list[float]
    warmup_s: float = 0.0


def summarize(repeats: Sequence[Sequence[float]], batch: int, warmup_s: float = 0.0) -> Timing:
    """Per-repeat step times (seconds) -> Timing; step-time percentiles over every timed step."""
    per_repeat = [batch * len(r) / max(sum(r), 1e-12) for r in repeats]
    steps = np.asarray([t for r in repeats for t in r], dtype=float) * 1e3
    p10, med, p90 = np.percentile(steps, [10, 50, 90])
    return Timing(float(np.median(per_repeat)), float(med), float(p10), float(p90),
                  [float(v) for v in per_repeat], warmup_s)
