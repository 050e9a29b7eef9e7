"""Issue 11: crops of large images, per-sample photo augmentation, Mixup/CutMix (loader level).

Expectations come from torchvision's own per-image functions (a second implementation), from
images whose pixels encode their coordinates, and from hand computations."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from omegaconf import OmegaConf

from vaitrain.data import augment as A
from vaitrain.data import build_data
from vaitrain.data.base import TensorSplit
from vaitrain.data.loader import DeviceLoader, Transform
from vaitrain.data.mix import Mixer, MixSpec
from vaitrain.errors import ConfigError
from vaitrain.schema.data import DataConfig

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def coord_images(n: int, size: int) -> TensorSplit:
    """Channel 0 = row + 1, channel 1 = column + 1, channel 2 = sample id; mask = row + 1 (so 0
    only ever comes from padding)."""
    r = (torch.arange(size) + 1).view(size, 1).expand(size, size)
    c = (torch.arange(size) + 1).view(1, size).expand(size, size)
    img = torch.stack([r, c, torch.zeros_like(r)]).to(torch.uint8).expand(n, 3, size, size).clone()
    img[:, 2] = torch.arange(n).view(n, 1, 1).to(torch.uint8)
    return TensorSplit(img, r.to(torch.uint8).expand(n, size, size).clone())


def seg_loader(split: TensorSplit, spec: A.AugmentSpec, train: bool = True, batch: int = 16, seed: int = 0):
    t = Transform(task="segmentation", mean=torch.zeros(3), std=torch.ones(3), augment=True, spec=spec,
                  ignore_index=255)
    return DeviceLoader(split, t, train=train, batch_size=batch, seed=seed, rank=0, world_size=1, device=CPU)


def codes(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().long()  # normalization with mean 0, std 1 is x / 255


def test_crop_of_a_large_image_and_its_mask_come_from_the_same_window_and_validation_is_whole():
    split = coord_images(32, 40)
    spec = A.AugmentSpec(crop=16, pad=0, flip=True, vflip=True, rotate=True)
    ld = seg_loader(split, spec)
    x, y = next(iter(ld))
    x = codes(x)
    assert x.shape == (16, 3, 16, 16) and y.shape == (16, 16, 16)
    assert torch.equal(y, x[:, 0])  # the mask is the image's own rows, pixel for pixel
    seen_rotated = 0
    for n in range(16):
        rows, cols = x[n, 0], x[n, 1]
        # a 16 x 16 window: 16 consecutive rows and columns of the 40 px image, each pair once
        assert rows.max() - rows.min() == 15 and cols.max() - cols.min() == 15
        pairs = set(zip(rows.flatten().tolist(), cols.flatten().tolist()))
        assert len(pairs) == 256
        r0, c0 = int(rows.min()), int(cols.min())
        assert pairs == {(r0 + i, c0 + j) for i in range(16) for j in range(16)}
        seen_rotated += int(rows[0, 0] == rows[0, 1])  # rows constant along a row: not transposed
    assert 0 < seen_rotated < 16  # some windows are rotated by 90/270 degrees, some not
    val = seg_loader(split, spec, train=False)
    xv, yv = next(iter(val))
    assert xv.shape[-2:] == (40, 40) and torch.equal(yv, split.targets[:16].long())


def test_padding_from_any_geometric_augmentation_is_ignore_index_in_masks():
    split = coord_images(16, 12)
    for spec in (A.AugmentSpec(crop=20, pad=0, flip=True, rotate=True), A.AugmentSpec(pad=4, flip=True)):
        x, y = next(iter(seg_loader(split, spec)))
        x = codes(x)
        padded = x[:, 0] == 0  # real pixels have row code >= 1
        assert torch.equal(y == 255, padded)
        assert torch.equal(y[~padded], x[:, 0][~padded])
    for op in ("Rotate", "ShearX", "TranslateY"):  # TrivialAugment's geometric ops move masks too
        groups = [None] * len(A.TRIVIAL_OPS)
        groups[[o[0] for o in A.TRIVIAL_OPS].index(op)] = torch.arange(16)
        mag = torch.linspace(-30, 30, 16) if op != "ShearX" else torch.linspace(-0.9, 0.9, 16)
        x, y = A.trivial_augment(split.images, split.targets, mag, groups, 255)
        padded = x[:, 0] == 0
        assert padded.any() and torch.equal(y == 255, padded) and torch.equal(y[~padded], x[:, 0][~padded])
    x, y = next(iter(seg_loader(split, A.AugmentSpec(crop=20, pad=0))))
    assert (y == 255).any()  # a 20 px window of a 12 px image is padded


def test_per_sample_parameters_differ_across_a_batch_and_the_same_seed_gives_the_same_batch():
    split = TensorSplit(torch.full((64, 3, 16, 16), 120, dtype=torch.uint8), torch.zeros(64, dtype=torch.long))
    split.images[:, 0, :, :8] = 30
    spec = A.AugmentSpec(pad=2, flip=True, resized_crop=True, trivial=True, jitter=0.4, hue=0.1, erasing=0.5)

    def batch(seed: int, epoch: int) -> torch.Tensor:
        t = Transform(task="classification", mean=torch.zeros(3), std=torch.ones(3), augment=True, spec=spec)
        ld = DeviceLoader(split, t, train=True, batch_size=64, seed=seed, rank=0, world_size=1, device=CPU)
        ld.set_epoch(epoch)
        return next(iter(ld))[0]

    a = batch(0, 0)
    distinct = {tuple(a[i].flatten()[::7].tolist()) for i in range(64)}
    assert len(distinct) > 48  # identical inputs, nearly all outputs different
    assert torch.equal(a, batch(0, 0))
    assert not torch.equal(a, batch(0, 1)) and not torch.equal(a, batch(1, 0))
    p = A.draw(spec, 256, 16, torch.Generator().manual_seed(0))
    assert len(p.t["op"].unique()) == len(A.TRIVIAL_OPS)  # every op drawn within one batch
    assert len(p.t["jitter"][:, 0].unique()) == 256


def _by_torchvision(name: str, img: torch.Tensor, m: float) -> torch.Tensor:
    """torchvision's TrivialAugmentWide._apply_op for one image (fill 0, nearest)."""
    nearest = TF.InterpolationMode.NEAREST
    if name == "ShearX":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0],
                         interpolation=nearest, center=[0, 0])
    if name == "ShearY":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                         interpolation=nearest, center=[0, 0])
    if name == "TranslateX":
        return TF.affine(img, angle=0.0, translate=[int(m), 0], scale=1.0, shear=[0.0, 0.0], interpolation=nearest)
    if name == "TranslateY":
        return TF.affine(img, angle=0.0, translate=[0, int(m)], scale=1.0, shear=[0.0, 0.0], interpolation=nearest)
    if name == "Rotate":
        return TF.rotate(img, m, interpolation=nearest)
    table = {"Brightness": lambda: TF.adjust_brightness(img, 1.0 + m), "Color": lambda: TF.adjust_saturation(img, 1.0 + m),
             "Contrast": lambda: TF.adjust_contrast(img, 1.0 + m), "Sharpness": lambda: TF.adjust_sharpness(img, 1.0 + m),
             "Posterize": lambda: TF.posterize(img, int(m)), "Solarize": lambda: TF.solarize(img, m),
             "AutoContrast": lambda: TF.autocontrast(img), "Equalize": lambda: TF.equalize(img), "Identity": lambda: img}
    return table[name]()


def test_trivial_augment_ops_match_torchvision_per_image():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (12, 3, 20, 20), generator=g, dtype=torch.uint8)
    x[:, :, 5:12, 4:15] //= 3  # some structure
    for k, (name, table, signed) in enumerate(A.TRIVIAL_OPS):
        bins = torch.randint(0, 31, (12,), generator=g)
        m = table[bins] if table is not None else torch.zeros(12)
        if signed:
            m = m * torch.where(torch.rand(12, generator=g) < 0.5, -1.0, 1.0)
        groups = [None] * len(A.TRIVIAL_OPS)
        groups[k] = torch.arange(12)
        ours, _ = A.trivial_augment(x, None, m, groups, 255)
        for i in range(12):
            ref = _by_torchvision(name, x[i], float(m[i]))
            if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
                assert (ours[i] == ref).float().mean() > 0.99, (name, float(m[i]))  # nearest-pixel ties
            else:
                assert (ours[i].int() - ref.int()).abs().max() <= 1, (name, float(m[i]))  # float32 vs double factor


def test_color_jitter_matches_torchvision_per_image():
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (8, 3, 12, 12), generator=g, dtype=torch.uint8)
    f = torch.empty(8, 3).uniform_(0.6, 1.4, generator=g)
    h = torch.empty(8).uniform_(-0.2, 0.2, generator=g)
    ours = A.color_jitter(x, f, h)
    for i in range(8):
        ref = TF.adjust_brightness(x[i], float(f[i, 0]))
        ref = TF.adjust_contrast(ref, float(f[i, 1]))
        ref = TF.adjust_saturation(ref, float(f[i, 2]))
        ref = TF.adjust_hue(ref, float(h[i]))
        assert (ours[i].int() - ref.int()).abs().max() <= 1


def test_resized_crop_boxes_follow_scale_and_ratio_and_masks_follow_images():
    p = A.draw(A.AugmentSpec(resized_crop=True, rrc_scale=(0.25, 0.5), rrc_ratio=(0.5, 2.0)), 2000, 64,
               torch.Generator().manual_seed(0))
    top, left, h, w = p.t["box"].unbind(1)
    area = (h * w).float() / 64 ** 2
    assert area.min() > 0.23 and area.max() < 0.52 and area.mean() == pytest.approx(0.375, abs=0.02)
    assert ((w.float() / h) > 0.45).all() and ((w.float() / h) < 2.2).all()
    assert (top + h <= 64).all() and (left + w <= 64).all()
    # rows coded 4 * row: bilinear image and nearest mask agree to the bin's half-pixel
    img = (torch.arange(64) * 4).view(1, 1, 64, 1).expand(6, 3, 64, 64).to(torch.uint8).contiguous()
    mask = img[:, 0].clone()
    xi, yi = A.resized_crop(img, mask, p.t["box"][:6], 16, 255)
    assert xi.shape == (6, 3, 16, 16) and yi.shape == (6, 16, 16)
    assert (xi[:, 0].int() - yi.int()).abs().max() <= 3


def test_random_erasing_zeroes_one_rectangle_of_the_chosen_samples():
    spec = A.AugmentSpec(erasing=0.5)
    p = A.draw(spec, 400, 32, torch.Generator().manual_seed(1))
    assert 0.4 < p.t["erase"].float().mean() < 0.6
    x = A.erase(torch.ones(400, 3, 32, 32), p.t["erase"], p.t["erase_box"])
    zero = (x == 0).all(1)
    area = zero.flatten(1).float().mean(1)
    _, _, h, w = p.t["erase_box"].unbind(1)
    expected = torch.where(p.t["erase"], (h * w).float() / 1024, 0.0)
    assert torch.allclose(area, expected)
    on = p.t["erase"] & (h > 0)
    assert area[on].min() >= 0.019 and area[on].max() <= 0.34


def test_mixup_soft_labels_sum_to_one_and_equal_the_mixing_weight():
    n, c = 16, 10
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    y = torch.arange(n) % c
    mixer = Mixer(MixSpec(mixup=0.4, num_classes=c))
    for batch in range(5):
        xm, ym = mixer(x, y, seed=0, epoch=0, batch=batch)
        assert torch.allclose(ym.sum(1), torch.ones(n))
        prev = torch.roll(torch.arange(n), 1)
        lam = (xm[:, 0, 0, 0] - prev.float()) / (torch.arange(n) - prev).float()  # x = lam x_i + (1-lam) x_prev
        assert torch.allclose(lam, lam[0].expand(n), atol=1e-5)
        for i in range(n):
            assert ym[i, y[i]] == pytest.approx(float(lam[i]), abs=1e-5) or y[i] == y[prev[i]]
            assert ym[i, y[prev[i]]] == pytest.approx(1 - float(lam[i]), abs=1e-5)
    a, _ = mixer(x, y, 0, 0, 3)
    assert torch.equal(a, mixer(x, y, 0, 0, 3)[0]) and not torch.equal(a, mixer(x, y, 0, 0, 4)[0])


def test_cutmix_pasted_area_equals_the_label_weight_and_switch_prob_chooses():
    n, c = 8, 8
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    y = torch.arange(n)
    mixer = Mixer(MixSpec(cutmix=1.0, num_classes=c))
    for batch in range(6):
        xm, ym = mixer(x, y, 0, 0, batch)
        prev = torch.roll(y, 1)
        pasted = (xm[:, 0] == prev.view(n, 1, 1).float()).flatten(1).float().mean(1)
        assert torch.allclose(ym[torch.arange(n), prev], pasted)
        assert torch.allclose(ym.sum(1), torch.ones(n))
    both = Mixer(MixSpec(mixup=1.0, cutmix=1.0, switch_prob=0.25, prob=0.8, num_classes=c))
    picks = [both.choose(torch.Generator().manual_seed(s)) for s in range(2000)]
    none = sum(p is None for p in picks) / 2000
    cut = sum(p is both.cutmix for p in picks) / 2000
    assert none == pytest.approx(0.2, abs=0.03) and cut == pytest.approx(0.8 * 0.25, abs=0.03)


def test_build_data_wires_the_options_and_refuses_mixing_non_class_targets():
    cfg = OmegaConf.structured(DataConfig(num_train=64, num_val=16, image_size=16, augment="trivial", mixup=0.2,
                                          cutmix=1.0, color_jitter=0.3, erasing=0.25))
    b = build_data(cfg, "classification", device="cpu", batch_size=32, val_batch_size=16, seed=0)
    x, y = next(iter(b.train))
    assert y.shape == (32, b.num_classes) and torch.allclose(y.sum(1), torch.ones(32))
    xv, yv = next(iter(b.val))
    assert yv.dtype == torch.long and yv.dim() == 1  # validation keeps hard labels
    with pytest.raises(ConfigError, match="task=classification"):
        build_data(cfg, "segmentation", device="cpu", batch_size=32, val_batch_size=16, seed=0)
    reg = OmegaConf.structured(DataConfig(num_train=64, num_val=16, image_size=16, augment="trivial", crop=8))
    r = build_data(reg, "regression", device="cpu", batch_size=32, val_batch_size=16, seed=0)
    xr, _ = next(iter(r.train))
    assert xr.shape[-1] == 16  # regression: no window (it would move the targets)
    assert r.train.augment  # ... but TrivialAugment's colour ops apply


def test_bench_rows_name_the_augmentation():
    from vaitrain.config import compose
    from vaitrain.data import augmentation_label

    def label(*o: str) -> str:
        c = compose(list(o))
        return augmentation_label(c.data, c.task.name)

    assert label() == "pad4+flip"
    assert label("data.augment=trivial", "data.mixup=0.2", "data.cutmix=1.0") == "pad4+flip+trivial+mixup0.2+cutmix1"
    assert label("data.augment=false", "data.mixup=0.2") == "none"
    assert label("task=regression", "data.augment=trivial", "data.erasing=0.25") == "trivial+erase0.25"
    assert label("task=segmentation", "data.crop=16", "data.rotate=true", "data.crop_padding=0") == "crop16+flip+rot90"


def test_streaming_and_device_loaders_give_the_same_augmented_batches():
    from vaitrain.data.loader import StreamLoader, TensorDataset

    split = coord_images(24, 20)
    spec = A.AugmentSpec(crop=12, pad=0, flip=True, vflip=True, rotate=True, trivial=True, jitter=0.3, hue=0.05,
                         erasing=0.5)
    t = Transform(task="segmentation", mean=torch.zeros(3), std=torch.ones(3), augment=True, spec=spec)
    kw = dict(train=True, batch_size=8, seed=5, rank=0, world_size=1, device=CPU)
    dev, st = DeviceLoader(split, t, **kw), StreamLoader(TensorDataset(split), t, num_workers=0, **kw)
    for epoch in (0, 3):
        dev.set_epoch(epoch)
        st.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(dev, st):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_training_windows_that_do_not_fit_the_model_are_refused_in_one_line():
    from vaitrain.config import compose
    from vaitrain.engine.components import build_components

    for overrides, message in ((["model=plain_mlp", "data.crop=16"], "32 px inputs only"),
                               (["model=unet", "task=segmentation", "data.crop=20", "model.base_width=4"],
                                "20 px training windows .* divisible by 2\\^4=16")):
        cfg = compose([*overrides, "data.num_train=32", "data.num_val=8", "trainer.batch_size=16"])
        with pytest.raises(ConfigError, match=message):
            build_components(cfg, CPU)


def test_windows_larger_than_the_images_are_refused(tmp_path):
    """data.crop above the images' size trained on zero padding without a word; refused against
    data.image_size at composition, and against the loaded images' own size when that is 0."""
    from PIL import Image

    from vaitrain.config import compose
    from vaitrain.engine.components import build_components

    with pytest.raises(ConfigError, match=r"^data.crop=40 is larger than the 32 px images"):
        compose(["data.crop=40"])
    assert int(compose(["data.crop=40", "data.resized_crop=true"]).data.crop) == 40  # RandomResizedCrop scales up
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    cfg = compose(["data=image_folder", f"data.root={tmp_path}", "data.crop=24", "trainer.batch_size=4"])
    with pytest.raises(ConfigError, match=r"^data.crop=24 is larger than the 20 px images"):
        build_components(cfg, CPU)
