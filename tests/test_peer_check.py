"""Peer check: the numbers vaitrain reports equal what a peer computes by hand from the same
checkpoint (scripts/peer_check.py compares whole trainings). On a tiny folder of non-square images
of mixed sizes: `eval --split test --json` (acc1, loss, per-class accuracy and counts) against a
plain loop over best.pt's weights with the preprocessing done by hand (PIL centre-square resize,
mean/std of the training images), and `predict`'s top-1 on test/ against eval's accuracy.
Segmentation: eval's test/miou, dice, pixel_acc against a confusion matrix counted by hand from
predict's mask PNGs; regression: eval's test/rmse and mae against predict's values and test.csv."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from vaitrain.cli import app
from vaitrain.config import compose
from vaitrain.models import build_model

SIZE = 16
CLASSES = ("blue", "green", "red")  # sorted: the label order a peer's ImageFolder uses too


def _folder(root: Path) -> Path:
    """Noisy colour-dominant images, 18-40 px, aspect 0.6-1.8, PNG and JPEG; the classes overlap."""
    rng = np.random.default_rng(3)
    for split, n in (("train", 12), ("val", 4), ("test", 7)):
        for c, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                short, aspect = int(rng.integers(18, 41)), rng.uniform(0.6, 1.8)
                w, h = (int(short * aspect), short) if aspect >= 1 else (short, int(short / aspect))
                base = rng.uniform(60, 160, 3)
                base[c] += 40
                arr = np.clip(base + rng.normal(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.{'jpg' if i % 3 == 0 else 'png'}")
    return root


def _by_hand(path: Path) -> torch.Tensor:
    """uint8 (3, SIZE, SIZE): the centre square of the short side, resized bilinearly by PIL."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
        arr = np.asarray(im.resize((SIZE, SIZE), Image.BILINEAR, box=box))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _split(root: Path, split: str) -> tuple[list[Path], torch.Tensor, torch.Tensor]:
    paths = [p for c in CLASSES for p in sorted((root / split / c).iterdir())]
    labels = torch.tensor([CLASSES.index(p.parent.name) for p in paths])
    return paths, torch.stack([_by_hand(p) for p in paths]), labels


def _cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("peer")
    root = _folder(tmp / "photos")
    _cli("train", "data=image_folder", f"data.root={root}", f"data.image_size={SIZE}", "model=resnet20",
         "trainer.epochs=3", "trainer.batch_size=6", "trainer.threads=1", "trainer.progress=none",
         f"out_dir={tmp / 'runs'}", "name=peer")
    run = next((tmp / "runs").glob("*/*-peer-*"))
    return root, run


def test_eval_numbers_equal_a_plain_loop_over_best_pt(trained):
    root, run = trained
    reported = json.loads(_cli("eval", str(run), "--split", "test", "--json"))
    # batches of 4 over 21 images (the last one of 1): a mean of batch means would differ
    assert json.loads(_cli("eval", str(run), "--split", "test", "--json", "trainer.val_batch_size=4")
                      )["metrics"] == pytest.approx(reported["metrics"], rel=1e-6)
    state = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)

    # The peer's normalization: per-channel mean and population std of the training images.
    _, xtr, _ = _split(root, "train")
    f = xtr.double() / 255
    mean, std = f.mean((0, 2, 3)), f.std((0, 2, 3), unbiased=False)
    assert torch.allclose(state["data_stats"]["mean"].double(), mean, atol=1e-6)
    assert torch.allclose(state["data_stats"]["std"].double(), std, atol=1e-6)

    cfg = compose(["model=resnet20"])
    model = build_model(cfg.model, cfg.norm, in_channels=3, num_outputs=len(CLASSES), image_size=SIZE)
    model.load_state_dict(state["model"])
    model.eval()
    paths, x, y = _split(root, "test")
    with torch.no_grad():
        logits = model(((x.double() / 255 - mean[:, None, None]) / std[:, None, None]).float())
    pred = logits.argmax(1)
    m = reported["metrics"]
    assert m["test/acc1"] == pytest.approx(float((pred == y).double().mean()), abs=1e-9)
    assert m["test/loss"] == pytest.approx(float(F.cross_entropy(logits.double(), y)), rel=1e-4)
    assert reported["epoch"] == state["epoch"]
    per_class = {r["class"]: r for r in reported["per_class"]}
    assert sorted(per_class) == list(CLASSES)
    for c, cls in enumerate(CLASSES):
        assert per_class[cls]["samples"] == int((y == c).sum())
        assert per_class[cls]["predicted"] == int((pred == c).sum())
        assert per_class[cls]["acc"] == pytest.approx(float((pred[y == c] == c).double().mean()), abs=1e-9)

    # predict's top-1 over the same files: eval's accuracy, file by file the plain loop's class.
    rows = json.loads(_cli("predict", str(run), str(root / "test"), "--out", str(run.parent / "p.json"))
                      and (run.parent / "p.json").read_text())
    top1 = {Path(r["path"]).resolve(): r["top"][0]["class"] for r in rows}
    assert len(top1) == len(paths)
    assert [top1[p.resolve()] for p in paths] == [CLASSES[int(i)] for i in pred]
    hits = sum(top1[p.resolve()] == p.parent.name for p in paths)
    assert hits / len(paths) == pytest.approx(m["test/acc1"], abs=1e-9)


def _seg_folder(root: Path) -> Path:
    """24 x 24 grey scenes: a bright square (class 1) and a dark disc (class 2) on noise (class 0)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:24, 0:24]
    for split, n in (("train", 10), ("val", 3), ("test", 4)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((24, 24), np.uint8)
            y0, x0, s = *rng.integers(0, 14, 2), int(rng.integers(5, 10))
            mask[y0:y0 + s, x0:x0 + s] = 1
            cy, cx, r = *rng.integers(4, 20, 2), int(rng.integers(3, 6))
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 2
            img = np.choose(mask, [120.0, 200.0, 40.0]) + rng.normal(0, 35, (24, 24))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    return root


def test_segmentation_miou_dice_equal_a_hand_count_over_predicted_masks(tmp_path):
    torch.set_num_threads(1)
    root = _seg_folder(tmp_path / "scenes")
    _cli("train", "task=segmentation", "data=seg_folder", f"data.root={root}", "data.num_classes=3",
         "model=unet", "model.base_width=8", "model.depth=2", "trainer.epochs=6", "trainer.batch_size=2",
         "optim.lr=3e-3",
         "trainer.threads=1", "trainer.progress=none", f"out_dir={tmp_path / 'runs'}", "name=seg")
    run = next((tmp_path / "runs").glob("*/*-seg-*"))
    m = json.loads(_cli("eval", str(run), "--split", "test", "--json"))["metrics"]
    _cli("predict", str(run), str(root / "test" / "images"), "--out", str(tmp_path / "masks"))
    conf = np.zeros((3, 3), np.int64)  # true x predicted pixels over the whole split
    for truth in sorted((root / "test" / "masks").iterdir()):
        t = np.asarray(Image.open(truth)).astype(np.int64)
        p = np.asarray(Image.open(tmp_path / "masks" / truth.name)).astype(np.int64)
        conf += np.bincount(t.ravel() * 3 + p.ravel(), minlength=9).reshape(3, 3)
    tp, fp, fn = np.diag(conf), conf.sum(0) - np.diag(conf), conf.sum(1) - np.diag(conf)
    present = tp + fp + fn > 0
    assert m["test/pixel_acc"] == pytest.approx(tp.sum() / conf.sum(), abs=1e-9)
    assert m["test/miou"] == pytest.approx(np.mean(tp[present] / (tp + fp + fn)[present]), abs=1e-6)
    assert m["test/dice"] == pytest.approx(np.mean(2 * tp[present] / (2 * tp + fp + fn)[present]), abs=1e-6)


def test_regression_rmse_mae_equal_a_hand_computation_over_predict(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    root = tmp_path / "dots"
    (root / "img").mkdir(parents=True)
    rows = {"train": [], "val": [], "test": []}
    for split, n in (("train", 24), ("val", 6), ("test", 8)):
        for i in range(n):
            x, y = rng.uniform(4, 28, 2)
            yy, xx = np.mgrid[0:32, 0:40]
            img = 40 + 180 * np.exp(-((xx - x * 40 / 32) ** 2 + (yy - y) ** 2) / 8) + rng.normal(0, 10, (32, 40))
            name = f"img/{split}{i}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name)
            rows[split].append((name, float(x * 10), float(y - 100)))  # targets in units far from 0..1
    for split, rs in rows.items():
        (root / f"{split}.csv").write_text("path,x,y\n" + "".join(f"{p},{a!r},{b!r}\n" for p, a, b in rs))
    _cli("train", "task=regression", "data=csv_regression", f"data.root={root}", "data.image_size=16",
         "model=resnet20", "trainer.epochs=2", "trainer.batch_size=6", "trainer.threads=1",
         "trainer.progress=none", f"out_dir={tmp_path / 'runs'}", "name=reg")
    run = next((tmp_path / "runs").glob("*/*-reg-*"))
    m = json.loads(_cli("eval", str(run), "--split", "test", "--json"))["metrics"]
    _cli("predict", str(run), *[str(root / p) for p, _, _ in rows["test"]], "--out", str(tmp_path / "p.json"))
    got = {Path(r["path"]).name: (r["values"]["x"], r["values"]["y"])
           for r in json.loads((tmp_path / "p.json").read_text())}
    diff = np.array([np.subtract(got[Path(p).name], (a, b)) for p, a, b in rows["test"]])
    assert m["test/rmse"] == pytest.approx(np.sqrt(np.mean(diff ** 2)), rel=1e-4)
    assert m["test/mae"] == pytest.approx(np.mean(np.abs(diff)), rel=1e-4)


def test_resnet_default_init_is_torchvisions():
    """Peers train torchvision's resnet18 from scratch: its He-normal (fan_out) convs learnt far
    better than PyTorch's conv default (0.76 vs 0.46 test accuracy in scripts/peer_check.py)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    cfg = compose(["model=resnet18"])
    ours = build_model(cfg.model, cfg.norm, in_channels=3, num_outputs=10, image_size=32)
    theirs = torchvision.models.resnet18(num_classes=10)
    convs = 0
    for (k, a), (k2, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert k == k2
        if a.ndim == 4:  # every conv: the std of torchvision's init within sampling noise
            convs += 1
            assert float(a.std()) == pytest.approx(float(b.std()), rel=0.15), k
    assert convs == 20
    # an explicit model.init still replaces it
    cfg = compose(["model=resnet18", "model.init=lecun"])
    lecun = build_model(cfg.model, cfg.norm, in_channels=3, num_outputs=10, image_size=32)
    w = lecun.layer4[1].conv2.weight.detach()
    assert float(w.var()) == pytest.approx(1 / (512 * 9), rel=0.05)
    # CIFAR ResNets keep PyTorch's conv default (He-normal did worse there): Var 1/(3 fan_in)
    cfg = compose(["model=resnet20"])
    cifar = build_model(cfg.model, cfg.norm, in_channels=3, num_outputs=10, image_size=32)
    w = cifar.layer3[2].conv2.weight.detach()
    assert float(w.var()) == pytest.approx(1 / (3 * 64 * 9), rel=0.05)
