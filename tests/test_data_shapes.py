"""The procedural shapes data: determinism, disjoint splits, and targets consistent with the pixels."""
from __future__ import annotations

import hashlib
import math

import pytest
import torch
from omegaconf import OmegaConf

from vaitrain.data import build_data
from vaitrain.data.shapes import SHAPES, generate
from vaitrain.errors import ConfigError
from vaitrain.schema.data import DataConfig


def data_cfg(**kw):
    return OmegaConf.structured(DataConfig(**kw))


def centroid(mask: torch.Tensor) -> tuple[float, float]:
    """Centroid (x, y) of the True pixels in fractions of the side (pixel j spans [j, j+1))."""
    ys, xs = mask.nonzero(as_tuple=True)
    size = mask.shape[-1]
    return ((xs.float() + 0.5).mean().item() / size, (ys.float() + 0.5).mean().item() / size)


def test_same_seed_same_scenes_other_seed_other_scenes():
    a, b = generate(300, 32, seed=7), generate(300, 32, seed=7)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    c = generate(300, 32, seed=8)
    assert not torch.equal(a["images"], c["images"])
    assert a["images"].dtype == torch.uint8 and a["images"].shape == (300, 3, 32, 32)


def test_train_and_val_splits_share_no_image():
    train = generate(2000, 32, seed=0, split="train")["images"]
    val = generate(500, 32, seed=0, split="val")["images"]
    digest = lambda t: {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in t}  # noqa: E731
    tr, va = digest(train), digest(val)
    assert len(tr) == 2000 and len(va) == 500  # no duplicates inside a split either
    assert not tr & va


def test_noise_free_scenes_have_flat_background_and_noise_has_the_asked_std():
    clean = generate(200, 32, seed=1, noise=0.0)
    noisy = generate(200, 32, seed=1, noise=0.1)
    diff = noisy["images"].float() - clean["images"].float()
    # clipping at 0/255 shrinks it a little; the std asked for is 0.1 * 255 grey levels
    assert 0.08 * 255 < diff.std().item() < 0.105 * 255
    assert torch.equal(noisy["masks"], clean["masks"])
    bg = clean["masks"] == 0
    first = clean["images"][0][:, bg[0]]
    assert (first == first[:, :1]).all()  # one background colour per scene


def test_mask_holds_the_main_shape_with_the_label_class_and_its_centroid_is_the_target():
    s = generate(600, 32, seed=2)
    for i in range(600):
        label, mask, (x, y, size) = s["labels"][i].item(), s["masks"][i], s["targets"][i].tolist()
        main = mask == label + 1
        assert main.any()
        assert mask.max() <= len(SHAPES)
        cx, cy = centroid(main)
        # the main shape is drawn last (never occluded) and distractors have other classes
        assert abs(cx - x) < 0.7 / 32 and abs(cy - y) < 0.7 / 32, (i, SHAPES[label])
        assert 0.32 - 1e-6 <= size <= 0.60 + 1e-6


def test_single_class_scenes_have_only_the_label_in_the_mask_and_circle_area_matches_size():
    s = generate(300, 32, seed=3, num_classes=1)  # circles only, no distractors
    assert (s["labels"] == 0).all()
    assert set(s["masks"].unique().tolist()) == {0, 1}
    radius_px = s["targets"][:, 2] * 32 / 2
    area = (s["masks"] == 1).flatten(1).sum(1).float()
    ratio = area / (math.pi * radius_px**2)
    assert (ratio - 1).abs().max() < 0.15


def test_all_shape_classes_occur_and_labels_are_balanced():
    labels = generate(3000, 32, seed=4)["labels"]
    counts = torch.bincount(labels, minlength=len(SHAPES))
    assert counts.min() > 3000 / len(SHAPES) * 0.8


def test_ambiguous_target_is_one_of_two_identical_objects_chosen_at_random():
    s = generate(500, 32, seed=5, variant="ambiguous")
    size = 32
    chose_left, midpoint_errors = 0, []
    for i in range(500):
        label, mask, (x, y, d) = s["labels"][i].item(), s["masks"][i], s["targets"][i].tolist()
        assert set(mask.unique().tolist()) == {0, label + 1}  # two objects of the label's class
        ys, xs = (mask > 0).nonzero(as_tuple=True)
        px, py = (xs.float() + 0.5) / size, (ys.float() + 0.5) / size
        near = (px - x) ** 2 + (py - y) ** 2 <= (0.55 * d) ** 2  # within the target object's radius
        a, b = near, ~near
        assert b.sum() > 0.7 * a.sum() and a.sum() > 0.7 * b.sum()  # two objects of one size
        ax, ay = px[a].mean().item(), py[a].mean().item()
        bx, by = px[b].mean().item(), py[b].mean().item()
        assert abs(ax - x) < 0.7 / size and abs(ay - y) < 0.7 / size  # the target is object a ...
        assert math.hypot(bx - x, by - y) > d  # ... and object b is elsewhere
        chose_left += ax < bx
        midpoint_errors.append(math.hypot((ax + bx) / 2 - x, (ay + by) / 2 - y))
    assert 0.4 < chose_left / 500 < 0.6  # both objects get chosen: the target is bimodal
    assert min(midpoint_errors) > 0.1  # predicting the midpoint is always wrong by a radius or more


@pytest.mark.parametrize("task", ["classification", "segmentation", "regression"])
def test_build_data_gives_each_task_its_targets(task):
    cfg = data_cfg(num_train=256, num_val=64, image_size=32)
    b = build_data(cfg, task, device="cpu", batch_size=64, val_batch_size=64, seed=0)
    x, y = next(iter(b.val))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    ref = generate(64, 32, seed=0, split="val")
    if task == "classification":
        assert b.num_classes == len(SHAPES) and b.class_names == list(SHAPES)
        assert torch.equal(y, ref["labels"])
    elif task == "segmentation":
        assert b.num_classes == len(SHAPES) + 1 and b.class_names[0] == "background"
        assert y.shape == (64, 32, 32) and y.dtype == torch.int64
        assert torch.equal(y, ref["masks"].long())
    else:
        assert b.target_dim == 3 and b.target_names == ["x", "y", "size"]
        raw = y * b.stats["target_std"] + b.stats["target_mean"]
        assert torch.allclose(raw, ref["targets"], atol=1e-5)


def test_shapes_config_errors():
    with pytest.raises(ConfigError, match="num_classes"):
        build_data(data_cfg(num_classes=9), "classification", device="cpu", batch_size=8, val_batch_size=8, seed=0)
    with pytest.raises(ConfigError, match="image_size"):
        build_data(data_cfg(image_size=4), "classification", device="cpu", batch_size=8, val_batch_size=8, seed=0)
    with pytest.raises(ConfigError, match="batch_size"):
        build_data(data_cfg(num_train=50), "classification", device="cpu", batch_size=64, val_batch_size=8, seed=0)
