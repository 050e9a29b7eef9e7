"""The device's peak matrix-product rate, measured once per (device, precision) and cached."""
from __future__ import annotations

import torch

from vaitrain.bench.timing import time_steps

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_cache: dict[tuple[str, str], float] = {}


def measured_peak_tflops(device: torch.device, precision: str, n: int = 8192, steps: int = 20) -> float:
    """TFLOP/s of an n x n matrix product at the precision's dtype (fp32 follows the current TF32
    setting). Best of `steps` timed products after a few warm-up ones."""
    key = (str(device), precision)
    if key not in _cache:
        a = torch.randn(n, n, device=device, dtype=_DTYPES[precision])
        b = torch.randn(n, n, device=device, dtype=_DTYPES[precision])
        time_steps(lambda: a @ b, 3, device)
        best = min(time_steps(lambda: a @ b, steps, device))
        _cache[key] = 2 * n**3 / best / 1e12
        del a, b
    return _cache[key]
