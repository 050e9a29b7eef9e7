"""Decoding image and mask files to uint8 tensors, with one-line DataErrors naming the bad file.

Images are resized to size x size (bilinear, antialiased by PIL) when data.image_size is set and
differs; masks with nearest neighbour so class indices survive. Decoding a list of files runs in a
thread pool (PIL releases the GIL while decoding).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vaitrain.errors import DataError

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")

T = TypeVar("T")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMG_EXTENSIONS


# An image over PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, ~89 Mpixel) is refused,
# not merely warned about: vaitrain decodes whole folders into memory, a few such files fill it.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _too_large(path: Path) -> DataError:
    limit = Image.MAX_IMAGE_PIXELS
    return DataError(
        f"image {path} is too large to decode safely (over {limit:,} pixels, PIL's decompression-bomb "
        "limit): shrink or remove the file"
    )


def _check_pixels(im: Image.Image, path: Path) -> None:
    """The same limit where the warning filter is not in force (e.g. replaced by a test runner's)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and im.size[0] * im.size[1] > limit:
        im.close()
        raise _too_large(path)


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        im = Image.open(path)
        _check_pixels(im, path)
        im.load()  # decode now, so a truncated or corrupt file fails here
        return im
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {path}: corrupt or not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(path) from None
    except MemoryError:
        raise DataError(f"out of memory decoding image {path}: shrink the file or free memory") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, bad chunks ...
        raise DataError(f"cannot read image {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def image_mode(path: Path) -> str:
    """'L' for a grayscale file, 'RGB' otherwise (what the dataset is converted to)."""
    with _open(path) as im:
        return "L" if im.mode in GRAY_MODES or (im.mode == "P" and _gray_palette(im)) else "RGB"


def _gray_palette(im: Image.Image) -> bool:
    pal = im.getpalette()
    if not pal:
        return True
    rgb = np.asarray(pal[: 3 * 256]).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) without decoding the pixels."""
    try:
        with Image.open(path) as im:
            _check_pixels(im, path)
            return im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(path) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


def _to_tensor(im: Image.Image, mode: str, size: int) -> torch.Tensor:
    im = im.convert(mode)
    if size and im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], -1)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def load_image(path: Path, mode: str, size: int) -> torch.Tensor:
    """uint8 (C,H,W) of one image file in mode 'L' or 'RGB', resized to size x size when size > 0."""
    with _open(path) as im:
        return _to_tensor(im, mode, size)


def load_mask(path: Path, size: int, image_hw: tuple[int, int] | None = None, image_path: Path | None = None) -> torch.Tensor:
    """uint8 (H,W) class indices of a mask PNG (grayscale or palette), resized by nearest neighbour.
    image_hw: the size (H, W) the mask must have before resizing (its image's)."""
    with _open(path) as im:
        if im.mode not in ("1", "L", "P", "I", "I;16"):
            raise DataError(f"mask {path} is {im.mode}: save masks as grayscale or palette PNGs of class indices")
        hw = (im.size[1], im.size[0])
        if image_hw is not None and hw != image_hw:
            raise DataError(f"mask {path} is {hw[1]}x{hw[0]} but its image {image_path} is {image_hw[1]}x{image_hw[0]}")
        arr = np.asarray(im)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.max(initial=0) > 255:
        raise DataError(f"mask {path} has class index {int(arr.max())} > 255")
    arr = arr.astype(np.uint8)
    if size and hw != (size, size):
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.NEAREST))
    return torch.from_numpy(arr.copy())


def load_pair(image: Path, mask: Path, mode: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image and its mask, the mask checked to have the image's size before resizing."""
    with _open(image) as im:
        hw = (im.size[1], im.size[0])
        x = _to_tensor(im, mode, size)
    return x, load_mask(mask, size, hw, image)


def parallel_map(fn: Callable[[int], T], n: int) -> list[T]:
    """[fn(i) for i in range(n)] on a thread pool; the first error propagates."""
    workers = min(8, os.cpu_count() or 1)
    if n < 16 or workers == 1:
        return [fn(i) for i in range(n)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, range(n)))


def stack(items: Sequence[torch.Tensor], paths: Sequence[Path], what: str = "images") -> torch.Tensor:
    """Stack equally sized tensors; differing sizes name the first odd file."""
    if not items:
        raise DataError(f"no {what} to stack")
    first = items[0].shape
    for t, p in zip(items, paths):
        if t.shape != first:
            raise DataError(
                f"{what} differ in size ({paths[0]} is {tuple(first)[-1]}x{tuple(first)[-2]}, {p} is "
                f"{tuple(t.shape)[-1]}x{tuple(t.shape)[-2]}): set data.image_size=N to resize them all"
            )
    return torch.stack(list(items))


def check_mask_ids(masks: Sequence[torch.Tensor], paths: Sequence[Path], valid: Sequence[int], hint: str) -> None:
    """Every mask value must be one of `valid` (class ids and the ignore value): a value beyond
    them is a wrong file or a wrong data.num_classes, named here rather than growing the classes."""
    allowed = torch.zeros(256, dtype=torch.bool)
    allowed[torch.as_tensor(list(valid), dtype=torch.long)] = True
    for mask, path in zip(masks, paths):
        values = torch.unique(mask).long()
        bad = values[~allowed[values]]
        if bad.numel():
            raise DataError(f"mask {path} has class id {int(bad[0])}: {hint}")
