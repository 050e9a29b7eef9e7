"""The training run: build, (resume,) loop over epochs with a validation pass each, write records.

The whole step is visible in `_train_epoch`: forward under autocast, loss / grad_accum, backward
(GradScaler for fp16), clip, optimizer step, schedule step. No hidden callbacks.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from vaitrain.config import to_yaml
from vaitrain.engine import dist
from vaitrain.engine.artifacts import save_model_artifacts
from vaitrain.engine.checkpoint import (
    check_compatible, check_task, load_checkpoint, remove_partial_checkpoints, save_checkpoint,
)
from vaitrain.engine.components import Components, build_components
from vaitrain.engine.device import autocast, resolve_device, resolve_precision, rng_state, seed_everything, set_rng_state
from vaitrain.engine.evaluate import run_validation
from vaitrain.engine.layer_stats import LayerStats
from vaitrain.errors import TrainingError
from vaitrain.track import rundir
from vaitrain.track.metrics_log import MetricsLog, truncate_after_step
from vaitrain.track.progress import Progress
from vaitrain.track.tb import TBWriter


MIN_LOSS_SCALE = 1.0  # fp16: overflow after overflow down to this scale means a diverged run


@dataclass
class RunResult:
    run_dir: Path | None
    status: str  # completed | stopped
    metrics: dict[str, float] = field(default_factory=dict)
    epoch: int = 0
    step: int = 0
    message: str = ""
    signal: int = 0  # the signal that stopped the run, if any


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop stops after the current step and writes last.pt."""

    def __init__(self) -> None:
        self.signum = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, _frame: Any) -> None:
            if self.signum and signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            # A repeated SIGTERM is the same request: SLURM signals every process of a job step
            # and torchrun forwards its own SIGTERM too; SIGKILL is the way to stop at once.
            self.signum = self.signum or signum

        for s in old:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            elif isinstance(v, list):
                flat[key] = str(v)
            elif v is not None:
                flat[key] = v

    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for group in ("model", "data", "task", "optim", "sched", "norm", "trainer"):
        walk(container[group], group + ".")
    flat["seed"] = container["seed"]
    return flat


class Trainer:
    def __init__(self, cfg: DictConfig, overrides: list[str], *, out_dir: Path | None, dated: bool, name: str):
        self.cfg = cfg
        self.overrides = overrides
        self.ctx = dist.from_environment()
        self.device = dist.device_for_rank(resolve_device(cfg.trainer.device), self.ctx)
        dist.check_setup(self.ctx.world_size, self.device, bool(cfg.trainer.sync_bn))
        self.precision = resolve_precision(cfg.trainer.precision, self.device)
        if cfg.trainer.threads:
            torch.set_num_threads(int(cfg.trainer.threads))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = not cfg.trainer.deterministic
        if cfg.trainer.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        dist.init(self.ctx, self.device)
        seed_everything(int(cfg.seed))

        self.resume_state: dict[str, Any] | None = None
        self.run_dir: Path | None = None
        if cfg.resume:
            self.run_dir = Path(cfg.resume)
            self.resume_state = load_checkpoint(self.run_dir / rundir.CKPT_DIR / "last.pt", map_location="cpu")
            check_task(self.run_dir / rundir.CKPT_DIR / "last.pt", self.resume_state, cfg.task.name)

        stats = self.resume_state.get("data_stats") if self.resume_state else None
        self.c: Components = build_components(
            cfg, self.device, stats=stats, rank=self.ctx.rank, world_size=self.ctx.world_size
        )
        self.model = self.c.model
        if self.resume_state is not None:
            ckpt_path = self.run_dir / rundir.CKPT_DIR / "last.pt"  # type: ignore[operator]
            check_compatible(ckpt_path, self.resume_state, self.model, cfg.model.name, cfg.task.name)

        # Only now, with everything built and checked, is anything written: rank 0 makes the one
        # run directory and tells the other ranks where it is (or the error, on every rank).
        if self.run_dir is None:
            base = Path(out_dir) if out_dir is not None else Path(cfg.out_dir)
            self.run_dir = dist.on_main(lambda: self._new_run_dir(base, name or cfg.name, dated), self.ctx)
        elif self.ctx.is_main:
            remove_partial_checkpoints(self.run_dir / rundir.CKPT_DIR)

        self.step_model = dist.wrap(self.model, self.ctx, self.device, bool(cfg.trainer.sync_bn))
        if cfg.trainer.compile:
            self.step_model = torch.compile(self.step_model)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.epoch = 0  # completed epochs
        self.batch_in_epoch = 0  # micro-batches of the current epoch already done (mid-epoch resume)
        self.step = 0  # optimizer steps
        self.best: dict[str, Any] = {"value": None, "epoch": 0}
        self.skipped_steps = 0
        self.stop_signum = 0  # a stop signal every rank agreed on (0: none)
        self.params = sum(p.numel() for p in self.c.model.parameters())
        if self.resume_state is not None:
            self._restore(self.resume_state)

    def _new_run_dir(self, base: Path, name: str, dated: bool) -> Path:
        run = rundir.create_run_dir(base, self.cfg.model.name, self.cfg.data.name, name, dated=dated)
        rundir.write_run_files(run, to_yaml(self.cfg), self.overrides, self.device)
        return run

    # ----- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "model_name": self.cfg.model.name,
            "task": self.cfg.task.name,
            "model": self.model.state_dict(),
            "optimizer": self.c.opt.optimizer.state_dict(),
            "scheduler": self.c.opt.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best": dict(self.best),
            "skipped_steps": self.skipped_steps,
            "data_stats": {k: v.detach().cpu() for k, v in self.c.data.stats.items()},
            "config_yaml": to_yaml(self.cfg),
            "elapsed": time.perf_counter() - self.t0,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.c.opt.optimizer.load_state_dict(state["optimizer"])
        self.c.opt.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.step = int(state["step"])
        self.best = dict(state.get("best") or self.best)
        self.skipped_steps = int(state.get("skipped_steps", 0))

    def _save(self, name: str) -> None:
        if self.ctx.is_main:
            save_checkpoint(self.run_dir / rundir.CKPT_DIR / name, self._state())  # type: ignore[operator]

    # ----- the run -----------------------------------------------------------------------------
    def fit(self) -> RunResult:
        cfg = self.cfg
        main = self.ctx.is_main
        run_dir = self.run_dir
        assert run_dir is not None
        progress = Progress(cfg.trainer.progress, enabled=main)
        tb: TBWriter | None = None
        log: MetricsLog | None = None
        if main:
            if self.resume_state is not None:
                truncate_after_step(run_dir / rundir.METRICS_FILE, self.step)
                progress.line(f"resuming {run_dir} at epoch {self.epoch + 1}, step {self.step}")
            tb = TBWriter(run_dir / rundir.TB_DIR, purge_step=self.step + 1 if self.resume_state else None)
            log = MetricsLog(run_dir / rundir.METRICS_FILE)
            if self.resume_state is None:
                tb.text("config", "```\n" + to_yaml(cfg) + "\n```")
                save_model_artifacts(self.model, run_dir, tb)
        self.t0 = time.perf_counter() - float((self.resume_state or {}).get("elapsed", 0.0))
        stop = _StopFlag()
        epochs = int(cfg.trainer.epochs)
        stop_after = int(cfg.trainer.stop_after)
        run_epochs = 0
        status, message, last = "completed", "", {}
        try:
            with stop.installed():
                while self.epoch < epochs:
                    train_metrics = self._train_epoch(progress, tb, log, stop)
                    if train_metrics is None:  # a signal mid-epoch: last.pt is written
                        status = "stopped"
                        break
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    run_epochs += 1
                    val = run_validation(self, progress, tb, self.epoch)
                    last = {**train_metrics, **val}
                    improved = self._update_best(val)
                    record = {"kind": "epoch", "epoch": self.epoch, "step": self.step,
                              "time": time.perf_counter() - self.t0, **last}
                    if main:
                        assert tb is not None and log is not None
                        tb.scalars({k: v for k, v in last.items()}, self.step)
                        log.write(record)
                        progress.epoch_line(self.epoch, epochs, _summary(last, self.c.task.main_metric))
                    self._save("last.pt")
                    if improved:
                        self._save("best.pt")
                    if self._agree_stop(stop) and self.epoch < epochs:  # a signal in the last step/validation
                        status = "stopped"
                        break
                    if stop_after and run_epochs >= stop_after and self.epoch < epochs:
                        status = "stopped"
                        break
        except KeyboardInterrupt:
            status = "stopped"
            raise
        except BaseException:  # a non-finite loss, or any crash: never recorded as completed
            status = "failed"
            raise
        finally:
            if main and log is not None and tb is not None:
                final = {"kind": "final", "epoch": self.epoch, "step": self.step,
                         "time": time.perf_counter() - self.t0, "status": status,
                         "wall_time": time.perf_counter() - self.t0, "params": self.params,
                         "skipped_steps": self.skipped_steps, **last}
                if self.best["value"] is not None:
                    final[f"best/{self.c.task.main_metric}"] = self.best["value"]
                    final["best_epoch"] = self.best["epoch"]
                log.write(final)
                if status == "completed" and last:
                    hp = {f"val/{self.c.task.main_metric}": last.get(f"val/{self.c.task.main_metric}", math.nan),
                          "val/loss": last.get("val/loss", math.nan)}
                    tb.hparams(_flat_hparams(cfg), hp)
                tb.close()
                log.close()
            progress.close()
            dist.shutdown(self.ctx)
        if status == "stopped":
            how = f"vaitrain train resume={run_dir}"
            message = f"stopped after epoch {self.epoch}, step {self.step}; continue with: {how}"
        return RunResult(run_dir, status, last, self.epoch, self.step, message, self.stop_signum)

    def _update_best(self, val: dict[str, float]) -> bool:
        key = f"val/{self.c.task.main_metric}"
        value = val.get(key)
        if value is None or not math.isfinite(value):
            return False
        better = (
            self.best["value"] is None
            or (self.c.task.main_mode == "max" and value > self.best["value"])
            or (self.c.task.main_mode == "min" and value < self.best["value"])
        )
        if better:
            self.best = {"metric": key, "value": value, "epoch": self.epoch}
        return better

    def _train_epoch(self, progress: Progress, tb: TBWriter | None, log: MetricsLog | None,
                     stop: _StopFlag) -> dict[str, float] | None:
        """Train one epoch (from batch_in_epoch on); its train metrics, or None when a stop signal
        ended it early (last.pt written)."""
        cfg = self.cfg
        loader = self.c.data.train
        opt = self.c.opt
        accum = int(cfg.trainer.grad_accum)
        clip = float(cfg.optim.grad_clip)
        log_every = max(1, int(cfg.trainer.log_every))
        stats_every = int(cfg.trainer.layer_stats)
        ckpt_every = int(cfg.trainer.checkpoint_every)
        channels_last = bool(cfg.trainer.channels_last)
        epoch_index = self.epoch  # 0-based index of the epoch being trained
        loader.set_epoch(epoch_index)
        n_batches = (len(loader) // accum) * accum  # a trailing partial accumulation is dropped
        start = self.batch_in_epoch
        self.step_model.train()
        progress.start(f"train {epoch_index + 1}/{cfg.trainer.epochs}", n_batches - start)

        loss_sum = torch.zeros((), device=self.device)
        epoch_loss_sum = torch.zeros((), device=self.device)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)  # a non-finite loss this epoch
        step_bad = torch.zeros((), dtype=torch.bool, device=self.device)  # ... in this optimizer step
        loss_count = epoch_count = images = 0
        t_start = time.perf_counter()
        it = iter(loader)
        for _ in range(start):  # mid-epoch resume: the order is fixed by (seed, epoch), so skip
            next(it)
        for b in range(start, n_batches):
            x, y = next(it)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            record_stats = (
                stats_every > 0 and tb is not None and (b + 1) % accum == 0 and (self.step + 1) % stats_every == 0
            )
            hooks = LayerStats(self.model) if record_stats else None
            # DDP all-reduces gradients only on the micro-batch that ends an accumulation
            defer_sync = self.ctx.enabled and (b + 1) % accum != 0
            with (hooks if hooks is not None else _null()), (self.step_model.no_sync() if defer_sync else _null()):
                with autocast(self.precision, self.device):
                    loss, _out = opt.objective(self.step_model, x, y)
                self.scaler.scale(loss / accum).backward()
            loss_d = loss.detach().float()
            step_bad |= ~torch.isfinite(loss_d)
            loss_sum += loss_d
            epoch_loss_sum += loss_d
            loss_count += 1
            epoch_count += 1
            images += x.shape[0]
            if (b + 1) % accum:
                continue
            if clip > 0:
                self.scaler.unscale_(opt.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            if not self._optimizer_step(opt.optimizer):
                bad |= step_bad
            step_bad.zero_()
            if hooks is not None and tb is not None:
                tb.scalars(hooks.scalars(), self.step + 1)
                for tag, values in hooks.histograms().items():
                    tb.histogram(tag, values, self.step + 1)
            opt.optimizer.zero_grad(set_to_none=True)
            opt.scheduler.step()
            opt.after_step()
            self.step += 1
            self.batch_in_epoch = b + 1
            stopping = self._agree_stop(stop)
            if self.step % log_every == 0 or ckpt_every and self.step % ckpt_every == 0 or stopping:
                self._check_finite(bad)
            if self.step % log_every == 0:
                value = self._mean_over_ranks(loss_sum, loss_count)
                loss_sum.zero_()
                loss_count = 0
                lr = opt.optimizer.param_groups[0]["lr"]
                lr = float(lr.max()) if torch.is_tensor(lr) else float(lr)
                if tb is not None and log is not None:
                    tb.scalars({"train/loss": value, "lr": lr}, self.step)
                    log.write({"kind": "train", "epoch": epoch_index + 1, "step": self.step,
                               "time": time.perf_counter() - self.t0, "train/loss": value, "lr": lr})
                progress.advance(0, loss=value)
            progress.advance(accum)
            # The epoch's last step is checkpointed (and a stop honoured) at the epoch's end, after
            # its validation and record, so no last.pt ever holds a trained-but-unrecorded epoch.
            if b + 1 < n_batches and (stopping or ckpt_every and self.step % ckpt_every == 0):
                self._save("last.pt")
            if stopping and b + 1 < n_batches:
                progress.finish()
                return None
        self._check_finite(bad)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t_start
        progress.finish()
        lr = opt.optimizer.param_groups[0]["lr"]
        lr = float(lr.max()) if torch.is_tensor(lr) else float(lr)
        img_s = images * self.ctx.world_size / max(seconds, 1e-9)
        train_loss = self._mean_over_ranks(epoch_loss_sum, epoch_count)
        return {"train/loss": train_loss, "lr": lr, "throughput": img_s, "epoch_time": seconds}

    def _optimizer_step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step; True when fp16's grad scaler skipped the step as an overflow (counted, not fatal,
        while the loss scale stays >= MIN_LOSS_SCALE; below it the values themselves are broken)."""
        if self.precision != "fp16":
            optimizer.step()
            return False
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        if self.scaler.get_scale() >= before:
            return False
        self.skipped_steps += 1
        return self.scaler.get_scale() >= MIN_LOSS_SCALE

    def _agree_stop(self, stop: _StopFlag) -> bool:
        """Whether to stop after this step. Every rank stops at the same step: a signal that
        reached any rank stops all of them (one small CPU all-reduce per step when distributed)."""
        self.stop_signum = dist.agree_max(stop.signum)
        return bool(self.stop_signum)

    def _mean_over_ranks(self, total: torch.Tensor, count: int) -> float:
        if not self.ctx.enabled:
            return (total / max(count, 1)).item()
        both = dist.all_reduce_sum(torch.stack([total.float(), torch.tensor(float(count), device=total.device)]))
        return (both[0] / both[1].clamp(min=1)).item()

    def _check_finite(self, bad: torch.Tensor) -> None:
        """Stop every rank once a loss (since the last check) or a weight is NaN/inf. Runs before
        each checkpoint, so a diverged model never replaces a good last.pt."""
        weights_ok = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()
        code = dist.agree_max(2 if bad.item() else 0 if weights_ok.item() else 1)  # 2: a loss, 1: weights
        if code:
            last = self.run_dir / rundir.CKPT_DIR / "last.pt"  # type: ignore[operator]
            where = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
            raise TrainingError(
                f"the {'loss' if code == 2 else 'weights'} became non-finite (NaN/inf) by step {self.step}; {where}; "
                "lower optim.lr, set optim.grad_clip, or use trainer.precision=fp32"
            )


@contextmanager
def _null() -> Iterator[None]:
    yield


def _summary(metrics: dict[str, float], main_metric: str) -> dict[str, float]:
    keys = ["train/loss", "val/loss", f"val/{main_metric}", "throughput", "epoch_time"]
    return {k.replace("throughput", "img/s"): metrics[k] for k in keys if k in metrics}


def train(cfg: DictConfig, overrides: list[str], *, out_dir: Path | None = None, dated: bool = True,
          name: str = "") -> RunResult:
    """Train (or resume, when cfg.resume is set) and return where the records went."""
    return Trainer(cfg, overrides, out_dir=out_dir, dated=dated, name=name).fit()
