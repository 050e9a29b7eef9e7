"""Folder datasets (image_folder, seg_folder, csv_regression) from generated PNGs, and every
bad-file case naming the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from vaitrain.data import build_data
from vaitrain.data.loader import DeviceLoader, StreamLoader
from vaitrain.errors import DataError
from vaitrain.schema.data import DataConfig

RNG = np.random.default_rng(1)


def build(name, root, task, batch=2, **kw):
    kw = {"image_size": 0, "num_train": 0, "num_val": 0, "normalize": "none", "num_workers": 0, **kw}
    cfg = OmegaConf.structured(DataConfig(name=name, root=str(root), **kw))
    return build_data(cfg, task, device="cpu", batch_size=batch, val_batch_size=1000, seed=0)


def png(path: Path, arr: np.ndarray, mode: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)
    return arr


def rgb(h=8, w=8) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def as_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


# ---------------------------------------------------------------- image_folder

def make_tree(root: Path, split_dirs=("train", "val"), classes=("cat", "dog"), per_class=3) -> dict:
    images = {}
    for split in split_dirs:
        for k, cls in enumerate(classes):
            for i in range(per_class):
                p = root / split / cls / f"{i}.png" if split else root / cls / f"{i}.png"
                images[p] = (png(p, rgb()), k)
    return images


def test_image_folder_with_train_and_val_trees(tmp_path):
    images = make_tree(tmp_path)
    b = build("image_folder", tmp_path, "classification")
    assert b.class_names == ["cat", "dog"] and b.num_classes == 2 and b.in_channels == 3 and b.image_size == 8
    assert len(b.train) == 3 and b.val.num_samples == 6
    x, y = next(iter(b.val))
    want = [(p, v) for p, v in images.items() if "val" in p.parts]
    assert y.tolist() == [k for _, (_, k) in want]
    for i, (_, (arr, _)) in enumerate(want):
        assert torch.equal(as_uint8(x[i]), torch.from_numpy(arr).permute(2, 0, 1))


def test_image_folder_single_tree_is_split_by_val_fraction_and_resized(tmp_path):
    make_tree(tmp_path, split_dirs=("",), per_class=10)
    b = build("image_folder", tmp_path, "classification", val_fraction=0.25, image_size=6)
    assert b.val.num_samples == 5 and b.train.n == 15 and b.image_size == 6
    x, _ = next(iter(b.val))
    assert x.shape == (5, 3, 6, 6)


def test_grayscale_images_give_one_channel(tmp_path):
    for k, cls in enumerate("ab"):
        for split in ("train", "val"):
            png(tmp_path / split / cls / "0.png", RNG.integers(0, 256, (8, 8), dtype=np.uint8))
    b = build("image_folder", tmp_path, "classification")
    assert b.in_channels == 1
    assert next(iter(b.val))[0].shape == (2, 1, 8, 8)


def test_streamed_folder_gives_the_same_batches_as_the_decoded_one(tmp_path):
    make_tree(tmp_path, per_class=4)
    dec = build("image_folder", tmp_path, "classification", augment=True)
    st = build("image_folder", tmp_path, "classification", augment=True, device_resident="false")
    assert isinstance(dec.train, DeviceLoader) and isinstance(st.train, StreamLoader)
    assert torch.equal(dec.stats["mean"], st.stats["mean"])
    for epoch in (0, 1):
        dec.train.set_epoch(epoch)
        st.train.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(dec.train, st.train):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_image_folder_bad_files(tmp_path):
    make_tree(tmp_path)
    bad = tmp_path / "train" / "dog" / "9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    with pytest.raises(DataError, match=r"cannot read image .*9\.png"):
        build("image_folder", tmp_path, "classification")
    with pytest.raises(DataError, match=r"9\.png"):  # streamed: the worker's error, one line
        b = build("image_folder", tmp_path, "classification", device_resident="false", num_workers=2)
        for epoch in range(3):
            b.train.set_epoch(epoch)
            list(b.train)
    full = (tmp_path / "train" / "dog" / "0.png").read_bytes()
    bad.write_bytes(full[: len(full) // 2])  # a truncated PNG
    with pytest.raises(DataError, match=r"cannot read image .*9\.png"):
        build("image_folder", tmp_path, "classification")
    bad.unlink()
    png(tmp_path / "val" / "dog" / "big.png", rgb(10, 10))
    with pytest.raises(DataError, match=r"differ in size .*big\.png.*data\.image_size"):
        build("image_folder", tmp_path, "classification")
    assert build("image_folder", tmp_path, "classification", image_size=8).image_size == 8


def test_image_folder_empty_or_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build("image_folder", tmp_path / "nowhere", "classification")
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found under"):
        build("image_folder", tmp_path, "classification")
    make_tree(tmp_path)
    png(tmp_path / "val" / "cow" / "0.png", rgb())
    with pytest.raises(DataError, match="cow"):
        build("image_folder", tmp_path, "classification")


# ---------------------------------------------------------------- seg_folder

def make_seg(root: Path, n=4, values=(0, 1, 2), size=(8, 8)) -> dict:
    out = {}
    for i in range(n):
        img = png(root / "images" / f"s{i}.png", rgb(*size))
        mask = png(root / "masks" / f"s{i}.png", RNG.choice(values, size).astype(np.uint8))
        out[f"s{i}"] = (img, mask)
    return out


def test_seg_folder_class_index_masks(tmp_path):
    make_seg(tmp_path / "train", values=(0, 1, 2, 255))
    data = make_seg(tmp_path / "val", n=2, values=(0, 1, 2))
    b = build("seg_folder", tmp_path, "segmentation")
    assert b.num_classes == 3 and b.class_names[0] == "background"
    x, y = next(iter(b.val))
    assert torch.equal(y[0], torch.from_numpy(data["s0"][1]).long())
    assert torch.equal(as_uint8(x[1]), torch.from_numpy(data["s1"][0]).permute(2, 0, 1))


def test_seg_folder_binary_masks_become_zero_one_and_single_tree_splits(tmp_path):
    data = make_seg(tmp_path, n=10, values=(0, 255))
    b = build("seg_folder", tmp_path, "segmentation", val_fraction=0.2, batch=4)
    assert b.num_classes == 2
    ys = torch.cat([y for _, y in b.val] + [y for _, y in b.train])
    assert set(ys.unique().tolist()) - {255} == {0, 1}  # 255: crop padding of training masks (ignored)
    assert set(torch.cat([y for _, y in b.val]).unique().tolist()) <= {0, 1}
    _, y = next(iter(b.val))
    firsts = [torch.from_numpy(m // 255).long() for _, m in data.values()]
    assert any(torch.equal(y[0], m) for m in firsts)


def test_seg_folder_bad_files(tmp_path):
    make_seg(tmp_path / "train")
    make_seg(tmp_path / "val", n=2)
    png(tmp_path / "val" / "masks" / "s1.png", np.zeros((6, 8), np.uint8))
    with pytest.raises(DataError, match=r"mask .*s1\.png is 8x6 but its image .*s1\.png is 8x8"):
        build("seg_folder", tmp_path, "segmentation")
    (tmp_path / "val" / "masks" / "s1.png").unlink()
    with pytest.raises(DataError, match=r"no mask for image .*s1\.png"):
        build("seg_folder", tmp_path, "segmentation")
    png(tmp_path / "val" / "masks" / "s1.png", rgb())
    with pytest.raises(DataError, match=r"s1\.png is RGB"):
        build("seg_folder", tmp_path, "segmentation")


# ---------------------------------------------------------------- csv_regression

def make_csv(root: Path, n=6, name="labels.csv", header="path,angle,scale") -> np.ndarray:
    targets = RNG.normal(size=(n, 2)).round(3)
    lines = [header]
    for i in range(n):
        png(root / "img" / f"{name}{i}.png", rgb())
        lines.append(f"img/{name}{i}.png,{targets[i, 0]},{targets[i, 1]}")
    (root / name).write_text("\n".join(lines) + "\n")
    return targets


def test_csv_regression_train_and_val_files(tmp_path):
    make_csv(tmp_path, name="train.csv")
    t_val = make_csv(tmp_path, n=3, name="val.csv")
    b = build("csv_regression", tmp_path, "regression", standardize_targets=False)
    assert b.target_dim == 2 and b.target_names == ["angle", "scale"]
    _, y = next(iter(b.val))
    assert torch.allclose(y, torch.from_numpy(t_val).float())
    one = build("csv_regression", tmp_path, "regression", target_columns=["scale"], standardize_targets=False)
    assert one.target_dim == 1 and torch.allclose(next(iter(one.val))[1][:, 0], torch.from_numpy(t_val[:, 1]).float())


def test_csv_regression_one_file_split_and_standardized(tmp_path):
    make_csv(tmp_path, n=10)
    b = build("csv_regression", tmp_path / "labels.csv", "regression", val_fraction=0.3)
    assert b.val.num_samples == 3 and b.train.n == 7 and b.stats["target_mean"].shape == (2,)


def test_csv_regression_bad_files(tmp_path):
    make_csv(tmp_path, n=4)
    csv = tmp_path / "labels.csv"
    text = csv.read_text()
    csv.write_text(text + "img/gone.png,1.0,2.0\n")
    with pytest.raises(DataError, match=r"missing file .*gone\.png .*labels\.csv:6"):
        build("csv_regression", csv, "regression")
    csv.write_text(text + "img/labels.csv0.png,abc,2.0\n")
    with pytest.raises(DataError, match=r"labels\.csv:6: column 'angle' value 'abc' is not a number"):
        build("csv_regression", csv, "regression")
    csv.write_text(text)
    with pytest.raises(DataError, match="no column 'speed'"):
        build("csv_regression", csv, "regression", target_columns=["speed"])
    (tmp_path / "img" / "labels.csv1.png").write_bytes(b"GIF89a broken")
    with pytest.raises(DataError, match=r"cannot read image .*labels\.csv1\.png"):
        build("csv_regression", csv, "regression")
    csv.write_text("path,angle,scale\n")
    with pytest.raises(DataError, match="no data rows"):
        build("csv_regression", csv, "regression")


def test_a_subset_without_some_class_says_which(tmp_path):
    """data.num_train draws a random subset: one that holds no image of a class is named at the start
    (one image of three classes: the other two), and the whole set says nothing of it."""
    make_tree(tmp_path, classes=("ant", "bee", "cat"), per_class=3)
    bundle = build("image_folder", tmp_path, "classification", batch=1, num_train=1)
    notes = [n for n in bundle.notes if "draws no training image" in n]
    assert len(notes) == 1 and notes[0].startswith("data.num_train=1 draws no training image of class ")
    named = notes[0].split("of class ")[1].split(":")[0].split(", ")
    assert len(named) == 2 and set(named) < {"ant", "bee", "cat"}
    full = build("image_folder", tmp_path, "classification", batch=1, num_train=0)
    assert not [n for n in full.notes if "draws no training image" in n]
