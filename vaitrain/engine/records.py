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

TRAIN_LOSS = "train/loss"
LR = "lr"
THROUGHPUT = "throughput"
EPOCH_TIME = "epoch_time"
CONFIG_TEXT = "config"
HPARAM_GROUPS = ("model", "data", "task", "optim", "sched", "norm", "trainer")


class Records:
    def __init__(self, cfg: DictConfig, run_dir: Path, *, main: bool, elapsed: float = 0.0) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.main = main
        self.progress = Progress(cfg.trainer.progress, enabled=main)
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
            self.tb.scalars(dict(metrics), step)
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
                self.tb.hparams(flat_hparams(self.cfg), hp)
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


def _summary(metrics: Mapping[str, float], main_metric: str) -> dict[str, float]:
    keys = [TRAIN_LOSS, "val/loss", f"val/{main_metric}", THROUGHPUT, EPOCH_TIME]
    return {k.replace(THROUGHPUT, "img/s"): metrics[k] for k in keys if k in metrics}
