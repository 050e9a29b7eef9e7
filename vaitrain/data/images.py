"""Decoding image and mask files to uint8 tensors, with one-line DataErrors naming the bad file.

Images are brought to size x size when data.image_size is set (bilinear, antialiased by PIL): the
centre square resized (data.resize=center_crop, aspect ratio kept) or the whole image squashed
(squash); masks get the same geometry with nearest neighbour so class indices survive. Decoding a list of files runs in a
thread pool (PIL releases the GIL while decoding).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vaitrain.errors import DataError
from vaitrain.file_kinds import not_regular_note

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")

T = TypeVar("T")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMG_EXTENSIONS


def scan_images(folder: Path, broken_ok: bool = False) -> tuple[list[Path], list[Path]]:
    """The image files under folder, recursively and sorted, and the other files (not images by
    their extension). Hidden files and folders (.DS_Store, AppleDouble ._x.png, .ipynb_checkpoints)
    are left out; linked folders are followed once each (a link loop ends); a folder that cannot be
    listed or an image name that is a broken link is a DataError, never a silently smaller class
    (broken_ok: listed with the images, for a caller that names and skips unreadable files)."""
    images: list[Path] = []
    others: list[Path] = []
    seen: set[tuple[int, int]] = set()
    todo = [Path(folder)]
    while todo:
        d = todo.pop()
        try:
            st = d.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as err:
            raise DataError(f"cannot list folder {d} ({err.strerror or err}): fix its permissions or remove it") from None
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            if e.is_dir():
                todo.append(p)
            elif not is_image(p):
                others.append(p)
            elif e.is_file() or broken_ok:
                images.append(p)
            else:
                raise DataError(f"{p} is a broken link or not a regular file: fix or remove it")
    return sorted(images), sorted(others)


def skipped_note(others: Sequence[Path], where: Path) -> list[str]:
    """One line naming the files a scan left out for their extension (e.g. .heic photos), if any."""
    if not others:
        return []
    exts = sorted({p.suffix.lower() or "no extension" for p in others})
    return [f"skipped {len(others)} file(s) under {where} that are not images by their extension "
            f"({', '.join(exts[:5])}{', ...' if len(exts) > 5 else ''}; e.g. {others[0]}): read are "
            f"{', '.join(IMG_EXTENSIONS)}"]


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
        raise DataError(f"{not_regular_note(path) or f'missing file {path}'}")
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


def _header_mode(path: Path) -> str:
    """image_mode from the file's header, without decoding its pixels."""
    try:
        with Image.open(path) as im:
            return "L" if im.mode in GRAY_MODES or (im.mode == "P" and _gray_palette(im)) else "RGB"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return image_mode(path)  # the decoder's own one-line DataError for this file


def dataset_mode(paths: Sequence[Path]) -> str:
    """'RGB' when any of the files is in colour, else 'L': one grayscale file listed first must not
    turn a colour dataset gray. Headers only, in chunks that stop at the first colour file: a colour
    dataset costs one header read, a grayscale one a read of each (~0.1 ms a file)."""
    for start in range(0, len(paths), 256):
        chunk = paths[start:start + 256]
        if "RGB" in parallel_map(lambda i: _header_mode(chunk[i]), len(chunk)):
            return "RGB"
    return "L"


def _gray_palette(im: Image.Image) -> bool:
    pal = im.getpalette()
    if not pal:
        return True
    rgb = np.asarray(pal[: 3 * 256]).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


_ORIENTATION = 0x0112  # EXIF: how a camera held sideways says to turn its pixels (1 = upright)


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION, 1))
    except (OSError, SyntaxError, ValueError, TypeError):  # a malformed EXIF block: the pixels as stored
        return 1


def _upright(im: Image.Image) -> Image.Image:
    """The image as photo viewers show it: a phone photo taken sideways stores its pixels sideways
    plus an EXIF orientation, and training on the stored pixels would see it rotated."""
    if _orientation(im) not in range(2, 9):
        return im
    try:
        return ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, TypeError):
        return im


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) as shown (EXIF orientation applied), without decoding the pixels."""
    try:
        with Image.open(path) as im:
            _check_pixels(im, path)
            w, h = im.size
            return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)  # turned by 90 degrees
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(path) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


@dataclass(frozen=True)
class Fit:
    """How an image becomes size x size. center_crop: the centre square whose side is `fraction` of
    the short side, resized to size x size (aspect ratio kept; fraction 0.875 is torchvision's
    resize-256-crop-224); squash: the whole image resized to size x size."""

    mode: str = "squash"  # center_crop | squash
    fraction: float = 1.0

    def box(self, w: int, h: int) -> tuple[float, float, float, float]:
        """The region (left, top, right, bottom) of a w x h image that becomes the square."""
        if self.mode == "squash":
            return (0.0, 0.0, float(w), float(h))
        side = min(w, h) * self.fraction
        return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


SQUASH = Fit()


def fit_of(cfg: Any) -> Fit:
    """The Fit of a data config (data.resize, data.crop_fraction)."""
    return Fit(str(cfg.get("resize", "squash")), float(cfg.get("crop_fraction", 1.0)))


def _eight_bit(im: Image.Image, path: Path | None) -> Image.Image:
    """A 16-bit grayscale file scaled to 8 bits (x / 257: 65535 -> 255), where PIL's convert would
    clip every value above 255 to white; a 32-bit integer or float file is taken only when its
    values are already 0..255 (its range is otherwise unknown)."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        return Image.fromarray(np.round(arr.astype(np.float32) / 257).astype(np.uint8), "L")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not (np.isfinite(arr).all() and lo >= 0 and hi <= 255):
        kind = "float" if im.mode == "F" else "32-bit integer"
        raise DataError(f"image {path} is a {kind} image with values {lo:g}..{hi:g}: save it as an 8-bit "
                        "(0..255) or 16-bit (0..65535) PNG")
    return Image.fromarray(np.round(arr).astype(np.uint8), "L")


def _convert(im: Image.Image, mode: str, path: Path | None = None) -> Image.Image:
    """Any file mode to 'L' or 'RGB'; transparent pixels (RGBA, LA, palette with transparency) are
    composited on white rather than keeping whatever colour they hide; 16-bit files are scaled."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _eight_bit(im, path)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return im.convert(mode)


def _to_tensor(im: Image.Image, mode: str, size: int, fit: Fit = SQUASH, path: Path | None = None) -> torch.Tensor:
    try:
        im = _convert(im, mode, path)
    except (ValueError, OSError) as err:  # e.g. a LAB TIFF: PIL has no conversion to RGB
        raise DataError(f"image {path} is in mode {im.mode}, which cannot be converted to {mode} ({err}): save it as "
                        "an RGB or grayscale image") from None
    if size:
        box = fit.box(*im.size)
        if im.size != (size, size) or box != (0.0, 0.0, float(im.size[0]), float(im.size[1])):
            im = im.resize((size, size), Image.BILINEAR, box=box)
    arr = np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], -1)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def load_image(path: Path, mode: str, size: int, fit: Fit = SQUASH) -> torch.Tensor:
    """uint8 (C,H,W) of one image file in mode 'L' or 'RGB', brought to size x size (see Fit) when
    size > 0."""
    with _open(path) as im:
        return _to_tensor(_upright(im), mode, size, fit, path)


def load_image_sized(path: Path, mode: str, size: int, fit: Fit = SQUASH) -> tuple[torch.Tensor, tuple[int, int]]:
    """load_image and the file's own (H, W), from one decode."""
    with _open(path) as im:
        im = _upright(im)
        return _to_tensor(im, mode, size, fit, path), (im.size[1], im.size[0])


def load_mask(path: Path, size: int, image_hw: tuple[int, int] | None = None, image_path: Path | None = None,
              fit: Fit = SQUASH, valid: tuple[Sequence[int], str] | None = None) -> torch.Tensor:
    """uint8 (H,W) class indices of a mask PNG (grayscale or palette), resized by nearest neighbour
    with its image's Fit. image_hw: the size (H, W) the mask must have before resizing (its image's).
    valid: (the allowed values, the hint) checked on every pixel of the file, before a resize or a
    crop could drop the odd one."""
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
    if valid is not None:
        check_mask_ids([torch.from_numpy(arr)], [path], *valid)
    if size:
        box = fit.box(hw[1], hw[0])
        if hw != (size, size) or box != (0.0, 0.0, float(hw[1]), float(hw[0])):
            arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.NEAREST, box=box))
    return torch.from_numpy(arr.copy())


def load_pair(image: Path, mask: Path, mode: str, size: int, fit: Fit = SQUASH,
              valid: tuple[Sequence[int], str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An image and its mask, the mask checked to have the image's size (and `valid` values) before resizing."""
    with _open(image) as im:
        im = _upright(im)  # masks are drawn on the image as shown
        hw = (im.size[1], im.size[0])
        x = _to_tensor(im, mode, size, fit, image)
    return x, load_mask(mask, size, hw, image, fit, valid)


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
                f"{tuple(t.shape)[-1]}x{tuple(t.shape)[-2]}): {resize_hint(first, t.shape)}"
            )
    return torch.stack(list(items))


def resize_hint(*shapes: Sequence[int]) -> str:
    """The fix for images of different sizes, with a side that fits: the shortest side seen, down
    to a multiple of 16 (what a U-Net of depth 4 needs), so no image is enlarged."""
    side = min(min(int(s[-1]), int(s[-2])) for s in shapes)
    side = side - side % 16 if side >= 16 else side
    return f"set data.image_size=N to resize them all to N x N, e.g. data.image_size={side}"


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
