"""An exponential moving average of the weights (`trainer.ema=decay`), torch's AveragedModel.

After every optimizer step: ema = decay * ema + (1 - decay) * weights (the first step copies the
weights). use_buffers=True averages the buffers too, so batch-norm running statistics belong to
the averaged weights rather than to the raw ones. The loop validates both; checkpoints hold both
(`model`: the raw weights, `ema`: the average, with its step count), so resume continues the
average exactly; `best.pt` is chosen on the EMA's validation metric when the EMA is on.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

_PREFIX = "module."


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = model
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged network (evaluate it like the model)."""
        return self.averaged.module

    @torch.no_grad()
    def update(self) -> None:
        self.averaged.update_parameters(self.model)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()  # module.* tensors + n_averaged

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)


def ema_weights(ema_state: dict[str, Any]) -> dict[str, Any]:
    """The averaged network's own state dict from a checkpoint's `ema` entry (loads into the model)."""
    return {k[len(_PREFIX):]: v for k, v in ema_state.items() if k.startswith(_PREFIX)}
