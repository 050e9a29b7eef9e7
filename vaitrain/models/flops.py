"""FLOPs of a forward pass and a training step, counted with torch.utils.flop_counter.

The count runs on a copy of the model on the `meta` device: shapes only, no arithmetic and no
memory, so a ResNet-50 at 224 px costs milliseconds and the caller's model (its weights and norm
statistics) is untouched. FlopCounterMode counts matrix products and convolutions (a multiply-add
is 2 FLOPs); element-wise ops (norm, activations) are not counted.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """FLOPs for one batch of `input_shape` (N, C, H, W).

    Returns {"forward", "backward", "train" (= forward + backward), "params", and the same
    per sample as "forward_per_sample", "train_per_sample"}.
    """
    meta = copy.deepcopy(model).to("meta")
    meta.train()
    x = torch.zeros(*input_shape, device="meta")
    with FlopCounterMode(display=False) as fwd_counter:
        out = meta(x)
    forward = float(fwd_counter.get_total_flops())
    loss = out.float().sum()
    with FlopCounterMode(display=False) as bwd_counter:
        loss.backward()
    backward = float(bwd_counter.get_total_flops())
    n = max(1, int(input_shape[0]))
    return {
        "forward": forward,
        "backward": backward,
        "train": forward + backward,
        "forward_per_sample": forward / n,
        "train_per_sample": (forward + backward) / n,
        "params": float(sum(p.numel() for p in model.parameters())),
    }
