"""A one-line hint when CPU training is oversubscribed.

torch starts one intra-op thread per core in every process. On a busy machine those threads
fight for the cores and an epoch can run several times slower than with one thread (measured on
a shared 2-core machine: 341.6 s vs 51.7 s for the same epoch), so a run on the CPU says so at
start when the load average already exceeds the cores, or other vaitrain runs are going on.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def other_vaitrain_runs() -> int:
    """How many other processes run `vaitrain train` (Linux /proc; 0 where it cannot tell)."""
    me, count = os.getpid(), 0
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) in (me, os.getppid()):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if any(w.endswith("vaitrain") or w == "vaitrain.jobs" for w in words) and "train" in words:
            count += 1
    return count


def oversubscription_hint(device: torch.device, threads_setting: int) -> str | None:
    """The hint line, or None when the CPU is not the device, threads are set (to at most the
    cores), or the machine is idle."""
    if device.type != "cpu":
        return None
    from vaitrain.process_env import usable_cores

    cores, usable = os.cpu_count() or 1, usable_cores()
    if threads_setting > usable:  # trainer.threads=999: the extra threads only wait for a core
        return (f"hint: trainer.threads={threads_setting} is more than the {usable} CPU cores this process may use; "
                f"the extra threads only slow it down (trainer.threads={usable} or fewer)")
    if threads_setting:
        return None
    threads = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = 0.0
    others = other_vaitrain_runs()
    if load <= cores and not others:
        return None
    why = f"load average {load:.1f} on {cores} cores" + (f", {others} other vaitrain runs" if others else "")
    return (f"hint: the CPU is busy ({why}) and torch uses {threads} threads per process; on a shared CPU "
            f"trainer.threads=1 (or cores / runs) is often several times faster")
