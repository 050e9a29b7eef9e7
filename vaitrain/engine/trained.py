"""A trained model back from its run directory, without the dataset: what `predict` and `export`
start from. The checkpoint's `data_info` gives the input (channels, size, how photos were brought
to it) and the output names; its `data_stats` the normalization."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from vaitrain.engine.checkpoint import check_compatible
from vaitrain.engine.evaluate import load_run_checkpoint
from vaitrain.errors import CheckpointError


@dataclass
class Trained:
    model: nn.Module  # eval mode, on `device`
    task: Any
    info: dict[str, Any]  # data_info: in_channels, image_size, class_names, target_names, resize ...
    stats: dict[str, torch.Tensor]  # mean, std (+ target_mean, target_std)
    cfg: DictConfig
    checkpoint: Path
    device: torch.device
    notes: list[str] = field(default_factory=list)  # lines for the user (config.yaml edited by hand)


def _info_from_data(cfg: DictConfig, stats: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints written before data_info existed: build the data once to learn it."""
    from vaitrain.data import build_data
    from vaitrain.data.info import describe

    data = build_data(cfg.data, cfg.task.name, device="cpu", batch_size=1, val_batch_size=1, seed=int(cfg.seed),
                      stats=stats, ignore_index=int(cfg.task.ignore_index))
    return describe(data, cfg.data)


def load_trained(run_dir: Path, checkpoint: str = "best", overrides: list[str] = (),
                 device: str | None = None) -> Trained:
    from vaitrain.engine.device import resolve_device
    from vaitrain.models import build_model
    from vaitrain.optim import build_optimization
    from vaitrain.tasks import build_task

    cfg, path, state = load_run_checkpoint(run_dir, checkpoint, overrides)
    from vaitrain.engine.resume import config_yaml_edits

    edited = config_yaml_edits(run_dir, cfg, list(overrides), state)
    stats = {k: torch.as_tensor(v).float() for k, v in (state.get("data_stats") or {}).items()}
    if "mean" not in stats or "std" not in stats:  # predict/export normalize new files with them
        raise CheckpointError(f"checkpoint '{path}' has no normalization statistics (data_stats mean/std): use the "
                              "run's other checkpoint, or a checkpoint that vaitrain train wrote")
    info = state.get("data_info") or _info_from_data(cfg, stats)
    data = SimpleNamespace(num_classes=info["num_classes"], target_dim=info["target_dim"],
                           class_names=info["class_names"], target_names=info["target_names"], stats=stats)
    task = build_task(cfg.task, data)
    net = build_model(cfg.model, cfg.norm, in_channels=int(info["in_channels"]), num_outputs=task.num_outputs,
                      image_size=int(info["image_size"]), dense=task.dense)
    # the trained object may wrap the net (Alrao's final-layer copies): rebuild the same wrapper
    model = build_optimization(cfg.optim, cfg.sched, net, task, steps_per_epoch=1, epochs=1).model
    check_compatible(path, state, model, cfg.model.name, cfg.task.name)
    model.load_state_dict(state["model"])
    if "ema" in state:  # trainer.ema: the average is what best.pt was chosen on
        from vaitrain.engine.ema import ema_weights

        model.load_state_dict(ema_weights(state["ema"]))
    dev = resolve_device(device or cfg.trainer.device)
    model.to(dev).eval()
    return Trained(model, task, dict(info), stats, cfg, path, dev, [f"note: {edited}"] if edited else [])
