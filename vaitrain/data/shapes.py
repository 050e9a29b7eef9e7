"""Procedurally generated shapes scenes: the embedded default dataset (no download).

Every scene has a background colour, one *main* shape (the largest, drawn last so it is always
fully visible) and, in the standard variant, 0-2 smaller distractor shapes of *other* classes
under it, then Gaussian pixel noise (data.noise). One scene set gives three tasks:

- classification: the main shape's class (0..K-1);
- segmentation: a per-pixel mask, 0 = background, 1..K = class of the visible shape;
- regression: (x, y, size) of the main shape: the centre in fractions of the image side
  (pixel j spans [j/S, (j+1)/S)) and the diameter of its bounding circle, 2r/S.

variant=ambiguous: two identical objects (class, colour, size) that do not overlap, no
distractors; the regression target is the position of one of them chosen at random, so the
conditional distribution of the target is bimodal (a single Gaussian can only predict the
midpoint; a mixture can put a mode on each object).

Scenes are generated in vectorized chunks from generators seeded by (data.seed, split), so train
and val come from distinct random streams and a scene set is reproducible. Each scene's pixels are
one packed int32 per pixel (R, G, B, class+1), so painting a shape writes colour and mask at once,
and only a window around each shape is tested.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from vaitrain.data.base import Source, TensorSplit, derive_seed, register
from vaitrain.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
TARGET_NAMES = ["x", "y", "size"]

_CHUNK = 1024  # scenes per vectorized chunk: few ops, working set still in cache
_SPLIT_STREAM = {"train": 1, "val": 2, "test": 3}  # test: data.num_val scenes of a third stream
_SQRT3 = math.sqrt(3.0)


# Shapes in local coordinates u, v (pixel offset from the centre / radius r, v pointing down):
# pixel inside <=> lo <= F(u, v) <= hi and min(|u|, |v|) <= arm, with F one of four functions.
# Every shape lies within r of its centre and is point-symmetric or (the equilateral triangle,
# inscribed in the unit circle) has its centroid there, so the mask centroid is the centre.
_L2SQ, _LINF, _L1, _TRI = 0, 1, 2, 3
_INF = float("inf")
_SHAPE_PARAMS = torch.tensor([
    # family, lo, hi, arm
    [_L2SQ, -_INF, 1.0, _INF],  # circle: u^2 + v^2 <= 1
    [_LINF, -_INF, 0.75, _INF],  # square: max(|u|, |v|) <= 0.75
    [_TRI, -_INF, 1.0, _INF],  # triangle: max(2v, sqrt(3)|u| - v) <= 1 (apex up, base at v = 0.5)
    [_LINF, -_INF, 0.9, 0.3],  # cross: two 1.8 x 0.6 bars
    [_L2SQ, 0.3, 1.0, _INF],  # ring: 0.3 <= u^2 + v^2 <= 1
    [_L1, -_INF, 1.0, _INF],  # diamond: |u| + |v| <= 1
])


def _inside(u: torch.Tensor, v: torch.Tensor, cls: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
    """Membership (n,w,w) of the pixels of a window; u is (n,1,w), v is (n,w,1), cls (n,)."""
    fam, lo, hi, arm = (p[:, None, None] for p in _SHAPE_PARAMS[cls].unbind(1))
    if active is not None:
        hi = torch.where(active[:, None, None], hi, -_INF)
    au, av = u.abs(), v.abs()
    f = torch.where(fam == _L2SQ, u * u + v * v,
                    torch.where(fam == _LINF, torch.maximum(au, av),
                                torch.where(fam == _L1, au + av, torch.maximum(2 * v, _SQRT3 * au - v))))
    return (f <= hi) & (f >= lo) & (torch.minimum(au, av) <= arm)


def _uniform(g: torch.Generator, lo: torch.Tensor | float, hi: torch.Tensor | float, n: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _contrasting(g: torch.Generator, bg: torch.Tensor) -> torch.Tensor:
    """A colour whose every channel differs from the background by 0.3..0.7 (mod 1)."""
    return torch.remainder(bg + 0.3 + 0.4 * torch.rand(bg.shape, generator=g), 1.0)


def _pack(colour: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """(R, G, B, class+1) bytes of one colour (n,3) in [0,1] and class (n,) as one int32 per scene."""
    rgb = colour.mul(255.0).round_().to(torch.uint8)
    return torch.cat([rgb, (cls + 1).to(torch.uint8)[:, None]], 1).view(torch.int32).squeeze(1)


def _draw(canvas: torch.Tensor, value: torch.Tensor, cls: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
          r: torch.Tensor, r_max: float, active: torch.Tensor | None = None) -> None:
    """Paint one shape per scene with its packed value (n,) into canvas (n,S*S) int32, in place.

    Only a window of side ~2 r_max around each shape is tested (every shape lies within r of its
    centre, and centres lie at least r from the border), which keeps the work per scene small.
    """
    n, size = canvas.shape[0], math.isqrt(canvas.shape[1])
    w = min(size, math.ceil(2 * r_max) + 3)
    offs = torch.arange(w)
    x0 = (cx.floor().long() - w // 2).clamp(0, size - w)
    y0 = (cy.floor().long() - w // 2).clamp(0, size - w)
    xs, ys = x0[:, None] + offs, y0[:, None] + offs  # (n,w) pixel columns / rows of the window
    u = ((xs + 0.5 - cx[:, None]) / r[:, None])[:, None, :]  # (n,1,w): the tests broadcast
    v = ((ys + 0.5 - cy[:, None]) / r[:, None])[:, :, None]  # (n,w,1)
    inside = _inside(u, v, cls, active)
    flat = (ys[:, :, None] * size + xs[:, None, :]).view(n, w * w)
    current = canvas.gather(1, flat)
    canvas.scatter_(1, flat, torch.where(inside.view(n, w * w), value[:, None], current))


def _standard_chunk(g: torch.Generator, n: int, size: int, k: int) -> tuple[torch.Tensor, ...]:
    """Up to two smaller distractors of other classes, then the main shape on top."""
    s = float(size)
    bg = torch.rand(n, 3, generator=g)
    cls = torch.randint(k, (n,), generator=g)
    r = _uniform(g, 0.16 * s, 0.30 * s, n)
    cx, cy = _uniform(g, r, s - r, n), _uniform(g, r, s - r, n)
    n_distract = torch.randint(3, (n,), generator=g) if k > 1 else torch.zeros(n, dtype=torch.long)
    canvas = _pack(bg, torch.full((n,), -1))[:, None].repeat(1, size * size)
    for j in range(2):
        d_cls = torch.remainder(cls + torch.randint(1, max(k, 2), (n,), generator=g), k)  # never the main class
        d_r = _uniform(g, 0.07 * s, 0.12 * s, n)
        d_cx, d_cy = _uniform(g, d_r, s - d_r, n), _uniform(g, d_r, s - d_r, n)
        d_value = _pack(_contrasting(g, bg), d_cls)
        _draw(canvas, d_value, d_cls, d_cx, d_cy, d_r, 0.12 * s, active=n_distract > j)
    _draw(canvas, _pack(_contrasting(g, bg), cls), cls, cx, cy, r, 0.30 * s)
    target = torch.stack([cx / s, cy / s, 2 * r / s], dim=1)
    return canvas, cls, target


def _ambiguous_chunk(g: torch.Generator, n: int, size: int, k: int) -> tuple[torch.Tensor, ...]:
    """Two identical, non-overlapping objects (layers 1, 2); the target is one of them at random."""
    s = float(size)
    bg = torch.rand(n, 3, generator=g)
    cls = torch.randint(k, (n,), generator=g)
    r = _uniform(g, 0.12 * s, 0.20 * s, n)
    colour = _contrasting(g, bg)
    # Rejection sampling, vectorized: several candidate pairs per scene, keep the first pair far
    # enough apart not to overlap (shapes lie within r of their centre); a corner pair otherwise.
    tries = 16
    lo, hi = r[:, None, None], (s - r)[:, None, None]
    p = lo + (hi - lo) * torch.rand(n, tries, 4, generator=g)  # x1, y1, x2, y2
    ok = torch.hypot(p[..., 0] - p[..., 2], p[..., 1] - p[..., 3]) >= 2.2 * r[:, None]
    chosen = p[torch.arange(n), ok.float().argmax(1)]
    fallback = torch.stack([r, r, s - r, s - r], dim=1)
    chosen = torch.where(ok.any(1)[:, None], chosen, fallback)
    canvas = _pack(bg, torch.full((n,), -1))[:, None].repeat(1, size * size)
    value = _pack(colour, cls)
    _draw(canvas, value, cls, chosen[:, 0], chosen[:, 1], r, 0.20 * s)
    _draw(canvas, value, cls, chosen[:, 2], chosen[:, 3], r, 0.20 * s)
    pick = torch.randint(2, (n,), generator=g).bool()
    tx = torch.where(pick, chosen[:, 2], chosen[:, 0])
    ty = torch.where(pick, chosen[:, 3], chosen[:, 1])
    target = torch.stack([tx / s, ty / s, 2 * r / s], dim=1)
    return canvas, cls, target


def _noise_lut(noise: float) -> np.ndarray:
    """Pixel noise as a lookup: lut[(v << 8) | b] = clip(v + q[b], 0, 255) for a grey value v and a
    random byte b, with q 256 equiprobable Gaussian quantiles of std noise*255. One table lookup
    per pixel value is several times cheaper than a float normal draw, an add and a clip."""
    p = (torch.arange(256, dtype=torch.float64) + 0.5) / 256
    q = math.sqrt(2.0) * torch.erfinv(2 * p - 1)
    q = (q / q.std(unbiased=False) * noise * 255.0).round()  # exactly unit variance despite the cut tails
    return (torch.arange(256, dtype=torch.float64)[:, None] + q[None, :]).clamp(0, 255).to(torch.uint8).numpy().ravel()


@contextmanager
def _one_thread() -> Iterator[None]:
    """The per-chunk ops are small: intra-op threads gain little on an idle machine and, under CPU
    contention, OpenMP barriers made generation several times slower (measured on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generate(n: int, size: int = 32, *, seed: int = 0, split: str = "train", num_classes: int = 0,
             noise: float = 0.05, variant: str = "standard") -> dict[str, torch.Tensor]:
    """Generate n scenes. Returns images uint8 (n,3,size,size), masks uint8 (n,size,size),
    labels int64 (n,), targets float32 (n,3) = (x, y, size) of the main shape / the chosen object."""
    with _one_thread():
        return _generate(n, size, seed, split, num_classes, noise, variant)


def _generate(n: int, size: int, seed: int, split: str, num_classes: int, noise: float,
              variant: str) -> dict[str, torch.Tensor]:
    k = num_classes or len(SHAPES)
    chunk_fn = _ambiguous_chunk if variant == "ambiguous" else _standard_chunk
    g = torch.Generator().manual_seed(derive_seed(seed, _SPLIT_STREAM[split], 0x5A))
    rng = np.random.Generator(np.random.PCG64(derive_seed(seed, _SPLIT_STREAM[split], 0x5B)))
    lut = _noise_lut(noise) if noise > 0 else None
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    masks = torch.empty(n, size, size, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    targets = torch.empty(n, 3, dtype=torch.float32)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        canvas, cls, target = chunk_fn(g, m, size, k)
        pixels = canvas.view(torch.uint8).view(m, size, size, 4).numpy()  # R, G, B, class+1 (0 = background)
        rgb = pixels[..., :3].transpose(0, 3, 1, 2)  # NCHW view
        out = images[start:start + m].numpy()
        if lut is not None:
            index = np.left_shift(rgb, 8, dtype=np.uint16, order="C")
            index |= np.frombuffer(rng.bytes(index.size), np.uint8).reshape(index.shape)
            np.take(lut, index, out=out)
        else:
            out[...] = rgb
        masks[start:start + m].numpy()[...] = pixels[..., 3]
        labels[start:start + m] = cls
        targets[start:start + m] = target
    return {"images": images, "masks": masks, "labels": labels, "targets": targets}


def _split(cfg: Any, task: str, split: str, n: int, size: int) -> TensorSplit:
    scenes = generate(n, size, seed=int(cfg.seed), split=split, num_classes=int(cfg.num_classes),
                      noise=float(cfg.noise), variant=str(cfg.variant))
    targets = {"classification": scenes["labels"], "segmentation": scenes["masks"],
               "regression": scenes["targets"]}[task]
    return TensorSplit(scenes["images"], targets)


@register("shapes", ("classification", "segmentation", "regression"))
def build_shapes(cfg: Any, task: str) -> Source:
    size = int(cfg.image_size) or 32
    k = int(cfg.num_classes) or len(SHAPES)
    if size < 8:
        raise ConfigError(f"data.image_size={size} is too small for shapes; use 8 or more (default 32)")
    if k > len(SHAPES):
        raise ConfigError(f"data.num_classes={k}: shapes has {len(SHAPES)} shape classes; use 0 (all) or 1..{len(SHAPES)}")
    if int(cfg.num_train) <= 0 or int(cfg.num_val) <= 0:
        raise ConfigError("shapes needs data.num_train > 0 and data.num_val > 0 (scenes to generate)")
    names = list(SHAPES[:k])
    seg = task == "segmentation"
    return Source(
        train=_split(cfg, task, "train", int(cfg.num_train), size),
        val=_split(cfg, task, "val", int(cfg.num_val), size),
        in_channels=3,
        image_size=size,
        num_classes=(k + 1 if seg else k) if task != "regression" else 0,
        target_dim=3 if task == "regression" else 0,
        class_names=(["background"] + names if seg else names) if task != "regression" else [],
        target_names=list(TARGET_NAMES) if task == "regression" else [],
        test=lambda: _split(cfg, task, "test", int(cfg.num_val), size),
    )
