"""Datasets, normalization statistics and device-side loaders (see docs/ARCHITECTURE.md, `data`).

`build_data` looks the dataset up by data.name in the source registry (`base.SOURCES`), lets it
decode (or describe, for streaming) its splits, computes or checks the normalization statistics
and wraps each split in a loader yielding normalized `(x, y)` on the device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vaitrain.data.base import SOURCES, Source, TensorSplit, check_task, resident_mode
from vaitrain.data.augment import AugmentSpec
from vaitrain.data.mix import MixSpec
from vaitrain.data.loader import DeviceLoader, StreamLoader, TensorDataset, Transform, iterate_raw
from vaitrain.data.stats import check_stats, chunks, image_stats, target_stats
from vaitrain import registry
from vaitrain.config_checks import check_crop
from vaitrain.errors import ConfigError, DataError

__all__ = ["DataBundle", "build_data", "list_datasets"]


@dataclass
class DataBundle:
    train: Any  # loader: iterating yields (x, y) on the device
    val: Any
    in_channels: int
    image_size: int
    num_classes: int  # classification: classes; segmentation: classes including background (0)
    target_dim: int  # regression
    class_names: list[str]
    stats: dict[str, torch.Tensor]  # mean, std (+ target_mean, target_std for regression), CPU
    target_names: list[str] = field(default_factory=list)  # regression: a name per target column
    name: str = ""
    task: str = ""
    notes: list[str] = field(default_factory=list)  # one-line remarks to show at the start of a run
    train_image_size: int = 0  # side of the training batches when a window/resized crop changes it (0: image_size)
    test: Any = None  # loader of the held-out test split, when asked for (build_data(test=True))
    has_test: bool = False  # whether the data has a test split at all


def list_datasets() -> list[str]:
    """The registered dataset names (vaitrain/registry.py; each module registers its builder)."""
    return sorted(registry.DATASETS.names)


def _batch_too_large(batch_size: int, name: str, n_train: int, num_train: int) -> str:
    """The fix for a batch above the training split: a batch size that fits (a few steps per epoch),
    and data.num_train only where raising it gives more samples (generated data, or a cap in force)."""
    fits = 1 << max(0, (max(1, n_train // 2)).bit_length() - 1)  # a power of two, at most half the split
    more = " or raise data.num_train" if name.startswith("shapes") or num_train == n_train else ""
    return (f"trainer.batch_size={batch_size} is larger than the training split of data={name} ({n_train} samples): "
            f"lower it, e.g. trainer.batch_size={fits}{more}")


def build_data(data_cfg: Any, task_name: str, *, device: Any, batch_size: int, val_batch_size: int, seed: int,
               stats: dict | None = None, rank: int = 0, world_size: int = 1, ignore_index: int = 255,
               test: bool = False) -> DataBundle:
    """Build the train/val loaders of data_cfg for task_name.

    batch_size and val_batch_size are global: each of the world_size ranks gets 1/world_size of
    every batch (see loader.py). `stats` (from a checkpoint) replace the computed statistics.
    """
    device = torch.device(device)
    name = str(data_cfg.name)
    entry = check_task(name, task_name)
    if batch_size % world_size:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is not divisible by {world_size} processes: the global batch is split evenly"
        )
    if str(data_cfg.variant) != "standard" and name != "shapes":
        raise ConfigError(f"data.variant={data_cfg.variant} exists only for data=shapes")
    src: Source = entry.builder(data_cfg, task_name)
    n_train = len(src.train)  # type: ignore[arg-type]
    if n_train < batch_size:
        raise ConfigError(_batch_too_large(batch_size, name, n_train, int(data_cfg.num_train or 0)))
    if str(data_cfg.augment).lower() != "false" and task_name != "regression":
        check_crop(data_cfg, int(src.image_size or 0))  # the images' own size (data.image_size=0)
    train, val = (_place(s, data_cfg, device) for s in (src.train, src.val))
    if stats is not None:
        stats = check_stats(stats, channels=src.in_channels, image_size=src.image_size, target_dim=src.target_dim)
    else:
        stats = _compute_stats(train, data_cfg, task_name, src, device)
    transform = Transform(
        task=task_name, mean=stats["mean"], std=stats["std"],
        target_mean=stats.get("target_mean"), target_std=stats.get("target_std"),
        augment=str(data_cfg.augment).lower() != "false", spec=augment_spec(data_cfg),
        mix=mix_spec(data_cfg, task_name, src.num_classes), ignore_index=ignore_index, image_size=src.image_size,
    )
    common = dict(seed=seed, rank=rank, world_size=world_size, device=device)
    test_loader = None
    if test:  # decoded only when asked for: training never touches it
        if src.test is None:
            raise DataError(f"data={name} has no test split: {_TEST_HINT.get(name, _TEST_HINT['*'])}")
        test_loader = _loader(_place(src.test(), data_cfg, device), transform, data_cfg, train=False,
                              batch_size=val_batch_size, **common)
    return DataBundle(
        train=_loader(train, transform, data_cfg, train=True, batch_size=batch_size, **common),
        val=_loader(val, transform, data_cfg, train=False, batch_size=val_batch_size, **common),
        in_channels=src.in_channels,
        image_size=src.image_size,
        num_classes=src.num_classes,
        target_dim=src.target_dim,
        class_names=list(src.class_names),
        stats=stats,
        target_names=list(src.target_names),
        name=name,
        task=task_name,
        notes=list(src.notes),
        train_image_size=(transform.spec.out_size(src.image_size)  # type: ignore[union-attr]
                          if transform.augment and task_name != "regression" else src.image_size),
        test=test_loader,
        has_test=src.test is not None,
    )


_TEST_HINT = {
    "image_folder": "put a test/<class>/ folder beside train/ in data.root (one tree of <class>/ folders moves "
                    "under train/ first), or evaluate with --split val",
    "seg_folder": "put a test/ folder (images/ + masks/) beside train/ in data.root (images/ and masks/ alone "
                  "move under train/ first), or evaluate with --split val",
    "csv_regression": "put test.csv beside train.csv and val.csv in data.root (a single CSV file has no test "
                      "split), or evaluate with --split val",
    "voc": "VOC 2012's test masks are not public; evaluate with --split val",
    "*": "evaluate with --split val",
}


def augment_spec(cfg: Any) -> AugmentSpec:
    """The training augmentation the data config asks for (loader.py applies it per sample)."""
    scale, ratio = [float(v) for v in cfg.resized_crop_scale], [float(v) for v in cfg.resized_crop_ratio]
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"data.resized_crop_scale={scale} must be [min, max] with 0 < min <= max <= 1")
    if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
        raise ConfigError(f"data.resized_crop_ratio={ratio} must be [min, max] with 0 < min <= max")
    return AugmentSpec(
        pad=int(cfg.crop_padding), flip=bool(cfg.flip), vflip=bool(cfg.vflip), rotate=bool(cfg.rotate), crop=int(cfg.crop),
        resized_crop=bool(cfg.resized_crop), rrc_scale=(scale[0], scale[1]), rrc_ratio=(ratio[0], ratio[1]),
        trivial=str(cfg.augment).lower() == "trivial", jitter=float(cfg.color_jitter), hue=float(cfg.hue),
        erasing=float(cfg.erasing),
    )


def augmentation_label(cfg: Any, task: str) -> str:
    """A short name of the training augmentation a data config gives `task` (bench rows, tables)."""
    if str(cfg.augment).lower() == "false":
        return "none"
    spec, parts = augment_spec(cfg), []
    geometric = task != "regression"
    if geometric:
        parts += [f"pad{spec.pad}" if spec.pad and not spec.resized_crop else "", f"crop{spec.crop}" if spec.crop else "",
                  "rrc" if spec.resized_crop else "", "flip" if spec.flip else "", "vflip" if spec.vflip else "",
                  "rot90" if spec.rotate else ""]
    parts += ["trivial" if spec.trivial else "", f"jitter{spec.jitter:g}" if spec.jitter else "",
              f"hue{spec.hue:g}" if spec.hue else "", f"erase{spec.erasing:g}" if spec.erasing else ""]
    if task == "classification":
        parts += [f"mixup{float(cfg.mixup):g}" if float(cfg.mixup) else "", f"cutmix{float(cfg.cutmix):g}" if float(cfg.cutmix) else ""]
    return "+".join(p for p in parts if p) or "none"


def mix_spec(cfg: Any, task: str, num_classes: int) -> MixSpec:
    """Mixup/CutMix of the data config; classification only (a mixed mask or target means nothing)."""
    spec = MixSpec(mixup=float(cfg.mixup), cutmix=float(cfg.cutmix), prob=float(cfg.mixup_prob),
                   switch_prob=float(cfg.mixup_switch_prob), num_classes=num_classes)
    if spec.active and task != "classification":
        raise ConfigError(f"data.mixup/data.cutmix mix class labels: they need task=classification, not task={task}")
    return spec


def _place(split: Any, cfg: Any, device: torch.device) -> Any:
    """A decoded split goes to the device unless data.device_resident says otherwise (then it is
    streamed from host memory); a dataset stays a dataset."""
    if isinstance(split, TensorSplit) and resident_mode(cfg, split.nbytes):
        return TensorSplit(split.images.to(device), split.targets.to(device))
    if isinstance(split, TensorSplit):
        return TensorDataset(split)
    return split


def _loader(split: Any, transform: Transform, cfg: Any, **kw: Any) -> DeviceLoader | StreamLoader:
    if isinstance(split, TensorSplit):
        return DeviceLoader(split, transform, **kw)
    return StreamLoader(split, transform, num_workers=int(cfg.num_workers), **kw)


def _compute_stats(train: Any, cfg: Any, task: str, src: Source, device: torch.device) -> dict[str, torch.Tensor]:
    mode = str(cfg.normalize)
    regression = task == "regression"
    standardize = regression and bool(cfg.standardize_targets)
    if isinstance(train, TensorSplit):
        images, targets = chunks(train.images), chunks(train.targets)
    elif mode in ("none", "imagenet") and not standardize:  # fixed statistics: nothing to read
        images, targets = iter(()), iter(())
    else:  # one streamed pass over the training split; the (small) targets are kept on the side
        collected: list[torch.Tensor] = []

        def stream() -> Any:
            for x, y in iterate_raw(train, num_workers=int(cfg.num_workers)):
                collected.append(y)
                yield x

        images, targets = stream(), collected
        if mode in ("none", "imagenet"):
            for _ in images:
                pass
    out = {}
    out["mean"], out["std"] = image_stats(images, mode, src.in_channels)
    if regression:
        out["target_mean"], out["target_std"] = target_stats(targets, standardize, src.target_dim)
    return out
