"""What a run writes for people to read: TensorBoard events, metrics.jsonl, the progress display,
the final line and the hparams summary. Only the main rank writes; on the others every method
writes nothing (the progress display is off).

The tag and key names are the module constants below; metrics.jsonl and TensorBoard use the same
names at the same global step (docs/ARCHITECTURE.md, "Records a run leaves").
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from torch import nn

from vaitrain.engine.artifacts import save_model_artifacts
from vaitrain.track import rundir
from vaitrain.track.metrics_log import MetricsLog, truncate_after_step
from vaitrain.track.progress import Progress

# TensorBoard's Time Series view sorts its sections by tag name (digits and '/' first, then
# character order) and opens the first two: the "train" and "val" sections, so the loss, the
# learning rate, speed and the task's metrics are what a user sees first. Everything else (layer
# statistics under "watch", RandWire graphs under "wiring") sorts after "val".
TRAIN_LOSS = "train/loss"
LR = "train/lr"
THROUGHPUT = "train/throughput"  # images per second of the epoch
EPOCH_TIME = "train/time_per_epoch"  # seconds; named to sort after the loss in its section
PER_STEP = (TRAIN_LOSS, LR)  # also logged every trainer.log_every steps
CONFIG_TEXT = "config"
HPARAM_GROUPS = ("model", "data", "task", "optim", "sched", "norm", "trainer")
# Always in the HParams table (what the run is); the rest only when overridden.
HPARAM_ALWAYS = ("model.name", "data.name", "task.name", "optim.name")
# Overridable keys that change how a run is watched or run, not what it learns.
NOT_HPARAMS = ("trainer.progress", "trainer.threads", "trainer.log_every", "trainer.image_every",
               "trainer.checkpoint_every", "trainer.stop_after", "trainer.device", "trainer.layer_stats",
               "data.root", "data.num_workers", "data.download", "out_dir", "resume", "name")


class Records:
    def __init__(self, cfg: DictConfig, run_dir: Path, *, main: bool, elapsed: float = 0.0,
                 overrides: list[str] | None = None) -> None:
        self.cfg = cfg
        self.overrides = list(overrides or [])
        self._per_step_at = -1  # the last step whose per-step scalars went to TensorBoard
        self.run_dir = run_dir
        self.main = main
        self.progress = Progress(cfg.trainer.progress, enabled=main, done_lines=False)  # epoch lines say it
        self.tb: Any = None  # TBWriter, once opened (main rank)
        self.log: MetricsLog | None = None
        self._elapsed_before = elapsed  # a resumed run's clock goes on from its checkpoint
        self.t0 = time.perf_counter() - elapsed

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def writing(self) -> bool:
        """Whether records are written here (main rank, opened)."""
        return self.tb is not None

    def open(self, *, resumed: bool, epoch: int, step: int, config_yaml: str, model: nn.Module) -> None:
        """Start the clock and open the writers; on resume drop what a killed run wrote after the
        checkpoint's step."""
        self.t0 = time.perf_counter() - self._elapsed_before
        if not self.main:
            return
        from vaitrain.track.tb import TBWriter  # TensorBoard's import is paid only by a writing rank

        if resumed:
            truncate_after_step(self.run_dir / rundir.METRICS_FILE, step)
            self.progress.line(f"resuming {self.run_dir} at epoch {epoch + 1}, step {step}")
        tb = TBWriter(self.run_dir / rundir.TB_DIR, purge_step=step + 1 if resumed else None)
        self.log = MetricsLog(self.run_dir / rundir.METRICS_FILE)
        self.tb = tb
        if not resumed:
            tb.text(CONFIG_TEXT, "```\n" + config_yaml + "\n```")
            save_model_artifacts(model, self.run_dir, tb)

    def train_step(self, epoch: int, step: int, loss: float, lr: float) -> None:
        """A logged optimizer step (every trainer.log_every); `epoch` is the 1-based epoch in progress."""
        if self.writing:
            assert self.log is not None
            self.tb.scalars({TRAIN_LOSS: loss, LR: lr}, step)
            self._per_step_at = step
            self.log.write({"kind": "train", "epoch": epoch, "step": step, "time": self.elapsed(),
                            TRAIN_LOSS: loss, LR: lr})
        self.progress.advance(0, loss=loss)

    def layer_stats(self, stats: Any, step: int) -> None:
        """Per-layer activation/gradient statistics (a LayerStats after its step)."""
        if self.writing:
            self.tb.scalars(stats.scalars(), step)
            for tag, values in stats.histograms().items():
                self.tb.histogram(tag, values, step)

    def image_writer(self, epoch: int) -> Any:
        """The TensorBoard writer when this epoch logs sample images (trainer.image_every), else None."""
        every = int(self.cfg.trainer.image_every)
        return self.tb if self.writing and every > 0 and epoch % every == 0 else None

    def epoch(self, epoch: int, step: int, metrics: Mapping[str, float], main_metric: str) -> None:
        if self.writing:
            assert self.log is not None
            # one point per tag and step: the epoch's mean loss and lr go to TensorBoard only when
            # no per-step point was logged at this step (metrics.jsonl keeps them in the epoch line)
            skip = PER_STEP if self._per_step_at == step else ()
            self.tb.scalars({k: v for k, v in metrics.items() if k not in skip}, step)
            self.log.write({"kind": "epoch", "epoch": epoch, "step": step, "time": self.elapsed(), **metrics})
            self.progress.epoch_line(epoch, int(self.cfg.trainer.epochs), _summary(metrics, main_metric))

    def final(self, *, status: str, epoch: int, step: int, params: int, skipped_steps: int,
              last: Mapping[str, float], best: Mapping[str, Any], main_metric: str) -> None:
        """The one "final" line; a completed run also gets its hparams summary. Then closes."""
        if self.writing:
            assert self.log is not None
            now = self.elapsed()
            final = {"kind": "final", "epoch": epoch, "step": step, "time": now, "status": status,
                     "wall_time": now, "params": params, "skipped_steps": skipped_steps, **last}
            if best["value"] is not None:
                final[f"best/{main_metric}"] = best["value"]
                final["best_epoch"] = best["epoch"]
            self.log.write(final)
            if status == "completed" and last:
                key = f"val/{main_metric}"
                hp = {key: last.get(key, math.nan), "val/loss": last.get("val/loss", math.nan)}
                chosen = run_hparams(self.cfg, self.overrides)
                self.tb.hparams(chosen, hp, hparam_domains(chosen), first=given_hparams(chosen, self.overrides))
        self.close()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.log is not None:
            self.log.close()
        self.tb = self.log = None
        self.progress.close()


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The config as dotted keys for TensorBoard's HParams (lists as text, None left out)."""
    from vaitrain.track.runs import flatten

    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    flat: dict[str, Any] = {}
    for group in HPARAM_GROUPS:
        for key, value in flatten(container[group], group).items():
            if isinstance(value, list):
                flat[key] = str(value)
            elif value is not None and not isinstance(value, dict):  # {}: an empty group
                flat[key] = value
    flat["seed"] = container["seed"]
    return flat


def run_hparams(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """What the HParams table shows for a run: what it is (HPARAM_ALWAYS) and every key the command
    line set, with its type kept (a boolean stays a boolean). A sweep's swept keys are overrides of
    each job, so they are always there; keys nobody chose are not (they would be ~75 columns)."""
    flat = flat_hparams(cfg)
    chosen = list(HPARAM_ALWAYS)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in HPARAM_GROUPS:  # optim=sgd chose a group option: its name
            key = f"{key}.name"
        if key == "seed" or key in flat or any(k.startswith(key + ".") for k in flat):
            chosen += [key] if key in flat else sorted(k for k in flat if k.startswith(key + "."))
    return {k: flat[k] for k in dict.fromkeys(chosen) if k in flat and k not in NOT_HPARAMS}


def given_hparams(hparams: Mapping[str, Any], overrides: list[str]) -> set[str]:
    """The HParams keys the command line set (a sweep's swept keys among them), to be shown before
    those always there: the table shows 5 columns at first, and by name `optim.name` of
    `-m optim=sgd,adam` came after data.name, data.num_train, data.num_val, model.name, norm.name."""
    given = set()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        key = f"{key}.name" if key in HPARAM_GROUPS else key
        given |= {k for k in hparams if k == key or k.startswith(key + ".")}
    return given


def hparam_domains(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Allowed values (a list) or ranges ((min, max), None: open) of the HParams keys, from the
    config's CHOICES, BOUNDS and group options, so every run of a sweep declares the same domain."""
    from vaitrain.config import BOUNDS, CHOICES, group_options

    domains: dict[str, Any] = {}
    for key in hparams:
        group, _, leaf = key.partition(".")
        if key in CHOICES:
            domains[key] = list(CHOICES[key])
        elif leaf == "name" and group in HPARAM_GROUPS and group_options(group):
            domains[key] = group_options(group)
        elif key in BOUNDS:
            domains[key] = BOUNDS[key]
    return domains


def start_summary(cfg: DictConfig, run_dir: Path, *, params: int, data: Any, device: Any, precision: str,
                  world_size: int = 1, resumed: bool = False) -> str:
    """The line a run prints before its first step: what it will do."""
    n_train, n_val = getattr(data.train, "n", None), getattr(data.val, "n", None)
    sizes = f"{n_train:,} train / {n_val:,} val" if n_train is not None and n_val is not None else "?"
    steps = len(data.train) // max(1, int(cfg.trainer.grad_accum))
    where = f"{world_size} x {device}" if world_size > 1 else str(device)
    return ("" if resumed else f"run {run_dir}\n") + (
            f"{cfg.model.name} ({params / 1e6:.2f} M params), {cfg.task.name} on {rundir.data_label(cfg).split('-')[0]}: "
            f"{sizes} images at {data.image_size} px; {cfg.trainer.epochs} epoch{'s' if int(cfg.trainer.epochs) != 1 else ''} x {steps} steps of "
            f"{cfg.trainer.batch_size}; {cfg.optim.name}, {where}, {precision}") + _loss_note(cfg)


def _loss_note(cfg: DictConfig) -> str:
    if str(cfg.task.name) == "regression" and str(cfg.task.get("head", "plain")) != "plain":
        return ("\nval/loss is the NLL of the standardized targets (what is minimized); val/nll the same NLL "
                "in the targets' units")
    return ""


def _summary(metrics: Mapping[str, float], main_metric: str) -> dict[str, float]:
    keys = [TRAIN_LOSS, "val/loss", f"val/{main_metric}", f"val_ema/{main_metric}", THROUGHPUT, EPOCH_TIME]
    short = {THROUGHPUT: "img/s", EPOCH_TIME: "s/epoch"}  # units, as TensorBoard's train/time_per_epoch is seconds
    return {short.get(k, k): metrics[k] for k in keys if k in metrics}
