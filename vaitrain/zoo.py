"""Library side of `vaitrain models` and `vaitrain inspect`: rows for the CLI to render."""
from __future__ import annotations

import math
from typing import Any

import torch

from vaitrain.config import compose
from vaitrain.data import build_data
from vaitrain.errors import VaitrainError
from vaitrain.models import build_model, list_models
from vaitrain.models.flops import count_flops
from vaitrain.tasks import build_task


def _data_and_task(cfg: Any) -> tuple[Any, Any]:
    data = build_data(cfg.data, cfg.task.name, device=torch.device("cpu"),
                      batch_size=int(cfg.trainer.batch_size), val_batch_size=int(cfg.trainer.batch_size),
                      seed=int(cfg.seed))
    return data, build_task(cfg.task, data)


def model_table(overrides: list[str]) -> tuple[list[list[Any]], int]:
    """One row per model of the zoo: name, params, forward and training-step GFLOPs per image at
    the data's resolution (for the chosen task's outputs), or why it cannot be built."""
    base = compose([o for o in overrides if not o.startswith("model=")])
    data, task = _data_and_task(base)
    shape = (1, data.in_channels, data.image_size, data.image_size)
    rows: list[list[Any]] = []
    for name in list_models():
        try:
            cfg = compose([*overrides, f"model={name}"])
            model = build_model(cfg.model, cfg.norm, in_channels=data.in_channels,
                                num_outputs=task.num_outputs, image_size=data.image_size, dense=task.dense)
            flops = count_flops(model, shape)
            params = sum(p.numel() for p in model.parameters())
            rows.append([name, f"{params:,}", flops["forward_per_sample"] / 1e9,
                         flops["train_per_sample"] / 1e9, ""])
        except VaitrainError as err:
            rows.append([name, "-", math.nan, math.nan, str(err)])
    return rows, data.image_size


def init_table(overrides: list[str]) -> tuple[str, list[str], list[list[Any]]]:
    """At initialization, per layer: activation mean and variance, gradient RMS, for one batch."""
    from vaitrain.inspect_init import init_report

    cfg = compose(overrides)
    torch.manual_seed(int(cfg.seed))
    data, task = _data_and_task(cfg)
    model = build_model(cfg.model, cfg.norm, in_channels=data.in_channels, num_outputs=task.num_outputs,
                        image_size=data.image_size, dense=task.dense)
    data.train.set_epoch(0)
    x, y = next(iter(data.train))
    rows = init_report(model, x, loss_fn=lambda out: task.loss(out, y), seed=int(cfg.seed))
    columns = ["layer", "type", "output shape", "act mean", "act var", "grad norm", "grad rms", "weight var"]
    table = [[r["name"], r["type"], "x".join(map(str, r["shape"])), r["act_mean"], r["act_var"],
              r["grad_norm"], r["grad_rms"], r.get("weight_var", "")] for r in rows]
    title = (f"{cfg.model.name} at init (init={cfg.model.init}, act={cfg.model.act}, norm={cfg.norm.name}), "
             f"one batch of {x.shape[0]}, loss = the task's")
    return title, columns, table
