"""Validation pass and `vaitrain eval` of a saved run."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from vaitrain.engine.checkpoint import check_compatible, check_same_data, check_task, data_size_note, load_checkpoint
from vaitrain.engine.components import build_components
from vaitrain.engine.device import autocast, resolve_device, resolve_precision
from vaitrain.errors import CheckpointError, ConfigError, DataError, RunDirError
from vaitrain.track import rundir
from vaitrain.track.one_run import refuse_more_runs
from vaitrain.track.runs import saved_overrides

VAL_SAMPLES = "val/samples"  # TensorBoard tag of the validation sample images


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, loader: Any, task: Any, precision: str, device: torch.device,
                   channels_last: bool = False, on_first_batch: Any = None, progress: Any = None,
                   description: str = "validation") -> tuple[dict[str, float], Any]:
    """Metrics of `model` over every batch of `loader` (all-reduced across ranks when distributed);
    `progress` (a track.progress.Progress) shows the pass as `description`."""
    was_training = model.training
    model.eval()
    meter = task.new_meter()
    with progress.step(description, len(loader)) if progress is not None else nullcontext():
        _evaluate_batches(model, loader, meter, precision, device, channels_last, on_first_batch, progress)
    meter.all_reduce()
    model.train(was_training)
    result = {k: float(v) for k, v in meter.compute().items()}
    return result, meter


def _evaluate_batches(model: torch.nn.Module, loader: Any, meter: Any, precision: str, device: torch.device,
                      channels_last: bool, on_first_batch: Any, progress: Any) -> None:
    for i, (x, y) in enumerate(loader):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            out = model(x)
        out = out.float()
        meter.update(out, y)
        if i == 0 and on_first_batch is not None:
            on_first_batch(x, y, out)
        if progress is not None:
            progress.advance()


def run_validation(model: torch.nn.Module, loader: Any, task: Any, *, precision: str, device: torch.device,
                   channels_last: bool = False, images: Any = None, step: int = 0,
                   progress: Any = None) -> dict[str, float]:
    """The per-epoch validation pass: metrics as `val/<name>`. With `images` (a TensorBoard
    writer, on the epochs that log them), sample images of the first batch at `step`."""

    def first_batch(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> None:
        if images is not None:
            task.log_images(images, VAL_SAMPLES, x, y, out, step)

    metrics, meter = evaluate_model(model, loader, task, precision, device, channels_last, first_batch, progress)
    epoch_images = getattr(task, "log_epoch_images", None)
    if images is not None and epoch_images is not None:
        epoch_images(images, meter, step)
    return {f"val/{k}": v for k, v in metrics.items()}


def evaluate_checkpoint(model: torch.nn.Module, path: Path, loader: Any, task: Any, precision: str,
                        device: torch.device, channels_last: bool = False) -> dict[str, float]:
    """Metrics of the weights saved at `path` (the model's own weights when there is no such file),
    computed with `model`, whose weights are put back afterwards."""
    weights = load_checkpoint(path)["model"] if Path(path).is_file() else None
    current = {k: v.detach().clone() for k, v in model.state_dict().items()} if weights else None
    if weights is not None:
        model.load_state_dict(weights)
    metrics, _ = evaluate_model(model, loader, task, precision, device, channels_last)
    if current is not None:
        model.load_state_dict(current)
    return metrics


def resolve_checkpoint(run_dir: Path, checkpoint: str) -> Path:
    if checkpoint in ("best", "last"):
        return Path(run_dir) / rundir.CKPT_DIR / f"{checkpoint}.pt"
    if not checkpoint.strip():  # Path("") is the working folder: '( is a folder)' said nothing
        raise CheckpointError("--checkpoint is empty: give best, last or the path of a .pt file")
    path = Path(checkpoint)
    own = Path(run_dir) / rundir.CKPT_DIR / checkpoint
    if not path.exists() and path.name == checkpoint and own.is_file():
        return own  # `--checkpoint best.pt`: the run's own file, named as it is in checkpoints/
    if path.is_dir() or (not path.exists() and path.suffix != ".pt"):  # `--checkpoint bets`
        raise CheckpointError(f"--checkpoint {checkpoint}: give best, last or the path of a .pt file "
                              f"({checkpoint} is {'a folder' if Path(checkpoint).is_dir() else 'no file'})")
    return Path(checkpoint)


def load_run_config(run_dir: Path, extra: list[str] = ()) -> tuple[DictConfig, list[str]]:
    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise RunDirError(f"'{run_dir}' is not a vaitrain run directory (no config.yaml / checkpoints/)")
    rundir.check_run_files(run_dir)
    overrides = saved_overrides(run_dir) + list(extra)
    from vaitrain.engine.resume import compose_run

    return compose_run(run_dir, overrides), overrides


def load_run_checkpoint(run_dir: Path, checkpoint: str, overrides: list[str] = ()
                        ) -> tuple[DictConfig, Path, dict[str, Any]]:
    """The run's config (+ overrides), the checkpoint file (`best` falls back to last.pt when a run
    stopped before its first validation) and its state, checked to be of the config's task."""
    cfg, _ = load_run_config(run_dir, list(overrides))
    path = resolve_checkpoint(run_dir, checkpoint)
    if checkpoint == "best" and not path.exists():  # (a FIFO best.pt is refused by load_checkpoint)
        path = resolve_checkpoint(run_dir, "last")
    state = load_checkpoint(path)
    check_task(path, state, cfg.task.name)
    return cfg, path, state


SPLITS = ("val", "test")


def evaluate_run(run_dir: Path, checkpoint: str = "best", overrides: list[str] = (),
                 split: str = "val", progress: Any = None) -> dict[str, Any]:
    """Metrics of a run's checkpoint on its validation (or test) split, with the normalization it
    trained with; `per_class` holds per-class accuracy (classification) or IoU/Dice (segmentation)."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split} is not a split; choose one of: {', '.join(SPLITS)}")
    refuse_more_runs(run_dir, overrides, "eval")
    cfg, path, state = load_run_checkpoint(run_dir, checkpoint, overrides)
    from vaitrain.engine.resume import config_yaml_edits

    edited = config_yaml_edits(run_dir, cfg, list(overrides), state)
    if edited and progress is not None:  # the scores stand (the run as trained); the edit had no effect
        progress.line(f"note: {edited}")
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    try:
        c = build_components(cfg, device, stats=state.get("data_stats"), test=split == "test")
    except DataError as err:
        raise _moved_root(err, cfg, run_dir) from None
    check_same_data(path, state, c.data)
    changed = data_size_note(path, state, c.data, ("val",), list(overrides)) if split == "val" else None
    if changed and progress is not None:
        progress.line(changed + "these scores are on the data as it is now, not as the run validated on")
    check_compatible(path, state, c.model, cfg.model.name, cfg.task.name)
    c.model.load_state_dict(state["model"])
    if cfg.trainer.channels_last:
        c.model.to(memory_format=torch.channels_last)
    loader = c.data.test if split == "test" else c.data.val
    metrics, meter = evaluate_model(c.model, loader, c.task, precision, device, bool(cfg.trainer.channels_last),
                                    progress=progress, description=f"evaluating {path.name} on {split}")
    found = {f"{split}/{k}": v for k, v in metrics.items()}
    per_class = per_class_of(c.task, meter)
    if "ema" in state:  # trainer.ema: the weight average too (best.pt was chosen on it)
        from vaitrain.engine.ema import ema_weights

        c.model.load_state_dict(ema_weights(state["ema"]))
        averaged, meter = evaluate_model(c.model, loader, c.task, precision, device, bool(cfg.trainer.channels_last))
        found.update({f"{split}_ema/{k}": v for k, v in averaged.items()})
        per_class = per_class_of(c.task, meter)
    return {
        "checkpoint": str(path),
        "split": split,
        "epoch": int(state.get("epoch", 0)),
        "step": int(state.get("step", 0)),
        "metrics": found,
        "main_metric": f"{split}{'_ema' if 'ema' in state else ''}/{c.task.main_metric}",
        "per_class": per_class,
    }


def _moved_root(err: DataError, cfg: DictConfig, run_dir: Path) -> DataError:
    """A relative data.root is read from the folder the run started in: eval from another folder
    finds nothing there, and the error alone does not say why or that eval takes data.root=."""
    root = str(cfg.data.get("root") or "")
    if not root or Path(root).is_absolute() or Path(root).expanduser().exists():
        return err
    return DataError(f"{err} (data.root={root} is relative to the folder {run_dir} was trained from: run eval "
                     f"there, or give the data's path: vaitrain eval {run_dir} data.root=PATH)")


def per_class_of(task: Any, meter: Any) -> list[dict[str, Any]]:
    """The task's per-class table (classification, segmentation); empty for regression."""
    fn = getattr(task, "per_class", None)
    return fn(meter) if fn is not None else []
