"""Short real runs per task on shapes, each against its trivial baseline computed from the data:
the all-background mask (segmentation), the training mean (regression), and a single Gaussian
vs a mixture on the ambiguous variant (two identical objects: the target is bimodal)."""
from __future__ import annotations

import math

import torch

from vaitrain.data.shapes import generate
from vaitrain.engine import prepare, train

COMMON = ["data.num_train=1024", "data.num_val=256", "data.image_size=16", "trainer.batch_size=32",
          "trainer.progress=none", "optim.lr=0.003", "data.augment=false"]


def _train(tmp_path, overrides):
    cfg, overrides = prepare([*COMMON, *overrides, f"out_dir={tmp_path}"])
    return cfg, train(cfg, overrides)


def test_segmentation_beats_all_background(tmp_path):
    cfg, result = _train(tmp_path, ["task=segmentation", "model=unet", "model.base_width=16", "model.depth=2",
                                    "trainer.epochs=5"])
    masks = generate(256, 16, seed=cfg.data.seed, split="val")["masks"].long()
    # all-background prediction: IoU of background = its pixel share; 0 for every class present
    bg_share = (masks == 0).float().mean().item()
    present = len(torch.unique(masks))
    baseline_miou = bg_share / present
    m = result.metrics
    assert 1 - m["val/pixel_acc"] < 0.85 * (1 - bg_share), (m, bg_share)  # fewer wrong pixels
    assert m["val/miou"] > 1.6 * baseline_miou, (m, baseline_miou)


def test_regression_beats_predicting_the_mean(tmp_path):
    cfg, result = _train(tmp_path, ["task=regression", "model.width_mult=0.5", "trainer.epochs=4"])
    train_t = generate(1024, 16, seed=cfg.data.seed, split="train")["targets"]
    val_t = generate(256, 16, seed=cfg.data.seed, split="val")["targets"]
    baseline_rmse = (val_t - train_t.mean(0)).pow(2).mean().sqrt().item()
    assert result.metrics["val/rmse"] < 0.65 * baseline_rmse, (result.metrics, baseline_rmse)


def test_mixture_density_beats_single_gaussian_on_ambiguous_targets(tmp_path):
    runs = {}
    for head in ("gaussian", "mdn"):
        _, result = _train(tmp_path / head, ["data=shapes_ambiguous", "task=regression", f"task.head={head}",
                                             "task.components=2", "model.width_mult=0.5", "trainer.epochs=8",
                                             "data.num_train=2048", "trainer.batch_size=64"])
        runs[head] = result.metrics
    g, m = runs["gaussian"], runs["mdn"]
    assert math.isfinite(m["val/nll"]) and math.isfinite(g["val/nll"])
    # Seen across runs (threads change the numerics): NLL lower by 0.37-0.95 nats, best-of-K 0.053
    # vs 0.149. The margins below leave room for that spread and still fail a head that ignores
    # the second object (it would match the single Gaussian).
    assert m["val/nll"] < g["val/nll"] - 0.15, runs  # the mixture explains both objects
    assert m["val/best_of_k"] < 0.75 * g["val/best_of_k"], runs  # one of its hypotheses is near the truth
