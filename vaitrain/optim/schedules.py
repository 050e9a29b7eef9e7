"""Learning-rate schedules, stepped once per optimizer step, each with an optional linear warmup.

Every group's rate is its base rate times factor(t), t = optimizer steps taken so far:

    factor(t) = warm(t) * main(t)
    warm(t)   = warmup_start + (1 - warmup_start) * t / W   for t < W, else 1
                (W = round(warmup_epochs * steps_per_epoch); fractional epochs allowed)

main(t) by `sched.name` (T = epochs * steps_per_epoch total steps, e = t // steps_per_epoch):
- constant:  1
- step:      gamma ** (e // step_size)                 (epochs counted from the start of the run)
- multistep: gamma ** #{m in milestones : m <= e}
- cosine:    r + (1 - r) * (1 + cos(pi * u / (T - W))) / 2, u = max(t - W, 0), r = min_lr / lr:
             the cosine starts where the warmup ends and reaches min_lr at the last step's end
- onecycle:  torch's OneCycleLR (two phases, cosine annealing, no momentum cycling) over the
             T - W steps after the warmup: from lr / div_factor up to lr at pct_start, then down
             to lr / (div_factor * final_div_factor) at the last step.

All the schedule's parameters are plain numbers in `state_dict()`, so a resumed run continues
with exactly the rates it would have had.

Extending a run (resume= with a larger trainer.epochs, `extend`): the steps already planned keep
their rates; the added steps A = T' - T form a new cycle after the old plan's end, a warm
restart (Loshchilov & Hutter, SGDR): cosine and onecycle run their shape again over A steps from
the base rate, without warmup; step, multistep and constant depend only on the epoch and go on
counting epochs as if the run had been planned T' steps long.
"""
from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from vaitrain import registry
from vaitrain.errors import ConfigError

NAMES = registry.SCHEDULES.names


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class Schedule(LRScheduler):
    """base lr x factor(t), see the module docstring."""

    def __init__(self, optimizer: Optimizer, *, name: str, total_steps: int, steps_per_epoch: int,
                 warmup_steps: int = 0, warmup_start: float = 0.01, min_ratio: float = 0.0,
                 step_size: int = 30, gamma: float = 0.1, milestones: list[int] | None = None,
                 pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4):
        # Plain Python numbers only: LRScheduler.state_dict() saves every attribute.
        self.name = str(name)
        self.total_steps = int(total_steps)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start = float(warmup_start)
        self.min_ratio = float(min_ratio)
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        self.milestones = sorted(int(m) for m in (milestones or []))
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.restart_at = 0  # the step where the last extension's cycle begins (0: none)
        super().__init__(optimizer)

    def extend(self, total_steps: int) -> None:
        """Plan total_steps (more than now): the added steps are a new cycle (module docstring)."""
        if int(total_steps) <= self.total_steps:
            raise ConfigError(f"a schedule can only be extended: {total_steps} <= {self.total_steps} planned steps")
        self.restart_at, self.total_steps = self.total_steps, int(total_steps)

    def factor(self, t: int) -> float:
        w = self.warmup_steps
        warm = self.warmup_start + (1 - self.warmup_start) * t / w if t < w and not self.restart_at else 1.0
        return warm * self._main(t)

    def _main(self, t: int) -> float:
        e = t // self.steps_per_epoch
        start = self.restart_at if self.restart_at and t >= self.restart_at else self.warmup_steps
        u = max(t - start, 0)
        span = max(self.total_steps - start, 1)
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            return self.gamma ** (e // self.step_size)
        if self.name == "multistep":
            return self.gamma ** sum(1 for m in self.milestones if m <= e)
        if self.name == "cosine":
            return self.min_ratio + (1 - self.min_ratio) * (1 + math.cos(math.pi * min(u, span) / span)) / 2
        if self.name == "onecycle":
            return self._onecycle(min(u, span - 1), span)
        raise ConfigError(f"sched.name={self.name} is not a valid choice; choose one of: {', '.join(NAMES)}")

    def _onecycle(self, u: int, span: int) -> float:
        initial = 1.0 / self.div_factor
        final = initial / self.final_div_factor
        peak_end = float(self.pct_start * span) - 1  # the step at which the rate peaks, as torch
        last = span - 1
        if u <= peak_end:
            return _cos_anneal(initial, 1.0, u / peak_end if peak_end > 0 else 1.0)
        return _cos_anneal(1.0, final, (u - peak_end) / (last - peak_end) if last > peak_end else 1.0)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


def build_scheduler(cfg: Any, optimizer: Optimizer, *, base_lr: float, steps_per_epoch: int,
                    epochs: int) -> Schedule:
    """The schedule of the `sched` config; `base_lr` is optim.lr (cosine's min_lr is relative to it)."""
    name = str(cfg.name)
    if name not in NAMES:
        raise ConfigError(f"sched.name={name} is not a valid choice; choose one of: {', '.join(NAMES)}")
    if steps_per_epoch < 1 or epochs < 1:
        raise ConfigError(f"a schedule needs at least one step per epoch and one epoch "
                          f"(got {steps_per_epoch} steps x {epochs} epochs): use more data or a smaller batch")
    total = steps_per_epoch * epochs
    warmup = int(round(float(cfg.warmup_epochs) * steps_per_epoch))
    if warmup < 0 or not 0.0 <= float(cfg.warmup_start) <= 1.0:
        raise ConfigError("sched.warmup_epochs must be >= 0 and sched.warmup_start in [0, 1]")
    if warmup >= total and warmup > 0:
        raise ConfigError(f"sched.warmup_epochs={cfg.warmup_epochs} must be shorter than the run "
                          f"({epochs} epochs)")
    if name == "step" and int(cfg.step_size) < 1:
        raise ConfigError("sched.step_size must be >= 1 epoch")
    if name == "onecycle" and not 0.0 < float(cfg.pct_start) < 1.0:
        raise ConfigError("sched.pct_start must be in (0, 1)")
    min_ratio = float(cfg.min_lr) / base_lr if base_lr > 0 else 0.0
    return Schedule(
        optimizer, name=name, total_steps=total, steps_per_epoch=steps_per_epoch,
        warmup_steps=warmup, warmup_start=float(cfg.warmup_start), min_ratio=min_ratio,
        step_size=int(cfg.step_size), gamma=float(cfg.gamma), milestones=[int(m) for m in cfg.milestones],
        pct_start=float(cfg.pct_start), div_factor=float(cfg.div_factor),
        final_div_factor=float(cfg.final_div_factor),
    )
