"""Library side of `vaitrain models` and `vaitrain inspect`: rows for the CLI to render."""
from __future__ import annotations

import math
from typing import Any

import torch

from vaitrain.config import compose, group_options
from vaitrain.data import build_data
from vaitrain.errors import VaitrainError, check_choice
from vaitrain.models import build_model
from vaitrain.models.flops import count_flops
from vaitrain.tasks import build_task
from vaitrain.track.progress import Progress


def _data_and_task(cfg: Any) -> tuple[Any, Any]:
    data = build_data(cfg.data, cfg.task.name, device=torch.device("cpu"),
                      batch_size=int(cfg.trainer.batch_size), val_batch_size=int(cfg.trainer.batch_size),
                      seed=int(cfg.seed))
    return data, build_task(cfg.task, data)


def list_models() -> list[str]:
    """Names of the model configs (conf/model/*.yaml)."""
    return group_options("model")


# FLOPs are counted for a batch of 2 (then per image): with one image, batch norm in training mode
# rejects a 1x1 map (DenseNet at 32 px); on the meta device the second image costs nothing.
FLOPS_BATCH = 2


def model_table(overrides: list[str], progress: Progress | None = None) -> tuple[list[list[Any]], int]:
    """One row per model of the zoo: name, params, forward and training-step GFLOPs per image at
    the data's resolution (for the chosen task's outputs), or why it cannot be built or counted:
    one failing model never loses the table."""
    progress = progress or Progress("none")
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("model=")]
    for name in chosen:  # `vaitrain models model=unet`: that model's row only
        check_choice("model", name, list_models())
    base = compose([o for o in overrides if not o.startswith("model=")])
    if base.data.name == "shapes":  # only shapes, channels and classes matter: generate 2 scenes, not 5,000
        base = compose([o for o in overrides if not o.startswith("model=")]
                       + ["data.num_train=2", "data.num_val=2", "trainer.batch_size=2"])
    data, task = _data_and_task(base)
    shape = (FLOPS_BATCH, data.in_channels, data.image_size, data.image_size)
    rows: list[list[Any]] = []
    names = chosen[-1:] or list_models()
    with progress.step(f"counting FLOPs at {data.image_size} px", len(names)):
        for name in names:
            progress.advance(0, model=name)
            rows.append(_model_row(name, overrides, data, task, shape))
            progress.advance(1)
    return rows, data.image_size


def _model_row(name: str, overrides: list[str], data: Any, task: Any, shape: tuple[int, ...]) -> list[Any]:
    try:
        cfg = compose([*overrides, f"model={name}"])
        model = build_model(cfg.model, cfg.norm, in_channels=data.in_channels,
                            num_outputs=task.num_outputs, image_size=data.image_size, dense=task.dense)
    except VaitrainError as err:
        return [name, "-", math.nan, math.nan, str(err)]
    params = sum(p.numel() for p in model.parameters())
    try:
        flops = count_flops(model, shape)
    except Exception as err:  # noqa: BLE001 - a model the counter cannot trace still gets its row
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return [name, f"{params:,}", math.nan, math.nan, f"FLOPs not counted: {type(err).__name__}: {reason}"]
    return [name, f"{params:,}", flops["forward_per_sample"] / 1e9, flops["train_per_sample"] / 1e9, ""]
