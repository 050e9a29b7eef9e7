"""The device-resident and streaming loaders: epochs, determinism, sharding, augmentation."""
from __future__ import annotations

import itertools

import pytest
import torch
from omegaconf import OmegaConf

from vaitrain.data import build_data
from vaitrain.data.base import TensorSplit
from vaitrain.data.loader import DeviceLoader, StreamLoader, TensorDataset, Transform
from vaitrain.errors import ConfigError
from vaitrain.schema.data import DataConfig

CPU = torch.device("cpu")


def ids_split(n: int, size: int = 4) -> TensorSplit:
    """Images whose first pixel is the sample id (mod 256); targets are the ids."""
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256
    return TensorSplit(images, torch.arange(n))


def plain(task: str = "classification", **kw) -> Transform:
    return Transform(task=task, mean=torch.zeros(1), std=torch.ones(1), **kw)


def loader(split, train=True, batch_size=10, seed=0, rank=0, world_size=1, transform=None, stream=False, workers=0):
    kw = dict(train=train, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size, device=CPU)
    t = transform or plain()
    if stream:
        return StreamLoader(TensorDataset(split), t, num_workers=workers, **kw)
    return DeviceLoader(split, t, **kw)


def epoch_ids(ld, epoch: int) -> list[list[int]]:
    ld.set_epoch(epoch)
    return [y.tolist() for _, y in ld]


def test_each_epoch_is_a_permutation_and_the_last_partial_batch_is_dropped():
    ld = loader(ids_split(100))
    assert len(ld) == 10 and ld.num_samples == 100
    batches = epoch_ids(ld, 0)
    assert len(batches) == 10 and all(len(b) == 10 for b in batches)
    assert sorted(itertools.chain(*batches)) == list(range(100))
    ld = loader(ids_split(105))
    flat = list(itertools.chain(*epoch_ids(ld, 0)))
    assert len(ld) == 10 and len(flat) == 100 and len(set(flat)) == 100


def test_order_is_fixed_by_seed_and_epoch():
    a, b = loader(ids_split(100), seed=3), loader(ids_split(100), seed=3)
    assert epoch_ids(a, 0) == epoch_ids(b, 0)
    assert epoch_ids(a, 5) == epoch_ids(b, 5)
    assert epoch_ids(a, 0) != epoch_ids(a, 1)  # reshuffled each epoch
    assert epoch_ids(a, 0) != epoch_ids(loader(ids_split(100), seed=4), 0)
    assert epoch_ids(a, 2) == epoch_ids(a, 2)  # iterating again repeats the epoch (set_epoch decides)
    assert epoch_ids(a, 0)[0] != list(range(10))  # actually shuffled


def test_two_ranks_split_every_global_batch_disjointly():
    single = epoch_ids(loader(ids_split(100), batch_size=10), 4)
    r0 = loader(ids_split(100), batch_size=10, rank=0, world_size=2)
    r1 = loader(ids_split(100), batch_size=10, rank=1, world_size=2)
    b0, b1 = epoch_ids(r0, 4), epoch_ids(r1, 4)
    assert len(r0) == len(r1) == 10 and r0.num_samples == r1.num_samples == 50
    assert all(len(b) == 5 for b in b0 + b1)
    s0, s1 = set(itertools.chain(*b0)), set(itertools.chain(*b1))
    assert not s0 & s1 and s0 | s1 == set(range(100))
    # the two ranks' batch i together are exactly the single-process batch i
    assert [x + y for x, y in zip(b0, b1)] == single


def test_validation_is_unshuffled_and_sharded_without_duplicates():
    ld = loader(ids_split(101), train=False, batch_size=20)
    assert [y for b in epoch_ids(ld, 0) for y in b] == list(range(101))  # keeps the incomplete batch
    parts = [loader(ids_split(101), train=False, batch_size=20, rank=r, world_size=2) for r in (0, 1)]
    seen = [y for p in parts for b in epoch_ids(p, 3) for y in b]
    assert sorted(seen) == list(range(101)) and len(seen) == 101
    assert sum(p.num_samples for p in parts) == 101


def coord_split(n: int, size: int = 8) -> TensorSplit:
    """Each pixel's value (image and mask) codes its own position 1 + i*size + j; 0 is padding."""
    code = (torch.arange(size * size) + 1).view(size, size).to(torch.uint8)
    images = code.expand(n, 3, size, size).clone()
    masks = code.expand(n, size, size).clone()
    return TensorSplit(images, masks)


def candidates(code: torch.Tensor, pad: int) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Every crop (dy, dx) of the zero-padded image, flipped or not, built by slicing."""
    size = code.shape[-1]
    padded = torch.zeros(size + 2 * pad, size + 2 * pad, dtype=torch.long)
    padded[pad:pad + size, pad:pad + size] = code
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy:dy + size, dx:dx + size]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop.flip(-1)
    return out


def test_augmentation_applies_the_same_crop_and_flip_to_image_and_mask():
    pad, size = 2, 8
    split = coord_split(64, size)
    t = plain("segmentation", augment=True, pad=pad, flip=True)
    t.mean, t.std = torch.zeros(3), torch.ones(3)
    ld = loader(split, batch_size=64, transform=t)
    ld.set_epoch(0)
    x, y = next(iter(ld))
    image_codes = (x * 255).round().long()  # normalization with mean 0, std 1 is x/255
    assert (image_codes[:, 0] == image_codes[:, 1]).all() and (image_codes[:, 1] == image_codes[:, 2]).all()
    cands = candidates(split.targets[0].long(), pad)
    used = set()
    for n in range(64):
        match = [k for k, c in cands.items() if torch.equal(c, image_codes[n, 0])]
        assert len(match) == 1, n  # the image is one crop/flip of the input ...
        expected_mask = torch.where(cands[match[0]] == 0, 255, cands[match[0]])  # padding: ignore_index
        assert torch.equal(y[n], expected_mask)  # ... and the mask the very same one
        used.add(match[0])
    assert {k[2] for k in used} == {False, True}  # both flipped and unflipped occur
    assert len({k[:2] for k in used}) > 5  # and many offsets


def test_no_augmentation_for_validation_or_regression():
    split = coord_split(16)
    t = plain("segmentation", augment=True, pad=2, flip=True)
    t.mean, t.std = torch.zeros(3), torch.ones(3)
    x, y = next(iter(loader(split, train=False, batch_size=16, transform=t)))
    assert torch.equal(y, split.targets.long())
    cfg = OmegaConf.structured(DataConfig(num_train=256, num_val=32))
    b = build_data(cfg, "regression", device="cpu", batch_size=32, val_batch_size=32, seed=0)
    assert b.train.augment is False and b.val.augment is False


def test_streaming_loader_yields_the_same_batches_as_the_device_loader():
    split = coord_split(40)
    split.targets = torch.arange(40)  # classification ids
    t = plain(augment=True, pad=2, flip=True)
    t.mean, t.std = torch.zeros(3), torch.ones(3)
    dev = loader(split, batch_size=8, seed=9, transform=t)
    for workers in (0, 2):
        st = loader(split, batch_size=8, seed=9, transform=t, stream=True, workers=workers)
        for epoch in (0, 1):
            dev.set_epoch(epoch)
            st.set_epoch(epoch)
            pairs = list(zip(dev, st))
            assert len(pairs) == 5
            for (xa, ya), (xb, yb) in pairs:
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_build_data_streams_when_not_device_resident():
    cfg = OmegaConf.structured(DataConfig(num_train=128, num_val=32, device_resident="false", num_workers=0))
    b = build_data(cfg, "classification", device="cpu", batch_size=32, val_batch_size=32, seed=1)
    cfg_dev = OmegaConf.structured(DataConfig(num_train=128, num_val=32))
    d = build_data(cfg_dev, "classification", device="cpu", batch_size=32, val_batch_size=32, seed=1)
    assert isinstance(b.train, StreamLoader) and isinstance(d.train, DeviceLoader)
    for epoch in (0, 3):
        b.train.set_epoch(epoch)
        d.train.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(b.train, d.train):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_batch_size_must_divide_among_ranks():
    cfg = OmegaConf.structured(DataConfig(num_train=64, num_val=16))
    with pytest.raises(ConfigError, match="divisible"):
        build_data(cfg, "classification", device="cpu", batch_size=10, val_batch_size=8, seed=0, world_size=3)
    b = build_data(cfg, "classification", device="cpu", batch_size=16, val_batch_size=8, seed=0, rank=1, world_size=2)
    x, y = next(iter(b.train))
    assert x.shape[0] == 8 and len(b.train) == 4 and b.train.num_samples == 32


def test_task_the_data_cannot_serve_is_a_config_error():
    with pytest.raises(ConfigError, match="task=segmentation"):
        build_data(OmegaConf.structured(DataConfig(name="voc")), "classification", device="cpu",
                   batch_size=8, val_batch_size=8, seed=0)
    with pytest.raises(ConfigError, match="only for data=shapes"):
        build_data(OmegaConf.structured(DataConfig(name="mnist", variant="ambiguous")), "classification",
                   device="cpu", batch_size=8, val_batch_size=8, seed=0)
    with pytest.raises(ConfigError, match="not a dataset"):
        build_data(OmegaConf.structured(DataConfig(name="imagenet")), "classification", device="cpu",
                   batch_size=8, val_batch_size=8, seed=0)


def test_every_data_yaml_fits_the_schema_and_names_a_registered_dataset():
    from vaitrain.config import compose, conf_dir
    from vaitrain.data import list_datasets

    names = {p.stem: p for p in (conf_dir() / "data").glob("*.yaml")}
    assert {"shapes", "shapes_ambiguous", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn",
            "oxford_pets", "voc", "image_folder", "seg_folder", "csv_regression"} <= set(names)
    for stem, path in names.items():
        raw = OmegaConf.load(path)
        assert list(raw.pop("defaults")) == ["schema_data", "_self_"], stem
        cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), raw)  # an unknown key fails here
        assert cfg.name in list_datasets(), stem
    # the CLI writes booleans; the str field must still pass validation
    assert compose(["data.device_resident=false"]).data.device_resident.lower() == "false"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("resident", ["true", "false"])
@pytest.mark.parametrize("task", ["classification", "segmentation", "regression"])
def test_cuda_batches_equal_the_cpu_ones(task, resident):
    cfg = OmegaConf.structured(DataConfig(num_train=512, num_val=100, device_resident=resident, num_workers=2))
    kw = dict(batch_size=64, val_batch_size=64, seed=2)
    cpu = build_data(cfg, task, device="cpu", **kw)
    gpu = build_data(cfg, task, device="cuda", **kw)
    for key in cpu.stats:
        assert torch.allclose(cpu.stats[key], gpu.stats[key], atol=1e-6), key
    for a, b in ((cpu.train, gpu.train), (cpu.val, gpu.val)):
        a.set_epoch(1)
        b.set_epoch(1)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xb.is_cuda and yb.is_cuda and xb.is_contiguous()
            assert torch.allclose(xa, xb.cpu(), atol=1e-5) and torch.allclose(ya.float(), yb.float().cpu(), atol=1e-5)
