"""The at-init variance report: per layer, the forward activation mean/variance and the backward
gradient norm for one batch, the variance-preservation argument for Xavier/He/LeCun made visible.

`init_report` returns plain rows; `vaitrain inspect` renders them as a table.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

# Layers reported by default: the weighted ones (their outputs are the pre-activations the
# initialization arguments are about) and the activations after them.
DEFAULT_KINDS: tuple[type, ...] = (
    nn.Linear, nn.Conv2d, nn.ConvTranspose2d,
    nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.GELU,
)


def init_report(model: nn.Module, x: Tensor, *,
                loss_fn: Optional[Callable[[Tensor], Tensor]] = None,
                kinds: tuple[type, ...] = DEFAULT_KINDS, seed: int = 0) -> list[dict]:
    """One forward and backward pass of `x`; one row per call of a reported layer, in call order.

    Row keys: name (dotted module name; `#k` appended from a module's second call on), type,
    shape (output shape), act_mean, act_var (of the layer's output over the whole batch),
    grad_norm (L2 norm of the loss gradient w.r.t. that output), grad_rms (the same divided by
    sqrt(numel), so layers of different sizes compare), grad_var, and for weighted layers
    weight_var and weight_grad_norm (L2 norm of the weight's gradient).

    The loss defaults to <out, g> with g standard normal: the backward pass then starts from a
    unit-variance gradient, as the backward variance argument assumes. Model parameters' .grad are
    restored afterwards and the model's train/eval mode is left as it was.
    """
    rows: list[dict] = []
    calls: dict[str, int] = {}
    handles = []
    saved_grads = {n: p.grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None

    def make_hook(name: str):
        def hook(mod: nn.Module, inputs: tuple, output: Tensor) -> None:
            if not isinstance(output, Tensor):
                return
            k = calls.get(name, 0)
            calls[name] = k + 1
            out = output.detach().float()
            row = {"name": name if k == 0 else f"{name}#{k + 1}", "type": type(mod).__name__,
                   "shape": tuple(output.shape), "act_mean": out.mean().item(),
                   "act_var": out.var(unbiased=False).item(), "grad_norm": float("nan"),
                   "grad_rms": float("nan"), "grad_var": float("nan")}
            weight = getattr(mod, "weight", None)
            if isinstance(weight, Tensor):
                row["weight_var"] = weight.detach().float().var(unbiased=False).item()
            rows.append(row)
            if output.requires_grad:
                # A tensor hook receives the gradient w.r.t. this output even if a later in-place
                # op (inplace ReLU) modifies the tensor; module backward hooks would fail there.
                def grad_hook(g: Tensor, row: dict = row) -> None:
                    g = g.detach().float()
                    row["grad_norm"] = g.norm().item()
                    row["grad_rms"] = row["grad_norm"] / g.numel() ** 0.5
                    row["grad_var"] = g.var(unbiased=False).item()
                output.register_hook(grad_hook)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, kinds):
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.enable_grad():
            out = model(x)
            if loss_fn is None:
                gen = torch.Generator(device=out.device).manual_seed(seed)
                g = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
                loss = (out * g).sum()
            else:
                loss = loss_fn(out)
            loss.backward()
        modules = dict(model.named_modules())
        for row in rows:
            base = row["name"].split("#")[0]
            weight = getattr(modules[base], "weight", None)
            if isinstance(weight, Tensor) and weight.grad is not None:
                row["weight_grad_norm"] = weight.grad.detach().float().norm().item()
    finally:
        for h in handles:
            h.remove()
        for n, p in model.named_parameters():
            p.grad = saved_grads.get(n)
    return rows
