"""Schemas of the `optim` and `sched` groups."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw | alrao
    lr: float = 0.1  # learning rate (the schedule scales it)
    momentum: float = 0.9  # sgd momentum
    nesterov: bool = False  # sgd: Nesterov momentum
    weight_decay: float = 5e-4  # see decoupled_wd
    decoupled_wd: bool = False  # true: decay applied to weights directly (AdamW-style); false: L2 term
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw moment decay rates
    eps: float = 1e-8  # adam/adamw denominator term
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    # alrao
    lr_min: float = 1e-5  # smallest per-feature learning rate
    lr_max: float = 10.0  # largest per-feature learning rate
    copies: int = 10  # copies of the final layer
    body: str = "sgd"  # the inner update of Alrao's body: sgd | adam


@dataclass
class SchedConfig:
    name: str = "cosine"  # constant | step | multistep | cosine | onecycle
    warmup_epochs: float = 0.0  # linear warmup from warmup_start * lr
    warmup_start: float = 0.01  # warmup's first lr, as a fraction of lr
    min_lr: float = 0.0  # cosine floor
    step_size: int = 30  # step: epochs between decays
    gamma: float = 0.1  # step/multistep: lr factor at each decay
    milestones: List[int] = field(default_factory=lambda: [30, 60, 80])  # multistep: epochs of the decays
    pct_start: float = 0.3  # onecycle
    div_factor: float = 25.0  # onecycle: first lr = lr / div_factor
    final_div_factor: float = 1e4  # onecycle: last lr = first lr / final_div_factor
