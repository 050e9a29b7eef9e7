"""Per-sample augmentation of whole batches on the training device, and normalization.

Every random parameter is drawn on the host from a generator seeded by (seed, epoch), one value
per epoch position (`draw`), so a sample's augmentation is fixed by where it falls in the epoch:
the same seed gives the same batches, on any device and any number of ranks, and a resumed run
reproduces them. The batch work then runs on the device with no Python per sample:

- geometry (`geometric`): RandomResizedCrop (torchvision's box sampling, resized by
  torchvision.ops.roi_align, masks by nearest neighbour at the same points), then a window of the
  zero-padded image (`data.crop`, `data.crop_padding`) seen through a per-sample flip / vertical
  flip / multiple of 90 degrees, as one gather. Masks go through the same maps; any pixel that
  comes from outside the image is `ignore_index` in a mask (0 in an image).
- photometric (`photometric`, uint8 in and out): TrivialAugmentWide with one op and magnitude per
  sample (torchvision's op table and formulas; the geometric ops move masks too), then colour
  jitter (brightness, contrast, saturation, hue, in that order, one factor per sample).
- random erasing (`erase`) on the normalized batch: a rectangle per chosen sample set to 0 (the
  training mean), as torchvision's RandomErasing(value=0) does.

Why not a library call per batch: torchvision.transforms.v2 draws one set of parameters per call
(a Python loop per sample would be needed: 11 ms for TrivialAugmentWide, 36 ms for ColorJitter,
7.8 ms for RandomResizedCrop per 128 images of 32 px on one CPU thread, and one kernel launch per
sample and op on a GPU); kornia.augmentation samples per sample but its TrivialAugment picks one
op for the whole batch, its ColorJitter costs 10.8 ms here, and it draws from the global RNG. The
ops below reuse torchvision's batched kernels where they take no parameter (equalize,
autocontrast, grayscale, HSV conversion) and are tested against torchvision's per-image functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# TrivialAugmentWide (Mueller & Hutter 2021) as torchvision defines it: name, magnitudes of the
# 31 bins (None: no magnitude), signed (a random sign per sample).
_BINS = 31
TRIVIAL_OPS: tuple[tuple[str, torch.Tensor | None, bool], ...] = (
    ("Identity", None, False),
    ("ShearX", torch.linspace(0.0, 0.99, _BINS), True),
    ("ShearY", torch.linspace(0.0, 0.99, _BINS), True),
    ("TranslateX", torch.linspace(0.0, 32.0, _BINS), True),
    ("TranslateY", torch.linspace(0.0, 32.0, _BINS), True),
    ("Rotate", torch.linspace(0.0, 135.0, _BINS), True),
    ("Brightness", torch.linspace(0.0, 0.99, _BINS), True),
    ("Color", torch.linspace(0.0, 0.99, _BINS), True),
    ("Contrast", torch.linspace(0.0, 0.99, _BINS), True),
    ("Sharpness", torch.linspace(0.0, 0.99, _BINS), True),
    ("Posterize", (8 - (torch.arange(_BINS) / ((_BINS - 1) / 6)).round()).float(), False),
    ("Solarize", torch.linspace(255.0, 0.0, _BINS), False),
    ("AutoContrast", None, False),
    ("Equalize", None, False),
)
_OP = {name: k for k, (name, _, _) in enumerate(TRIVIAL_OPS)}
_GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


@dataclass
class AugmentSpec:
    """What the training batches get (built from the data config by build_data)."""

    pad: int = 0  # zero padding before the random window (crop_padding)
    flip: bool = False  # horizontal
    vflip: bool = False
    rotate: bool = False  # random multiples of 90 degrees (square windows)
    crop: int = 0  # window side; 0 = the image's
    resized_crop: bool = False
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    trivial: bool = False  # TrivialAugmentWide
    jitter: float = 0.0  # brightness/contrast/saturation factors in [max(0, 1-j), 1+j]
    hue: float = 0.0  # hue shift in [-hue, hue] (<= 0.5)
    erasing: float = 0.0  # probability per sample
    geometry: bool = True  # false for regression: nothing that moves pixels (the targets would move)
    ignore_index: int = 255  # masks: the label of pixels from outside the image

    @property
    def windowed(self) -> bool:
        """Whether the geometric stage (resized crop, window, flips, rotation) runs."""
        return self.geometry and (self.pad > 0 or self.flip or self.vflip or self.rotate or self.crop > 0
                                  or self.resized_crop)

    @property
    def active(self) -> bool:
        return self.windowed or self.jitter > 0 or self.hue > 0 or self.erasing > 0 or self.trivial

    def out_size(self, size: int) -> int:
        return self.crop or size

    def total_pad(self, size: int) -> int:
        """Padding around the (resized-crop) image so the window fits."""
        if self.resized_crop:
            return 0
        return max(self.pad, -(-(self.out_size(size) - size) // 2))


@dataclass
class Params:
    """Per-position parameters (first dim = positions). Slicing selects positions."""

    t: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, sl: slice | torch.Tensor) -> "Params":
        return Params({k: v[sl] for k, v in self.t.items()})

    def to(self, device: torch.device) -> "Params":
        return Params({k: v.to(device, non_blocking=True) for k, v in self.t.items()})


def draw(spec: AugmentSpec, n: int, size: int, g: torch.Generator) -> Params:
    """Parameters for n positions of images of side `size`, from the host generator g."""
    p: dict[str, torch.Tensor] = {}
    s = spec.out_size(size)
    if spec.geometry:
        if spec.resized_crop:
            p["box"] = _rrc_boxes(n, size, spec.rrc_scale, spec.rrc_ratio, g)
        span = size + 2 * spec.total_pad(size) - s if not spec.resized_crop else 0
        p["dy"] = torch.randint(0, span + 1, (n,), generator=g)
        p["dx"] = torch.randint(0, span + 1, (n,), generator=g)
        p["flip"] = _coin(n, spec.flip, g)
        p["vflip"] = _coin(n, spec.vflip, g)
        p["rot"] = torch.randint(0, 4, (n,), generator=g) if spec.rotate else torch.zeros(n, dtype=torch.int64)
    if spec.trivial:
        op = torch.randint(0, len(TRIVIAL_OPS), (n,), generator=g)
        if not spec.geometry:  # regression: geometric ops would move the targets: identity instead
            op = torch.where(torch.isin(op, torch.tensor([_OP[o] for o in _GEOMETRIC_OPS])), 0, op)
        bins = torch.randint(0, _BINS, (n,), generator=g)
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        mag = torch.zeros(n)
        for k, (_, table, signed) in enumerate(TRIVIAL_OPS):
            if table is not None:
                mag = torch.where(op == k, table[bins] * (sign if signed else 1.0), mag)
        p["op"], p["mag"] = op, mag
    if spec.jitter > 0 or spec.hue > 0:
        lo, hi = max(0.0, 1 - spec.jitter), 1 + spec.jitter
        p["jitter"] = torch.empty(n, 3).uniform_(lo, hi, generator=g)
        p["hue"] = torch.empty(n).uniform_(-spec.hue, spec.hue, generator=g)
    if spec.erasing > 0:
        p["erase"] = torch.rand(n, generator=g) < spec.erasing
        p["erase_box"] = _erase_boxes(n, s, g)
    return Params(p)


def _coin(n: int, on: bool, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < 0.5 if on else torch.zeros(n, dtype=torch.bool)


def _boxes(n: int, size: int, scale: tuple[float, float], ratio: tuple[float, float], g: torch.Generator,
           tries: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's box sampling vectorized: area fraction uniform in `scale`, aspect log-uniform
    in `ratio`, the first of `tries` draws that fits; (h, w) ints and whether one fitted."""
    area = float(size * size)
    target = area * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=g)
    aspect = torch.exp(torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g))
    w = torch.sqrt(target * aspect).round().long()
    h = torch.sqrt(target / aspect).round().long()
    ok = (w > 0) & (h > 0) & (w <= size) & (h <= size)
    first = torch.where(ok.any(1), ok.float().argmax(1), 0)
    pick = torch.arange(n)
    return h[pick, first], w[pick, first], ok.any(1)


def _rrc_boxes(n: int, size: int, scale: tuple[float, float], ratio: tuple[float, float],
               g: torch.Generator) -> torch.Tensor:
    """(n, 4) boxes top, left, h, w of RandomResizedCrop (fallback: the whole square image)."""
    h, w, ok = _boxes(n, size, scale, ratio, g)
    h, w = torch.where(ok, h, size), torch.where(ok, w, size)
    top = (torch.rand(n, generator=g) * (size - h + 1)).long()
    left = (torch.rand(n, generator=g) * (size - w + 1)).long()
    return torch.stack([top, left, h, w], 1)


def _erase_boxes(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """(n, 4) top, left, h, w of RandomErasing's rectangle (scale 0.02-0.33, ratio 0.3-3.3);
    h = w = 0 (nothing erased) when no draw fits, as torchvision does."""
    h, w, ok = _boxes(n, size, (0.02, 0.33), (0.3, 3.3), g)
    h, w = torch.where(ok, h, 0), torch.where(ok, w, 0)
    top = (torch.rand(n, generator=g) * (size - h + 1)).long()
    left = (torch.rand(n, generator=g) * (size - w + 1)).long()
    return torch.stack([top, left, h, w], 1)


# ---------------------------------------------------------------------------------- geometry

def geometric(x: torch.Tensor, y: torch.Tensor | None, p: Params, spec: AugmentSpec
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resized crop, window, flips and rotation of uint8 images (N,C,H,W) and masks (N,H,W)."""
    size = x.shape[-1]
    if spec.resized_crop:
        s = spec.out_size(size)
        x, y = resized_crop(x, y, p.t["box"], s, spec.ignore_index)
    pad = spec.total_pad(size)
    x = window(x, p, pad, spec.out_size(size), 0)
    if y is not None:
        y = window(y, p, pad, spec.out_size(size), spec.ignore_index)
    return x, y


def resized_crop(x: torch.Tensor, y: torch.Tensor | None, box: torch.Tensor, s: int, ignore_index: int
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each sample's box (top, left, h, w) resized to s x s: images bilinearly with averaging over
    the box's pixels (roi_align, adaptive sampling), masks by nearest neighbour at the bin centres."""
    n = x.shape[0]
    top, left, h, w = (box[:, i].to(torch.float32) for i in range(4))
    rois = torch.stack([torch.arange(n, device=x.device, dtype=torch.float32), left, top, left + w, top + h], 1)
    from torchvision.ops import roi_align  # imported on first use: torchvision costs ~1 CPU s to import

    out = roi_align(x.float(), rois, (s, s), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    x = out.round_().clamp_(0, 255).to(torch.uint8)
    if y is not None:
        centre = (torch.arange(s, device=y.device, dtype=torch.float32) + 0.5) / s
        rows = (top[:, None] + centre[None] * h[:, None]).long().clamp_(max=y.shape[-2] - 1)
        cols = (left[:, None] + centre[None] * w[:, None]).long().clamp_(max=y.shape[-1] - 1)
        index = (rows[:, :, None] * y.shape[-1] + cols[:, None, :]).view(n, s * s)
        y = y.reshape(n, -1).gather(1, index).view(n, s, s)
    return x, y


def window(x: torch.Tensor, p: Params, pad: int, s: int, fill: int) -> torch.Tensor:
    """Output pixel (i, j) of sample n is pixel (u + dy, v + dx) of the input padded by `pad`
    with `fill`, where (u, v) undoes the sample's rotation by rot*90 degrees (as torch.rot90),
    vertical and horizontal flip of the s x s window. One gather over the flattened planes."""
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(1)
    n, c = x.shape[:2]
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), value=fill)
    hp, wp = x.shape[-2:]
    dev = x.device
    i = torch.arange(s, device=dev).view(1, s, 1).expand(n, s, s)
    j = torch.arange(s, device=dev).view(1, 1, s).expand(n, s, s)
    k = p.t["rot"].view(n, 1, 1)
    last = s - 1
    # rot90 k times: out[i, j] = a[j, last - i] (k=1), a[last - i, last - j] (k=2), a[last - j, i] (k=3)
    u = torch.where(k == 0, i, torch.where(k == 1, j, torch.where(k == 2, last - i, last - j)))
    v = torch.where(k == 0, j, torch.where(k == 1, last - i, torch.where(k == 2, last - j, i)))
    u = torch.where(p.t["vflip"].view(n, 1, 1), last - u, u) + p.t["dy"].view(n, 1, 1)
    v = torch.where(p.t["flip"].view(n, 1, 1), last - v, v) + p.t["dx"].view(n, 1, 1)
    index = (u * wp + v).view(n, 1, s * s).expand(n, c, s * s)
    x = x.reshape(n, c, -1).gather(2, index).view(n, c, s, s)
    return x.squeeze(1) if squeeze else x


# ------------------------------------------------------------------------------- photometric

def photometric(x: torch.Tensor, y: torch.Tensor | None, p: Params, spec: AugmentSpec, groups: list | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """TrivialAugmentWide, then colour jitter, on uint8 images. `groups`: per op, the batch rows
    that drew it (device index tensor) or None (see trivial_groups)."""
    if spec.trivial and groups is not None:
        x, y = trivial_augment(x, y, p.t["mag"], groups, spec.ignore_index)
    if "jitter" in p.t:
        x = color_jitter(x, p.t["jitter"], p.t["hue"] if spec.hue > 0 else None)
    return x, y


def trivial_groups(op: torch.Tensor) -> tuple[torch.Tensor, list[list[int]]]:
    """From the host's op per (batch, row): each batch's rows sorted by op, and per batch the
    number of rows of each op — so the device gets one index tensor per epoch and each op's rows
    are a slice of it (no device sync to find them)."""
    order = torch.argsort(op, dim=-1, stable=True)
    counts = [torch.bincount(row, minlength=len(TRIVIAL_OPS)).tolist() for row in op.view(-1, op.shape[-1])]
    return order, counts


def trivial_augment(x: torch.Tensor, y: torch.Tensor | None, mag: torch.Tensor, groups: list,
                    ignore_index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = x.clone()
    y = y.clone() if y is not None else None
    for k, rows in enumerate(groups):
        name = TRIVIAL_OPS[k][0]
        if rows is None or name == "Identity":
            continue
        sub, m = x.index_select(0, rows), mag.index_select(0, rows)
        if name in _GEOMETRIC_OPS:
            theta = _trivial_matrix(name, m, sub.shape[-2], sub.shape[-1])
            sub = affine(sub, theta, 0)
            if y is not None:
                y.index_copy_(0, rows, affine(y.index_select(0, rows), theta, ignore_index))
        else:
            sub = _color_op(name, sub, m)
        x.index_copy_(0, rows, sub)
    return x, y


def _trivial_matrix(name: str, m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """torchvision's inverse affine matrices (pixel units, origin at the image centre) for the
    op with per-sample magnitudes m: what F.affine / F.rotate build for one image."""
    zero = torch.zeros_like(m)
    if name == "Rotate":
        return inverse_affine(-m, zero, zero, zero, zero, zero, zero)
    if name in ("ShearX", "ShearY"):  # shear about the top-left corner
        deg = torch.rad2deg(torch.atan(m))
        sx, sy = (deg, zero) if name == "ShearX" else (zero, deg)
        return inverse_affine(zero, zero, zero, sx, sy, zero - w * 0.5, zero - h * 0.5)
    t = torch.trunc(m)  # int(magnitude)
    tx, ty = (t, zero) if name == "TranslateX" else (zero, t)
    return inverse_affine(zero, tx, ty, zero, zero, zero, zero)


def inverse_affine(angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, shear_x: torch.Tensor,
                   shear_y: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """(N,2,3) output->input maps, torchvision's _get_inverse_affine_matrix (scale 1) per sample;
    angles in degrees, centre (cx, cy) relative to the image centre."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    return torch.stack([torch.stack([m0, m1, m2], 1), torch.stack([m3, m4, m5], 1)], 1)


def affine(x: torch.Tensor, theta: torch.Tensor, fill: int) -> torch.Tensor:
    """Nearest-neighbour warp of uint8 images (N,C,H,W) or masks (N,H,W) by the (N,2,3) inverse
    maps, built as torchvision's _affine_grid does; outside pixels become `fill`."""
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(1)
    n, c, h, w = x.shape
    dev = x.device
    base = torch.ones(h, w, 3, device=dev)
    base[..., 0] = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=dev)
    base[..., 1] = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=dev).unsqueeze(-1)
    scaled = theta.to(dev, torch.float32).transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], device=dev)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(scaled).view(n, h, w, 2)
    xf = x.float()
    if fill:  # sample a validity plane with the pixels, fill where it is 0
        xf = torch.cat([xf, torch.ones(n, 1, h, w, device=dev)], 1)
    out = F.grid_sample(xf, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if fill:
        out = torch.where(out[:, -1:] > 0.5, out[:, :-1], float(fill))
    out = out.round_().to(torch.uint8)
    return out.squeeze(1) if squeeze else out


def _per(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1).float()


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend for uint8 with a ratio per sample: truncated, clamped to [0, 255]."""
    return (a.float() * _per(ratio) + b * (1.0 - _per(ratio))).clamp_(0, 255).to(torch.uint8)


def _gray(x: torch.Tensor) -> torch.Tensor:
    import torchvision.transforms.v2.functional as TF

    return x.float() if x.shape[1] == 1 else TF.rgb_to_grayscale(x.float(), 1).floor_()


def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros((), device=x.device), f)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else _blend(x, _gray(x), f)


def sharpness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the 3x3 smoothed image inside a 1-pixel border (the border is kept)."""
    c = x.shape[1]
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13.0
    out = x.float()
    blurred = F.conv2d(out, kernel.expand(c, 1, 3, 3), groups=c).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.add_((blurred - inner) * (1.0 - _per(f)))
    return out.clamp_(0, 255).to(torch.uint8)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    b = bits.round().long().view(-1, 1, 1, 1)
    mask = (((1 << b) - 1) << (8 - b)).to(torch.uint8)
    return x & mask


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(x.float() >= _per(threshold), 255 - x, x)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Hue rotation per sample through torchvision's batched RGB <-> HSV conversion."""
    if x.shape[1] == 1:
        return x
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    hsv = _rgb_to_hsv(x.float() / 255.0)
    h, s, v = hsv.unbind(1)
    h = (h + shift.view(-1, 1, 1).float()).remainder_(1.0)
    rgb = _hsv_to_rgb(torch.stack((h, s, v), 1))
    return rgb.mul_(255.0 + 1.0 - 1e-3).to(torch.uint8)


def _color_op(name: str, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    if name == "Brightness":
        return brightness(x, 1.0 + m)
    if name == "Color":
        return saturation(x, 1.0 + m)
    if name == "Contrast":
        return contrast(x, 1.0 + m)
    if name == "Sharpness":
        return sharpness(x, 1.0 + m)
    if name == "Posterize":
        return posterize(x, m)
    if name == "Solarize":
        return solarize(x, m)
    import torchvision.transforms.v2.functional as TF

    if name == "AutoContrast":
        return TF.autocontrast(x)
    if name == "Equalize":
        return TF.equalize(x)
    raise AssertionError(name)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """Brightness, contrast, saturation (factors[:, 0..2]) and hue shift (None: none), per sample."""
    x = brightness(x, factors[:, 0])
    x = contrast(x, factors[:, 1])
    x = saturation(x, factors[:, 2])
    return hue(x, shift) if shift is not None else x


def erase(x: torch.Tensor, on: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Set each chosen sample's rectangle (top, left, h, w) of a float batch to 0."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left, bh, bw = (box[:, i].view(n, 1, 1) for i in range(4))
    inside = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw) & on.view(n, 1, 1)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


# ----------------------------------------------------------------------------- normalization

def normalizer(mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with x_float = x_uint8 * scale - shift == (x/255 - mean) / std.
    mean/std have shape (C,) (per channel) or (C,H,W) (per pixel)."""
    mean = mean.to(device=device, dtype=torch.float32)
    std = std.to(device=device, dtype=torch.float32)
    if mean.dim() == 1:
        mean, std = mean[:, None, None], std[:, None, None]
    return 1.0 / (255.0 * std), mean / std


def normalize(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 (N,C,H,W) -> float32 normalized, contiguous NCHW."""
    return x.float().mul_(scale).sub_(shift)
