"""Image helpers for TensorBoard: un-normalizing inputs, captioned grids, masks, heatmaps.

Everything returns float CHW tensors in [0, 1] on the CPU, what `SummaryWriter.add_image` takes.
"""
from __future__ import annotations

import colorsys
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

_CELL = 96  # display size of one sample, so captions are legible on 32 px inputs


def denormalize(x: Tensor, stats: Mapping[str, Tensor] | None) -> Tensor:
    """Undo the data's normalization (per-channel (C,) or per-pixel (C,H,W) stats); 3 channels out."""
    x = x.detach().float().cpu()
    if stats is not None and "mean" in stats and "std" in stats:
        mean = torch.as_tensor(stats["mean"]).float().cpu()
        std = torch.as_tensor(stats["std"]).float().cpu()
        if mean.dim() == 1:
            mean, std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        x = x * std + mean
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] > 3:
        x = x[:, :3]
    return x.clamp(0, 1)


def palette(n: int) -> Tensor:
    """n distinct colours (n, 3) in [0, 1]: class 0 (background) black, then golden-ratio hues."""
    colours = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.8, 1.0) for i in range(n - 1)]
    return torch.tensor(colours[:n], dtype=torch.float32)


def _to_pil(img: Tensor) -> Image.Image:
    arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(arr)


def _from_pil(img: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def upscale(x: Tensor, size: int = _CELL) -> Tensor:
    """Nearest-neighbour upscale of (N, 3, H, W) so the long side is about `size`."""
    h, w = x.shape[-2:]
    scale = max(1, size // max(h, w))
    return F.interpolate(x, scale_factor=scale, mode="nearest") if scale > 1 else x


def captioned(img: Tensor, lines: Sequence[str], colour: tuple[int, int, int] = (255, 255, 255)) -> Tensor:
    """One image (3, H, W) with a black caption strip of `lines` below it."""
    font = ImageFont.load_default()
    strip = 12 * max(1, len(lines)) + 2
    canvas = Image.new("RGB", (img.shape[-1], img.shape[-2] + strip))
    canvas.paste(_to_pil(img), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((2, img.shape[-2] + 1 + 12 * i), line, fill=colour, font=font)
    return _from_pil(canvas)


def grid(images: Sequence[Tensor], nrow: int = 8, pad: int = 2) -> Tensor:
    """Tile same-sized (3, H, W) images row by row (nrow per row) on a grey background.

    The layout of torchvision's make_grid(padding=pad, pad_value=0.5), pixel for pixel (a test
    compares them), in a few lines of torch: importing torchvision costs every run ~0.1 CPU s."""
    batch = torch.stack(list(images))
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    n, c, h, w = batch.shape
    if n == 1:
        return batch[0].clone()
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = batch.new_full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 0.5)
    for k in range(n):
        y, x = divmod(k, cols)
        out[:, pad + y * (h + pad):pad + y * (h + pad) + h, pad + x * (w + pad):pad + x * (w + pad) + w] = batch[k]
    return out


def with_column_titles(grid_img: Tensor, titles: Sequence[str], cell_width: int, pad: int = 2) -> Tensor:
    """A `grid` (cells `cell_width` wide, `pad` apart) with a black strip above naming each column."""
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (grid_img.shape[-1], grid_img.shape[-2] + 14))
    canvas.paste(_to_pil(grid_img), (0, 14))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(titles):
        left = pad + j * (cell_width + pad)
        text_width = draw.textlength(title, font=font)
        draw.text((left + max(0, (cell_width - text_width) / 2), 1), title, fill=(255, 255, 255), font=font)
    return _from_pil(canvas)


def with_legend(img: Tensor, names: Sequence[str], colours: Tensor) -> Tensor:
    """`img` with a black strip below: a colour swatch and the name of each class, wrapped to its width."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    entries = [(str(name)[:16], tuple(int(round(255 * float(v))) for v in colours[k])) for k, name in enumerate(names)]
    lines: list[list[tuple[int, str, tuple[int, ...]]]] = [[]]
    x = 2
    for name, rgb in entries:
        width = 12 + int(probe.textlength(name, font=font)) + 8
        if lines[-1] and x + width > img.shape[-1]:
            lines.append([])
            x = 2
        lines[-1].append((x, name, rgb))
        x += width
    canvas = Image.new("RGB", (img.shape[-1], img.shape[-2] + 14 * len(lines) + 2))
    canvas.paste(_to_pil(img), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(lines):
        top = img.shape[-2] + 2 + 14 * row
        for left, name, rgb in line:
            draw.rectangle([left, top + 1, left + 9, top + 10], fill=rgb, outline=(255, 255, 255))
            draw.text((left + 12, top), name, fill=(255, 255, 255), font=font)
    return _from_pil(canvas)


def overlay(img: Tensor, mask: Tensor, colours: Tensor, ignore_index: int | None = None, alpha: float = 0.5) -> Tensor:
    """Blend a class mask (H, W) over an image (3, H, W) (torchvision's draw_segmentation_masks;
    colours are rounded to 8 bits); ignored pixels drawn grey."""
    from torchvision.utils import draw_segmentation_masks

    m = mask.long().cpu()
    classes = torch.arange(len(colours)).view(-1, 1, 1)
    masks = m.clamp(0, len(colours) - 1)[None] == classes  # (K, H, W); an ignored pixel is greyed below
    rgb = [tuple(int(round(255 * float(v))) for v in c) for c in colours]
    out = draw_segmentation_masks(img.float().clamp(0, 1), masks, alpha=alpha, colors=rgb)
    if ignore_index is None:
        return out
    return torch.where(m != ignore_index, out, torch.full_like(out, 0.5))


def heatmap(matrix: Tensor, labels: Sequence[str] | None = None, title: str = "") -> Tensor:
    """Render a square matrix (rows: true class, columns: predicted) row-normalized, white to blue.

    Cells show counts when there are few classes; row labels (true) and column labels (predicted,
    written upwards) are drawn when given.
    """
    m = matrix.detach().double().cpu()
    n = m.shape[0]
    frac = m / m.sum(1, keepdim=True).clamp_min(1)
    cell = max(6, min(40, 480 // max(n, 1)))
    show_text = n <= 20
    margin = 70 if labels is not None and show_text else 4
    head = 62 if labels is not None and show_text else 0  # room for the upward column labels
    top = (16 if title else 4) + head
    size = (margin + n * cell + 4, top + n * cell + 4)
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((margin, 2), title, fill=(0, 0, 0), font=font)
    if head:
        for j in range(n):
            label = Image.new("RGB", (head - 2, 12), (255, 255, 255))
            ImageDraw.Draw(label).text((0, 0), str(labels[j])[:10], fill=(0, 0, 0), font=font)  # type: ignore[index]
            canvas.paste(label.rotate(90, expand=True), (margin + j * cell + max(0, cell // 2 - 6), top - head))
    for i in range(n):
        if labels is not None and show_text:
            draw.text((2, top + i * cell + cell // 2 - 5), str(labels[i])[:10], fill=(0, 0, 0), font=font)
        for j in range(n):
            v = float(frac[i, j])
            fill = (int(255 * (1 - 0.9 * v)), int(255 * (1 - 0.7 * v)), 255)
            x0, y0 = margin + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=fill, outline=(200, 200, 200))
            if show_text and cell >= 18:
                ink = (255, 255, 255) if v > 0.5 else (0, 0, 0)
                draw.text((x0 + 2, y0 + cell // 2 - 5), str(int(m[i, j])), fill=ink, font=font)
    return _from_pil(canvas)
