"""Datasets from the user's own files.

- image_folder (classification): data.root/train/<class>/*.png and data.root/val/<class>/ (val/
  may also be called valid/ or validation/), or data.root/<class>/ split by data.val_fraction.
  A test/ folder beside train/ is the held-out test split (without val/, validation is carved
  from train/ by data.val_fraction); likewise test/ in seg_folder and test.csv in csv_regression.
- seg_folder (segmentation): data.root/images/* with data.root/masks/<same stem>.png, or the same
  under data.root/train/ and data.root/val/. Masks hold class indices (grayscale or palette PNG;
  0 = background, 255 = ignore) or are binary 0/255, read as 0/1 when every mask has only 0 and 255.
- csv_regression (regression): data.root is a CSV file (split by data.val_fraction) or a folder with
  train.csv and val.csv; a header row, an image path column (path, image, file or filename; else the
  first column; relative to the CSV's folder) and numeric target columns (data.target_columns, or
  all the others).

Images are converted to grayscale (1 channel) when every training image is grayscale, else RGB
(transparent pixels on white), and brought to data.image_size (0 = native: then all must have one
size) by data.resize: center_crop (the centre square, aspect ratio kept) or squash. Folders whose decoded
size fits data.device_resident (auto: up to 2 GB) are decoded once; larger ones stream, decoded
by DataLoader workers each epoch. Bad files raise DataError naming the file.
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from vaitrain.data.base import Source, TensorSplit, carve_indices, register, resident_mode, subset_indices
from vaitrain.data.images import (Fit, check_mask_ids, dataset_mode, fit_of, image_size_of, is_image, load_image,
                                  load_pair, parallel_map, resize_hint, scan_images, skipped_note, stack)
from vaitrain.errors import DataError
from vaitrain.file_kinds import read_bytes, special_kind
from vaitrain.track.rundir import is_run_dir

_VAL_DIRS = ("val", "valid", "validation")
_TEST_DIR = "test"  # beside train/: the held-out test split (never used for training or selection)
_MASK_EXTS = (".png", ".bmp", ".tif", ".tiff", ".gif")
_PATH_COLUMNS = ("path", "image", "file", "filename")


_SPLIT_NAMES = ("train", "training", "val", "valid", "validation", "test", "testing")


def _images_in(folder: Path, skipped: list[Path] | None = None) -> list[Path]:
    """The images under folder (see images.scan_images); the other files go to `skipped`."""
    images, others = scan_images(folder)
    if skipped is not None:
        skipped += others
    return images


def _subfolders(folder: Path) -> list[str]:
    try:
        return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
                      and d.name != "__MACOSX"  # macOS zip extraction leaves it: resource forks, not a class
                      and not _holds_runs(d))
    except OSError as err:
        raise DataError(f"cannot list folder {folder} ({err.strerror or err}): fix its permissions") from None


def _holds_runs(folder: Path) -> bool:
    """Whether folder is vaitrain's output (out_dir inside data.root: `cd photos; vaitrain train
    data.root=.` puts runs/ beside the class folders). Read as a class, it made the next run fail with
    'class folder runs holds no images: ... remove the folder'. Runs sit at <out_dir>/<date>/<run>/
    (or <out_dir>/<run>/); sweeps and searches hold sweep.json / search.json."""
    def subdirs(d: Path) -> list[Path] | None:
        found = []
        with os.scandir(d) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    found.append(Path(e.path))
                elif is_image(Path(e.name)):  # a class folder: known at its first image, not after a full listing
                    return None
        return found

    try:
        for child in subdirs(folder) or []:
            for d in (child, *(subdirs(child) or [])):
                if is_run_dir(d) or (d / "sweep.json").is_file() or (d / "search.json").is_file():
                    return True
    except OSError:  # unreadable: the scan of the class names it
        return False
    return False


def _run_folder_note(root: Path) -> list[str]:
    """One line naming the folders under data.root left out as vaitrain's own output."""
    try:
        left = [d for base in (root, root / "train") if base.is_dir()
                for d in sorted(base.iterdir()) if d.is_dir() and not d.name.startswith(".") and _holds_runs(d)]
    except OSError:
        return []
    if not left:
        return []
    return [f"left out {', '.join(str(d) for d in left)}: it holds vaitrain runs, not a class (out_dir inside "
            f"data.root); set out_dir outside {root} to keep runs and data apart"]


def _root(cfg: Any, what: str, layout: str, file_ok: bool = False) -> Path:
    """data.root, checked to be a folder (or, with file_ok, a regular file: a device or pipe such as
    /dev/zero would be read without end)."""
    if not str(cfg.root).strip():  # Path("") is the working folder: never scanned by accident
        raise DataError(f"data.root is empty: point data.root at {layout} for data={what}")
    root = Path(str(cfg.root)).expanduser()
    try:
        os.fsencode(root)
    except UnicodeEncodeError:  # an ASCII locale (LC_ALL=C without UTF-8): exists() would say False
        raise DataError(f"data.root={root} cannot be named in this locale's encoding ({sys.getfilesystemencoding()}): "
                        "run with a UTF-8 locale, e.g. LC_ALL=C.UTF-8") from None
    if not root.exists():
        raise DataError(f"data.root={root} does not exist: point data.root at {layout} for data={what}")
    if not root.is_dir() and not (file_ok and root.is_file()):
        raise DataError(f"data.root={root} is not a folder{' or a regular file' if file_ok else ''}: point data.root at "
                        f"{layout} for data={what}")
    return root


def _val_dir(root: Path) -> Path | None:
    return next((root / d for d in _VAL_DIRS if (root / d).is_dir()), None)


def _holdout(n: int, cfg: Any, what: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and val index sets of a single tree, split by data.val_fraction (seeded by data.seed)."""
    if n < 2:
        raise DataError(f"{what} has {n} sample(s): a train/val split needs at least 2")
    other = " (or give a val.csv beside train.csv)" if what.suffix == ".csv" else " (or add a val/ folder)"
    return carve_indices(n, cfg, other)


def _cap(items: Sequence[Any], cap: int, cfg: Any, stream: int) -> list[Any]:
    return [items[i] for i in subset_indices(len(items), cap, int(cfg.seed), stream).tolist()]


def _decoded_bytes(n: int, channels: int, size: int, first: Path) -> int:
    w, h = (size, size) if size else image_size_of(first)
    return n * channels * w * h


class FileDataset(Dataset):
    """Images (and masks) decoded per item: the streaming path for large folders."""

    def __init__(self, paths: Sequence[Path], targets: Any, mode: str, size: int,
                 masks: Sequence[Path] | None = None, binary: bool = False, fit: Fit = Fit()):
        self.paths, self.targets, self.mode, self.size, self.fit = list(paths), targets, mode, size, fit
        self.masks, self.binary = (list(masks) if masks is not None else None), binary
        self.shape: tuple[int, ...] | None = None if size else tuple(load_image(self.paths[0], mode, 0).shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        if self.masks is not None:
            x, y = load_pair(self.paths[i], self.masks[i], self.mode, self.size, self.fit)
            if self.binary:
                y = (y == 255).to(torch.uint8)
        else:
            x, y = load_image(self.paths[i], self.mode, self.size, self.fit), self.targets[i]
        if self.shape is not None and tuple(x.shape) != self.shape:
            raise DataError(
                f"images differ in size ({self.paths[0]} is {self.shape[2]}x{self.shape[1]}, {self.paths[i]} is "
                f"{x.shape[2]}x{x.shape[1]}): {resize_hint(self.shape, x.shape)}"
            )
        return x, y


def _decode(paths: Sequence[Path], mode: str, size: int, fit: Fit) -> torch.Tensor:
    return stack(parallel_map(lambda i: load_image(paths[i], mode, size, fit), len(paths)), paths)


def _split_of(paths: list[Path], targets: Any, mode: str, size: int, resident: bool,
              fit: Fit = Fit()) -> TensorSplit | FileDataset:
    if not resident:
        return FileDataset(paths, targets, mode, size, fit=fit)
    return TensorSplit(_decode(paths, mode, size, fit), torch.as_tensor(targets))


# ---------------------------------------------------------------- image_folder (classification)

def _scan_classes(folder: Path, classes: list[str] | None, skipped: list[Path] | None = None
                  ) -> tuple[list[Path], list[int], list[str]]:
    """Images and labels of folder/<class>/; classes=None: the training folder, which names the
    classes (each must hold an image: an empty one would be a class the model never sees)."""
    found = _subfolders(folder)
    undecodable = next((c for c in found if any("\udc80" <= ch <= "\udcff" for ch in c)), None)
    if undecodable is not None:  # bytes the locale's encoding cannot read (LC_ALL=C without UTF-8)
        shown = undecodable.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        encoding = sys.getfilesystemencoding()
        fix = "rename it" if encoding == "utf-8" else "run with a UTF-8 locale (e.g. LC_ALL=C.UTF-8) or rename it"
        raise DataError(f"class folder '{shown}' in {folder} is not {encoding} text: {fix}")
    odd = next((c for c in found if not c.isprintable()), None)
    if odd is not None:  # a newline or a terminal escape would travel into every table and CSV of names
        raise DataError(f"class folder {str(folder / odd)!r} has a control character in its name: rename it")
    training = classes is None
    # macOS writes names decomposed (NFD: 'e' + U+0301), Linux and Windows keep them as typed (NFC): a
    # val/ unzipped from a Mac beside a train/ made elsewhere held 'café' twice, byte for byte apart
    actual = {unicodedata.normalize("NFC", c): c for c in found}
    if classes is None:
        classes = found
    else:
        known = {unicodedata.normalize("NFC", c) for c in classes}
        unknown = [c for c in found if unicodedata.normalize("NFC", c) not in known]
        if unknown:
            raise DataError(f"{folder / unknown[0]} is a class missing from the training folder {folder.parent / 'train'}: "
                            "rename or remove it, or add its training images")
    paths, labels = [], []
    for k, name in enumerate(classes):
        name = actual.get(unicodedata.normalize("NFC", name), name)
        if (folder / name).is_dir():
            files = _images_in(folder / name, skipped)
            if training and not files and len(classes) > 1:
                raise DataError(f"class folder {folder / name} holds no images: add its images or remove the folder "
                                "(a class without training images would never be learnt)")
            paths += files
            labels += [k] * len(files)
    return paths, labels, classes


def _check_not_splits(root: Path, classes: list[str]) -> None:
    """A single tree whose 'classes' are all split folders (Train/ and Val/, or train/ alone) would
    train a classifier of the splits: refused, saying which layout was meant. A split name among
    other classes is a class (VOC's 'train')."""
    splits = [c for c in classes if c.lower() in _SPLIT_NAMES]
    if not splits or len(splits) < len(classes):
        return
    if "train" in splits:
        raise DataError(f"{root} has train/ but no val/ (or test/) beside it: add {root}/val/<class>/, or set "
                        f"data.root={root / 'train'} to split it by data.val_fraction")
    raise DataError(f"{root} has folders named like splits ({', '.join(splits)}), which would be read as classes: "
                    f"name them train/, val/ and test/ (lower case), or point data.root at one tree of <class>/ folders")


def _loose_images(folder: Path) -> int:
    """How many image files lie directly in folder (not in a subfolder); 0 when it cannot be listed."""
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if not e.name.startswith(".") and is_image(Path(e.name)) and e.is_file())
    except OSError:
        return 0


def _loose_note(where: Path) -> list[str]:
    """Images beside the class folders belong to no class: named at the start, not dropped unsaid."""
    loose = _loose_images(where)
    if not loose:
        return []
    return [f"left out {loose} image(s) lying directly in {where}, beside the class folders: they belong to "
            f"no class (move each into its <class>/ folder to train on it)"]


_IMAGE_FOLDER_LAYOUT = ("a folder with train/<class>/*.png and val/<class>/*.png, optionally test/<class>/ (or "
                        "<class>/*.png, split by data.val_fraction)")


@register("image_folder", ("classification",))
def build_image_folder(cfg: Any, task: str) -> Source:
    root = _root(cfg, "image_folder", _IMAGE_FOLDER_LAYOUT)
    val_dir = _val_dir(root)
    test_dir = root / _TEST_DIR if (root / "train").is_dir() and (root / _TEST_DIR).is_dir() else None
    tr_paths: list[Path] = []
    va_paths: list[Path] = []
    skipped: list[Path] = []
    if (root / "train").is_dir() and (val_dir is not None or test_dir is not None):
        tr_paths, tr_labels, classes = _scan_classes(root / "train", None, skipped)
        where = root / "train"
        if val_dir is not None:
            va_paths, va_labels, _ = _scan_classes(val_dir, classes, skipped)
        elif tr_paths:  # train/ + test/: validation is carved from train/, test/ stays the test split
            itr, iva = _holdout(len(tr_paths), cfg, root / "train")
            va_paths, va_labels = [tr_paths[i] for i in iva], [tr_labels[i] for i in iva]
            tr_paths, tr_labels = [tr_paths[i] for i in itr], [tr_labels[i] for i in itr]
    else:
        _check_not_splits(root, _subfolders(root))
        paths, labels, classes = _scan_classes(root, None, skipped)
        where = root
        if paths:
            tr, va = _holdout(len(paths), cfg, root)
            tr_paths, tr_labels = [paths[i] for i in tr], [labels[i] for i in tr]
            va_paths, va_labels = [paths[i] for i in va], [labels[i] for i in va]
    if not classes or not tr_paths:
        loose = _loose_images(where)
        if loose:  # the photos themselves, or one class folder, named as data.root
            raise DataError(f"{where} holds {loose} image(s) but no <class>/ folders: image_folder reads one "
                            f"folder per class ({where}/<class>/*.jpg); move the images into class folders, "
                            f"or set data.root to the folder that holds the class folders")
        raise DataError(f"no images found under {where}: expected {where}/<class>/*.png (or .jpg ...) folders")
    if not va_paths:
        raise DataError(f"no images found under {val_dir}: expected {val_dir}/<class>/*.png folders")
    tr = _cap(list(zip(tr_paths, tr_labels)), int(cfg.num_train), cfg, 1)
    va = _cap(list(zip(va_paths, va_labels)), int(cfg.num_val), cfg, 2)
    mode, size, fit = dataset_mode([p for p, _ in tr]), int(cfg.image_size), fit_of(cfg)
    channels = 1 if mode == "L" else 3
    resident = resident_mode(cfg, _decoded_bytes(len(tr) + len(va), channels, size, tr[0][0]))
    train = _split_of([p for p, _ in tr], [y for _, y in tr], mode, size, resident, fit)
    val = _split_of([p for p, _ in va], [y for _, y in va], mode, size, resident, fit)
    declared = int(cfg.num_classes)
    if declared and len(classes) > declared:
        raise DataError(f"{where} has {len(classes)} class folders ({classes[declared]} is class id {declared}) "
                        f"but data.num_classes={declared}: raise data.num_classes or remove the folder")
    n_cls = max(declared, len(classes))
    image_size = _size_of(train, size)

    def test() -> Any:
        assert test_dir is not None
        paths, labels, _ = _scan_classes(test_dir, classes)
        if not paths:
            raise DataError(f"no images found under {test_dir}: expected {test_dir}/<class>/*.png folders")
        return _split_of(paths, labels, mode, size or image_size, resident, fit)

    return Source(train=train, val=val, in_channels=channels, image_size=image_size,
                  num_classes=n_cls, class_names=classes + [str(k) for k in range(len(classes), n_cls)],
                  notes=_run_folder_note(root) + skipped_note(skipped, root) + _loose_note(where)
                  + _shrink_notes(tr[0][0], size) + _capped_notes(tr, classes, cfg)
                  + _unscored_notes(va, classes, val_dir),
                  test=test if test_dir is not None else None)


def _unscored_notes(va: Sequence[tuple[Path, int]], classes: Sequence[str], val_dir: Path | None) -> list[str]:
    """One line when validation holds no image of some class: val/acc1 (and best.pt) would never
    score it, and a perfect number would say nothing about it."""
    seen = {y for _, y in va}
    missing = [c for i, c in enumerate(classes) if i not in seen]
    if not missing:
        return []
    fix = (f"add images to {val_dir}/{missing[0] if len(missing) == 1 else '<class>'}/" if val_dir is not None
           else "raise data.val_fraction (or add a val/ folder)")
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return [f"note: validation holds no image of class {shown} ({len(missing)} of {len(classes)}): val/* never "
            f"scores {'it' if len(missing) == 1 else 'them'}; {fix}"]


def _capped_notes(tr: Sequence[tuple[Path, int]], classes: Sequence[str], cfg: Any) -> list[str]:
    """One line when data.num_train's random subset holds no image of some class (the model would be
    scored on a class it never saw)."""
    left_out = [c for i, c in enumerate(classes) if i not in {y for _, y in tr}]
    if not left_out:
        return []
    names = ", ".join(left_out[:3]) + (f" and {len(left_out) - 3} more" if len(left_out) > 3 else "")
    return [f"data.num_train={int(cfg.num_train)} draws no training image of class {names}: raise data.num_train "
            f"(0 = all images) for every class to be learned"]


def _shrink_notes(first: Path, size: int) -> list[str]:
    """One line when data.image_size shrinks the images by more than 2x (details lost; data.crop
    trains on full-resolution windows instead)."""
    w, h = image_size_of(first)
    if size and min(w, h) > 2 * size:
        return [f"images like {first.name} ({w}x{h}) are shrunk to {size}x{size} (data.image_size={size}); "
                f"data.image_size=0 keeps their size, data.crop=N trains on N px windows of them"]
    return []


def _size_of(split: Any, size: int) -> int:
    """The side of the (square) images: data.image_size, or the native size of them all."""
    if size:
        return size
    h, w = split.images.shape[-2:] if isinstance(split, TensorSplit) else split.shape[-2:]
    if h != w:
        first = f"{split.paths[0]} is" if isinstance(split, FileDataset) else "the images are"
        raise DataError(f"{first} {w}x{h}, not square: {resize_hint((h, w))}")
    return int(h)


# ---------------------------------------------------------------- seg_folder (segmentation)

def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DataError(f"{folder} needs images/ and masks/ folders (masks/<image stem>.png per image)")
    # masks by their path without the extension: "cat.1.png" pairs with "cat.1.png"/".PNG"/".tif", never
    # with "cat.png" (Path.with_suffix would replace ".1"); the first lossless extension wins
    masks: dict[str, Path] = {}
    others: dict[str, Path] = {}
    mask_images, mask_others = scan_images(masks_dir)
    for m in mask_images + mask_others:
        key = str(m.relative_to(masks_dir).with_suffix(""))
        if m.suffix.lower() in _MASK_EXTS:
            if key not in masks or _MASK_EXTS.index(m.suffix.lower()) < _MASK_EXTS.index(masks[key].suffix.lower()):
                masks[key] = m
        else:
            others.setdefault(key, m)
    pairs = []
    for img in _images_in(images_dir):
        key = str(img.relative_to(images_dir).with_suffix(""))
        mask = masks.get(key)
        if mask is None:
            other = others.get(key)
            lossy = f" ({other.name} is there, but masks must be lossless: {', '.join(_MASK_EXTS)})" if other else ""
            raise DataError(f"no mask for image {img}: expected {masks_dir / key}.png{lossy}")
        pairs.append((img, mask))
    return pairs


def _mask_values(masks: list[torch.Tensor]) -> torch.Tensor:
    seen = torch.zeros(256, dtype=torch.bool)
    for m in masks:
        seen[torch.unique(m).long()] = True
    return seen


@register("seg_folder", ("segmentation",))
def build_seg_folder(cfg: Any, task: str) -> Source:
    root = _root(cfg, "seg_folder", "a folder with images/ and masks/ (or train/ and val/, optionally test/, each "
                 "holding both)")
    test_dir = root / _TEST_DIR if (root / "train").is_dir() and (root / _TEST_DIR).is_dir() else None
    if (root / "train").is_dir():
        val_dir = _val_dir(root)
        if val_dir is None and test_dir is None:
            raise DataError(f"{root} has train/ but no val/ folder (images/ + masks/ inside each)")
        tr = _pairs(root / "train")
        if val_dir is not None:
            va = _pairs(val_dir)
        else:  # train/ + test/: validation is carved from train/
            itr, iva = _holdout(len(tr), cfg, root / "train")
            tr, va = [tr[i] for i in itr], [tr[i] for i in iva]
    else:
        pairs = _pairs(root)
        if pairs:
            itr, iva = _holdout(len(pairs), cfg, root)
            tr, va = [pairs[i] for i in itr], [pairs[i] for i in iva]
        else:
            tr, va = [], []
    if not tr or not va:
        raise DataError(f"no images found under {root}: expected images/*.png with masks/<same name>.png")
    tr, va = _cap(tr, int(cfg.num_train), cfg, 1), _cap(va, int(cfg.num_val), cfg, 2)
    mode, size, fit = dataset_mode([p for p, _ in tr]), int(cfg.image_size), fit_of(cfg)
    channels = 1 if mode == "L" else 3
    resident = resident_mode(cfg, _decoded_bytes(len(tr) + len(va), channels + 1, size, tr[0][0]))
    splits: list[Any] = []
    masks_seen = torch.zeros(256, dtype=torch.bool)
    mask_files: list[Path] = []
    mask_values: list[torch.Tensor] = []  # the values each mask file holds
    declared = int(cfg.num_classes)
    # with data.num_classes given, every pixel of every mask file is checked before any resize
    valid = ([*range(min(declared, 255)), 255], f"data.num_classes={declared} allows 0..{declared - 1} "
             "(255 = ignore): fix the mask or raise data.num_classes") if declared else None
    for pairs in (tr, va):
        imgs, masks = [p for p, _ in pairs], [m for _, m in pairs]
        if resident:
            decoded = parallel_map(lambda i: load_pair(imgs[i], masks[i], mode, size, fit, valid), len(pairs))
            x, y = stack([d[0] for d in decoded], imgs), stack([d[1] for d in decoded], masks, "masks")
            mask_values += [torch.unique(d[1]) for d in decoded]
            splits.append(TensorSplit(x, y))
        else:  # value scan of the masks (small files) for the class count and the binary check
            from vaitrain.data.images import load_mask

            mask_values += parallel_map(lambda i: torch.unique(load_mask(masks[i], 0, valid=valid)), len(masks))
            splits.append(FileDataset(imgs, None, mode, size, masks=masks, fit=fit))
        mask_files += masks
    masks_seen |= _mask_values(mask_values)
    values = masks_seen.nonzero().flatten().tolist()
    binary = set(values) <= {0, 255}
    if binary:  # 0/255 masks: foreground 1
        for s in splits:
            if isinstance(s, TensorSplit):
                s.targets = (s.targets == 255).to(torch.uint8)
            else:
                s.binary = True
        n_cls = 2
    else:
        n_cls = max(v for v in values if v != 255) + 1
        _check_no_gaps([v for v in values if v != 255], n_cls, declared, root)
    n_cls = max(n_cls, int(cfg.num_classes))
    names = ["background"] + [f"class{k}" for k in range(1, n_cls)]
    if binary:  # say which mask value is which class
        names[:2] = ["background (mask 0)", "foreground (mask 255)"]
    image_size = _size_of(splits[0], size)

    def test() -> Any:
        assert test_dir is not None
        pairs = _pairs(test_dir)
        if not pairs:
            raise DataError(f"no images found under {test_dir}: expected images/*.png with masks/<same name>.png")
        imgs, masks = [p for p, _ in pairs], [m for _, m in pairs]
        decoded = parallel_map(lambda i: load_pair(imgs[i], masks[i], mode, size or image_size, fit), len(pairs))
        y = stack([d[1] for d in decoded], masks, "masks")
        if binary:
            check_mask_ids([d[1] for d in decoded], masks, [0, 255], "the training masks are 0/255: use 0 and 255 only")
            y = (y == 255).to(torch.uint8)
        else:
            check_mask_ids([d[1] for d in decoded], masks, [*range(min(n_cls, 255)), 255],
                           f"the training data has classes 0..{n_cls - 1} (255 = ignore): fix the mask")
        return TensorSplit(stack([d[0] for d in decoded], imgs), y)

    return Source(train=splits[0], val=splits[1], in_channels=channels, image_size=image_size,
                  num_classes=n_cls, class_names=names, notes=_shrink_notes(tr[0][0], size),
                  test=test if test_dir is not None else None)


def _check_no_gaps(ids: list[int], n_cls: int, declared: int, root: Path) -> None:
    """Without data.num_classes the class count is read off the masks: ids with gaps (0 and 128, a
    mask saved with grey levels, not indices) would silently make classes that never occur."""
    missing = sorted(set(range(n_cls)) - set(ids))
    if declared or not missing:
        return
    raise DataError(f"the masks under {root} hold class ids {_spans(ids)} but none of {_spans(missing)}: masks must "
                    f"hold class indices 0..K-1 (255 = ignore); if those classes are only absent from these masks, "
                    f"set data.num_classes={n_cls}")


def _spans(ids: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0..2, 5, 7..8'."""
    out: list[str] = []
    for v in sorted(ids):
        if out and v == int(out[-1].split("..")[-1]) + 1:
            out[-1] = f"{out[-1].split('..')[0]}..{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


# ---------------------------------------------------------------- csv_regression (regression)

def _read_csv(path: Path, target_columns: list[str]) -> tuple[list[Path], torch.Tensor, list[str]]:
    try:  # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        text = read_bytes(path).decode("utf-8-sig")  # a FIFO is refused, not waited on
        if "\x00" in text:  # binary: Python's csv reads NUL bytes into fields, and a path with one fails late
            raise DataError(f"{path} holds NUL bytes (a binary file, not a CSV): save it as UTF-8 text")
        rows = list(csv.reader(io.StringIO(text), delimiter=_delimiter(text)))
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read CSV {path}: not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8") from None
    except (OSError, csv.Error) as err:
        raise DataError(f"cannot read CSV {path}: {getattr(err, 'strerror', None) or err}") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"{path} has no data rows: expected a header (path,<targets>...) and one row per image")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    path_col = next((lower.index(c) for c in _PATH_COLUMNS if c in lower), 0)
    odd = next((h for h in header if not h.isprintable()), None)
    if odd is not None:
        raise DataError(f"{path}: the column name {odd!r} has a control character: rename it")
    twice = next((h for h in header if header.count(h) > 1), None)
    if twice is not None:
        raise DataError(f"{path} has two columns named '{twice}': give each column its own name")
    if (len(header) > 1 and all(_is_float(h) for i, h in enumerate(header) if i != path_col)) or \
            (path.parent / header[path_col]).is_file():
        raise DataError(f"{path} has no header row (its first line is data: {','.join(header)[:60]}): add one, "
                        "e.g. path,<target names>")
    if target_columns:
        missing = [c for c in target_columns if c not in header]
        if missing:
            raise DataError(f"{path} has no column '{missing[0]}' (data.target_columns); its columns: {', '.join(header)}")
        cols = [header.index(c) for c in target_columns]
    else:
        cols = [i for i in range(len(header)) if i != path_col]
    if not cols:
        raise DataError(f"{path} has no target columns besides the path column '{header[path_col]}'")
    paths, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):  # more is a shifted row (e.g. an unquoted comma in a path)
            raise DataError(f"{path}:{line} has {len(row)} fields, the header has {len(header)}")
        img = (path.parent / row[path_col].strip()).resolve()
        if not img.exists() and "\\" in row[path_col]:  # a CSV written on Windows: img\0.png
            img = (path.parent / row[path_col].strip().replace("\\", "/")).resolve()
        if not row[path_col].strip():
            raise DataError(f"{path}:{line}: the path column '{header[path_col]}' is empty: give the image's path")
        if img.is_dir():
            raise DataError(f"{path}:{line}: the path column '{header[path_col]}' names a folder ({img}), not an image file")
        if not img.is_file():
            raise DataError(f"missing file {img} (listed in {path}:{line})")
        try:
            numbers = [float(row[c]) for c in cols]
        except ValueError:
            bad = next(c for c in cols if not _is_float(row[c]))
            fix = " (write decimals with a point)" if "," in row[bad] else ""
            numeric = [header[c] for c in cols if c != bad and _is_float(row[c])]
            if not target_columns and numeric and not fix:  # e.g. a notes or id column beside the targets
                fix = (f"; every column but the path is a target unless data.target_columns names them, "
                       f"e.g. 'data.target_columns=[{','.join(numeric)}]'")
            raise DataError(f"{path}:{line}: column '{header[bad]}' value '{row[bad]}' is not a number{fix}") from None
        for c, v in zip(cols, numbers):  # nan, inf, 1e999: a loss that is NaN from the first step
            if not math.isfinite(v):
                raise DataError(f"{path}:{line}: column '{header[c]}' value '{row[c].strip()}' is not a finite "
                                "number: fix or drop the row")
        for c, v in zip(cols, numbers):  # finite in float64 but not in the float32 the targets become
            if abs(v) > _FLOAT32_MAX:
                raise DataError(f"{path}:{line}: column '{header[c]}' value '{row[c].strip()}' is beyond float32's "
                                "range (+-3.4e38): rescale the column")
            if abs(v) > _TARGET_MAX:  # 1e20: the run trained, and val/rmse read inf without a word
                raise DataError(f"{path}:{line}: column '{header[c]}' value '{row[c].strip()}' is too large: squared "
                                "errors of such targets overflow float32 (val/rmse would read inf); rescale the column "
                                "to values within +-1e15 (e.g. in thousands or millions)")
        values.append(numbers)
        paths.append(img)
    return paths, torch.tensor(values, dtype=torch.float32), [header[c] for c in cols]


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
# squared errors of such targets, (2e15)^2 = 4e30, summed over a batch in float32, stay far below its 3.4e38
_TARGET_MAX = 1e15


def _delimiter(text: str) -> str:
    """',' unless the header line is split by ';' (locales with decimal commas), a tab or '|'."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] > counts[","] else ","


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@register("csv_regression", ("regression",))
def build_csv_regression(cfg: Any, task: str) -> Source:
    root = _root(cfg, "csv_regression", "a CSV file (path,<targets>...) or a folder with train.csv and val.csv",
                 file_ok=True)
    columns = [str(c) for c in cfg.target_columns]
    if root.is_dir():
        for name in ("train.csv", "val.csv", "test.csv"):
            if special_kind(root / name):  # read as missing before
                raise DataError(f"{root / name} is {special_kind(root / name)}, not a CSV file: replace it with the file")
        if not (root / "train.csv").is_file() or not (root / "val.csv").is_file():
            raise DataError(f"{root} needs train.csv and val.csv (or set data.root to one CSV file, split by data.val_fraction)")
        tr_paths, tr_y, names = _read_csv(root / "train.csv", columns)
        va_paths, va_y, va_names = _read_csv(root / "val.csv", columns)
        if va_names != names:
            raise DataError(f"{root / 'val.csv'} has target columns {va_names}, train.csv has {names}")
    else:
        paths, y, names = _read_csv(root, columns)
        itr, iva = _holdout(len(paths), cfg, root)
        tr_paths, tr_y = [paths[i] for i in itr], y[itr]
        va_paths, va_y = [paths[i] for i in iva], y[iva]
    itr = subset_indices(len(tr_paths), int(cfg.num_train), int(cfg.seed), 1)
    iva = subset_indices(len(va_paths), int(cfg.num_val), int(cfg.seed), 2)
    tr_paths, tr_y = [tr_paths[i] for i in itr.tolist()], tr_y[itr]
    va_paths, va_y = [va_paths[i] for i in iva.tolist()], va_y[iva]
    mode, size, fit = dataset_mode(tr_paths), int(cfg.image_size), fit_of(cfg)
    channels = 1 if mode == "L" else 3
    resident = resident_mode(cfg, _decoded_bytes(len(tr_paths) + len(va_paths), channels, size, tr_paths[0]))
    train = _split_of(tr_paths, tr_y, mode, size, resident, fit)
    val = _split_of(va_paths, va_y, mode, size, resident, fit)
    image_size = _size_of(train, size)
    test_csv = root / "test.csv" if root.is_dir() and (root / "test.csv").is_file() else None

    def test() -> Any:  # test.csv beside train.csv and val.csv
        assert test_csv is not None
        paths, y, te_names = _read_csv(test_csv, columns)
        if te_names != names:
            raise DataError(f"{test_csv} has target columns {te_names}, train.csv has {names}")
        return _split_of(paths, y, mode, size or image_size, resident, fit)

    return Source(train=train, val=val, in_channels=channels, image_size=image_size,
                  target_dim=len(names), target_names=names, test=test if test_csv is not None else None)
