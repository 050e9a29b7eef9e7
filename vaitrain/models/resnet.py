"""ResNets: CIFAR style (He et al. 2016, 6n+2 layers, widths 16/32/64, option-A shortcuts) and
ImageNet style v1.5 (stride on the 3x3 of the bottleneck) with torchvision's module names, so a
default-option build loads torchvision's state_dict with strict=True.

model.down: `strided` puts stride 2 on the first conv of a stage (the classic way); `maxpool` /
`avgpool` halve the block's input with a 2x2 pool first, then every conv (and the 1x1 projection
shortcut) has stride 1. The parameter count is the same for all three.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from vaitrain.errors import ConfigError
from vaitrain.models.layers import check_image_size, halve, make_act, make_down, make_dropout, make_norm, scaled

Norm = Callable[[int], nn.Module]


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially (or pool) and zero-pad the new channels; no params."""

    def __init__(self, extra_channels: int, subsample: bool) -> None:
        super().__init__()
        self.extra, self.subsample = extra_channels, subsample

    def forward(self, x: Tensor) -> Tensor:
        if self.subsample:
            x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, norm: Norm, act: str,
                 downsample: Optional[nn.Module] = None, pool: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.pool = pool  # halves the input first when model.down is a pooling
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = norm(planes)
        self.relu = make_act(act)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = self.pool(x)
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, norm: Norm, act: str,
                 downsample: Optional[nn.Module] = None, pool: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.pool = pool
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # v1.5: the stride sits on the 3x3
        self.bn2 = norm(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = make_act(act)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = self.pool(x)
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


IMAGENET_LAYOUT = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


class ResNet(nn.Module):
    """Stem, stages of residual blocks, global average pool, dropout, fc."""

    final_layer = "fc"

    def __init__(self, cfg: Any, norm_cfg: Any, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.norm_cfg, self.act, self.down = norm_cfg, cfg.act, cfg.down
        norm = self._norm
        w = float(cfg.width_mult)
        if cfg.style == "cifar":
            if (cfg.depth - 2) % 6 or cfg.depth < 8:
                raise ConfigError(f"model.depth={cfg.depth} is no CIFAR ResNet depth: use 6n+2 "
                                  "(20, 32, 44, 56, 110)")
            n = (cfg.depth - 2) // 6
            block, counts, widths = BasicBlock, [n] * 3, [scaled(c, w) for c in (16, 32, 64)]
            self.inplanes = widths[0]
            self.conv1 = conv3x3(in_channels, widths[0])
            self.bn1 = norm(widths[0])
            self.relu = make_act(cfg.act)
            self.maxpool = nn.Identity()
            shortcut = "pad"
        else:
            if cfg.depth not in IMAGENET_LAYOUT:
                raise ConfigError(f"model.depth={cfg.depth} is no ImageNet ResNet depth: use one of "
                                  f"{', '.join(map(str, IMAGENET_LAYOUT))}")
            block, counts = IMAGENET_LAYOUT[cfg.depth]
            widths = [scaled(c, w) for c in (64, 128, 256, 512)]
            self.inplanes = widths[0]
            if cfg.small_stem:  # 32 px images: 3x3 stride-1 stem, no max-pool
                self.conv1 = conv3x3(in_channels, widths[0])
                self.maxpool = nn.Identity()
            else:
                self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
                self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.bn1 = norm(widths[0])
            self.relu = make_act(cfg.act)
            shortcut = "conv"
        self.stage_names = [f"layer{i + 1}" for i in range(len(widths))]
        for i, (planes, count) in enumerate(zip(widths, counts)):
            stage = self._make_layer(block, planes, count, 1 if i == 0 else 2, shortcut)
            setattr(self, self.stage_names[i], stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = make_dropout(cfg.dropout, cfg.act)
        self.fc = nn.Linear(self.inplanes, num_outputs)
        # ImageNet style, model.init=default: torchvision's ResNet init, He-normal (fan_out) convs.
        # PyTorch's own conv default, Var 1/(3 fan_in), learnt far worse from scratch: ResNet-18 on
        # a 4-class folder at 32 px, 8 epochs, test acc 0.46 vs torchvision's 0.76. The CIFAR style
        # keeps PyTorch's: there He-normal did worse (0.85 vs 0.91; scripts/peer_check.py).
        if cfg.style != "cifar":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _norm(self, channels: int) -> nn.Module:
        return make_norm(self.norm_cfg, channels)

    def _make_layer(self, block: type, planes: int, count: int, stride: int,
                    shortcut: str) -> nn.Sequential:
        pool = None
        if stride == 2 and self.down != "strided":
            pool, stride = make_down(self.down, self.inplanes), 1
        cout = planes * block.expansion
        downsample: Optional[nn.Module] = None
        if shortcut == "pad" and (pool is not None or stride != 1 or self.inplanes != cout):
            downsample = PadShortcut(cout - self.inplanes, subsample=stride != 1)
        elif shortcut == "conv" and (stride != 1 or self.inplanes != cout):
            downsample = nn.Sequential(conv1x1(self.inplanes, cout, stride), self._norm(cout))
        blocks = [block(self.inplanes, planes, stride, self._norm, self.act, downsample, pool)]
        self.inplanes = cout
        blocks += [block(cout, planes, 1, self._norm, self.act) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = self.avgpool(x).flatten(1)
        return self.fc(self.dropout(x))


def build_resnet(cfg: Any, norm_cfg: Any, *, in_channels: int, num_outputs: int,
                 image_size: int, dense: bool = False) -> nn.Module:
    if dense:
        raise ConfigError(f"model={cfg.name} (a ResNet) gives no per-pixel output: use model=unet or "
                          "model=plain_cnn for dense tasks")
    model = ResNet(cfg, norm_cfg, in_channels, num_outputs)

    def fits(size: int) -> bool:
        if cfg.style == "imagenet" and not cfg.small_stem:
            size = (size + 3) // 4  # 7x7 stride-2 conv and 3x3 stride-2 max-pool, both padded
        for _ in model.stage_names[1:]:
            size = halve(size, cfg.down)
        return size >= 1

    check_image_size(image_size, fits, f"model={cfg.name}")
    return model
