"""Runs written with vaitrain.track and known values, for the compare/sweep/TensorBoard tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from omegaconf import OmegaConf

from vaitrain.track.metrics_log import MetricsLog
from vaitrain.track.rundir import create_run_dir, write_run_files
from vaitrain.track.tb import TBWriter

BASE_CONFIG: dict[str, Any] = {
    "model": {"name": "resnet20", "width_mult": 1.0, "depth": 20},
    "data": {"name": "shapes", "image_size": 32},
    "task": {"name": "classification"},
    "optim": {"name": "sgd", "lr": 0.1, "betas": [0.9, 0.999]},
    "norm": {"name": "batch"},
    "trainer": {"epochs": 3, "batch_size": 32},
    "seed": 0,
    "out_dir": "runs",
    "resume": None,
    "name": "",
}


def merged(**dotted: Any) -> dict[str, Any]:
    """BASE_CONFIG with dotted-key changes, e.g. merged(**{"optim.lr": 0.01})."""
    cfg = OmegaConf.create(BASE_CONFIG)
    for key, value in dotted.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return OmegaConf.to_container(cfg)  # type: ignore[return-value]


def write_run(
    root: Path,
    val: Mapping[str, Sequence[float]],
    *,
    config: Mapping[str, Any] | None = None,
    steps_per_epoch: int = 10,
    train_loss: Sequence[float] = (),
    final: str | None = "completed",
    tb: bool = True,
    name: str = "",
    dated: bool = False,
    params: int = 1234,
    wall_time: float = 12.5,
    throughput: float = 800.0,
    hparams: bool = False,
) -> Path:
    """A run whose epoch e (1-based) logs val[tag][e-1] at step e*steps_per_epoch, plus a train
    loss per epoch at mid-epoch; `final=None` leaves the run without its final record."""
    cfg = dict(config if config is not None else BASE_CONFIG)
    run = create_run_dir(root, cfg["model"]["name"], cfg["data"]["name"], name, dated=dated)
    write_run_files(run, OmegaConf.to_yaml(OmegaConf.create(cfg)), [], torch.device("cpu"))
    log = MetricsLog(run / "metrics.jsonl")
    writer = TBWriter(run / "tb") if tb else None
    epochs = max((len(v) for v in val.values()), default=0)
    for e in range(1, epochs + 1):
        step = e * steps_per_epoch
        if e <= len(train_loss):
            mid = step - steps_per_epoch // 2
            log.write({"kind": "train", "epoch": e - 1, "step": mid, "time": float(e),
                       "train/loss": train_loss[e - 1], "lr": 0.1})
            if writer:
                writer.scalars({"train/loss": train_loss[e - 1], "lr": 0.1}, mid)
        values = {tag: seq[e - 1] for tag, seq in val.items() if e <= len(seq)}
        values["throughput"] = throughput
        log.write({"kind": "epoch", "epoch": e, "step": step, "time": float(e), **values})
        if writer:
            writer.scalars(values, step)
    if final is not None:
        log.write({"kind": "final", "epoch": epochs, "step": epochs * steps_per_epoch,
                   "time": wall_time, "status": final, "params": params, "wall_time": wall_time,
                   "throughput": throughput})
    log.close()
    if writer:
        if hparams:
            flat = {"optim.name": cfg["optim"]["name"], "optim.lr": cfg["optim"]["lr"]}
            writer.hparams(flat, {t: s[-1] for t, s in val.items()})
        writer.close()
    return run
