"""Loaders that yield `(x, y)` on the training device (the `data` contract of ARCHITECTURE.md).

Batch semantics, the same for both loaders and every world size:

- `batch_size` is the *global* batch. Each epoch has one global permutation of the training split
  drawn from a generator seeded by (seed, epoch); global batch i is positions
  [i*B, (i+1)*B) of it and rank r takes its slice [r*B/W, (r+1)*B/W) of that batch. So every rank
  uses the same permutation, the ranks' shards are disjoint, and W processes together see exactly
  the batches one process would. The last incomplete global batch is dropped.
- Augmentation parameters (augment.py: crops, flips, rotations, resized crops, TrivialAugment,
  colour jitter, erasing) are drawn per epoch *position* from another (seed, epoch) stream, so a
  sample's augmentation does not depend on the world size, and resuming at (epoch, batch)
  reproduces the order and the augmentation exactly. Mixup/CutMix (mix.py) draw per global batch
  from (seed, epoch, batch) and mix within each rank's slice.
- Validation: no shuffling, no augmentation; rank r takes the contiguous shard
  [r*N/W, (r+1)*N/W), batches of val_batch_size/W; every sample is seen exactly once over all ranks.
- Regression gets only what leaves the pixels in place (colour jitter, erasing, TrivialAugment's
  colour ops): a crop, flip or rotation would move the target (x, y) and the loader cannot know
  which target columns are coordinates. Segmentation masks get every geometric transform of their
  image; pixels from outside the image are `ignore_index` in the mask.

`DeviceLoader` holds the whole split as uint8 on the device: a batch is an index_select, then the
batched crop/flip and normalization. `StreamLoader` reads the same batches through a
torch DataLoader (workers, pinned memory) from a map-style dataset, then does the same on-device
steps; for the same seed it yields the same batches as DeviceLoader.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from vaitrain.data.augment import (
    AugmentSpec, Params, draw, erase, geometric, normalize, normalizer, photometric, trivial_groups,
)
from vaitrain.data.mix import Mixer, MixSpec
from vaitrain.data.base import TensorSplit, derive_seed
from vaitrain.errors import DataError

_ORDER_STREAM, _AUG_STREAM = 0x0D, 0xA9


@dataclass
class Transform:
    """What happens to a uint8 batch on the device."""

    task: str
    mean: torch.Tensor
    std: torch.Tensor
    target_mean: torch.Tensor | None = None
    target_std: torch.Tensor | None = None
    augment: bool = False
    pad: int = 0
    flip: bool = False
    spec: AugmentSpec | None = None  # the full augmentation; None: crop padding `pad` + `flip` only
    mix: MixSpec = field(default_factory=MixSpec)  # classification only
    ignore_index: int = 255
    image_size: int = 0  # side of the stored images (0: read from the data)

    def __post_init__(self) -> None:
        if self.spec is None:
            self.spec = AugmentSpec(pad=self.pad, flip=self.flip)
        self.spec.geometry = self.task != "regression"
        self.spec.ignore_index = self.ignore_index


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The global permutation of n training samples for (seed, epoch)."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, _ORDER_STREAM))
    return torch.randperm(n, generator=g)


def epoch_aug(n: int, seed: int, epoch: int, spec: AugmentSpec, size: int) -> Params:
    """Augmentation parameters for the n positions of epoch `epoch` (images of side `size`)."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, _AUG_STREAM))
    return draw(spec, n, size, g)


class _Loader:
    """Batch plan, epoch handling and the on-device finishing shared by both loaders."""

    def __init__(self, n: int, transform: Transform, *, train: bool, batch_size: int, seed: int,
                 rank: int, world_size: int, device: torch.device):
        self.n, self.train, self.seed, self.device = n, train, seed, device
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.global_batch = batch_size
        self.batch_size = max(1, batch_size // world_size)  # per rank
        if train:
            self.num_batches = n // batch_size
            self.num_samples = self.num_batches * self.batch_size
            self.lo, self.hi = 0, n
        else:
            self.lo, self.hi = n * rank // world_size, n * (rank + 1) // world_size
            self.num_samples = self.hi - self.lo
            self.num_batches = -(-self.num_samples // self.batch_size)
        self.t = transform
        spec = transform.spec
        assert spec is not None
        self.augment = train and transform.augment and spec.active
        self.mixer = (Mixer(transform.mix) if train and transform.augment and transform.task == "classification"
                      and transform.mix.active else None)
        self.size = 0  # image side, set by the subclass (the augmentation parameters depend on it)
        self._scale, self._shift = normalizer(transform.mean, transform.std, device)
        if transform.target_mean is not None:
            self._tmean = transform.target_mean.to(device, torch.float32)
            self._tstd = transform.target_std.to(device, torch.float32)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (seed, epoch) order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def _train_plan(self) -> tuple[torch.Tensor, Params | None]:
        """This rank's sample indices per batch, (num_batches, batch_size), and their augmentation
        parameters (None without augmentation), for the current epoch, on the host."""
        b = self.batch_size
        positions = (torch.arange(self.num_batches)[:, None] * self.global_batch + self.rank * b
                     + torch.arange(b)[None, :])
        order = epoch_order(self.n, self.seed, self.epoch)
        if not self.augment:
            return order[positions], None
        assert self.t.spec is not None
        return order[positions], epoch_aug(self.n, self.seed, self.epoch, self.t.spec, self.size)[positions]

    def _batch_augs(self, aug: Params | None) -> list[tuple[Params, list | None] | None]:
        """Per batch: its parameters on the device (one copy per epoch) and TrivialAugment's rows
        per op (from the host copy, so the device never has to be asked)."""
        if aug is None:
            return [None] * self.num_batches
        on_device = aug.to(self.device)
        if "op" not in aug.t:
            return [(on_device[i], None) for i in range(self.num_batches)]
        order, counts = trivial_groups(aug.t["op"])
        order = order.to(self.device, non_blocking=True)  # one copy per epoch; the groups are views
        return [(on_device[i], [rows if len(rows) else None for rows in order[i].split(counts[i])])
                for i in range(self.num_batches)]

    def _val_plan(self) -> list[slice]:
        return [slice(s, min(s + self.batch_size, self.hi)) for s in range(self.lo, self.hi, self.batch_size)]

    def _finish(self, x: torch.Tensor, y: torch.Tensor, aug: tuple[Params, list | None] | None,
                batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        task = self.t.task
        spec = self.t.spec
        assert spec is not None
        p = aug[0] if aug is not None else None
        if p is not None:
            mask = y if task == "segmentation" else None
            if spec.windowed:
                x, mask = geometric(x, mask, p, spec)
            x, mask = photometric(x, mask, p, spec, aug[1])  # type: ignore[index]
            if mask is not None:
                y = mask
        x = normalize(x, self._scale, self._shift)
        if p is not None and "erase" in p.t:
            x = erase(x, p.t["erase"], p.t["erase_box"])
        if task == "regression":
            y = (y.float() - self._tmean) / self._tstd
        else:
            y = y.long()
        if self.mixer is not None:
            x, y = self.mixer(x, y, self.seed, self.epoch, batch)
        return x, y


class DeviceLoader(_Loader):
    """The whole split as uint8 tensors on the device; batches by index."""

    def __init__(self, split: TensorSplit, transform: Transform, **kw: Any):
        super().__init__(len(split), transform, **kw)
        self.images = split.images.to(self.device)
        self.targets = split.targets.to(self.device)
        self.size = transform.image_size or int(self.images.shape[-1])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.train:
            for sl in self._val_plan():
                yield self._finish(self.images[sl], self.targets[sl], None)
            return
        index, aug = self._train_plan()  # one host->device copy per epoch, then device-side rows
        index = index.to(self.device)
        augs = self._batch_augs(aug)
        for i in range(self.num_batches):
            yield self._finish(self.images.index_select(0, index[i]), self.targets.index_select(0, index[i]),
                               augs[i], i)


class TensorDataset(Dataset):
    """A decoded split served sample by sample (the streaming path for data kept on the host)."""

    def __init__(self, split: TensorSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.images[i], self.split.targets[i]


class _PlanSampler:
    """Batch sampler replaying the loader's current plan (set before each iteration)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamLoader(_Loader):
    """Batches read by a torch DataLoader (workers, pinned memory), finished on the device."""

    def __init__(self, dataset: Dataset, transform: Transform, *, num_workers: int = 2, **kw: Any):
        super().__init__(len(dataset), transform, **kw)  # type: ignore[arg-type]
        self.dataset = dataset
        self.size = transform.image_size or (int(dataset[0][0].shape[-1]) if self.augment else 0)
        self.sampler = _PlanSampler()
        self.loader = DataLoader(
            dataset, batch_sampler=self.sampler, num_workers=num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=num_workers > 0,
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.train:
            index, aug = self._train_plan()
            self.sampler.batches = index.tolist()
            augs = self._batch_augs(aug)
        else:
            self.sampler.batches = [list(range(sl.start, sl.stop)) for sl in self._val_plan()]
            augs = [None] * len(self.sampler.batches)
        it = iter(self.loader)
        for i, a in enumerate(augs):
            x, y = _next_batch(it)
            x = x.to(self.device, non_blocking=True)
            y = torch.as_tensor(y).to(self.device, non_blocking=True)
            yield self._finish(x, y, a, i)


def _next_batch(it: Iterator) -> Sequence[torch.Tensor]:
    """next(it), with a DataError raised in a worker turned back into its own one-line message."""
    try:
        return next(it)
    except DataError as err:
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else "a data worker failed"
        prefix = "DataError: "
        raise DataError(last[last.index(prefix) + len(prefix):] if prefix in last else last) from None


def iterate_raw(data: TensorSplit | Dataset, batch_size: int = 512, num_workers: int = 0,
                device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sequential uint8 batches of a split (for statistics), on `device` when given."""
    if isinstance(data, TensorSplit):
        for s in range(0, len(data), batch_size):
            yield data.images[s:s + batch_size], data.targets[s:s + batch_size]
        return
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    it = iter(loader)
    while True:
        try:
            x, y = _next_batch(it)
        except StopIteration:
            return
        yield (x.to(device), torch.as_tensor(y).to(device)) if device is not None else (x, torch.as_tensor(y))
