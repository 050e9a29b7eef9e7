"""A test split apart from validation (issue 10): test/ files never reach training or model
selection; eval --split test; trainer.test_at_end; torchvision sets carve validation from train;
per-class metrics against hand-counted confusion matrices; names for 0/255 masks."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from typer.testing import CliRunner

from vaitrain.cli import app
from vaitrain.data import build_data
from vaitrain.engine import prepare, train
from vaitrain.schema.data import DataConfig
from vaitrain.tasks import build_task
from vaitrain.track.metrics_log import read_metrics

MARK = 255  # test images are pure white: no training or validation image is


def _folder(root: Path, test: bool = True) -> Path:
    rng = np.random.default_rng(0)
    splits = {"train": 24, "val": 8, **({"test": 6} if test else {})}
    for split, n in splits.items():
        for cls, colour in (("dark", 40), ("light", 160)):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n // 2):
                if split == "test":
                    arr = np.full((12, 16, 3), MARK, np.uint8)  # the marker
                else:
                    arr = np.clip(rng.normal(colour, 20, (12, 16, 3)), 0, 200).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def _bundle(root: Path, **kw):
    cfg = OmegaConf.structured(DataConfig(name="image_folder", root=str(root), image_size=8, normalize="none",
                                          augment="false"))
    return build_data(cfg, "classification", device="cpu", batch_size=4, val_batch_size=64, seed=0, **kw)


def test_test_files_never_reach_training_or_selection(tmp_path, one_thread):
    root = _folder(tmp_path / "imgs")
    b = _bundle(root)
    assert b.has_test and b.test is None  # not even decoded unless asked for
    seen = []
    for loader in (b.train, b.val):
        for epoch in range(2):
            loader.set_epoch(epoch)
            seen += [x for x, _ in loader]
    x = torch.cat(seen)
    assert x.shape[0] == 2 * (24 + 8)  # every training and validation image, twice
    assert not bool(((x * 255).round() >= MARK).flatten(1).all(1).any())  # no marker image anywhere
    stats_with = _bundle(root).stats
    import shutil

    shutil.rmtree(root / "test")
    assert torch.equal(_bundle(root).stats["mean"], stats_with["mean"])  # statistics ignore test/
    _folder(tmp_path / "imgs2")
    t = _bundle(tmp_path / "imgs2", test=True).test
    xt = torch.cat([x for x, _ in t])
    assert xt.shape[0] == 6 and bool(((xt * 255).round() == MARK).all())


def test_eval_split_test_and_test_at_end(tmp_path, one_thread):
    root = _folder(tmp_path / "imgs")
    common = ["data=image_folder", f"data.root={root}", "data.image_size=8", "model.width_mult=0.25",
              "trainer.batch_size=8", "trainer.epochs=2", "trainer.progress=none", "trainer.threads=1",
              f"out_dir={tmp_path / 'runs'}"]
    cfg, ov = prepare([*common, "trainer.test_at_end=true"])
    result = train(cfg, ov)
    records = list(read_metrics(result.run_dir / "metrics.jsonl"))
    assert all(not any(k.startswith("test/") for k in r) for r in records if r["kind"] != "final")
    final = records[-1]
    assert final["status"] == "completed" and "test/acc1" in json.dumps(final)
    runner = CliRunner()
    r = runner.invoke(app, ["eval", str(result.run_dir), "--split", "test", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["split"] == "test" and set(got["metrics"]) >= {"test/loss", "test/acc1"}
    per = got["per_class"]
    assert [p["class"] for p in per] == ["dark", "light"] and sum(p["samples"] for p in per) == 6
    acc = sum(p["acc"] * p["samples"] for p in per) / 6
    assert abs(acc - got["metrics"]["test/acc1"]) < 1e-9  # per-class accuracies add up to the overall one
    r = runner.invoke(app, ["eval", str(result.run_dir)])
    assert r.exit_code == 0 and "per class (val)" in r.stdout and "dark" in r.stdout

    bare = _folder(tmp_path / "bare", test=False)
    cfg, ov = prepare([*common, f"data.root={bare}", "trainer.epochs=1"])
    run = train(cfg, ov).run_dir
    r = runner.invoke(app, ["eval", str(run), "--split", "test"])
    assert r.exit_code == 2 and "has no test split" in r.stderr and "test/<class>/" in r.stderr
    runs_before = sorted((tmp_path / "runs").rglob("config.yaml"))
    r = runner.invoke(app, ["train", *common, f"data.root={bare}", "trainer.test_at_end=true"])
    assert r.exit_code == 2 and "has no test split" in r.stderr
    assert sorted((tmp_path / "runs").rglob("config.yaml")) == runs_before  # refused before any run dir


def test_torchvision_sets_carve_validation_from_train(tmp_path):
    from test_data_torchvision import build, write_mnist

    data = write_mnist(tmp_path, "MNIST", n_train=40, n_val=6)
    a = build("mnist", tmp_path, image_size=28, val_fraction=0.25)
    b = build("mnist", tmp_path, image_size=28, val_fraction=0.25, seed=1)

    def images(loader):
        return {bytes((x * 255).round().to(torch.uint8).flatten().tolist()) for xs, _ in loader for x in xs}

    train_a, val_a, test_a = images(a.train), images(a.val), images(a.test)
    official = {bytes(x.flatten().tolist()) for x in data["train"][0]}
    assert len(val_a) == 10 and val_a <= official and not (val_a & train_a)
    assert test_a == {bytes(x.flatten().tolist()) for x in data["t10k"][0]}  # the official test split, whole
    assert images(b.val) != val_a  # data.seed draws it


def test_per_class_scores_from_hand_counts():
    data = SimpleNamespace(num_classes=3, class_names=["a", "b", "c"], stats=None)
    task = build_task(OmegaConf.create({"name": "classification", "topk": 1, "label_smoothing": 0.0}), data)
    meter = task.new_meter()
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 0, 1])
    meter.update(torch.nn.functional.one_hot(pred, 3).float() * 5, y)
    rows = task.per_class(meter)
    assert [r["acc"] for r in rows] == [2 / 3, 1 / 2, 0.0] and [r["samples"] for r in rows] == [3, 2, 1]
    assert [r["predicted"] for r in rows] == [3, 3, 0]

    seg = build_task(OmegaConf.create({"name": "segmentation", "ignore_index": 255, "dice_weight": 0.0}),
                     SimpleNamespace(num_classes=3, class_names=["bg", "x", "y"], stats=None))
    m = seg.new_meter()
    target = torch.tensor([[[0, 0, 1, 1], [1, 255, 0, 0]]])  # class 2 absent everywhere
    guess = torch.tensor([[[0, 1, 1, 1], [0, 2, 0, 0]]])
    m.update(torch.nn.functional.one_hot(guess, 3).permute(0, 3, 1, 2).float(), target)
    rows = seg.per_class(m)
    # class 0: TP 3 (0,0),(1,2),(1,3); FP 1 (1,0); FN 1 (0,1) -> IoU 3/5, Dice 6/8
    # class 1: TP 2; FP 1 (0,1); FN 1 (1,0) -> IoU 2/4, Dice 4/6; class 2: only on an ignored pixel
    assert rows[0]["iou"] == pytest.approx(3 / 5) and rows[0]["dice"] == pytest.approx(6 / 8)
    assert rows[1]["iou"] == pytest.approx(2 / 4) and rows[1]["dice"] == pytest.approx(4 / 6)
    assert rows[2]["iou"] is None and rows[2]["pixels"] == 0


def test_binary_masks_name_their_values(tmp_path):
    for split in ("images", "masks"):
        (tmp_path / split).mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray((rng.random((8, 8)) > 0.5).astype(np.uint8) * 255).save(tmp_path / "masks" / f"{i}.png")
    cfg = OmegaConf.structured(DataConfig(name="seg_folder", root=str(tmp_path), normalize="none"))
    b = build_data(cfg, "segmentation", device="cpu", batch_size=2, val_batch_size=8, seed=0)
    assert b.class_names == ["background (mask 0)", "foreground (mask 255)"]
