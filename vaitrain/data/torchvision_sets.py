"""torchvision datasets: MNIST, FashionMNIST, CIFAR-10/100, SVHN (classification), Oxford-IIIT Pet
(segmentation trimaps or 37-breed classification) and Pascal VOC 2012 (segmentation).

Files are looked for under data.root in torchvision's own layout (so a folder torchvision filled
works as is). When they are missing, the torchvision dataset class is asked to download them
(data.download=true); offline, that fails and a DataError says which files to put where. The
files are then read here directly, vectorized (idx, pickled batches, .mat, JPEG/PNG lists) rather
than through the torchvision classes, whose md5 checks accept only the official files; everything
is decoded once to uint8 tensors and resized to data.image_size when that is set and differs.

Splits: the classification sets and Oxford-IIIT Pet carve validation out of their official training
split (data.val_fraction, drawn by data.seed) and keep the official test split as `test` (never
used for training or model selection); VOC 2012 has train / val and no test split with masks. Pet trimaps map to 0 = background, 1 = pet, 255 = border (ignored);
VOC keeps its 255 object borders as ignore.
"""
from __future__ import annotations

import gzip
import struct
import tarfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from vaitrain.data.base import Source, TensorSplit, carve_indices, register, subset_indices
from vaitrain.data.images import load_image, load_pair, parallel_map, stack
from vaitrain.data.matfile import load_mat
from vaitrain.data.safe_pickle import load_arrays
from vaitrain.errors import DataError

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
_DIGITS = [str(d) for d in range(10)]


@contextmanager
def _safe_tar_extraction() -> Iterator[None]:
    """torchvision extracts archives with tarfile's default filter, which on Python < 3.14 writes
    wherever a member's name points (../../.bashrc, absolute paths, links out). The "data" filter
    refuses those; a refused archive then fails the presence check like a failed download."""
    previous = tarfile.TarFile.extraction_filter
    tarfile.TarFile.extraction_filter = staticmethod(tarfile.data_filter)  # type: ignore[assignment]
    try:
        yield
    finally:
        tarfile.TarFile.extraction_filter = previous  # type: ignore[assignment]


def _download(dataset: str, root: Path) -> None:
    """Let torchvision fetch (or extract an archive already in root). Tests replace this."""
    with _safe_tar_extraction():
        _torchvision_download(dataset, root)


def _torchvision_download(dataset: str, root: Path) -> None:
    import torchvision.datasets as tvd

    r = str(root)
    if dataset in ("mnist", "fashion_mnist"):
        (tvd.MNIST if dataset == "mnist" else tvd.FashionMNIST)(r, train=True, download=True)
    elif dataset in ("cifar10", "cifar100"):
        (tvd.CIFAR10 if dataset == "cifar10" else tvd.CIFAR100)(r, train=True, download=True)
    elif dataset == "svhn":
        for split in ("train", "test"):
            try:
                tvd.SVHN(r, split=split, download=True)
            except ImportError:  # the file is there; torchvision wants scipy to read it, we don't
                pass
    elif dataset == "oxford_pets":
        tvd.OxfordIIITPet(r, split="trainval", download=True)
    elif dataset == "voc":
        tvd.VOCSegmentation(r, year="2012", image_set="train", download=True)


def _ensure(cfg: Any, dataset: str, title: str, present: Callable[[], bool], where: Path, what: str) -> None:
    """Make sure the files are there: try a download if not; else one line saying what to put where."""
    if present():
        return
    root = Path(str(cfg.root))
    if bool(cfg.download):
        try:
            _download(dataset, root)
        except Exception:  # offline, a server error, a bad archive ...: the check below tells the user
            pass
        if present():
            return
        why = "download failed (offline?)"
    else:
        why = "data.download=false"
    raise DataError(f"{title} not found under {where} and {why}: put {what}, or set data.root=DIR")


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 (N,C,H,W) to size x size, in chunks."""
    if not size or tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for s in range(0, images.shape[0], 2048):
        x = images[s:s + 2048].float()
        out[s:s + 2048] = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                        align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
    return out


def _subset(images: torch.Tensor, labels: torch.Tensor, cap: int, seed: int, stream: int) -> TensorSplit:
    idx = subset_indices(images.shape[0], cap, seed, stream)
    if idx.numel() != images.shape[0]:
        images, labels = images[idx], labels[idx]
    return TensorSplit(images, labels)


def carve_val(n: int, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices of an official training split: data.val_fraction of it (at
    least one sample) held out for validation, drawn by data.seed; the official test split stays
    the test split, so model selection never sees it."""
    if n < 2:
        raise DataError(f"the training split has {n} sample(s): carving a validation split needs at least 2")
    return carve_indices(n, cfg, "")


def _classification(cfg: Any, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                    classes: list[str]) -> Source:
    size = int(cfg.image_size)
    seed = int(cfg.seed)
    itr, iva = carve_val(int(train[0].shape[0]), cfg)
    tr = _subset(train[0][itr], train[1][itr], int(cfg.num_train), seed, 1)
    va = _subset(train[0][iva], train[1][iva], int(cfg.num_val), seed, 2)
    tr.images, va.images = _resize(tr.images, size), _resize(va.images, size)
    n_cls = max(len(classes), int(cfg.num_classes))
    return Source(train=tr, val=va, in_channels=int(tr.images.shape[1]), image_size=int(tr.images.shape[-1]),
                  num_classes=n_cls, class_names=classes + [str(k) for k in range(len(classes), n_cls)],
                  test=lambda: TensorSplit(_resize(test[0], size), test[1]))


# ---------------------------------------------------------------- MNIST, FashionMNIST

def _read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST's format): 2 zero bytes, a type byte (0x08 = uint8), ndim, big-endian dims."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read(MAX_IDX_BYTES + 1)  # a gzip bomb stops here, not at the memory's end
    except (OSError, EOFError, zlib.error) as err:  # truncated or damaged gzip
        raise DataError(f"cannot read {path}: {err}") from None
    if len(data) > MAX_IDX_BYTES:
        raise DataError(f"{path} holds over {MAX_IDX_BYTES >> 30} GiB: not an MNIST idx file")
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or len(data) < 4 + 4 * data[3]:
        raise DataError(f"{path} is not an idx file of uint8 (MNIST format)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {arr.size} bytes for shape {dims}")
    return arr.reshape(dims)


MAX_IDX_BYTES = 1 << 30  # MNIST's largest file is 47 MB

_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _mnist_like(cfg: Any, dataset: str, folder: str, title: str, classes: list[str]) -> Source:
    raw = Path(str(cfg.root)) / folder / "raw"

    def find(name: str) -> Path | None:
        return next((raw / (name + ext) for ext in ("", ".gz") if (raw / (name + ext)).is_file()), None)

    names = [n for pair in _MNIST_FILES.values() for n in pair]
    _ensure(cfg, dataset, title, lambda: all(find(n) for n in names), raw,
            f"the four idx files ({', '.join(n + '[.gz]' for n in names)}) in {raw}/")
    splits = []
    for img_name, lbl_name in _MNIST_FILES.values():
        images, labels = _read_idx(find(img_name)), _read_idx(find(lbl_name))  # type: ignore[arg-type]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{find(img_name)} and {find(lbl_name)} do not match: {images.shape} images, {labels.shape} labels")
        check_labels(labels, len(classes), find(lbl_name))  # type: ignore[arg-type]
        splits.append((torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
    return _classification(cfg, splits[0], splits[1], classes)


@register("mnist", ("classification",))
def build_mnist(cfg: Any, task: str) -> Source:
    return _mnist_like(cfg, "mnist", "MNIST", "MNIST", [f"{d}" for d in range(10)])


@register("fashion_mnist", ("classification",))
def build_fashion_mnist(cfg: Any, task: str) -> Source:
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    return _mnist_like(cfg, "fashion_mnist", "FashionMNIST", "FashionMNIST", classes)


# ---------------------------------------------------------------- CIFAR-10, CIFAR-100

def _unpickle(path: Path, title: str) -> dict:
    """A CIFAR batch: a pickled dict, read by an unpickler that builds numpy arrays and nothing else."""
    entry = load_arrays(path, f"{title} batch")
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a {title} batch (a {type(entry).__name__}, not a dict)")
    return entry


def check_labels(labels: np.ndarray, num_classes: int, where: Path) -> None:
    """Class ids must lie in [0, num_classes): a larger one is a bad file, never a new class."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.max() if labels.max() >= num_classes else labels.min())
        raise DataError(f"{where} has class id {bad}, outside 0..{num_classes - 1} "
                        f"({num_classes} classes): the file is damaged or of another dataset")


def _cifar(cfg: Any, dataset: str) -> Source:
    ten = dataset == "cifar10"
    folder = "cifar-10-batches-py" if ten else "cifar-100-python"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    val_files = ["test_batch"] if ten else ["test"]
    meta, label_key, names_key = ("batches.meta", "labels", "label_names") if ten else ("meta", "fine_labels", "fine_label_names")
    title = "CIFAR-10" if ten else "CIFAR-100"
    base = Path(str(cfg.root)) / folder
    archive = "cifar-10-python.tar.gz" if ten else "cifar-100-python.tar.gz"
    _ensure(cfg, dataset, title, lambda: all((base / f).is_file() for f in train_files + val_files + [meta]), base,
            f"{archive} or the extracted {folder}/ in {cfg.root}/")

    n_classes = 10 if ten else 100

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            entry = _unpickle(base / f, title)
            if "data" not in entry or label_key not in entry:
                raise DataError(f"{base / f} is not a {title} batch (no 'data' / '{label_key}')")
            try:
                x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
            except (TypeError, ValueError) as err:
                raise DataError(f"{base / f} is not a {title} batch ({' '.join(str(err).split())[:100]})") from None
            if len(x) != len(y):
                raise DataError(f"{base / f} has {len(x)} images but {len(y)} labels")
            check_labels(y, n_classes, base / f)
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    classes = [str(c) for c in _unpickle(base / meta, title).get(names_key, [])]
    return _classification(cfg, read(train_files), read(val_files), classes)


@register("cifar10", ("classification",))
def build_cifar10(cfg: Any, task: str) -> Source:
    return _cifar(cfg, "cifar10")


@register("cifar100", ("classification",))
def build_cifar100(cfg: Any, task: str) -> Source:
    return _cifar(cfg, "cifar100")


# ---------------------------------------------------------------- SVHN

@register("svhn", ("classification",))
def build_svhn(cfg: Any, task: str) -> Source:
    root = Path(str(cfg.root))
    files = {"train": root / "train_32x32.mat", "val": root / "test_32x32.mat"}
    _ensure(cfg, "svhn", "SVHN", lambda: all(p.is_file() for p in files.values()), root,
            f"train_32x32.mat and test_32x32.mat in {root}/")
    splits = []
    for path in files.values():
        mat = load_mat(path)
        if "X" not in mat or "y" not in mat:
            raise DataError(f"{path} has no 'X' and 'y' arrays: not an SVHN file")
        if mat["X"].ndim != 4 or mat["X"].shape[2] != 3 or mat["X"].shape[3] != mat["y"].size:
            raise DataError(f"{path} holds X of shape {mat['X'].shape} and {mat['y'].size} labels: not an SVHN file")
        x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)  # (32,32,3,N) -> N,3,32,32
        y = mat["y"].astype(np.int64).reshape(-1)
        y[y == 10] = 0  # SVHN labels the digit 0 as 10
        check_labels(y, 10, path)
        splits.append((torch.from_numpy(x), torch.from_numpy(y)))
    return _classification(cfg, splits[0], splits[1], list(_DIGITS))


# ---------------------------------------------------------------- Oxford-IIIT Pet, VOC (file lists)

def _decode_list(images: list[Path], targets: Any, masks: list[Path] | None, size: int, map_mask: Any = None,
                 mask_ids: tuple[list[int], str] = ([], "")) -> TensorSplit:
    """Decode image files (and masks, whose values must be among mask_ids' list)."""
    if masks is None:
        x = stack(parallel_map(lambda i: load_image(images[i], "RGB", size), len(images)), images)
        return TensorSplit(x, torch.as_tensor(targets, dtype=torch.long))
    pairs = parallel_map(lambda i: load_pair(images[i], masks[i], "RGB", size, valid=mask_ids), len(images))
    y = stack([p[1] for p in pairs], masks, "masks")
    return TensorSplit(stack([p[0] for p in pairs], images), map_mask(y) if map_mask is not None else y)


def _read_list(path: Path) -> list[list[str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from None
    return [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]


def _pet_label(row: list[str], where: Path) -> int:
    """The 0-based breed of a list line `<id> <class 1..37> <species> <breed>`."""
    try:
        label = int(row[1])
    except (IndexError, ValueError):
        raise DataError(f"{where}: line '{' '.join(row)}' is not '<image id> <class 1..37> ...'") from None
    if not 1 <= label <= 37:
        raise DataError(f"{where}: line '{' '.join(row)}' has class id {label}, outside 1..37")
    return label - 1


@register("oxford_pets", ("segmentation", "classification"))
def build_oxford_pets(cfg: Any, task: str) -> Source:
    base = Path(str(cfg.root)) / "oxford-iiit-pet"
    ann = base / "annotations"
    _ensure(cfg, "oxford_pets", "Oxford-IIIT Pet",
            lambda: (base / "images").is_dir() and (ann / "trainval.txt").is_file() and (ann / "test.txt").is_file(),
            base, f"images.tar.gz and annotations.tar.gz extracted as {base}/images/ and {base}/annotations/")
    seg = task == "segmentation"
    # trimap 1 = pet, 2 = background, 3 = border (ignored)
    lut = torch.full((256,), 255, dtype=torch.uint8)
    lut[1], lut[2] = 1, 0
    names: dict[int, str] = {}

    def decode(list_name: str, rows: list[list[str]]) -> TensorSplit:
        if not rows:
            raise DataError(f"{ann / list_name} lists no images")
        ids = [r[0] for r in rows]
        labels = [_pet_label(r, ann / list_name) for r in rows]
        for i, k in zip(ids, labels):
            names.setdefault(k, " ".join(part.title() for part in i.rsplit("_", 1)[0].split("_")))
        images = [base / "images" / f"{i}.jpg" for i in ids]
        masks = [ann / "trimaps" / f"{i}.png" for i in ids] if seg else None
        return _decode_list(images, labels, masks, int(cfg.image_size), lambda y: lut[y.long()],
                            ([1, 2, 3], "Oxford-IIIT Pet trimaps hold 1, 2 and 3 only; replace the file"))

    # validation is carved from trainval; the official test list stays the test split
    trainval = _read_list(ann / "trainval.txt")
    itr, iva = carve_val(len(trainval), cfg) if len(trainval) >= 2 else (torch.arange(len(trainval)), torch.arange(0))
    splits = []
    for idx, cap, stream in ((itr, int(cfg.num_train), 1), (iva, int(cfg.num_val), 2)):
        rows = [trainval[i] for i in idx.tolist()]
        splits.append(decode("trainval.txt", [rows[i] for i in subset_indices(len(rows), cap, int(cfg.seed), stream).tolist()]))
    size = int(splits[0].images.shape[-1])

    def test() -> TensorSplit:
        return decode("test.txt", _read_list(ann / "test.txt"))

    if seg:
        return Source(train=splits[0], val=splits[1], in_channels=3, image_size=size, num_classes=2,
                      class_names=["background", "pet"], test=test)
    n_cls = max(37, int(cfg.num_classes))
    return Source(train=splits[0], val=splits[1], in_channels=3, image_size=size, num_classes=n_cls,
                  class_names=[names.get(k, str(k)) for k in range(n_cls)], test=test)


@register("voc", ("segmentation",))
def build_voc(cfg: Any, task: str) -> Source:
    base = Path(str(cfg.root)) / "VOCdevkit" / "VOC2012"
    lists = base / "ImageSets" / "Segmentation"
    _ensure(cfg, "voc", "Pascal VOC 2012",
            lambda: all((lists / f"{s}.txt").is_file() for s in ("train", "val")) and (base / "JPEGImages").is_dir(),
            base, f"VOCtrainval_11-May-2012.tar in {cfg.root}/ or its extracted VOCdevkit/VOC2012/ there")
    splits = []
    for split, cap, stream in (("train", int(cfg.num_train), 1), ("val", int(cfg.num_val), 2)):
        ids = [r[0] for r in _read_list(lists / f"{split}.txt")]
        ids = [ids[i] for i in subset_indices(len(ids), cap, int(cfg.seed), stream).tolist()]
        if not ids:
            raise DataError(f"{lists / f'{split}.txt'} lists no images")
        images = [base / "JPEGImages" / f"{i}.jpg" for i in ids]
        masks = [base / "SegmentationClass" / f"{i}.png" for i in ids]
        splits.append(_decode_list(images, None, masks, int(cfg.image_size), None,
                                   ([*range(len(VOC_CLASSES)), 255], f"VOC masks hold class ids 0..{len(VOC_CLASSES) - 1} "
                                    "and 255 (object borders); replace the file")))
    return Source(train=splits[0], val=splits[1], in_channels=3, image_size=int(splits[0].images.shape[-1]),
                  num_classes=len(VOC_CLASSES), class_names=list(VOC_CLASSES))
