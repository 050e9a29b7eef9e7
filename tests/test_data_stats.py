"""Normalization statistics: equal to a direct computation, applied by the loaders, reused when given."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from vaitrain.data import build_data
from vaitrain.data.shapes import generate
from vaitrain.data.stats import image_stats, target_stats
from vaitrain.errors import DataError
from vaitrain.schema.data import DataConfig


def build(task="classification", stats=None, **kw):
    cfg = OmegaConf.structured(DataConfig(num_train=512, num_val=128, **kw))
    return build_data(cfg, task, device="cpu", batch_size=64, val_batch_size=128, seed=0, stats=stats)


def raw(split="train", n=512):
    return generate(n, 32, seed=0, split=split)


def test_channel_stats_equal_a_direct_computation_over_the_training_split():
    b = build()
    x = raw()["images"].double() / 255
    assert b.stats["mean"].shape == (3,)
    assert torch.allclose(b.stats["mean"].double(), x.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(b.stats["std"].double(), x.permute(1, 0, 2, 3).flatten(1).std(1, unbiased=False), atol=1e-6)


def test_pixel_stats_are_a_mean_and_std_image():
    b = build(normalize="pixel")
    x = raw()["images"].double() / 255
    assert b.stats["mean"].shape == (3, 32, 32)
    assert torch.allclose(b.stats["mean"].double(), x.mean(0), atol=1e-6)
    assert torch.allclose(b.stats["std"].double(), x.std(0, unbiased=False), atol=1e-6)


def test_loader_output_is_normalized_with_the_stats():
    for mode in ("channel", "pixel", "none"):
        b = build(normalize=mode)
        x, _ = next(iter(b.val))
        ref = raw("val", 128)["images"].float() / 255
        mean, std = b.stats["mean"], b.stats["std"]
        if mean.dim() == 1:
            mean, std = mean[:, None, None], std[:, None, None]
        assert torch.allclose(x, (ref - mean) / std, atol=1e-5), mode
    # over the whole training split (no augmentation) the normalized data has mean 0 and std 1
    b = build(augment=False)
    xs = torch.cat([x for x, _ in b.train])
    assert xs.mean((0, 2, 3)).abs().max() < 1e-4
    assert (xs.std((0, 2, 3)) - 1).abs().max() < 1e-3


def test_none_gives_zero_mean_unit_std_and_constant_pixels_keep_std_one():
    b = build(normalize="none")
    assert torch.equal(b.stats["mean"], torch.zeros(3)) and torch.equal(b.stats["std"], torch.ones(3))
    x = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(10, dtype=torch.uint8) * 20
    mean, std = image_stats([x], "pixel", 1)
    assert std[0, 0, 0] > 0.1 and std[0, 1, 1] == 1.0 and mean[0, 1, 1] == 0.0


def test_regression_targets_are_standardized_with_training_statistics():
    b = build("regression")
    t = raw()["targets"].double()
    assert torch.allclose(b.stats["target_mean"].double(), t.mean(0), atol=1e-6)
    assert torch.allclose(b.stats["target_std"].double(), t.std(0, unbiased=False), atol=1e-6)
    ys = torch.cat([y for _, y in b.train])
    assert ys.mean(0).abs().max() < 0.1 and (ys.std(0) - 1).abs().max() < 0.1
    off = build("regression", standardize_targets=False)
    assert torch.equal(off.stats["target_mean"], torch.zeros(3)) and torch.equal(off.stats["target_std"], torch.ones(3))
    _, y = next(iter(off.val))
    assert torch.allclose(y, raw("val", 128)["targets"])
    m, s = target_stats([torch.ones(5, 2)], True, 2)
    assert torch.equal(s, torch.ones(2))  # a constant target is only centred


def test_given_stats_are_used_instead_of_recomputed():
    given = {"mean": torch.full((3,), 0.5), "std": torch.full((3,), 0.25)}
    b = build(stats=given)
    assert torch.equal(b.stats["mean"], given["mean"]) and torch.equal(b.stats["std"], given["std"])
    x, _ = next(iter(b.val))
    ref = raw("val", 128)["images"].float() / 255
    assert torch.allclose(x, (ref - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(DataError, match="shape"):
        build(stats={"mean": torch.zeros(1), "std": torch.ones(1)})
    with pytest.raises(DataError, match="target_mean"):
        build("regression", stats=given)
