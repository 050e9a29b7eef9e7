"""U-Net (Ronneberger et al. 2015): an encoder of double 3x3 convs and 2x down-sampling, a decoder
that up-samples, concatenates the encoder's map of the same level and applies a double conv, and a
1x1 conv to the outputs. Widths base * 2^level (64..1024 at the defaults).

Up-sampling (model.up):
- transposed: 2x2 transposed conv halving the channels, decoder widths as the encoder's
  (31,037,698 params for 3 -> 2 channels with batch norm);
- bilinear: interpolation, the bottom and decoder widths halved, the first conv of each decoder
  double conv at the lower width (17,263,042 params);
- maxunpool: a 1x1 conv to the level's width, then max-unpooling at the encoder's pooling indices
  (needs model.down=maxpool; any other down-sampling raises ConfigError at build).

Sizes: with padded convs (model.padding=true) the output has the input's size, which must be
divisible by 2^depth; any other size raises ConfigError naming the nearest valid sizes (no silent
pad-and-crop). model.padding=false is the paper's unpadded net (572 px in -> 388 px out): it can
only serve non-dense tasks. Conv biases are used only when norm=none (the paper's net).

dense=True returns (N, num_outputs, H, W); dense=False returns the global average of that final
map, (N, num_outputs), so a U-Net can also serve classification or regression.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from vaitrain.errors import ConfigError
from vaitrain.models.layers import make_act, make_down, make_dropout, make_norm, make_up, scaled


class DoubleConv(nn.Sequential):
    """(3x3 conv -> norm -> act) twice."""

    def __init__(self, cin: int, cout: int, norm_cfg: Any, act: str, padding: bool,
                 mid: Optional[int] = None) -> None:
        mid = mid or cout
        bias = getattr(norm_cfg, "name", "batch") == "none"
        pad = 1 if padding else 0
        super().__init__(
            nn.Conv2d(cin, mid, 3, padding=pad, bias=bias), make_norm(norm_cfg, mid), make_act(act),
            nn.Conv2d(mid, cout, 3, padding=pad, bias=bias), make_norm(norm_cfg, cout), make_act(act),
        )


def _center_crop(x: Tensor, h: int, w: int) -> Tensor:
    dh, dw = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., dh:dh + h, dw:dw + w]


def unpadded_out_size(size: int, depth: int) -> Optional[int]:
    """Output size of the unpadded U-Net for an input size, or None if a pooling gets an odd size."""
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4
    for _ in range(depth):
        size = size * 2 - 4
    return size if size > 0 else None


class UNet(nn.Module):
    final_layer = "outc"

    def __init__(self, cfg: Any, norm_cfg: Any, in_channels: int, num_outputs: int,
                 dense: bool = True) -> None:
        super().__init__()
        self.dense = dense
        depth, up = int(cfg.depth), cfg.up
        if depth < 1:
            raise ConfigError(f"model.depth={depth} must be >= 1 for a U-Net")
        self.depth, self.padding, self.up_kind = depth, bool(cfg.padding), up
        unpool = up == "maxunpool"
        if unpool and cfg.down != "maxpool":
            raise ConfigError(f"model.up=maxunpool needs the encoder's max-pooling indices, but "
                              f"model.down={cfg.down}: set model.down=maxpool or choose "
                              "model.up=transposed|bilinear")
        widths = [scaled(cfg.base_width, cfg.width_mult) * 2 ** i for i in range(depth + 1)]
        block = lambda cin, cout, mid=None: DoubleConv(cin, cout, norm_cfg, cfg.act, self.padding, mid)
        self.inc = block(in_channels, widths[0])
        self.downs = nn.ModuleList()
        self.pools = nn.ModuleList()
        halve = up == "bilinear"  # bilinear: bottom and decoder widths halved
        for i in range(1, depth + 1):
            cout = widths[i] // 2 if halve and i == depth else widths[i]
            self.pools.append(make_down(cfg.down, widths[i - 1], return_indices=unpool))
            self.downs.append(block(widths[i - 1], cout))
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for i in reversed(range(depth)):
            if halve:
                self.ups.append(make_up(up, widths[i], widths[i]))
                cout = widths[i - 1] if i > 0 else widths[0]
                self.up_convs.append(block(widths[i + 1], cout, widths[i]))
            else:
                self.ups.append(make_up(up, widths[i + 1], widths[i]))
                self.up_convs.append(block(widths[i + 1], widths[i]))
        self.dropout = make_dropout(cfg.dropout, cfg.act)
        self.outc = nn.Conv2d(widths[0], num_outputs, 1)

    def check_size(self, size: int) -> None:
        """Raise ConfigError unless an input of size x size px fits this U-Net's poolings."""
        if self.padding:
            m = 2 ** self.depth
            if size % m == 0 and size > 0:
                return
            lo, hi = (size // m) * m, (size // m + 1) * m
            near = " or ".join(str(s) for s in (lo, hi) if s > 0)
            raise ConfigError(f"image size {size} px does not fit a U-Net of depth {self.depth} (the "
                              f"size must be divisible by 2^{self.depth}={m}): use data.image_size={near}")
        if unpadded_out_size(size, self.depth) is not None:
            return
        valid = [s for s in range(max(1, size - 64), size + 65) if unpadded_out_size(s, self.depth)]
        near = sorted(valid, key=lambda s: abs(s - size))[:2]
        raise ConfigError(f"image size {size} px does not fit the unpadded U-Net of depth {self.depth} "
                          f"(a pooling would get an odd size): use data.image_size="
                          f"{' or '.join(map(str, sorted(near)))}")

    def forward_map(self, x: Tensor) -> Tensor:
        """The final map (N, num_outputs, H', W'); H' = H with padded convs."""
        skips, indices = [], []
        x = self.inc(x)
        for pool, down in zip(self.pools, self.downs):
            skips.append(x)
            if self.up_kind == "maxunpool":
                x, idx = pool(x)
                indices.append(idx)
            else:
                x = pool(x)
            x = down(x)
        for up, conv in zip(self.ups, self.up_convs):
            skip = skips.pop()
            x = up(x, indices.pop() if indices else None)
            if not self.padding:
                skip = _center_crop(skip, x.shape[-2], x.shape[-1])
            x = conv(torch.cat([skip, x], 1))
        return self.outc(self.dropout(x))

    def forward(self, x: Tensor) -> Tensor:
        if self.padding:
            for size in x.shape[-2:]:
                if size % 2 ** self.depth:
                    self.check_size(int(size))
        out = self.forward_map(x)
        return out if self.dense else out.mean((2, 3))


def build_unet(cfg: Any, norm_cfg: Any, *, in_channels: int, num_outputs: int,
               image_size: int, dense: bool = False) -> nn.Module:
    if dense and not cfg.padding:
        raise ConfigError("model.padding=false gives an output smaller than the input (572 -> 388 px) "
                          "but dense tasks need the input's size: use model.padding=true")
    model = UNet(cfg, norm_cfg, in_channels, num_outputs, dense)
    model.check_size(int(image_size))
    return model
