"""Per-layer activation and gradient statistics (trainer.layer_stats=N), for seeing vanishing
gradients: hooks are attached only for the steps that record, so other steps pay nothing."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

_WATCHED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def watched_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _WATCHED)]


class LayerStats:
    """Use as a context manager around one forward/backward; then `.scalars()` and `.histograms()`."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = watched_layers(model)
        self.acts: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "LayerStats":
        for name, module in self.layers:
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Any:
        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            self.acts[name] = out.detach().float()

        return hook

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def scalars(self) -> dict[str, float]:
        """Activation mean/std of each layer's output and the gradient norm of its weight."""
        out: dict[str, float] = {}
        for i, (name, module) in enumerate(self.layers):
            tag = f"{i:03d}_{name or 'root'}"
            act = self.acts.get(name)
            if act is not None:
                out[f"watch/act_mean/{tag}"] = act.mean().item()
                out[f"watch/act_std/{tag}"] = act.std().item() if act.numel() > 1 else 0.0
            grad = module.weight.grad
            if grad is not None:
                out[f"watch/grad_norm/{tag}"] = grad.detach().float().norm().item()
        return out

    def histograms(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for i, (name, module) in enumerate(self.layers):
            tag = f"{i:03d}_{name or 'root'}"
            if name in self.acts:
                out[f"watch_hist/act/{tag}"] = self.acts[name].flatten()[:100_000]
            if module.weight.grad is not None:
                out[f"watch_hist/grad/{tag}"] = module.weight.grad.detach().flatten()[:100_000]
        return out
