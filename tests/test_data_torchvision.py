"""torchvision datasets read from tiny files written in each dataset's real on-disk format, with
downloads disabled or failing (as offline); missing files give a one-line DataError."""
from __future__ import annotations

import gzip
import pickle
import struct
import urllib.error
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from vaitrain.data import build_data, torchvision_sets
from vaitrain.data.matfile import _read as read_mat_without_scipy
from vaitrain.errors import DataError
from vaitrain.schema.data import DataConfig

RNG = np.random.default_rng(0)


def build(name, root, task="classification", batch=4, **kw):
    cfg = OmegaConf.structured(DataConfig(name=name, root=str(root), download=False, num_train=0, num_val=0,
                                          normalize="none", **kw))
    return build_data(cfg, task, device="cpu", batch_size=batch, val_batch_size=1000, seed=0,
                      test=name != "voc")  # VOC has no test split


def val_batch(bundle):
    """All validation images back as uint8 (normalize=none is x/255) and their targets."""
    x, y = next(iter(bundle.val))
    return (x * 255).round().to(torch.uint8), y


def official_test_batch(bundle):
    """All test images (the official test split) back as uint8 and their targets."""
    x, y = next(iter(bundle.test))
    return (x * 255).round().to(torch.uint8), y


# ---------------------------------------------------------------- MNIST / FashionMNIST: idx files

def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str, n_train=12, n_val=6, gz=True) -> dict:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_val)):
        x = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = RNG.integers(0, 10, n).astype(np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = raw / f"{prefix}-{kind}-ubyte"
            if gz:
                with gzip.open(str(name) + ".gz", "wb") as f:
                    f.write(idx_bytes(arr))
            else:
                name.write_bytes(idx_bytes(arr))
        data[prefix] = (x, y)
    return data


@pytest.mark.parametrize("name,folder,gz", [("mnist", "MNIST", True), ("fashion_mnist", "FashionMNIST", False)])
def test_mnist_family_from_idx_files(tmp_path, name, folder, gz):
    data = write_mnist(tmp_path, folder, gz=gz)
    b = build(name, tmp_path, image_size=28)
    assert b.in_channels == 1 and b.image_size == 28 and b.num_classes == 10 and len(b.class_names) == 10
    x, y = official_test_batch(b)
    assert torch.equal(x[:, 0], torch.from_numpy(data["t10k"][0]))
    assert torch.equal(y, torch.from_numpy(data["t10k"][1]).long())
    assert b.train.n == 11 and b.val.n == 1  # data.val_fraction=0.1 of the 12 training images
    assert build(name, tmp_path, image_size=32).image_size == 32  # resized when asked


# ---------------------------------------------------------------- CIFAR: pickled batches

def write_cifar(root: Path, hundred: bool) -> dict:
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key = "fine_labels" if hundred else "labels"
    files = (["train"], ["test"]) if hundred else ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
    out = {}
    for split, names in zip(("train", "val"), files):
        xs, ys = [], []
        for f in names:
            x = RNG.integers(0, 256, (3, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
            y = RNG.integers(0, 100 if hundred else 10, 3).tolist()
            with open(folder / f, "wb") as fh:
                pickle.dump({"batch_label": f, "data": x, label_key: y, "filenames": ["a.png"] * 3}, fh, protocol=2)
            xs.append(x)
            ys += y
        out[split] = (np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys))
    meta = ({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []} if hundred
            else {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]})
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return out


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_from_pickled_batches(tmp_path, hundred):
    data = write_cifar(tmp_path, hundred)
    b = build("cifar100" if hundred else "cifar10", tmp_path, batch=2)
    assert b.in_channels == 3 and b.image_size == 32 and b.num_classes == (100 if hundred else 10)
    assert b.class_names[0] == ("c0" if hundred else "airplane")
    assert b.train.n == (2 if hundred else 13)  # val: 10 % (at least 1) carved from train
    x, y = official_test_batch(b)
    assert torch.equal(x, torch.from_numpy(data["val"][0]))
    assert torch.equal(y, torch.from_numpy(data["val"][1]))


# ---------------------------------------------------------------- SVHN: MATLAB v5 .mat

def _mat_element(dtype: int, payload: bytes) -> bytes:
    return struct.pack("<II", dtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def write_mat(path: Path, arrays: dict, compress: bool) -> None:
    """A level-5 MAT file (MATLAB's documented format): 128-byte header, then one miMATRIX element
    per variable (flags, dims, name, real part; column-major), optionally in an miCOMPRESSED one."""
    out = b"MATLAB 5.0 MAT-file, written by vaitrain tests".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    for name, arr in arrays.items():
        mx_class, mi_type = {np.dtype(np.uint8): (9, 2), np.dtype(np.float64): (6, 9)}[arr.dtype]
        content = (_mat_element(6, struct.pack("<II", mx_class, 0)) + _mat_element(5, struct.pack(f"<{arr.ndim}i", *arr.shape))
                   + _mat_element(1, name.encode()) + _mat_element(mi_type, arr.tobytes(order="F")))
        element = struct.pack("<II", 14, len(content)) + content
        if compress:
            packed = zlib.compress(element)
            element = struct.pack("<II", 15, len(packed)) + packed
        out += element
    path.write_bytes(out)


def write_svhn(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, fname, n in (("train", "train_32x32.mat", 6), ("val", "test_32x32.mat", 5)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN's own layout: H, W, C, N
        y = RNG.integers(1, 11, (n, 1)).astype(np.float64)  # digit 0 is labelled 10
        write_mat(root / fname, {"X": x, "y": y}, compress=split == "train")
        out[split] = (x, y)
    return out


def test_svhn_from_mat_files(tmp_path):
    data = write_svhn(tmp_path)
    b = build("svhn", tmp_path)
    assert b.num_classes == 10 and b.in_channels == 3 and b.train.n == 5
    x, y = official_test_batch(b)
    xv, yv = data["val"]
    assert torch.equal(x, torch.from_numpy(xv.transpose(3, 2, 0, 1).copy()))  # N, C, H, W with H = rows
    want = yv.ravel().astype(np.int64)
    want[want == 10] = 0
    assert torch.equal(y, torch.from_numpy(want))


def test_mat_reader_without_scipy_reads_compressed_and_plain_files(tmp_path):
    arrays = {"X": RNG.integers(0, 256, (4, 3, 2), dtype=np.uint8), "y": np.arange(6.0).reshape(3, 2)}
    for compress in (False, True):
        write_mat(tmp_path / "a.mat", arrays, compress)
        got = read_mat_without_scipy(tmp_path / "a.mat")
        assert np.array_equal(got["X"], arrays["X"]) and np.array_equal(got["y"], arrays["y"])
    (tmp_path / "bad.mat").write_bytes(b"not a mat file" * 20)
    with pytest.raises(DataError, match="bad.mat"):
        read_mat_without_scipy(tmp_path / "bad.mat")


# ---------------------------------------------------------------- Oxford-IIIT Pet, VOC: file lists

def write_jpeg(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)


def write_pets(root: Path) -> dict:
    base = root / "oxford-iiit-pet"
    ids = {"trainval": [("Abyssinian_1", 1), ("american_bulldog_2", 2), ("Abyssinian_3", 1)],
           "test": [("american_bulldog_4", 2), ("Abyssinian_5", 1)]}
    trimaps = {}
    for split, rows in ids.items():
        (base / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
        lines = []
        for image_id, cls in rows:
            w, h = 20, 16
            write_jpeg(base / "images" / f"{image_id}.jpg", w, h)
            tri = RNG.integers(1, 4, (h, w), dtype=np.uint8)  # 1 pet, 2 background, 3 border
            Image.fromarray(tri).save(base / "annotations" / "trimaps" / f"{image_id}.png")
            trimaps[image_id] = tri
            lines.append(f"{image_id} {cls} {1 if cls == 1 else 2} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return {"ids": ids, "trimaps": trimaps}


def test_oxford_pets_segmentation_maps_trimaps_and_classification_reads_breeds(tmp_path):
    data = write_pets(tmp_path)
    seg = build("oxford_pets", tmp_path, "segmentation", batch=2, image_size=0)  # native 20 x 16
    assert seg.num_classes == 2 and seg.class_names == ["background", "pet"]
    _, y = official_test_batch(seg)
    tri = torch.from_numpy(data["trimaps"]["american_bulldog_4"]).long()
    want = torch.where(tri == 1, 1, torch.where(tri == 2, 0, 255))
    assert torch.equal(y[0], want)
    # resized to image_size, masks by nearest neighbour
    seg = build("oxford_pets", tmp_path, "segmentation", batch=2, image_size=16)
    x, y = official_test_batch(seg)
    assert x.shape == (2, 3, 16, 16) and set(y.unique().tolist()) <= {0, 1, 255}
    cls = build("oxford_pets", tmp_path, "classification", batch=2, image_size=16)
    _, y = official_test_batch(cls)
    assert y.tolist() == [1, 0] and cls.class_names[:2] == ["Abyssinian", "American Bulldog"]


def write_voc(root: Path) -> dict:
    base = root / "VOCdevkit" / "VOC2012"
    masks = {}
    for split, ids in (("train", ["2007_000032", "2007_000039"]), ("val", ["2007_000033"])):
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for image_id in ids:
            write_jpeg(base / "JPEGImages" / f"{image_id}.jpg", 24, 18)
            m = RNG.integers(0, 21, (18, 24), dtype=np.uint8)
            m[0] = 255  # object border: ignore
            png = Image.fromarray(m, mode="P")
            png.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])  # VOC masks are palette PNGs
            (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            png.save(base / "SegmentationClass" / f"{image_id}.png")
            masks[image_id] = m
    return masks


def test_voc_segmentation_keeps_class_indices_and_the_255_border(tmp_path):
    masks = write_voc(tmp_path)
    b = build("voc", tmp_path, "segmentation", batch=2, image_size=0)
    assert b.num_classes == 21 and b.class_names[0] == "background"
    x, y = val_batch(b)
    assert x.shape == (1, 3, 18, 24)
    assert torch.equal(y[0], torch.from_numpy(masks["2007_000033"]).long())
    b = build("voc", tmp_path, "segmentation", batch=2, image_size=12)
    x, y = val_batch(b)
    assert x.shape == (1, 3, 12, 12) and y.shape == (1, 12, 12) and (y[0, 0] == 255).all()


# ---------------------------------------------------------------- missing files

CASES = {
    "mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python", "svhn": "train_32x32.mat", "oxford_pets": "oxford-iiit-pet",
    "voc": "VOCdevkit/VOC2012",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_missing_files_offline_give_one_line_saying_where_to_put_what(tmp_path, monkeypatch, name):
    calls = []

    def offline(dataset, root):
        calls.append(dataset)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision_sets, "_download", offline)
    task = "segmentation" if name in ("voc", "oxford_pets") else "classification"
    cfg = OmegaConf.structured(DataConfig(name=name, root=str(tmp_path / "data")))
    with pytest.raises(DataError) as err:
        build_data(cfg, task, device="cpu", batch_size=2, val_batch_size=2, seed=0)
    msg = str(err.value)
    assert calls == [name] and "\n" not in msg
    assert "download failed (offline?)" in msg and "data.root=" in msg and CASES[name] in msg
    cfg.download = False
    with pytest.raises(DataError, match="data.download=false"):
        build_data(cfg, task, device="cpu", batch_size=2, val_batch_size=2, seed=0)
    assert calls == [name]  # no second download attempt


def test_cifar10_message_names_the_archive_and_folder(tmp_path):
    cfg = OmegaConf.structured(DataConfig(name="cifar10", root=str(tmp_path), download=False))
    with pytest.raises(DataError) as err:
        build_data(cfg, "classification", device="cpu", batch_size=2, val_batch_size=2, seed=0)
    msg = str(err.value)
    assert f"CIFAR-10 not found under {tmp_path}/cifar-10-batches-py" in msg
    assert "cifar-10-python.tar.gz or the extracted cifar-10-batches-py/" in msg


def test_a_corrupt_batch_file_names_the_file(tmp_path):
    write_cifar(tmp_path, hundred=False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        build("cifar10", tmp_path)


# ---------------------------------------------------------------- torchvision reads the same files

def test_torchvision_classes_read_the_test_files_as_vaitrain_does(tmp_path):
    """The tiny files are in the real formats: torchvision's own readers agree with ours."""
    import torchvision.datasets as tvd

    write_mnist(tmp_path, "MNIST", gz=False)
    ours = build("mnist", tmp_path, image_size=28)
    theirs = tvd.MNIST(str(tmp_path), train=False, download=False)
    x, y = official_test_batch(ours)
    assert torch.equal(x[:, 0], theirs.data) and torch.equal(y, theirs.targets)

    write_voc(tmp_path)
    voc = tvd.VOCSegmentation(str(tmp_path), year="2012", image_set="val", download=False)
    image, mask = voc[0]
    x, y = val_batch(build("voc", tmp_path, "segmentation", batch=2, image_size=0))
    assert torch.equal(y[0], torch.from_numpy(np.array(mask)).long())
    assert torch.equal(x[0], torch.from_numpy(np.array(image)).permute(2, 0, 1))

    write_pets(tmp_path)
    pets = tvd.OxfordIIITPet(str(tmp_path), split="test", target_types=["category", "segmentation"], download=False)
    image, (category, trimap) = pets[0]
    x, y = official_test_batch(build("oxford_pets", tmp_path, "classification", batch=2, image_size=0))
    assert y[0].item() == category and torch.equal(x[0], torch.from_numpy(np.array(image)).permute(2, 0, 1))


def test_scipy_reads_the_svhn_test_file_like_vaitrain(tmp_path):
    sio = pytest.importorskip("scipy.io")  # optional: vaitrain reads .mat without scipy
    write_svhn(tmp_path)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        theirs = sio.loadmat(str(tmp_path / name))
        ours = read_mat_without_scipy(tmp_path / name)
        assert np.array_equal(theirs["X"], ours["X"]) and np.array_equal(theirs["y"], ours["y"])
