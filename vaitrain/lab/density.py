"""Predicted densities of a Gaussian or MDN regression run, drawn over its validation images.

The run's checkpoint is loaded the way `vaitrain eval` loads it (weights_only, the normalization
and target statistics it trained with); the density of the position (x, y: the first two target
dimensions, in pixels) is the head's mixture evaluated on a grid over the image."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch


@torch.no_grad()
def predicted_densities(run_dir: Path, samples: int = 6) -> tuple[list[Any], list[Any], list[Any], tuple] | None:
    """(images HWC in [0,1], density grids, targets (x, y) in px, imshow extent) for the first
    validation images, from the final weights (last.pt); None when the run has no checkpoint or
    no position targets."""
    from vaitrain.engine.checkpoint import load_checkpoint
    from vaitrain.engine.components import build_components
    from vaitrain.engine.evaluate import load_run_config, resolve_checkpoint
    from vaitrain.tasks import images

    cfg, _ = load_run_config(run_dir, ["trainer.device=cpu", f"data.num_val={max(samples, 2)}"])
    path = resolve_checkpoint(run_dir, "last")  # the final weights: the ones the final metrics describe
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    c = build_components(cfg, torch.device("cpu"), stats=state.get("data_stats"))
    c.model.load_state_dict(state["model"])
    c.model.eval()
    task = c.task
    if getattr(task, "head", "") not in ("gaussian", "mdn") or getattr(task, "dim", 0) < 2:
        return None
    x, y = next(iter(c.data.val))
    x, y = x[:samples], y[:samples]
    p = task.decode(c.model(x).float())
    mean, std = task.target_stats(torch.device("cpu"))
    size = x.shape[-1]
    scale = size  # shapes targets are fractions of the image size: pixels = value * size
    if task.head == "gaussian":
        mu, logsig = p["mu"][:, None, :2], p["logsig"][:, None, :2]
        log_alpha = torch.zeros(mu.shape[0], 1)
    else:
        mu, logsig = p["mu"][:, :, :2], p["logsig"][:, :, None].expand(-1, -1, 2)
        log_alpha = torch.log_softmax(p["logit_alpha"], -1)
    # to pixels: y_px = (y_std * std + mean) * size
    mu_px = (mu * std[:2] + mean[:2]) * scale
    sig_px = torch.exp(logsig) * std[:2] * scale
    grid = torch.linspace(0, size, 64)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")  # gy rows (image y), gx columns
    pts = torch.stack([gx, gy], -1).view(1, 1, -1, 2)
    z = (pts - mu_px[:, :, None, :]) / sig_px[:, :, None, :]
    log_comp = (-0.5 * z.pow(2) - torch.log(sig_px[:, :, None, :]) - 0.5 * math.log(2 * math.pi)).sum(-1)
    dens = torch.logsumexp(log_alpha[:, :, None] + log_comp, 1).exp().view(-1, 64, 64)
    imgs = images.denormalize(x, c.data.stats).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    targets = ((y[:, :2] * std[:2] + mean[:2]) * scale).tolist()
    # imshow with origin upper: extent (left, right, bottom, top) so y grows downwards like the image
    return list(imgs), list(dens.numpy()), targets, (0, size, size, 0)


@torch.no_grad()
def position_nll(run_dir: Path) -> float:
    """Mean validation NLL (nats, the targets' original units) of the position alone (x, y): the
    head's mixture marginalized over the other target dimensions (their Gaussians integrate to 1)."""
    from vaitrain.engine.checkpoint import load_checkpoint
    from vaitrain.engine.components import build_components
    from vaitrain.engine.evaluate import load_run_config, resolve_checkpoint
    from vaitrain.tasks.regression import gaussian_nll, mdn_nll

    cfg, _ = load_run_config(run_dir, ["trainer.device=cpu"])
    state = load_checkpoint(resolve_checkpoint(run_dir, "last"))  # as the final val/nll
    c = build_components(cfg, torch.device("cpu"), stats=state.get("data_stats"))
    c.model.load_state_dict(state["model"])
    c.model.eval()
    task = c.task
    _, std = task.target_stats(torch.device("cpu"))
    total, count = 0.0, 0
    for x, y in c.data.val:
        p = task.decode(c.model(x).float())
        y2 = y[:, :2].float()
        if task.head == "gaussian":
            nll = gaussian_nll(p["mu"][:, :2], p["logsig"][:, :2], y2)
        else:
            nll = mdn_nll(p["logit_alpha"], p["mu"][:, :, :2], p["logsig"], y2)
        total += float(nll.sum())
        count += len(nll)
    return total / count + float(torch.log(std[:2]).sum())  # change of variables to original units
