"""What a benchmark ran on: the run directories' environment record plus the CPU's model name and
the TF32 setting (both change the figures)."""
from __future__ import annotations

from typing import Any

import torch

from vaitrain.track.rundir import environment as run_environment


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def environment(device: torch.device) -> dict[str, Any]:
    env = run_environment(device)
    env["cpu_name"] = _cpu_name() or env["device_name"]
    if device.type != "cuda":
        env["device_name"] = env["cpu_name"]
    else:
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return env
