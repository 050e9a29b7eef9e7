"""Optimizers, learning-rate schedules and Alrao, built from the `optim` and `sched` configs.

`build_optimization(...)` returns everything the loop needs to take a step:

    loss, out = opt.objective(opt.model, x, y)   # forward + the loss to backpropagate
    loss.backward(); (clip); opt.optimizer.step(); opt.scheduler.step(); opt.after_step()

`opt.model` is what the loop trains and checkpoints (Alrao wraps the given model).
`steps_per_epoch` counts optimizer steps (after gradient accumulation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

from vaitrain import registry
from vaitrain.errors import check_choice
from vaitrain.optim.optimizers import build_optimizer
from vaitrain.optim.schedules import Schedule, build_scheduler

OPTIMIZERS = registry.OPTIMIZERS.names

if TYPE_CHECKING:
    from vaitrain.schema.optim import OptimConfig, SchedConfig
    from vaitrain.tasks.base import Task


@dataclass
class Optimization:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Schedule
    objective: Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]
    after_step: Callable[[], None]


def _no_op() -> None:
    return None


def build_optimization(optim_cfg: OptimConfig, sched_cfg: SchedConfig, model: nn.Module, task: Task, *,
                       steps_per_epoch: int, epochs: int) -> Optimization:
    """Optimizer, per-step schedule, objective and after-step hook for `model` on `task`."""
    name = str(optim_cfg.name)
    check_choice("optim.name", name, OPTIMIZERS)
    if name == "alrao":
        from vaitrain.optim.alrao import build_alrao

        model, optimizer, objective, after_step = build_alrao(optim_cfg, model, task)
    else:
        optimizer = build_optimizer(optim_cfg, model)

        def objective(m: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            out = m(x)
            return task.loss(out, y), out

        after_step = _no_op
    scheduler = build_scheduler(sched_cfg, optimizer, base_lr=float(optim_cfg.lr),
                                steps_per_epoch=steps_per_epoch, epochs=epochs)
    return Optimization(model, optimizer, scheduler, objective, after_step)


__all__ = ["Optimization", "build_optimization", "OPTIMIZERS"]
