"""What every task shares: the Task interface and a Meter of summable accumulators.

A meter keeps only sums (tensors on the model's device, never synchronised per batch), so
`compute()` is exact over the whole split and `all_reduce()` can merge ranks by summing.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class Meter(ABC):
    """Accumulates named sums over a split; subclasses add `update` and `compute`."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, torch.dtype] | None = None):
        dtypes = dtypes or {}
        # Created eagerly (on the CPU, moved to the data's device on first update) so every rank
        # holds the same accumulators in the same order, even a rank that saw no batch.
        self.sums: dict[str, Tensor] = {
            k: torch.zeros(s, dtype=dtypes.get(k, torch.float64)) for k, s in shapes.items()
        }
        self._reduced = False

    def _add(self, name: str, value: Tensor) -> None:
        acc = self.sums[name]
        if acc.device != value.device:
            acc = self.sums[name] = acc.to(value.device)
        acc += value.detach().to(acc.dtype)

    def _check_open(self) -> None:
        if self._reduced:
            raise RuntimeError("meter already all-reduced; start a new meter for new batches")

    def all_reduce(self) -> None:
        """Sum every accumulator over the ranks (no-op outside torch.distributed; once only)."""
        if self._reduced or not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        for name, acc in self.sums.items():
            buf = acc.to(device)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            self.sums[name] = buf.to(acc.device)
        # A second call would double-count, so the meter is closed from here on.
        self._reduced = True

    @abstractmethod
    def update(self, out: Tensor, y: Tensor) -> None:
        """Add a batch's outputs and targets to the sums."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics (without prefix: loss, acc1, miou, rmse, ...) from the sums."""


class Task(ABC):
    """A task: what the model outputs, the loss, the metrics and the images to log."""

    name: str = ""
    num_outputs: int = 0
    dense: bool = False
    main_metric: str = "loss"
    main_mode: str = "min"
    # every validation metric the task reports (without val/), and whether higher ("max") is better
    metric_modes: dict[str, str] = {"loss": "min"}

    @classmethod
    def metrics_reported(cls, task_cfg: Any) -> dict[str, str]:
        """The metric names a run with this task config reports, each with its better direction."""
        return dict(cls.metric_modes)

    @abstractmethod
    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The scalar training loss of a batch."""

    @abstractmethod
    def new_meter(self) -> Meter:
        """An empty accumulator for one pass over a split."""

    def log_images(self, writer: Any, tag: str, x: Tensor, y: Tensor, out: Tensor, step: int) -> None:
        """Write one image under `tag`: a grid of samples (inputs with targets/predictions)."""

    def log_epoch_images(self, writer: Any, meter: Meter, step: int, tag: str = "val") -> None:
        """Write images that summarise a whole split (e.g. a confusion matrix); default none."""
