"""Baselines timed next to vaitrain's model: torchvision's equivalent network, or the same vaitrain
network in a bare loop. Both use a plain loss (cross-entropy; MSE for float targets) and torch's
own optimizer of the config's kind (SGD, Adam, AdamW) with its hyper-parameters."""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaitrain.bench.harness import Subject

RESNET_DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}
DENSENETS = {  # (growth_rate, block_config, num_init_features) -> torchvision builder
    (32, (6, 12, 24, 16), 64): "densenet121",
    (32, (6, 12, 32, 32), 64): "densenet169",
    (32, (6, 12, 48, 32), 64): "densenet201",
    (48, (6, 12, 36, 24), 96): "densenet161",
}


def plain_objective(ignore_index: int = -100) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """forward + cross-entropy (class labels or masks) or MSE (float regression targets)."""

    def objective(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        out = model(x)
        if y.is_floating_point():
            return F.mse_loss(out[:, : y.shape[1]], y)
        return F.cross_entropy(out, y, ignore_index=ignore_index)

    return objective


def plain_optimizer(model: nn.Module, optim_cfg: Any) -> tuple[torch.optim.Optimizer, str]:
    """torch's own optimizer of the config's kind and hyper-parameters, one parameter group
    (vaitrain's exempts biases/norm parameters from weight decay). Alrao's baseline is SGD."""
    params, lr, wd = model.parameters(), float(optim_cfg.lr), float(optim_cfg.weight_decay)
    name = str(optim_cfg.name)
    if name in ("adam", "adamw"):
        cls = torch.optim.AdamW if name == "adamw" or optim_cfg.decoupled_wd else torch.optim.Adam
        betas = (float(optim_cfg.betas[0]), float(optim_cfg.betas[1]))
        return cls(params, lr=lr, betas=betas, eps=float(optim_cfg.eps), weight_decay=wd), f"torch.optim.{cls.__name__}"
    momentum = float(optim_cfg.momentum)
    nesterov = bool(optim_cfg.nesterov) and momentum > 0
    return (torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd),
            "torch.optim.SGD")


def _same_as_torchvision(model_cfg: Any, norm_cfg: Any) -> Union[str, tuple[str, str]]:
    """(torchvision builder name, note) or the reason there is no equivalent."""
    family = getattr(model_cfg, "family", "")
    differs = [f"{k}={getattr(model_cfg, k)}" for k, v in
               (("act", "relu"), ("width_mult", 1.0), ("dropout", 0.0)) if getattr(model_cfg, k, v) != v]
    if norm_cfg.name != "batch":
        differs.append(f"norm={norm_cfg.name}")
    if family == "resnet":
        if model_cfg.style != "imagenet":
            return "no torchvision equivalent (CIFAR-style ResNet)"
        name = RESNET_DEPTHS.get(int(model_cfg.depth))
        if model_cfg.down != "strided":
            differs.append(f"down={model_cfg.down}")
        note = f"torchvision {name}" + (", 3x3 stem, no max-pool" if model_cfg.small_stem else "")
    elif family == "densenet":
        key = (int(model_cfg.growth_rate), tuple(int(b) for b in model_cfg.block_config),
               int(model_cfg.num_init_features))
        name = DENSENETS.get(key) if model_cfg.style == "imagenet" else None
        if name is None:
            return "no torchvision equivalent (DenseNet layout)"
        for k, v in (("bn_size", 4), ("compression", 0.5), ("down", "avgpool")):
            if getattr(model_cfg, k) != v:
                differs.append(f"{k}={getattr(model_cfg, k)}")
        note = f"torchvision {name}"
    else:
        return "no torchvision equivalent"
    if name is None or differs:
        return "no torchvision equivalent (" + (", ".join(differs) or "depth") + ")"
    return name, note


def torchvision_model(model_cfg: Any, norm_cfg: Any, *, in_channels: int, num_outputs: int,
                      dense: bool) -> Union[str, tuple[nn.Module, str]]:
    """torchvision's network equivalent to a vaitrain model config, or why there is none."""
    import torchvision.models as tvm

    if dense:
        return "no torchvision equivalent (per-pixel output)"
    found = _same_as_torchvision(model_cfg, norm_cfg)
    if isinstance(found, str):
        return found
    name, note = found
    if name.startswith("densenet"):
        model = getattr(tvm, name)(num_classes=num_outputs, memory_efficient=bool(model_cfg.memory_efficient))
        if in_channels != 3:
            model.features.conv0 = nn.Conv2d(in_channels, model.features.conv0.out_channels, 7, 2, 3, bias=False)
        return model, note
    model = getattr(tvm, name)(num_classes=num_outputs)
    if model_cfg.small_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model, note


def _same_weights(model: nn.Module, source: nn.Module) -> bool:
    """Copy source's weights and buffers into model where the layouts match (values can change
    speed, e.g. denormals on a CPU; the same numbers rule that out)."""
    try:
        model.load_state_dict(source.state_dict(), strict=True)
        return True
    except RuntimeError:
        return False


def baseline_subject(kind: str, cfg: Any, *, vaitrain_model: nn.Module, in_channels: int,
                     num_outputs: int, image_size: int, dense: bool,
                     device: torch.device) -> Union[str, Subject]:
    """The baseline subject for bench.baseline=torchvision|bare, or why there is none."""
    ignore = int(cfg.task.ignore_index) if cfg.task.name == "segmentation" else -100
    if kind == "bare":
        from vaitrain.models import build_model

        model = build_model(cfg.model, cfg.norm, in_channels=in_channels, num_outputs=num_outputs,
                            image_size=image_size, dense=dense).to(device)
        same = _same_weights(model, vaitrain_model)
        opt, opt_name = plain_optimizer(model, cfg.optim)
        return Subject("bare", model, plain_objective(ignore), opt,
                       note=f"same network{', same weights' if same else ''}, plain CE/MSE + {opt_name}")
    built = torchvision_model(cfg.model, cfg.norm, in_channels=in_channels, num_outputs=num_outputs, dense=dense)
    if isinstance(built, str):
        return built
    model, note = built
    ours = sum(p.numel() for p in vaitrain_model.parameters())
    theirs = sum(p.numel() for p in model.parameters())
    if ours != theirs:
        note += f"; params differ: {theirs:,} vs vaitrain {ours:,}"
    model = model.to(device)
    if _same_weights(model, vaitrain_model):
        note += ", same weights"
    opt, opt_name = plain_optimizer(model, cfg.optim)
    return Subject("torchvision", model, plain_objective(ignore), opt, note=f"{note}, plain CE + {opt_name}")
