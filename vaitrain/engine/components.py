"""Config -> built objects: data, task, model, optimization. Used by train, eval and bench, so
there is one way from config to object. Every builder runs before anything is written."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from vaitrain.data import build_data
from vaitrain.errors import ConfigError
from vaitrain.engine.start import apply_freeze, start_weights
from vaitrain.models import build_model
from vaitrain.optim import build_optimization
from vaitrain.tasks import build_task


@dataclass
class Components:
    data: Any
    task: Any
    model: torch.nn.Module  # what is trained and checkpointed (Alrao may wrap the built net)
    opt: Any  # Optimization(model, optimizer, scheduler, objective, after_step)
    start: Any = None  # models.weights.LoadReport of model.weights / init_from (new runs only)


def check_train_size(cfg: DictConfig, data: Any, net: torch.nn.Module) -> None:
    """Training windows (data.crop, data.resized_crop) of another size than the validation images
    must fit the model too: a fully connected net takes one size only, a U-Net a multiple of 2^depth."""
    size = int(data.train_image_size or data.image_size)
    if size == data.image_size:
        return
    if str(cfg.model.get("kind", "")) == "mlp":
        raise ConfigError(f"model={cfg.model.name} takes {data.image_size} px inputs only, but data.crop/"
                          f"data.resized_crop make {size} px training windows: drop them or use a convolutional model")
    check = getattr(net, "check_size", None)
    if check is not None:
        try:
            check(size)
        except ConfigError as err:
            raise ConfigError(f"the {size} px training windows (data.crop) do not fit model={cfg.model.name}: "
                              f"{str(err).split(': use ')[0]}") from None


def val_batch_size(cfg: DictConfig) -> int:
    return int(cfg.trainer.val_batch_size or 2 * cfg.trainer.batch_size)


def build_components(
    cfg: DictConfig,
    device: torch.device,
    *,
    stats: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    start: bool = False,
    test: bool = False,
) -> Components:
    """start=True (a new training run): load model.weights / init_from into the built model.
    test=True: also the data's test split (data.test)."""
    data = build_data(
        cfg.data,
        cfg.task.name,
        device=device,
        batch_size=int(cfg.trainer.batch_size),
        val_batch_size=val_batch_size(cfg),
        seed=int(cfg.seed),
        stats=stats,
        rank=rank,
        world_size=world_size,
        ignore_index=int(cfg.task.ignore_index),
        test=test,
    )
    task = build_task(cfg.task, data)
    net = build_model(
        cfg.model,
        cfg.norm,
        in_channels=data.in_channels,
        num_outputs=task.num_outputs,
        image_size=data.image_size,
        dense=task.dense,
    )
    report = start_weights(cfg, net) if start else None
    apply_freeze(cfg, net)  # before the optimizer (Alrao) wraps the final layer
    check_train_size(cfg, data, net)
    net.to(device)
    if cfg.trainer.channels_last:
        net.to(memory_format=torch.channels_last)
    accum = int(cfg.trainer.grad_accum)
    if accum > len(data.train):  # not one optimizer step per epoch: the run would train nothing
        raise ConfigError(
            f"trainer.grad_accum={accum} is more than the {len(data.train)} batches of an epoch "
            f"(trainer.batch_size={cfg.trainer.batch_size}): use trainer.grad_accum <= {len(data.train)}, "
            "or a smaller trainer.batch_size")
    steps_per_epoch = max(1, len(data.train) // accum)
    opt = build_optimization(
        cfg.optim, cfg.sched, net, task, steps_per_epoch=steps_per_epoch, epochs=int(cfg.trainer.epochs)
    )
    model = opt.model.to(device)
    return Components(data=data, task=task, model=model, opt=opt, start=report)
