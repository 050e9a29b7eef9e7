"""A note when a run is too short for batch norm's running statistics.

Validation runs the model in eval mode, where batch norm uses running averages of the training
batches' statistics (momentum 0.1: after k steps the initial mean 0 / variance 1 still weighs
0.9^k). On a small folder and a few epochs (10 steps: 35 %) the eval-mode model is far from the
train-mode one: train/loss near 0 while val/acc1 sits at a fraction, which reads like a bug."""
from __future__ import annotations

import torch
from torch import nn

FEW_STEPS = 30  # 0.9^30 = 4 %: below this the initial statistics still show in validation


def _tracks_running_stats(model: nn.Module) -> bool:
    """Whether some batch norm that trains (not frozen) keeps running statistics by momentum."""
    for m in model.modules():
        if (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.momentum is not None
                and any(p.requires_grad for p in m.parameters())):
            return True
    return False


def few_steps_note(model: torch.nn.Module, total_steps: int) -> str | None:
    """The note line, or None when the run is long enough or has no such batch norm."""
    if total_steps >= FEW_STEPS or not _tracks_running_stats(model):
        return None
    left = 0.9 ** total_steps
    return (f"note: {total_steps} optimizer steps in all: batch norm's running statistics, which validation uses, "
            f"will still be {left:.0%} their initial values, so val/* may lag train/loss; raise trainer.epochs "
            f"(or lower trainer.batch_size) for at least {FEW_STEPS} steps")
