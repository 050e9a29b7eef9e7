"""Batched augmentation and normalization on the device, with no per-sample Python.

Random crop with zero padding and horizontal flip are one gather: output pixel (i, j) of sample n
reads padded-input pixel (i + dy[n], j' + dx[n]) with j' = W-1-j when flipped (j' = j otherwise). A segmentation
mask goes through the same gather (same dy, dx, flip), its padding labelled 0 = background.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugParams:
    """Per-sample crop offsets in [0, 2*pad] and flip flags, drawn once per epoch."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor  # bool

    def __getitem__(self, sl: slice | torch.Tensor) -> "AugParams":
        return AugParams(self.dy[sl], self.dx[sl], self.flip[sl])

    def to(self, device: torch.device) -> "AugParams":
        return AugParams(self.dy.to(device), self.dx.to(device), self.flip.to(device))


def draw_params(n: int, pad: int, flip: bool, generator: torch.Generator) -> AugParams:
    """Draw crop/flip parameters for n samples from a CPU generator (same on every device)."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    fl = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return AugParams(dy, dx, fl)


def crop_flip(x: torch.Tensor, p: AugParams, pad: int) -> torch.Tensor:
    """Crop (after zero padding by `pad`) and flip a batch x of shape (N,C,H,W) or (N,H,W)."""
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(1)
    n, c, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    wp = x.shape[3]
    dev = x.device
    rows = p.dy[:, None] + torch.arange(h, device=dev)  # (N,H) rows of the padded input
    cols = torch.arange(w, device=dev).expand(n, w)
    cols = torch.where(p.flip[:, None], w - 1 - cols, cols) + p.dx[:, None]  # (N,W)
    # one gather over the flattened plane (2-3x faster on CPU than a gather per axis)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    x = x.reshape(n, c, -1).gather(2, index).view(n, c, h, w)
    return x.squeeze(1) if squeeze else x


def normalizer(mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with x_float = x_uint8 * scale - shift == (x/255 - mean) / std.
    mean/std have shape (C,) (per channel) or (C,H,W) (per pixel)."""
    mean = mean.to(device=device, dtype=torch.float32)
    std = std.to(device=device, dtype=torch.float32)
    if mean.dim() == 1:
        mean, std = mean[:, None, None], std[:, None, None]
    return 1.0 / (255.0 * std), mean / std


def normalize(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 (N,C,H,W) -> float32 normalized, contiguous NCHW."""
    return x.float().mul_(scale).sub_(shift)
