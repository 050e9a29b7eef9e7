"""Adversarial suite, data files: hostile or damaged dataset files never run code and never reach
training. Each case: one line naming the file (and the line or value), exit 2, no run directory,
no marker file from a payload."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adversarial import cli, refused
from test_data_torchvision import build, official_test_batch, write_cifar, write_mat, write_pets, write_svhn, write_voc
from vaitrain.data import safe_pickle, torchvision_sets
from vaitrain.errors import DataError

BASE = ["trainer.epochs=1", "trainer.batch_size=2", "trainer.device=cpu", "trainer.threads=1",
        "trainer.progress=none", "data.download=false"]


def train_refused(tmp_path: Path, args: list[str], pattern: str) -> str:
    out = tmp_path / "runs"
    line = refused(cli(["train", *BASE, *args, f"out_dir={out}"]), pattern)
    assert not out.exists()
    return line


# ----- CIFAR batches are pickles: nothing in them may run ------------------------------------------

class Payload:
    """Unpickling this runs `touch marker` (as a crafted batch file would run anything)."""

    def __init__(self, marker: Path, call=os.system):
        self.marker, self.call = marker, call

    def __reduce__(self):
        return (self.call, (f"touch {self.marker}",))


class EvalPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


class PopenPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import subprocess

        return (subprocess.Popen, (["touch", str(self.marker)],))


class NumpyLoadPayload:
    """A numpy global that is not an array constructor: refused although its module is numpy."""

    def __reduce__(self):
        return (np.load, ("/dev/null",))


def _cifar_dir(tmp_path: Path) -> Path:
    write_cifar(tmp_path / "data", hundred=False)
    return tmp_path / "data" / "cifar-10-batches-py"


def _batch(marker_obj, labels=None) -> dict:
    return {"batch_label": "x", "data": np.zeros((3, 3072), np.uint8),
            "labels": labels if labels is not None else [0, 1, 2], "filenames": ["a.png"] * 3, "evil": marker_obj}


CIFAR = ["data=cifar10", "model=plain_cnn"]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_cifar_batch_with_os_system_payload_is_refused(tmp_path, protocol):
    folder = _cifar_dir(tmp_path)
    marker = tmp_path / "ran"
    (folder / "data_batch_1").write_bytes(pickle.dumps(_batch(Payload(marker)), protocol=protocol))
    pickle.loads(pickle.dumps(Payload(tmp_path / "proof")))  # the payload does run when unpickled
    assert (tmp_path / "proof").exists()
    train_refused(tmp_path, [*CIFAR, f"data.root={tmp_path / 'data'}"],
                  r"^error: \S+data_batch_1 refers to code \((posix|os)\.system\) and is refused: CIFAR-10 batch files "
                  r"hold only numpy arrays")
    assert not marker.exists()


@pytest.mark.parametrize("payload, name", [
    (lambda m: EvalPayload(m), r"(builtins|__builtin__)\.eval"),
    (lambda m: PopenPayload(m), r"\S*\.Popen"),  # protocol 2 names it commands.Popen
    (lambda m: NumpyLoadPayload(), r"numpy\.\S*load"),
    (lambda m: np.array([Payload(m)], dtype=object), r"(posix|os)\.system"),  # an object array's items
])
def test_cifar_batch_with_other_globals_is_refused(tmp_path, payload, name):
    folder = _cifar_dir(tmp_path)
    marker = tmp_path / "ran"
    (folder / "test_batch").write_bytes(pickle.dumps(_batch(payload(marker)), protocol=2))
    train_refused(tmp_path, [*CIFAR, f"data.root={tmp_path / 'data'}"], rf"^error: \S+test_batch refers to code \({name}")
    assert not marker.exists()


def test_cifar_meta_file_with_payload_is_refused(tmp_path):
    folder = _cifar_dir(tmp_path)
    marker = tmp_path / "ran"
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": Payload(marker)}, protocol=2))
    train_refused(tmp_path, [*CIFAR, f"data.root={tmp_path / 'data'}"], r"^error: \S+batches.meta refers to code")
    assert not marker.exists()


def test_codecs_encode_only_for_latin1():
    evil = b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcq\x01X\x05\x00\x00\x00rot13q\x02\x86q\x03Rq\x04."
    with pytest.raises(DataError, match="not a valid CIFAR"):
        _load(evil)
    good = pickle.dumps(b"\xff\x00bytes", protocol=2)  # protocol 2 writes bytes as _codecs.encode(.., 'latin1')
    assert b"_codecs" in good and _load(good) == b"\xff\x00bytes"


def _load(data: bytes):
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vaitrain-pickle-{os.getpid()}"
    path.write_bytes(data)
    try:
        return safe_pickle.load_arrays(path, "CIFAR test")
    finally:
        path.unlink()


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batches_written_like_the_originals_still_load(tmp_path, protocol):
    """Protocol 2 (how the originals were written) and 5 (numpy's out-of-band path) read exactly."""
    data = write_cifar(tmp_path, hundred=False)
    if protocol != 2:
        for f in (tmp_path / "cifar-10-batches-py").iterdir():
            f.write_bytes(pickle.dumps(pickle.loads(f.read_bytes(), encoding="latin1"), protocol=protocol))
    b = build("cifar10", tmp_path, batch=2)
    x, y = official_test_batch(b)
    assert torch.equal(x, torch.from_numpy(data["val"][0])) and torch.equal(y, torch.from_numpy(data["val"][1]))


@pytest.mark.parametrize("content, pattern", [
    (pickle.dumps([1, 2, 3], protocol=2), r"is not a CIFAR-10 batch \(a list, not a dict\)"),
    (pickle.dumps({"batch_label": "x"}, protocol=2), r"is not a CIFAR-10 batch \(no 'data' / 'labels'\)"),
    (pickle.dumps(_batch(None, labels=[0, 10, 1]), protocol=2), r"has class id 10, outside 0..9 \(10 classes\)"),
    (pickle.dumps(_batch(None, labels=[0, -1, 1]), protocol=2), r"has class id -1, outside 0..9"),
    (pickle.dumps({**_batch(None), "data": np.zeros((3, 100), np.uint8)}, protocol=2), r"is not a CIFAR-10 batch \("),
    (pickle.dumps({**_batch(None), "labels": [0, 1]}, protocol=2), r"has 3 images but 2 labels"),
    (pickle.dumps(_batch(None), protocol=2)[:200], r"cannot read \S+: not a valid CIFAR-10 batch file"),
    (b"", r"cannot read \S+: not a valid CIFAR-10 batch file"),
    (b"\x80\x02X\x01\x00\x00\x00aQ.", r"cannot read \S+: not a valid CIFAR-10 batch file \(persistent ids are not allowed"),
])
def test_damaged_cifar_batch(tmp_path, content, pattern):
    folder = _cifar_dir(tmp_path)
    (folder / "data_batch_2").write_bytes(content)
    train_refused(tmp_path, [*CIFAR, f"data.root={tmp_path / 'data'}"], rf"^error: \S*data_batch_2 {pattern}"
                  if not pattern.startswith("cannot") else rf"^error: {pattern}")


def test_tar_extraction_cannot_write_outside_the_data_root(tmp_path):
    """An archive torchvision extracts (e.g. a dataset tarball placed in data.root): members that
    climb out (../) or are absolute are refused by the data filter; nothing lands outside."""
    from torchvision.datasets.utils import extract_archive

    root = tmp_path / "root"
    root.mkdir()
    archive = root / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("../escaped.txt", "/tmp/vaitrain-absolute-escape.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    with torchvision_sets._safe_tar_extraction(), pytest.raises(tarfile.TarError):
        extract_archive(str(archive), str(root))
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/vaitrain-absolute-escape.txt").exists()
    assert tarfile.TarFile.extraction_filter is None or tarfile.TarFile.extraction_filter is not tarfile.data_filter


# ----- SVHN .mat, MNIST idx ------------------------------------------------------------------------

SVHN = ["data=svhn", "model=plain_cnn"]


def _svhn(tmp_path: Path) -> Path:
    write_svhn(tmp_path / "data")
    return tmp_path / "data"


def _mat_header() -> bytes:
    return b"MATLAB 5.0 MAT-file, written by vaitrain tests".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"


@pytest.mark.parametrize("damage, pattern", [
    (lambda p: p.write_bytes(p.read_bytes()[:-40]), r"cannot read \S+test_32x32.mat: corrupt MAT file"),
    (lambda p: p.write_bytes(b"MATLAB 7.3 MAT-file" + b"\0" * 200), r"is a MAT v7.3 \(HDF5\) file"),
    (lambda p: p.write_bytes(b"hello" * 40), r"is not a MATLAB 5 .mat file"),
    (lambda p: write_mat(p, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1.0], [11.0]])}, False),
     r"\S+test_32x32.mat has class id 11, outside 0..9"),
    (lambda p: write_mat(p, {"X": np.zeros((32, 32, 2), np.uint8), "y": np.array([[1.0], [2.0]])}, False),
     r"\S+test_32x32.mat holds X of shape \(32, 32, 2\)"),
    (lambda p: write_mat(p, {"Z": np.zeros((2, 2), np.uint8)}, True), r"has no 'X' and 'y' arrays"),
    # a matrix whose data element claims type 99: unknown, named, no KeyError
    (lambda p: p.write_bytes(_mat_header() + _matrix_with_type(99)), r"corrupt MAT file \(unknown data type 99"),
])
def test_damaged_svhn_file(tmp_path, damage, pattern):
    root = _svhn(tmp_path)
    damage(root / "test_32x32.mat")
    train_refused(tmp_path, [*SVHN, f"data.root={root}"], rf"^error: .*{pattern}")


def _matrix_with_type(dtype: int) -> bytes:
    def el(t, payload):
        return struct.pack("<II", t, len(payload)) + payload + b"\0" * (-len(payload) % 8)

    content = el(6, struct.pack("<II", 9, 0)) + el(5, struct.pack("<2i", 2, 2)) + el(1, b"X") + el(dtype, b"\0" * 4)
    return struct.pack("<II", 14, len(content)) + content


def test_mat_zlib_bomb_is_refused(tmp_path, monkeypatch):
    from vaitrain.data import matfile

    monkeypatch.setattr(matfile, "MAX_ELEMENT_BYTES", 4096)  # the real cap is 2 GiB
    root = _svhn(tmp_path)
    write_mat(root / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((4, 1))}, True)
    train_refused(tmp_path, [*SVHN, f"data.root={root}"],
                  r"^error: \S+train_32x32.mat holds a variable over 0 GiB uncompressed|^error: \S+train_32x32.mat holds a variable over")


MNIST = ["data=mnist", "model=plain_cnn"]


def _mnist(tmp_path: Path) -> Path:
    from test_data_torchvision import write_mnist

    write_mnist(tmp_path / "data", "MNIST", gz=True)
    return tmp_path / "data" / "MNIST" / "raw"


@pytest.mark.parametrize("damage, pattern", [
    (lambda p: p.write_bytes(p.read_bytes()[:30]), r"cannot read \S+t10k-labels-idx1-ubyte.gz"),
    (lambda p: p.write_bytes(gzip.compress(b"\0\0\x08\x01")), r"is not an idx file of uint8"),
    (lambda p: p.write_bytes(gzip.compress(b"\0\0\x08\x01" + struct.pack(">I", 9) + b"\1" * 4)), r"is truncated"),
    (lambda p: p.write_bytes(gzip.compress(b"\0\0\x08\x01" + struct.pack(">I", 6) + bytes([0, 1, 2, 3, 4, 12]))),
     r"has class id 12, outside 0..9"),
])
def test_damaged_mnist_file(tmp_path, damage, pattern):
    raw = _mnist(tmp_path)
    damage(raw / "t10k-labels-idx1-ubyte.gz")
    train_refused(tmp_path, [*MNIST, f"data.root={tmp_path / 'data'}"], rf"^error: .*{pattern}")


def test_gzip_bomb_in_idx_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision_sets, "MAX_IDX_BYTES", 1 << 20)  # the real cap is 1 GiB
    raw = _mnist(tmp_path)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * (2 << 20)))  # 2 MB of zeros, 2 KB packed
    train_refused(tmp_path, [*MNIST, f"data.root={tmp_path / 'data'}"], r"^error: \S+train-images-idx3-ubyte.gz holds over")


# ----- images: decompression bombs, damaged files, class folders -----------------------------------

def _folder(tmp_path: Path, classes=("a", "b"), n=3, size=8) -> Path:
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


FOLDER = ["data=image_folder", "model=plain_cnn", "data.image_size=8", "data.val_fraction=0.3"]


@pytest.mark.parametrize("limit", [200, 500], ids=["over_2x_limit_error", "over_1x_limit_warning"])
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, limit):
    """PIL raises DecompressionBombError over 2x MAX_IMAGE_PIXELS and only warns over 1x: both refuse."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    root = _folder(tmp_path, size=8)  # 64 px images pass
    Image.new("RGB", (30, 30)).save(root / "a" / "bomb.png")  # 900 px
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"],
                  rf"^error: image \S+bomb.png is too large to decode safely \(over {limit} pixels")


@pytest.mark.parametrize("write, pattern", [
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30), r"cannot read image \S+bad.png"),
    (lambda p: p.write_bytes(b"not an image at all"), r"cannot read image \S+bad.png: corrupt or not an image file"),
    (lambda p: p.write_bytes(_png_bytes()[:60]), r"cannot read image \S+bad.png"),
])
def test_damaged_image(tmp_path, write, pattern):
    root = _folder(tmp_path)
    write(root / "b" / "bad.png")
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"], rf"^error: {pattern}")


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_more_class_folders_than_num_classes(tmp_path):
    root = _folder(tmp_path, classes=("a", "b", "c"))
    train_refused(tmp_path, [*FOLDER, f"data.root={root}", "data.num_classes=2"],
                  r"^error: \S+imgs has 3 class folders \(c is class id 2\) but data.num_classes=2")


# ----- masks: class ids beyond data.num_classes are named, never a silent new class ----------------

def _seg(tmp_path: Path, values: list[int]) -> Path:
    root = tmp_path / "seg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, v in enumerate(values):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        m = np.zeros((8, 8), np.uint8)
        m[2:5, 2:5] = v
        Image.fromarray(m).save(root / "masks" / f"{i}.png")
    return root


SEG = ["data=seg_folder", "task=segmentation", "model=unet", "model.depth=1", "model.base_width=4",
       "data.image_size=8", "data.val_fraction=0.3"]


@pytest.mark.parametrize("values, num_classes, bad", [([1, 2, 7, 1], 3, 7), ([1, 3, 1, 2], 3, 3), ([4, 1, 1, 1], 2, 4)])
def test_mask_value_beyond_num_classes(tmp_path, values, num_classes, bad):
    root = _seg(tmp_path, values)
    line = train_refused(tmp_path, [*SEG, f"data.root={root}", f"data.num_classes={num_classes}"],
                         rf"^error: mask \S+masks/{values.index(bad)}.png has class id {bad}: data.num_classes="
                         rf"{num_classes} allows 0..{num_classes - 1} \(255 = ignore\)")
    assert "raise data.num_classes" in line


def test_mask_ignore_value_is_not_a_class(tmp_path):
    """255 (ignore) next to ids below num_classes is accepted: the check is not a blanket refusal."""
    from omegaconf import OmegaConf

    from vaitrain.data import build_data
    from vaitrain.schema.data import DataConfig

    root = _seg(tmp_path, [1, 255, 2, 1])
    cfg = OmegaConf.structured(DataConfig(name="seg_folder", root=str(root), image_size=8, num_classes=3,
                                          val_fraction=0.3, download=False))
    b = build_data(cfg, "segmentation", device="cpu", batch_size=2, val_batch_size=4, seed=0)
    assert b.num_classes == 3


def test_voc_mask_with_an_unknown_class(tmp_path):
    masks = write_voc(tmp_path / "data")
    path = tmp_path / "data" / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000033.png"
    m = masks["2007_000033"].copy()
    m[5, 5] = 30
    Image.fromarray(m).save(path)  # one pixel of class 30 (a 256-level grayscale PNG: same indices)
    train_refused(tmp_path, ["data=voc", "task=segmentation", "model=unet", "model.depth=1", "model.base_width=4",
                             "data.image_size=16", f"data.root={tmp_path / 'data'}"],
                  r"^error: mask \S+2007_000033.png has class id 30: VOC masks hold class ids 0..20 and 255")


def test_pets_trimap_with_an_unknown_value(tmp_path):
    write_pets(tmp_path / "data")
    path = tmp_path / "data" / "oxford-iiit-pet" / "annotations" / "trimaps" / "Abyssinian_3.png"
    tri = np.asarray(Image.open(path)).copy()
    tri[0, 0] = 9
    Image.fromarray(tri).save(path)
    train_refused(tmp_path, ["data=oxford_pets", "task=segmentation", "model=unet", "model.depth=1",
                             "model.base_width=4", "data.image_size=16", f"data.root={tmp_path / 'data'}"],
                  r"^error: mask \S+Abyssinian_3.png has class id 9: Oxford-IIIT Pet trimaps hold 1, 2 and 3 only")


@pytest.mark.parametrize("line, pattern", [("Abyssinian_1 x 1 1", r"is not '<image id> <class 1..37> ...'"),
                                           ("Abyssinian_1", r"is not '<image id> <class 1..37> ...'"),
                                           ("Abyssinian_1 38 1 1", r"has class id 38, outside 1..37")])
def test_pets_list_with_a_bad_line(tmp_path, line, pattern):
    write_pets(tmp_path / "data")
    (tmp_path / "data" / "oxford-iiit-pet" / "annotations" / "trainval.txt").write_text(line + "\n")
    train_refused(tmp_path, ["data=oxford_pets", "model=plain_cnn", "data.image_size=16",
                             f"data.root={tmp_path / 'data'}"], rf"^error: \S+trainval.txt: line '{line}' {pattern}")


# ----- regression CSV: NaN/inf targets named by file and line --------------------------------------

def _csv(tmp_path: Path, bad: str) -> Path:
    root = tmp_path / "csv"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,x,y"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{i * 0.5},{bad if i == 3 else 1.0}")
    (root / "targets.csv").write_text("\n".join(rows) + "\n")
    return root / "targets.csv"


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "1e999", "Infinity"])
def test_non_finite_regression_target(tmp_path, bad):
    path = _csv(tmp_path, bad)
    train_refused(tmp_path, ["data=csv_regression", "task=regression", "model=plain_cnn", "data.image_size=8",
                             f"data.root={path}"],
                  rf"^error: \S+targets.csv:5: column 'y' value '{bad}' is not a finite number: fix or drop the row")


def test_non_number_regression_target(tmp_path):
    path = _csv(tmp_path, "abc")
    train_refused(tmp_path, ["data=csv_regression", "task=regression", "model=plain_cnn", "data.image_size=8",
                             f"data.root={path}"], r"^error: \S+targets.csv:5: column 'y' value 'abc' is not a number")
