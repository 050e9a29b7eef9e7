"""The training run: build, (resume,) loop over epochs with a validation pass each, write records.

The pieces: `OptimizerStep` (engine/step.py: autocast, scaled backward, accumulation, clipping,
the step, schedule, after-step hooks), `Records` (engine/records.py: TensorBoard, metrics.jsonl,
progress, the final line), `RunStore`/`StopFlag` (engine/checkpointing.py: run directory,
checkpoints, resume, signals) and `run_validation` (engine/evaluate.py). No hidden callbacks.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig

from vaitrain.config import to_yaml
from vaitrain.engine import dist
from vaitrain.engine.checkpoint import check_compatible, check_same_data, data_size_note
from vaitrain.engine.checkpointing import BEST, LAST, RunStore, StopFlag
from vaitrain.engine.components import build_components
from vaitrain.engine.ema import WeightEMA
from vaitrain.engine.device import resolve_device, resolve_precision, rng_state, seed_everything, set_rng_state
from vaitrain.engine.evaluate import evaluate_checkpoint, run_validation
from vaitrain.engine.layer_stats import LayerStats
from vaitrain.engine.resources import resource_errors
from vaitrain.errors import Interrupted
from vaitrain.engine.resume import plan_resume, record_resume
from vaitrain.engine.records import EPOCH_TIME, LR, THROUGHPUT, TRAIN_LOSS, Records, start_summary
from vaitrain.data.info import describe
from vaitrain.engine.start import write_start_record
from vaitrain.engine.few_steps import few_steps_note
from vaitrain.engine.threads import oversubscription_hint
from vaitrain.engine.step import MIN_LOSS_SCALE, OptimizerStep, check_finite, mean_over_ranks
from vaitrain.track import rundir
from vaitrain.track.progress import Progress

__all__ = ["MIN_LOSS_SCALE", "RunResult", "Trainer", "train"]


EpochHook = Callable[[int, dict[str, float]], Optional[str]]


@dataclass
class RunResult:
    run_dir: Path | None
    status: str  # completed | stopped | failed | a status on_epoch ended it with (e.g. pruned)
    metrics: dict[str, float] = field(default_factory=dict)
    epoch: int = 0
    step: int = 0
    message: str = ""
    signal: int = 0  # the signal that stopped the run, if any
    main_metric: str = ""  # the task's main metric, e.g. val/miou (what the final line shows)
    best: dict[str, Any] = field(default_factory=dict)  # best.pt's metric, value and epoch


def _setup_process(cfg: DictConfig, ctx: dist.DistContext, device: torch.device) -> None:
    """Threads, cuDNN, determinism, the process group and the seeds, before anything is built."""
    if cfg.trainer.threads:
        torch.set_num_threads(int(cfg.trainer.threads))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.trainer.deterministic
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    dist.init(ctx, device)
    seed_everything(int(cfg.seed))


class Trainer:
    def __init__(self, cfg: DictConfig, overrides: list[str], *, out_dir: Path | None, dated: bool, name: str,
                 on_epoch: EpochHook | None = None):
        self.cfg = cfg
        self.given = list(overrides)
        self.on_epoch = on_epoch
        self.config_yaml = to_yaml(cfg)  # serialized once: run files, TensorBoard, every checkpoint
        self.ctx = dist.from_environment()
        self.device = dist.device_for_rank(resolve_device(cfg.trainer.device), self.ctx)
        dist.check_setup(self.ctx.world_size, self.device, bool(cfg.trainer.sync_bn))
        self.precision = resolve_precision(cfg.trainer.precision, self.device)
        _setup_process(cfg, self.ctx, self.device)

        self.store = RunStore(self.ctx, Path(cfg.resume) if cfg.resume else None)
        self.resume_state = self.store.resume_state(cfg.task.name) if cfg.resume else None
        # resume rules: a completed run, a shrunk plan or a changed model/data/... is refused here
        self.plan = plan_resume(cfg, self.resume_state, self.store.folder.parent) if self.resume_state else None
        stats = self.resume_state.get("data_stats") if self.resume_state else None
        preparing = Progress(cfg.trainer.progress, enabled=self.ctx.is_main)  # data generation/decoding
        try:
            with preparing.step(f"preparing the {rundir.data_label(cfg).split('-')[0]} data and {cfg.model.name}"):
                self.parts = build_components(cfg, self.device, stats=stats, rank=self.ctx.rank,
                                              world_size=self.ctx.world_size, start=self.resume_state is None,
                                              test=bool(cfg.trainer.test_at_end))
        finally:
            preparing.close()
        self.data_info = describe(self.parts.data, cfg.data)
        self.model = self.parts.model
        self.task = self.parts.task
        if self.resume_state is not None:
            check_same_data(self.store.last, self.resume_state, self.parts.data)
            changed = data_size_note(self.store.last, self.resume_state, self.parts.data, ("train", "val"))
            if changed:  # allowed (a folder grows), but the curves change there: said at the start
                self.parts.data.notes.append(changed + "the run goes on with the data as it is now, normalized "
                                             "with the statistics it started with (its checkpoint's)")
            check_compatible(self.store.last, self.resume_state, self.model, cfg.model.name, cfg.task.name)
        self.run_dir = self.store.open(
            Path(out_dir) if out_dir is not None else Path(cfg.out_dir), model=cfg.model.name,
            data=rundir.data_label(cfg), name=name or cfg.name, dated=dated, config_yaml=self.config_yaml,
            overrides=overrides, device=self.device,
            on_resume=lambda run: record_resume(run, self.plan, overrides, self.config_yaml,  # type: ignore[arg-type]
                                                epoch=int(self.resume_state["epoch"]), step=int(self.resume_state["step"])),
        )
        try:
            self._start(cfg, overrides)
        except BaseException:  # failed or stopped before its records open: no orphan directory
            self.store.abandon()
            raise

    def _start(self, cfg: DictConfig, overrides: list[str]) -> None:
        """The rest of start-up, once the run directory is open (and locked)."""
        step_model = dist.wrap(self.model, self.ctx, self.device, bool(cfg.trainer.sync_bn))
        if cfg.trainer.compile:
            step_model = torch.compile(step_model)
        self.step_model = step_model
        self.optstep = OptimizerStep(
            self.parts.opt, self.model, step_model, precision=self.precision, device=self.device,
            accum=int(cfg.trainer.grad_accum), clip=float(cfg.optim.grad_clip), distributed=self.ctx.enabled,
        )
        self.ema = WeightEMA(self.model, float(cfg.trainer.ema)) if float(cfg.trainer.ema) > 0 else None
        if self.ema is not None:  # averaged after every optimizer step
            self.optstep.after_step_hooks.append(self.ema.update)
        self.epoch = 0  # completed epochs
        self.batch_in_epoch = 0  # micro-batches of the current epoch already done (mid-epoch resume)
        self.step = 0  # optimizer steps
        self.best: dict[str, Any] = {"value": None, "epoch": 0}
        self.stop_signum = 0  # a stop signal every rank agreed on (0: none)
        self.params = sum(p.numel() for p in self.model.parameters())
        if self.resume_state is not None:
            self._restore(self.resume_state)
            if self.plan is not None and self.plan.extends:  # the added epochs: a new schedule cycle
                scheduler = self.parts.opt.scheduler
                scheduler.extend(scheduler.steps_per_epoch * self.plan.epochs)
        self.records = Records(cfg, self.run_dir, main=self.ctx.is_main,
                               elapsed=float((self.resume_state or {}).get("elapsed", 0.0)), overrides=overrides)
        if self.parts.start is not None and self.ctx.is_main:
            self.records.progress.line(self.parts.start.message())
            write_start_record(self.run_dir, self.parts.start, cfg, self.parts.data.stats)

    # ----- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model_name": self.cfg.model.name,
            "task": self.cfg.task.name,
            "model": self.model.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            **self.optstep.state_dict(),  # optimizer, scheduler, scaler, skipped_steps
            "rng": rng_state(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best": dict(self.best),
            "data_stats": {k: v.detach().cpu() for k, v in self.parts.data.stats.items()},
            "data_info": self.data_info,  # what predict/export need without the data: sizes, names
            "config_yaml": self.config_yaml,
            "elapsed": self.records.elapsed(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None and "ema" in state:  # (trainer.ema added on resume: starts from here)
            self.ema.load_state_dict(state["ema"])
        self.optstep.load_state_dict(state)
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.step = int(state["step"])
        self.best = dict(state.get("best") or self.best)

    def _save(self, *names: str) -> None:
        """The state, serialized once, to each checkpoint named (last.pt, and best.pt when improved)."""
        if self.ctx.is_main:
            self.store.save(names, self._state())

    def _agree_stop(self, stop: StopFlag) -> bool:
        """Whether to stop after this step (every rank stops at the same step)."""
        self.stop_signum = stop.agree()
        return bool(self.stop_signum)

    # ----- the run -----------------------------------------------------------------------------
    def fit(self) -> RunResult:
        epochs, stop_after = int(self.cfg.trainer.epochs), int(self.cfg.trainer.stop_after)
        stop = StopFlag()
        # The loop's handler stays installed through the final record and the teardown: a stop
        # request arriving then (a sweep's SIGTERM just after the group's Ctrl-C) is the same request,
        # not a death by the default SIGTERM action between the stop and the final record.
        with stop.installed():
            return self._fit(stop, epochs, stop_after)

    def _fit(self, stop: StopFlag, epochs: int, stop_after: int) -> RunResult:
        records = self.records
        run_epochs, status, last = 0, "completed", {}
        try:
            records.open(resumed=self.resume_state is not None, epoch=self.epoch, step=self.step,
                         config_yaml=self.config_yaml, model=self.model)
            self._say_start()
            while self.epoch < epochs:
                train_metrics = self._train_epoch(stop)
                if train_metrics is None:  # a signal mid-epoch: last.pt is written
                    status = "stopped"
                    break
                self.epoch += 1
                self.batch_in_epoch = 0
                run_epochs += 1
                val = self._validate()
                last = {**train_metrics, **val}
                improved = self._update_best(val)
                records.epoch(self.epoch, self.step, last, self.task.main_metric)
                self._save(LAST, *([BEST] if improved else []))
                ended = self._ends_early(stop, last, run_epochs, epochs, stop_after)
                if ended:
                    status = ended
                    break
            if status == "completed" and self.epoch >= epochs and self.cfg.trainer.test_at_end:
                last = {**last, **self._test_best()}
        except (KeyboardInterrupt, Interrupted):
            status = "stopped"
            raise
        except BaseException as err:  # a non-finite loss, or any crash: never recorded as completed
            status = "failed"
            last = {**last, "error": " ".join(str(err).split())[:300] or type(err).__name__}  # the why
            raise
        finally:
            try:
                records.final(status=status, epoch=self.epoch, step=self.step, params=self.params,
                              skipped_steps=self.optstep.skipped_steps, last=last, best=self.best,
                              main_metric=self.task.main_metric)
            except OSError:  # a full disk: the error being raised says so; the lock still goes
                records.close()
            finally:
                self.store.close()
                dist.shutdown(self.ctx)
        message = ""
        if status == "stopped":  # epochs counted from 1 as the progress bar does ('after epoch 0' read as a first epoch)
            epochs = int(self.cfg.trainer.epochs)
            where = (f"in epoch {self.epoch + 1}/{epochs}" if self.batch_in_epoch else
                     f"after epoch {self.epoch}/{epochs}" if self.epoch else f"before epoch 1/{epochs}")
            message = f"stopped {where} at step {self.step}; continue with: vaitrain train resume={self.run_dir}"
        return RunResult(self.run_dir, status, last, self.epoch, self.step, message, self.stop_signum,
                         main_metric=f"val/{self.task.main_metric}", best=dict(self.best))

    def _test_best(self) -> dict[str, float]:
        """trainer.test_at_end: the test split's metrics (test/<name>) of the weights eval uses by
        default (best.pt, chosen on validation only; the last weights when no best.pt exists)."""
        metrics = evaluate_checkpoint(self.model, self.store.folder / BEST, self.parts.data.test, self.task,
                                      self.precision, self.device, bool(self.cfg.trainer.channels_last))
        found = {f"test/{k}": v for k, v in metrics.items()}
        self.records.progress.line("test (best.pt): " + "  ".join(f"{k} {v:.4g}" for k, v in found.items()))
        return found

    def _say_start(self) -> None:
        """The lines a run starts with: what it trains on what, a CPU oversubscription hint, the
        data's notes (e.g. images shrunk by more than 2x)."""
        progress = self.records.progress
        progress.line(start_summary(
            self.cfg, self.run_dir, params=self.params, data=self.parts.data, device=self.device,
            precision=self.precision, world_size=self.ctx.world_size, resumed=self.resume_state is not None))
        hint = oversubscription_hint(self.device, int(self.cfg.trainer.threads)) if self.ctx.is_main else None
        if hint:
            progress.line(hint)
        for note in self.parts.data.notes:
            progress.line(note)
        steps = len(self.parts.data.train) // max(1, int(self.cfg.trainer.grad_accum)) * int(self.cfg.trainer.epochs)
        short = few_steps_note(self.model, steps) if self.resume_state is None else None
        if short:
            progress.line(short)
        if (str(self.cfg.model.get("freeze", "none")) == "backbone" and self.resume_state is None
                and not str(self.cfg.model.get("weights") or "") and not self.cfg.get("init_from")):
            progress.line("note: model.freeze=backbone without model.weights or init_from: the backbone keeps its "
                          "random initialization and only the final layer trains")
        for line in unused_overrides(self.cfg, self.given):
            progress.line(line)

    def _validate(self) -> dict[str, float]:
        """The epoch's validation metrics (val/*, and val_ema/* with trainer.ema)."""
        val = run_validation(
            self.model, self.parts.data.val, self.task, precision=self.precision,
            device=self.device, channels_last=bool(self.cfg.trainer.channels_last),
            images=self.records.image_writer(self.epoch), step=self.step, progress=self.records.progress,
        )
        if self.ema is not None:
            val.update(self._validate_ema())
        return val

    def _ends_early(self, stop: StopFlag, last: dict[str, float], run_epochs: int, epochs: int,
                    stop_after: int) -> str | None:
        """After an epoch's record and checkpoint: the status that ends the run before its planned
        end, or None. In this order: the epoch hook (a search's pruner says "pruned"), a stop
        signal that came in the epoch's last step or validation, trainer.stop_after."""
        ended = self.on_epoch(self.epoch, last) if self.on_epoch is not None else None
        if ended and self.epoch < epochs:
            return str(ended)
        if self._agree_stop(stop) and self.epoch < epochs:  # every rank agrees, every epoch
            return "stopped"
        if stop_after and run_epochs >= stop_after and self.epoch < epochs:
            return "stopped"
        return None

    def _validate_ema(self) -> dict[str, float]:
        """The weight average's validation metrics, as val_ema/<name>."""
        assert self.ema is not None
        val = run_validation(self.ema.module, self.parts.data.val, self.task, precision=self.precision,
                             device=self.device, channels_last=bool(self.cfg.trainer.channels_last))
        return {"val_ema/" + k.split("/", 1)[1]: v for k, v in val.items()}

    def _update_best(self, val: dict[str, float]) -> bool:
        key = f"{'val_ema' if self.ema is not None else 'val'}/{self.task.main_metric}"  # best.pt: the EMA's
        value = val.get(key)
        if value is None or not math.isfinite(value):
            return False
        old = self.best["value"]
        mode = self.task.main_mode
        better = old is None or (mode == "max" and value > old) or (mode == "min" and value < old)
        if better:
            self.best = {"metric": key, "value": value, "epoch": self.epoch}
        return better

    def _train_epoch(self, stop: StopFlag) -> dict[str, float] | None:
        """Train one epoch (from batch_in_epoch on); its train metrics, or None when a stop signal
        ended it early (last.pt written)."""
        cfg, optstep, records, progress = self.cfg, self.optstep, self.records, self.records.progress
        accum, log_every = optstep.accum, max(1, int(cfg.trainer.log_every))
        stats_every, ckpt_every = int(cfg.trainer.layer_stats), int(cfg.trainer.checkpoint_every)
        channels_last = bool(cfg.trainer.channels_last)
        loader = self.parts.data.train
        loader.set_epoch(self.epoch)  # the 0-based index of the epoch being trained
        n_batches = (len(loader) // accum) * accum  # a trailing partial accumulation is dropped
        start = self.batch_in_epoch
        self.step_model.train()
        progress.start(f"train {self.epoch + 1}/{cfg.trainer.epochs}", n_batches - start)

        loss_sum = torch.zeros((), device=self.device)  # since the last logged step
        epoch_loss_sum = torch.zeros((), device=self.device)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)  # a diverged step this epoch
        loss_count = epoch_count = images = 0
        clock = Stopwatch(self.device)
        it = iter(loader)
        for _ in range(start):  # mid-epoch resume: the order is fixed by (seed, epoch), so skip
            next(it)
        for b in range(start, n_batches):
            x, y = next(it)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            ends_step = (b + 1) % accum == 0
            watch = (LayerStats(self.model) if stats_every > 0 and records.writing and ends_step
                     and (self.step + 1) % stats_every == 0 else None)
            loss = optstep.backward(x, y, ends_step=ends_step, watch=watch)
            loss_sum += loss
            epoch_loss_sum += loss
            loss_count += 1
            epoch_count += 1
            images += x.shape[0]
            if not ends_step:
                continue
            step_no = self.step + 1
            bad |= optstep.step(None if watch is None else lambda: records.layer_stats(watch, step_no))
            self.step += 1
            self.batch_in_epoch = b + 1
            stopping = self._agree_stop(stop)
            checkpointing = bool(ckpt_every) and self.step % ckpt_every == 0
            if self.step % log_every == 0 or checkpointing or stopping:
                check_finite(self.model, bad, self.step, self.store.last)
            if self.step % log_every == 0:
                value = mean_over_ranks(loss_sum, loss_count, self.ctx.enabled)
                loss_sum.zero_()
                loss_count = 0
                records.train_step(self.epoch + 1, self.step, value, optstep.lr())
            progress.advance(accum)
            # The epoch's last step is checkpointed (and a stop honoured) at the epoch's end, after
            # its validation and record, so no last.pt ever holds a trained-but-unrecorded epoch.
            if b + 1 < n_batches and (stopping or checkpointing):
                self._save(LAST)
            if stopping and b + 1 < n_batches:
                progress.finish()
                return None
        check_finite(self.model, bad, self.step, self.store.last)
        seconds = clock.seconds()
        progress.finish()
        return {TRAIN_LOSS: mean_over_ranks(epoch_loss_sum, epoch_count, self.ctx.enabled),
                LR: optstep.lr(), THROUGHPUT: images * self.ctx.world_size / max(seconds, 1e-9),
                EPOCH_TIME: seconds}


class Stopwatch:
    """Wall seconds of the device's work since creation (CUDA is synchronized before reading)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.t0


def unused_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """A note per override of a key that belongs to an option not chosen (optim.lr_min=0.1 with
    optim=adam): composed and valid, but nothing reads it, which the run should say."""
    from vaitrain.options import applying_config

    hidden = set(applying_config(cfg)[1])
    notes = []
    for text in dict.fromkeys(overrides):
        key = text.split("=", 1)[0].lstrip("+")
        if key in hidden:
            group = key.split(".")[0]
            name = cfg[group].name
            notes.append(f"note: {text} has no effect: {group}={name} does not read {key} "
                         f"(`vaitrain options {group} {group}={name}` lists what it does)")
    return notes


def train(cfg: DictConfig, overrides: list[str], *, out_dir: Path | None = None, dated: bool = True,
          name: str = "", on_epoch: EpochHook | None = None) -> RunResult:
    """Train (or resume, when cfg.resume is set) and return where the records went. `on_epoch(epoch,
    metrics)` runs after each epoch's record and checkpoint (single process); a status it returns
    (e.g. "pruned") ends the run with that status."""
    trainer: Trainer | None = None
    with resource_errors(lambda: trainer.store.last if trainer is not None and trainer.store.run_dir else None):
        trainer = Trainer(cfg, overrides, out_dir=out_dir, dated=dated, name=name, on_epoch=on_epoch)
        return trainer.fit()
