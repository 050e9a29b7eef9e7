"""One optimizer step: autocast forward, scaled backward over `grad_accum` micro-batches, unscale
and clip, the optimizer's step (fp16 overflow steps counted), zero_grad, schedule, after_step.

The loop calls `backward` once per micro-batch and `step` once per optimizer step. Whatever must
follow every optimizer step (Alrao's posterior update comes with the Optimization; an EMA of the
weights would be one more) goes into `after_step_hooks`.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from vaitrain.engine import dist
from vaitrain.engine.device import autocast
from vaitrain.errors import NON_FINITE, CheckpointError, TrainingError

MIN_LOSS_SCALE = 1.0  # fp16: overflow after overflow down to this scale means a diverged run


class OptimizerStep:
    def __init__(self, opt: Any, model: nn.Module, step_model: nn.Module, *, precision: str,
                 device: torch.device, accum: int, clip: float, distributed: bool) -> None:
        self.opt = opt  # Optimization(model, optimizer, scheduler, objective, after_step)
        self.model = model  # the parameters (clipping, finiteness)
        self.step_model = step_model  # what runs forward (DDP / compiled wrapper of `model`)
        self.precision = precision
        self.device = device
        self.accum = accum
        self.clip = clip
        self.distributed = distributed
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.skipped_steps = 0  # fp16 overflow steps the scaler skipped
        self.after_step_hooks: list[Callable[[], None]] = [opt.after_step]
        self._loss_bad = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite loss this step

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt.optimizer

    def lr(self) -> float:
        lr = self.optimizer.param_groups[0]["lr"]
        return float(lr.max()) if torch.is_tensor(lr) else float(lr)

    def backward(self, x: torch.Tensor, y: torch.Tensor, *, ends_step: bool,
                 watch: ContextManager[Any] | None = None) -> torch.Tensor:
        """Forward and backward of one micro-batch (inside `watch`, e.g. LayerStats hooks); the
        detached float loss. DDP all-reduces gradients only on the micro-batch that ends a step."""
        with ExitStack() as stack:
            if watch is not None:
                stack.enter_context(watch)
            if self.distributed and not ends_step:
                stack.enter_context(self.step_model.no_sync())
            with autocast(self.precision, self.device):
                loss, _out = self.opt.objective(self.step_model, x, y)
            self.scaler.scale(loss / self.accum).backward()
        loss_d = loss.detach().float()
        self._loss_bad |= ~torch.isfinite(loss_d)
        return loss_d

    def step(self, read_grads: Callable[[], None] | None = None) -> torch.Tensor:
        """Clip, step, `read_grads()` (layer statistics see this step's gradients), zero_grad,
        schedule, after-step hooks. Returns a bool tensor: whether this step saw a non-finite loss
        that means divergence (an fp16 overflow the scaler skipped is expected and not counted as
        one while the loss scale stays >= MIN_LOSS_SCALE)."""
        if self.clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        diverged = torch.zeros_like(self._loss_bad) if self._overflow_step() else self._loss_bad.clone()
        self._loss_bad.zero_()
        if read_grads is not None:
            read_grads()
        self.optimizer.zero_grad(set_to_none=True)
        self.opt.scheduler.step()
        for hook in self.after_step_hooks:
            hook()
        return diverged

    def _overflow_step(self) -> bool:
        """The optimizer's step; True when fp16's grad scaler skipped it as an overflow (counted,
        not fatal, while the loss scale stays >= MIN_LOSS_SCALE; below it the values are broken)."""
        if self.precision != "fp16":
            self.optimizer.step()
            return False
        before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.get_scale() >= before:
            return False
        self.skipped_steps += 1
        return self.scaler.get_scale() >= MIN_LOSS_SCALE

    # ----- checkpoint parts --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.opt.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint; state that does not fit this optimizer (another one's, or
        edited) is one CheckpointError here rather than a KeyError now or a size mismatch at the first
        step."""
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.opt.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
            raise CheckpointError(f"the checkpoint's optimizer or schedule state does not fit optim="
                                  f"{self.optimizer.__class__.__name__} ({type(err).__name__}: {err}): resume from "
                                  "the run's other checkpoint or start a new run") from None
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                for key, value in self.optimizer.state.get(p, {}).items():
                    if isinstance(value, torch.Tensor) and not _broadcasts_to(value.shape, p.shape):
                        raise CheckpointError(f"the checkpoint's optimizer state '{key}' has shape {tuple(value.shape)} "
                                              f"for a parameter of shape {tuple(p.shape)}: resume from the run's other "
                                              "checkpoint or start a new run")
        self.skipped_steps = int(state.get("skipped_steps", 0))


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """A scalar (a step count), or a tensor of the parameter's rank that broadcasts to it (Adam's
    moments; Alrao's per-feature rates)."""
    if len(shape) == 0 or shape.numel() == 1:
        return True
    try:
        return len(shape) == len(target) and torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def mean_over_ranks(total: torch.Tensor, count: int, distributed: bool) -> float:
    if not distributed:
        return (total / max(count, 1)).item()
    both = dist.all_reduce_sum(torch.stack([total.float(), torch.tensor(float(count), device=total.device)]))
    return (both[0] / both[1].clamp(min=1)).item()


def check_finite(model: nn.Module, bad: torch.Tensor, step: int, last_checkpoint: Any) -> None:
    """Stop every rank once a loss (since the last check) or a weight is NaN/inf. Runs before
    each checkpoint, so a diverged model never replaces a good last.pt."""
    weights_ok = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    code = dist.agree_max(2 if bad.item() else 0 if weights_ok.item() else 1)  # 2: a loss, 1: weights
    if code:
        where = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint.is_file()
                 else "no checkpoint was written yet")
        raise TrainingError(
            f"the {'loss' if code == 2 else 'weights'} {NON_FINITE} by step {step}; {where}; "
            "lower optim.lr, set optim.grad_clip, or use trainer.precision=fp32"
        )
