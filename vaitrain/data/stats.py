"""Normalization statistics of the training split, computed once.

`mean`/`std` are on the [0, 1] scale of x/255: per channel, shape (C,) (data.normalize=channel),
per pixel, shape (C,H,W) (pixel), or 0 and 1 (none). Regression targets get `target_mean` and
`target_std`, shape (D,) (1 and 0 when data.standardize_targets=false). Standard deviations are
population ones (divide by N); a constant channel, pixel or target (std below 1e-3 on the x/255
scale, 1e-8 for targets) keeps std 1, so it is only centred, never blown up.
Eval and resume pass the checkpoint's stats back so that normalization never changes.
"""
from __future__ import annotations

from typing import Iterable

import torch

from vaitrain.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights, on the x/255 scale
IMAGENET_STD = (0.229, 0.224, 0.225)
_CHUNK = 4096  # images per reduction step: bounds the float64 scratch memory


class _Moments:
    """Running sums in float64 of x and x^2 over the reduced dimensions."""

    def __init__(self, dims: tuple[int, ...]):
        self.dims = dims
        self.n = 0
        self.s: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        s, s2 = x.sum(self.dims), (x * x).sum(self.dims)
        self.n += x.numel() // s.numel()
        self.s = s if self.s is None else self.s + s
        self.s2 = s2 if self.s2 is None else self.s2 + s2

    def result(self, scale: float, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and std of x * scale; a std below floor becomes 1."""
        if self.s is None or self.n == 0:
            raise DataError("the training split is empty: cannot compute normalization statistics")
        mean = self.s / self.n
        std = (self.s2 / self.n - mean * mean).clamp_min(0).sqrt()
        mean, std = mean * scale, std * scale
        std = torch.where(std < floor, torch.ones_like(std), std)
        return mean.float().cpu(), std.float().cpu()


def image_stats(batches: Iterable[torch.Tensor], mode: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mean, std of uint8 image batches (N,C,H,W) on the x/255 scale, per channel or per pixel."""
    if mode == "none":
        return torch.zeros(channels), torch.ones(channels)
    if mode == "imagenet":  # what torchvision's pretrained weights expect; grayscale: the RGB average
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        return (mean, std) if channels == 3 else (mean.mean().repeat(channels), std.mean().repeat(channels))
    moments = _Moments((0, 2, 3) if mode == "channel" else (0,))
    for x in batches:
        moments.add(x)
    return moments.result(scale=1 / 255, floor=1e-3)


def target_stats(batches: Iterable[torch.Tensor], standardize: bool, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """target_mean, target_std (D,) of float regression targets (N,D)."""
    if not standardize:
        return torch.zeros(dim), torch.ones(dim)
    moments = _Moments((0,))
    for y in batches:
        moments.add(y)
    return moments.result(scale=1.0, floor=1e-8)


def chunks(t: torch.Tensor, size: int = _CHUNK) -> Iterable[torch.Tensor]:
    for start in range(0, t.shape[0], size):
        yield t[start:start + size]


def check_stats(stats: dict, *, channels: int, image_size: int, target_dim: int) -> dict[str, torch.Tensor]:
    """Stats passed back from a checkpoint: as float32 CPU tensors, checked against this data."""
    out = {k: torch.as_tensor(v).detach().float().cpu() for k, v in stats.items()}
    for key in ("mean", "std"):
        if key not in out:
            raise DataError(f"the saved normalization stats lack '{key}': the checkpoint is not from this data")
        shape = tuple(out[key].shape)
        if shape not in ((channels,), (channels, image_size, image_size)):
            raise DataError(
                f"the saved normalization stats '{key}' have shape {shape}, but this data has {channels} channels "
                f"of {image_size}x{image_size} px: evaluate with the data settings the run was trained with"
            )
    if target_dim:
        for key in ("target_mean", "target_std"):
            if key not in out or tuple(out[key].shape) != (target_dim,):
                raise DataError(
                    f"the saved stats lack '{key}' of shape ({target_dim},): the checkpoint is not from this regression data"
                )
    return out
