"""Types shared by the dataset sources and the loaders, and the source registry.

A *source* (shapes, a torchvision set, a folder) turns the data config into a `Source`: two splits,
each either decoded (`TensorSplit`: uint8 images + compact targets, on the CPU) or a map-style
`torch.utils.data.Dataset` yielding `(uint8 C,H,W tensor, target)` for data too large to decode
up front. `build_data` (in `__init__`) turns a Source into loaders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from vaitrain import registry
from vaitrain.errors import ConfigError, DataError

# Above this many bytes of decoded uint8 data, data.device_resident=auto streams instead.
RESIDENT_LIMIT_BYTES = 2 * 1024**3


@dataclass
class TensorSplit:
    """A decoded split. images: uint8 (N,C,H,W). targets: int64 (N,) class indices, uint8 (N,H,W)
    masks (0 = background, 255 = ignore) or float32 (N,D) raw regression targets."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.targets.numel() * self.targets.element_size()


Split = Union[TensorSplit, Dataset]


@dataclass
class Source:
    """What a dataset source hands to build_data."""

    train: Split
    val: Split
    in_channels: int
    image_size: int
    num_classes: int = 0  # classification: classes; segmentation: classes including background
    target_dim: int = 0  # regression
    class_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)  # regression: one name per target column
    notes: list[str] = field(default_factory=list)  # one-line remarks for the user (e.g. a strong shrink)
    # A held-out test split, decoded only when asked for (eval --split test, trainer.test_at_end);
    # None when the data has none. Never seen by training or model selection.
    test: Callable[[], Split] | None = None


Builder = Callable[[Any, str], Source]


@dataclass(frozen=True)
class Entry:
    builder: Builder
    tasks: tuple[str, ...]


SOURCES: dict[str, Entry] = {}


def register(name: str, tasks: tuple[str, ...]) -> Callable[[Builder], Builder]:
    """Register `builder(data_cfg, task_name) -> Source` under data.name=`name`."""

    def deco(fn: Builder) -> Builder:
        SOURCES[name] = Entry(fn, tasks)
        return fn

    return deco


def check_task(name: str, task: str) -> Entry:
    if name not in SOURCES and name in registry.DATASETS:  # its module registers the source on import
        registry.resolve(str(registry.DATASETS.entry(name).target))
    if name not in SOURCES:
        from vaitrain.errors import closest_first

        known = {*SOURCES, *registry.DATASETS.names}  # the registry's modules are imported when built
        raise ConfigError(f"data.name={name} is not a dataset; choose one of: {', '.join(closest_first(name, known))}")
    entry = SOURCES[name]
    if task not in entry.tasks:
        raise ConfigError(
            f"data={name} has no {task} targets; use task={' or task='.join(entry.tasks)} or another data="
        )
    return entry


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from several integers (data seed, split, epoch ...), so that streams
    for different splits or epochs never coincide."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def carve_indices(n: int, cfg: Any, other: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices of one split of n samples: data.val_fraction of it (at least
    one) held out, drawn by data.seed. data.val_fraction=0 is refused: training needs a validation
    split (best.pt, val/ metrics), and one sample was carved without a word. `other` names the
    way to validate without carving (a val/ folder, val.csv)."""
    fraction = float(cfg.val_fraction)
    if fraction <= 0:
        raise DataError(f"data.val_fraction=0 holds out no validation samples, but training needs a validation split "
                        f"(it picks best.pt and reports val/ metrics): use e.g. data.val_fraction=0.1{other}")
    n_val = min(n - 1, max(1, round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(int(cfg.seed), 0x7A)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def subset_indices(n: int, cap: int, seed: int, stream: int) -> torch.Tensor:
    """Indices of a random subset of `cap` out of `n` (all of them when cap is 0 or >= n), sorted so
    the subset keeps the dataset's order; deterministic for (seed, stream)."""
    if cap <= 0 or cap >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(derive_seed(seed, stream, 0x5B))
    return torch.randperm(n, generator=g)[:cap].sort().values


def resident_mode(cfg: Any, estimated_bytes: int) -> bool:
    """Whether to decode the data once (True) or stream it (False), from data.device_resident."""
    mode = str(cfg.device_resident).lower()
    if mode == "true":
        return True
    if mode == "false":
        return False
    return estimated_bytes <= RESIDENT_LIMIT_BYTES
