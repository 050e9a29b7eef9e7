"""Mixup / CutMix of classification batches (torchvision.transforms.v2.MixUp / CutMix).

As in timm's Mixup: with probability `prob` a batch is mixed; when both are on, CutMix is chosen
with probability `switch_prob`, else Mixup. The labels become soft targets (N, classes) whose
weights are the mixing weights (CutMix: the pasted area's share). Each batch's draws come from a
seed fixed by (seed, epoch, batch), so the same run gives the same mixed batches and resume
reproduces them. Validation batches are never mixed: metrics stay on hard labels.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import torch

from vaitrain.data.base import derive_seed

if TYPE_CHECKING:
    from torchvision.transforms import v2

_MIX_STREAM = 0x3C


@dataclass
class MixSpec:
    mixup: float = 0.0  # Beta(alpha, alpha) for Mixup; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) for CutMix; 0 = off
    prob: float = 1.0
    switch_prob: float = 0.5
    num_classes: int = 0

    @property
    def active(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.prob > 0


class Mixer:
    """Mixes a normalized float batch and its int labels; returns soft labels (N, C) always."""

    def __init__(self, spec: MixSpec):
        self.spec = spec
        from torchvision.transforms import v2  # only when mixing: torchvision costs ~1 CPU s to import

        c = spec.num_classes
        self.mixup = v2.MixUp(alpha=spec.mixup, num_classes=c) if spec.mixup > 0 else None
        self.cutmix = v2.CutMix(alpha=spec.cutmix, num_classes=c) if spec.cutmix > 0 else None

    def choose(self, g: torch.Generator) -> v2.Transform | None:
        """Which transform a batch gets (None: unmixed), timm's rule."""
        if float(torch.rand((), generator=g)) >= self.spec.prob:
            return None
        if self.mixup is not None and self.cutmix is not None:
            return self.cutmix if float(torch.rand((), generator=g)) < self.spec.switch_prob else self.mixup
        return self.mixup or self.cutmix

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int, epoch: int, batch: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        batch_seed = derive_seed(seed, epoch, batch, _MIX_STREAM)
        g = torch.Generator().manual_seed(batch_seed)
        chosen = self.choose(g)
        if chosen is None:
            return x, torch.nn.functional.one_hot(y, self.spec.num_classes).float()
        # torchvision draws lambda and the box from the global CPU generator: seed it for this batch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed)
            return chosen(x, y)
