"""FLOPs of a forward pass and a training step, counted with torch.utils.flop_counter.

The count runs on a copy of the model, so the caller's model (weights, norm statistics, grads) is
untouched; by default on the `meta` device: shapes only, no arithmetic and no memory, so any model
at any size can be counted anywhere. Meta kernels cost Python time per op, so for nets of many
small ops (RandWire) `device="cpu"` at a small batch can be faster. FlopCounterMode counts matrix products and convolutions (a multiply-add
is 2 FLOPs); element-wise ops (norm, activations) are not counted.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: nn.Module, input_shape: Sequence[int], *, device: str = "meta",
                backward: bool = True) -> dict[str, float]:
    """FLOPs for one batch of `input_shape` (N, C, H, W), the model in training mode.

    Returns {"forward", "backward", "train" (= forward + backward), "params", and the same
    per sample as "forward_per_sample", "train_per_sample"}. backward=False skips the backward
    pass (its entries are then 0 and "train" equals "forward").
    """
    clone = copy.deepcopy(model)
    clone = clone.to_empty(device=device) if device == "meta" else clone.to(device)
    clone.train()
    x = torch.zeros(*input_shape, device=device)
    with FlopCounterMode(display=False) as fwd_counter:
        out = clone(x)
    forward = float(fwd_counter.get_total_flops())
    bwd = 0.0
    if backward:
        with FlopCounterMode(display=False) as bwd_counter:
            out.float().sum().backward()
        bwd = float(bwd_counter.get_total_flops())
    n = max(1, int(input_shape[0]))
    return {
        "forward": forward,
        "backward": bwd,
        "train": forward + bwd,
        "forward_per_sample": forward / n,
        "train_per_sample": (forward + bwd) / n,
        "params": float(sum(p.numel() for p in model.parameters())),
    }
