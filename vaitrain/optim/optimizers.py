"""SGD, Adam and AdamW with weight decay either coupled or decoupled.

- coupled (an L2 term (wd/2)||w||^2 in the loss): the gradient gets + wd * w before the update;
  torch's own `weight_decay` of SGD/Adam does exactly this. With Adam the decay is then rescaled
  per coordinate like any gradient, which is why AdamW decouples it.
- decoupled: w <- w - lr * wd * w, applied directly to the weights before the gradient update,
  whatever the optimizer (as torch's AdamW does). `lr` is the scheduled rate of the step.

Weight decay never applies to biases or to normalization layers' parameters: shrinking a norm
layer's scale or any bias towards 0 is no useful prior (and with a following norm layer a
weight's scale is free, so decaying them only distorts the effective learning rate). The rule
used: a parameter is exempt if it belongs to a norm module or has at most one dimension.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from vaitrain.errors import ConfigError

NORM_TYPES: tuple[type, ...] = (_NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES += (nn.RMSNorm,)


def split_decay(modules: Iterable[tuple[str, nn.Module]]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, exempt) trainable parameters of the given named modules, each listed once."""
    decay: list[nn.Parameter] = []
    exempt: list[nn.Parameter] = []
    seen: set[int] = set()
    for _, module in modules:
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (exempt if isinstance(module, NORM_TYPES) or p.ndim <= 1 else decay).append(p)
    return decay, exempt


def param_groups(model: nn.Module, weight_decay: float, decoupled: bool) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and biases/norm parameters without decay.

    The group key `decoupled_wd` carries the decoupled rate (0 when coupled), `weight_decay` the
    coupled one (0 when decoupled), so both live in the optimizer's state_dict.
    """
    decay, exempt = split_decay(model.named_modules())
    groups = [
        {"params": decay, "weight_decay": 0.0 if decoupled else weight_decay,
         "decoupled_wd": weight_decay if decoupled else 0.0},
        {"params": exempt, "weight_decay": 0.0, "decoupled_wd": 0.0},
    ]
    return [g for g in groups if g["params"]]


class _DecoupledDecay:
    """Mixin for a torch optimizer: apply w <- w (1 - lr * decoupled_wd) before its update."""

    param_groups: list[dict[str, Any]]

    @torch.no_grad()
    def _decay(self) -> None:
        for group in self.param_groups:
            wd = group.get("decoupled_wd", 0.0)
            if wd:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    torch._foreach_mul_(params, 1.0 - group["lr"] * wd)

    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._decay()
        super().step()  # type: ignore[misc]
        return loss


class SGD(_DecoupledDecay, torch.optim.SGD):
    """torch.optim.SGD (momentum, nesterov, coupled weight_decay) plus decoupled decay."""


class Adam(_DecoupledDecay, torch.optim.Adam):
    """torch.optim.Adam (coupled weight_decay) plus decoupled decay."""


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW from the optim config, with the weight-decay parameter groups."""
    name = str(cfg.name)
    wd = float(cfg.weight_decay)
    decoupled = bool(cfg.decoupled_wd)
    lr = float(cfg.lr)
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    if name == "sgd":
        if cfg.nesterov and float(cfg.momentum) <= 0:
            raise ConfigError("optim.nesterov=true needs optim.momentum > 0")
        groups = param_groups(model, wd, decoupled)
        return SGD(groups, lr=lr, momentum=float(cfg.momentum), nesterov=bool(cfg.nesterov))
    if name == "adam":
        return Adam(param_groups(model, wd, decoupled), lr=lr, betas=betas, eps=float(cfg.eps))
    if name == "adamw":
        if not decoupled:
            raise ConfigError("optim=adamw always decouples weight decay; for an L2 term use optim=adam "
                              "optim.decoupled_wd=false")
        # AdamW decouples by definition: torch's AdamW computes w <- w (1 - lr wd) itself.
        groups = param_groups(model, wd, decoupled=False)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=float(cfg.eps))
    raise ValueError(f"no optimizer named {name}")
