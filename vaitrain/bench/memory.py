"""Peak memory of a training step.

CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, less what was allocated
before the step (tensors, not the caching allocator's reserve).
CPU: growth of the resident set during the step: VmHWM (peak RSS) minus VmRSS before, with the
high-water mark reset by writing 5 to /proc/self/clear_refs (Linux >= 4.0) and freed heap given
back with malloc_trim first, so an earlier, larger peak does not hide this one. Where the reset is
not possible (not Linux), getrusage's ru_maxrss is used and the figure is only a lower bound.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import resource
from pathlib import Path
from typing import Optional

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> Optional[int]:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class StepMemory:
    """Measures the peak memory growth of what runs between start() and stop() (bytes)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.exact = True  # False when the CPU peak could not be reset (a lower bound)
        self._base = 0

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.device.type == "cuda" else "rss_growth"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return
        _malloc_trim()
        self.exact = _reset_hwm() and _status_kb("VmRSS") is not None
        rss = _status_kb("VmRSS")
        self._base = (rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    def stop(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return max(0, torch.cuda.max_memory_allocated(self.device) - self._base)
        hwm = _status_kb("VmHWM") if self.exact else None
        peak_kb = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0, peak_kb * 1024 - self._base)


def state_bytes(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> int:
    """Bytes held between steps: parameters, buffers and the optimizer's state tensors."""
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    total += sum(t.numel() * t.element_size() for t in model.buffers())
    if optimizer is not None:
        for state in optimizer.state.values():
            for v in state.values():
                if torch.is_tensor(v):
                    total += v.numel() * v.element_size()
    return total
