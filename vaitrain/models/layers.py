"""Layer factories: every norm, activation, down/up-sampling layer and init is chosen by a short
string here, so models never hard-code nn.BatchNorm2d or nn.ReLU.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from vaitrain import registry
from vaitrain.errors import ConfigError

# The names each factory below accepts (one list per kind, in vaitrain/registry.py).
NORMS = registry.NORMS.names
ACTS = registry.ACTIVATIONS.names
DOWNS = registry.DOWNS.names
UPS = registry.UPS.names
INITS = registry.INITS.names
DISTS = registry.INIT_DISTS.names


def _get(cfg: Any, key: str, default: Any) -> Any:
    """Read a field from a dataclass, DictConfig or None alike."""
    return default if cfg is None else getattr(cfg, key, default)


def _choice(kind: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{kind}={value} is not a valid choice; choose one of: {', '.join(valid)}")


# --------------------------------------------------------------------------------------------
# Normalization

# While a model is being built, group-norm mismatches are collected here instead of raised at the
# first layer, so that the error can suggest a group count that divides *every* layer's channels.
_group_mismatches: Optional[list[int]] = None
_group_channels: Optional[list[int]] = None


@contextlib.contextmanager
def collect_group_norm_errors(groups: int) -> Iterator[None]:
    """Within this block make_norm records group/channel mismatches; on exit one ConfigError
    names every offending channel count and the group counts that divide all normalized layers."""
    global _group_mismatches, _group_channels
    outer = (_group_mismatches, _group_channels)
    _group_mismatches, _group_channels = [], []
    try:
        yield
        bad, seen = _group_mismatches, _group_channels
    finally:
        _group_mismatches, _group_channels = outer
    if bad:
        raise ConfigError(_group_message(groups, sorted(set(bad)), seen))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _group_message(groups: int, bad: list[int], channels: list[int]) -> str:
    g = math.gcd(*channels) if channels else bad[0]
    fits = ", ".join(str(d) for d in _divisors(g) if d <= 64)
    shown = ", ".join(str(c) for c in bad[:6]) + (", ..." if len(bad) > 6 else "")
    return (f"norm=group: norm.groups={groups} does not divide the channel count {shown} of this "
            f"model's norm layers; use norm.groups in {{{fits}}} (divides every layer), or another norm")


def make_norm(norm_cfg: Any, channels: int, dims: int = 2) -> nn.Module:
    """Normalization layer for `channels` features chosen by norm_cfg.name.

    dims=2: maps (N, C, H, W); dims=1: feature vectors (N, C).
    layer = GroupNorm(1, C) for maps (LayerNorm over C for vectors); instance = GroupNorm(C, C):
    the same statistics and per-channel affine as InstanceNorm2d(affine=True), but it also works on
    1x1 maps. Instance norm of feature vectors is meaningless and raises ConfigError.
    """
    name = _get(norm_cfg, "name", "batch")
    eps = float(_get(norm_cfg, "eps", 1e-5))
    momentum = float(_get(norm_cfg, "momentum", 0.1))
    _choice("norm", name, NORMS)
    if name == "none":
        return nn.Identity()
    if name == "batch":
        cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        return cls(channels, eps=eps, momentum=momentum)
    if name == "layer":
        return nn.GroupNorm(1, channels, eps=eps) if dims == 2 else nn.LayerNorm(channels, eps=eps)
    if name == "instance":
        if dims != 2:
            raise ConfigError("norm=instance needs feature maps, and this layer has none (an MLP): "
                              "use norm=batch, layer, group or none")
        return nn.GroupNorm(channels, channels, eps=eps)
    groups = int(_get(norm_cfg, "groups", 8))
    if _group_channels is not None:
        _group_channels.append(channels)
    if channels % groups:
        if _group_mismatches is None:
            raise ConfigError(_group_message(groups, [channels], [channels]))
        _group_mismatches.append(channels)
        return nn.Identity()  # placeholder: the collector raises when the build ends
    return nn.GroupNorm(groups, channels, eps=eps)


# --------------------------------------------------------------------------------------------
# Activations

def make_act(name: str, inplace: bool = True) -> nn.Module:
    """Activation by name; in-place where the op allows it (as torchvision does, for speed)."""
    _choice("model.act", name, ACTS)
    if name == "relu":
        return nn.ReLU(inplace=inplace)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=inplace)
    if name == "elu":
        return nn.ELU(inplace=inplace)
    if name == "selu":
        return nn.SELU(inplace=inplace)
    return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}[name]()


def make_dropout(p: float, act: str) -> nn.Module:
    """Dropout before a final layer: AlphaDropout for SELU nets (keeps mean 0, variance 1)."""
    if p <= 0:
        return nn.Identity()
    return nn.AlphaDropout(p) if act == "selu" else nn.Dropout(p)


# --------------------------------------------------------------------------------------------
# Down- and up-sampling

def make_down(kind: str, channels: int, *, return_indices: bool = False) -> nn.Module:
    """A layer that halves H and W and keeps the channel count.

    maxpool / avgpool: 2x2 pooling, stride 2; strided: a learned 3x3 convolution with stride 2.
    return_indices (maxpool only) makes the layer return (output, indices) for max-unpooling.
    """
    _choice("model.down", kind, DOWNS)
    if return_indices and kind != "maxpool":
        raise ConfigError(f"model.up=maxunpool needs the encoder's max-pooling indices, but "
                          f"model.down={kind}: set model.down=maxpool or choose model.up=transposed|bilinear")
    if kind == "maxpool":
        return nn.MaxPool2d(2, 2, return_indices=return_indices)
    if kind == "avgpool":
        return nn.AvgPool2d(2, 2)
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False)


def halve(size: int, kind: str) -> int:
    """The output size of make_down(kind) for an input of `size` px (pooling floors)."""
    return (size + 1) // 2 if kind == "strided" else size // 2


def check_image_size(image_size: int, fits: Callable[[int], bool], what: str) -> None:
    """Raise ConfigError naming the smallest size that works unless `fits(image_size)`.
    `fits` must be monotone: a size that fits, and every larger one, down-samples to >= 1 px.
    Only pooling can reach 0 px (strided convs round up), hence the model.down=strided hint."""
    if fits(image_size):
        return
    smallest = next((s for s in range(1, 8193) if fits(s)), None)
    if smallest is None:  # pooled away at any size (plain_cnn down-sampling every layer)
        raise ConfigError(f"{what} down-samples even an 8192 px image to nothing: down-sample less often "
                          "(model.down_every, model.depth) or use model.down=strided")
    raise ConfigError(f"{what} down-samples a {image_size} px image to nothing: use data.image_size >= "
                      f"{smallest} or model.down=strided")


class TransposedUp(nn.Module):
    """2x up-sampling by a 2x2 transposed convolution, stride 2 (changes channels)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)

    def forward(self, x: Tensor, indices: Optional[Tensor] = None) -> Tensor:
        return self.up(x)


class BilinearUp(nn.Module):
    """2x bilinear interpolation (no parameters; channels unchanged)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, x: Tensor, indices: Optional[Tensor] = None) -> Tensor:
        return self.up(x)


class UnpoolUp(nn.Module):
    """Max-unpooling with the encoder's pooling indices; a 1x1 conv first maps the channels to the
    encoder level's count, since the indices are per channel of that level."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = (nn.Conv2d(in_channels, out_channels, 1, bias=False)
                       if in_channels != out_channels else nn.Identity())
        self.up = nn.MaxUnpool2d(2, 2)

    def forward(self, x: Tensor, indices: Optional[Tensor] = None) -> Tensor:
        if indices is None:
            raise ValueError("max-unpooling needs the pooling indices of the matching encoder level")
        return self.up(self.reduce(x), indices)


def make_up(kind: str, in_channels: int, out_channels: int) -> nn.Module:
    """A 2x up-sampling layer called as up(x, indices=None).

    transposed: in -> out channels; bilinear: channels unchanged (the caller's convs change them);
    maxunpool: in -> out channels by a 1x1 conv (if they differ), then unpooling at the indices.
    """
    _choice("model.up", kind, UPS)
    if kind == "transposed":
        return TransposedUp(in_channels, out_channels)
    if kind == "bilinear":
        return BilinearUp()
    return UnpoolUp(in_channels, out_channels)


def transposed_conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0,
                        output_padding: int = 0, dilation: int = 1) -> int:
    """Output size of a transposed convolution: (H-1)s - 2p + d(k-1) + output_padding + 1."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


# --------------------------------------------------------------------------------------------
# Initialization

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


def init_weights(model: nn.Module, init: str, dist: str = "normal") -> nn.Module:
    """Re-initialize every Linear/Conv weight; biases to zero. Norm layers keep weight 1, bias 0.

    default: leave the model's own init: PyTorch's (U(+-1/sqrt(fan_in)) for Linear/Conv: variance
    1/(3 fan_in)), except where the model sets its own (ImageNet-style ResNet: torchvision's He-normal fan_out convs).
    xavier: Glorot, Var = 2/(fan_in+fan_out) (equals the lecture's 1/fan_in for square layers);
    he: Var = 2/fan_in (ReLU gain); lecun: Var = 1/fan_in (with SELU: self-normalizing).
    dist: normal, or uniform with the same variance (bound sqrt(3 Var)).
    """
    _choice("model.init", init, INITS)
    _choice("model.init_dist", dist, DISTS)
    if init == "default":
        return model
    for m in model.modules():
        if not isinstance(m, _WEIGHTED) or m.weight is None:
            continue
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        var = {"xavier": 2.0 / (fan_in + fan_out), "he": 2.0 / fan_in, "lecun": 1.0 / fan_in}[init]
        with torch.no_grad():
            if dist == "normal":
                m.weight.normal_(0.0, math.sqrt(var))
            else:
                bound = math.sqrt(3.0 * var)
                m.weight.uniform_(-bound, bound)
            if m.bias is not None:
                m.bias.zero_()
    return model


def scaled(width: int, mult: float) -> int:
    """A hidden width times the width multiplier (at least 1)."""
    return max(1, int(round(width * mult)))
