"""From config to rows: one row per job (model), vaitrain's subject first, then the baseline.

The network, task, optimizer and loader are built by engine.components.build_components from a
copy of the config with the bench settings applied, so the bench times what `vaitrain train` runs.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vaitrain.bench.baselines import baseline_subject
from vaitrain.bench.harness import Measurement, Settings, Setup, Subject, measure
from vaitrain.bench.report import BenchReport, check_out, write_out
from vaitrain.errors import ConfigError, Interrupted

Progress = Optional[Callable[[str], None]]
SCHEDULE_EPOCHS = 1000  # the schedule built for the bench must not run out while it is timed


def bench_settings(cfg: DictConfig, device: torch.device) -> Settings:
    from vaitrain.engine.device import resolve_precision

    b = cfg.bench
    if str(b.clock) == "process" and device.type != "cpu":
        raise ConfigError(f"bench.clock=process times CPU seconds, which miss the work of a {device.type} "
                          "device: use it with trainer.device=cpu, or bench.clock=wall")
    precision = b.precision if b.precision != "auto" else cfg.trainer.precision
    precision = resolve_precision(precision, device)
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("bench.precision=fp16 needs a GPU; use fp32 (or bf16) on the CPU")
    return Settings(device=device, precision=precision, channels_last=bool(b.channels_last),
                    compile=bool(b.compile), warmup=int(b.warmup), steps=int(b.steps),
                    repeats=int(b.repeats), mode=str(b.mode), split=bool(b.split), data=bool(b.data),
                    clock=str(b.clock))


def batch_size(cfg: DictConfig) -> int:
    return int(cfg.bench.batch_size or cfg.trainer.batch_size)


def bench_config(cfg: DictConfig, batch: int) -> DictConfig:
    """The config the bench builds from: batch, image size, memory format and data size applied."""
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    b = cfg.bench
    c.trainer.batch_size = batch
    c.trainer.val_batch_size = batch
    c.trainer.grad_accum = 1
    c.trainer.epochs = SCHEDULE_EPOCHS
    c.trainer.channels_last = bool(b.channels_last)
    if int(b.image_size):
        c.data.image_size = int(b.image_size)
    timed_epoch = bool(b.data) and b.mode in ("train", "both")
    if not timed_epoch:
        c.data.num_train = batch  # one batch is all the bench uses
    elif int(b.data_batches):
        c.data.num_train = batch * int(b.data_batches)
    c.data.num_val = batch
    return c


def vaitrain_setup(cfg: DictConfig, device: torch.device, batch: int) -> Setup:
    """vaitrain's subject (and the baseline's) with one batch of the task's real targets."""
    from vaitrain.engine.components import build_components
    from vaitrain.engine.device import seed_everything

    c = bench_config(cfg, batch)
    seed_everything(int(c.seed))
    comps = build_components(c, device)
    opt = comps.opt
    x, y = next(iter(comps.data.train))

    def objective(model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return opt.objective(model, xb, yb)[0]

    def after_step() -> None:
        opt.scheduler.step()
        opt.after_step()

    subjects = [Subject("vaitrain", comps.model, objective, opt.optimizer, after_step)]
    kind = str(cfg.bench.baseline)
    if kind != "none":
        base = baseline_subject(kind, c, vaitrain_model=comps.model, in_channels=comps.data.in_channels,
                                num_outputs=comps.task.num_outputs, image_size=comps.data.image_size,
                                dense=comps.task.dense, device=device)
        if isinstance(base, str):
            subjects[0].note = base
        else:
            subjects.append(base)
    loader = comps.data.train if cfg.bench.data else None
    return Setup(subjects, x, y, loader)


def bench_job(cfg: DictConfig, device: torch.device, peak: Optional[float] = None) -> dict[str, Any]:
    """Measure one config; any failure becomes a row whose note says why."""
    from vaitrain.data import augmentation_label
    from vaitrain.models.flops import count_flops

    settings = bench_settings(cfg, device)
    size = int(cfg.bench.image_size or cfg.data.image_size)
    row: dict[str, Any] = {
        "model": str(cfg.model.name), "task": str(cfg.task.name), "data": str(cfg.data.name),
        "optim": str(cfg.optim.name), "augment": augmentation_label(cfg.data, str(cfg.task.name)),
        "image_size": size, "batch": batch_size(cfg), "batch_asked": batch_size(cfg),
        "precision": settings.precision, "channels_last": settings.channels_last,
        "compile": settings.compile, "device": str(device), "status": "ok",
    }
    try:
        m = measure(lambda b: vaitrain_setup(cfg, device, b), batch_size(cfg), settings, count_flops)
    except (KeyboardInterrupt, SystemExit, Interrupted):  # a stop signal ends the bench, not this row
        raise
    except Exception as err:  # noqa: BLE001 - the row carries the reason; other models go on
        row.update(status="failed", note=_reason(err))
        return row
    row.update(measurement_fields(m, peak, str(cfg.bench.baseline)))
    return row


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return text if err.__class__.__module__.startswith("vaitrain") else f"{type(err).__name__}: {text}"


def measurement_fields(m: Measurement, peak: Optional[float], baseline: str) -> dict[str, Any]:
    """Flat row fields of a measurement (vaitrain's subject first, baseline second)."""
    ours = m.results[0]
    row: dict[str, Any] = {"batch": m.batch, "batch_asked": m.batch_asked, "params": ours.params}
    for mode in ("train", "infer"):
        t = getattr(ours, mode)
        if t is not None:
            row.update({f"{mode}_img_s": t.img_s, f"{mode}_ms": t.median_ms, f"{mode}_ms_p10": t.p10_ms,
                        f"{mode}_ms_p90": t.p90_ms, f"{mode}_warmup_s": t.warmup_s})
    if ours.split_ms:
        row.update({f"{k}_ms": v for k, v in ours.split_ms.items()})
    if ours.peak_mem_bytes is not None:
        row["peak_mem_mb"] = ours.peak_mem_bytes / 2**20
        row["mem_kind"] = m.mem_kind if m.mem_exact else m.mem_kind + " (lower bound)"
    if ours.fwd_flops is not None:
        row["fwd_gflop"] = ours.fwd_flops / 1e9
        row["train_gflop"] = ours.train_flops / 1e9
        if ours.train is not None:
            row["train_tflops"] = ours.train_flops * ours.train.img_s / 1e12
        if ours.infer is not None:
            row["infer_tflops"] = ours.fwd_flops * ours.infer.img_s / 1e12
        if peak and "train_tflops" in row:
            row["peak_tflops"] = peak
            row["peak_fraction"] = row["train_tflops"] / peak
    if m.loader_img_s is not None:
        row["loader_img_s"] = m.loader_img_s
        row["epoch_img_s"] = m.epoch_img_s
        row["epoch_input_share"] = m.input_share
        if ours.train is not None and m.epoch_img_s:
            row["epoch_vs_model"] = m.epoch_img_s / ours.train.img_s
    notes = list(m.notes) + ([ours.note] if ours.note else [])
    if baseline != "none":
        row["baseline"] = baseline
    if len(m.results) > 1:
        base = m.results[1]
        notes.append(f"baseline: {base.note}")
        row["baseline_params"] = base.params
        for mode in ("train", "infer"):
            ti, tb = getattr(ours, mode), getattr(base, mode)
            if ti is not None and tb is not None:
                row[f"baseline_{mode}_img_s"] = tb.img_s
                row[f"baseline_{mode}_ms"] = tb.median_ms
                row[f"{mode}_repeats_img_s"] = [round(v, 4) for v in ti.repeats_img_s]
                row[f"baseline_{mode}_repeats_img_s"] = [round(v, 4) for v in tb.repeats_img_s]
                # median of the per-repeat ratios: repeat k of both ran back to back (ABBA)
                row[f"{mode}_ratio"] = float(np.median([a / b for a, b in zip(ti.repeats_img_s, tb.repeats_img_s)]))
        if base.peak_mem_bytes is not None:
            row["baseline_peak_mem_mb"] = base.peak_mem_bytes / 2**20
        if base.split_ms:
            row.update({f"baseline_{k}_ms": v for k, v in base.split_ms.items()})
    row["note"] = "; ".join(notes)
    return row


def jobs(overrides: Sequence[str], multirun: bool) -> list[tuple[str, list[str], DictConfig]]:
    """(label, overrides, config) of every job, all composed (and validated) before the first one
    runs. The label is the model's name plus the sweep values that differ between jobs (other
    than model=)."""
    from vaitrain.config import compose, expand_sweep

    lists = expand_sweep(overrides) if multirun else [list(overrides)]
    common = set.intersection(*(set(job) for job in lists))
    out = []
    for job in lists:
        cfg = compose(job)
        varying = [o for o in job if o not in common and not o.startswith("model=")]
        out.append((" ".join([str(cfg.model.name), *varying]), job, cfg))
    return out


def run_bench(overrides: Sequence[str] = (), multirun: bool = False, progress: Progress = None,
              out: Optional[str] = None) -> BenchReport:
    """Benchmark each job (one per model of a sweep); the report holds a row per job. With `out`
    (or bench.out) the .json/.csv file is rewritten after every row, so an interrupted sweep
    keeps the rows it finished."""
    from vaitrain.bench.environment import environment
    from vaitrain.bench.peak import measured_peak_tflops
    from vaitrain.engine.device import resolve_device

    labelled = jobs(overrides, multirun)
    first = labelled[0][2]
    target = out or first.bench.out
    if target:
        check_out(target)
    device = resolve_device(str(first.trainer.device))
    if int(first.trainer.threads):
        torch.set_num_threads(int(first.trainer.threads))
    bench_node = OmegaConf.to_container(first.bench, resolve=True)
    assert isinstance(bench_node, dict)
    report = BenchReport([], environment(device), bench_node, out=str(target) if target else None)
    for i, (label, job, cfg) in enumerate(labelled, 1):
        settings = bench_settings(cfg, device)
        peak = float(cfg.bench.peak_tflops) or None
        if peak is None and device.type == "cuda":
            peak = measured_peak_tflops(device, settings.precision)
        if progress:
            progress(f"[{i}/{len(labelled)}] {label}: batch {batch_size(cfg)}, "
                     f"{int(cfg.bench.image_size or cfg.data.image_size)} px, {settings.precision}")
        report.rows.append({"label": label, "overrides": " ".join(job), **bench_job(cfg, device, peak)})
        if target:
            write_out(report, target)
    return report
