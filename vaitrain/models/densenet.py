"""DenseNets (Huang et al. 2017) with torchvision's module names.

imagenet style: 7x7 stride-2 stem + 3x3 max-pool (torchvision densenet121/169/201 layouts; the
default-option build loads torchvision's state_dict with strict=True). cifar style: a 3x3 stem,
e.g. DenseNet-BC L=100 k=12 and DenseNet L=40 k=12.

bn_size > 0 gives bottleneck layers (norm-act-1x1 conv to bn_size*k, norm-act-3x3 conv to k);
bn_size = 0 plain layers (norm-act-3x3 conv to k). Transitions: norm-act-1x1 conv to
floor(compression * C), then model.down (avgpool by default). memory_efficient recomputes the
concatenation + bottleneck in backward (torch.utils.checkpoint) instead of storing it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.utils.checkpoint as cp
from torch import Tensor, nn

from vaitrain.errors import ConfigError
from vaitrain.models.layers import check_image_size, halve, make_act, make_down, make_dropout, make_norm, scaled


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int, norm_cfg: Any, act: str,
                 memory_efficient: bool) -> None:
        super().__init__()
        self.norm1 = make_norm(norm_cfg, cin)
        self.relu1 = make_act(act)
        if bn_size > 0:
            self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
            self.norm2 = make_norm(norm_cfg, bn_size * growth)
            self.relu2 = make_act(act)
            self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(cin, growth, 3, padding=1, bias=False)
        self.bottleneck = bn_size > 0
        self.memory_efficient = memory_efficient

    def _first(self, *features: Tensor) -> Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.memory_efficient and any(f.requires_grad for f in features):
            out = cp.checkpoint(self._first, *features, use_reentrant=False)
        else:
            out = self._first(*features)
        if self.bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        return out


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, cin: int, growth: int, bn_size: int, norm_cfg: Any, act: str,
                 memory_efficient: bool) -> None:
        super().__init__()
        for i in range(layers):
            self[f"denselayer{i + 1}"] = DenseLayer(cin + i * growth, growth, bn_size, norm_cfg, act,
                                                    memory_efficient)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm_cfg: Any, act: str, down: str) -> None:
        super().__init__()
        self.norm = make_norm(norm_cfg, cin)
        self.relu = make_act(act)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = make_down(down, cout)


class DenseNet(nn.Module):
    final_layer = "classifier"

    def __init__(self, cfg: Any, norm_cfg: Any, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        w = float(cfg.width_mult)
        growth, c = scaled(cfg.growth_rate, w), scaled(cfg.num_init_features, w)
        if not 0 < cfg.compression <= 1:
            raise ConfigError(f"model.compression={cfg.compression} must be in (0, 1]")
        if cfg.style == "imagenet":
            stem = [("conv0", nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False)),
                    ("norm0", make_norm(norm_cfg, c)), ("relu0", make_act(cfg.act)),
                    ("pool0", nn.MaxPool2d(3, stride=2, padding=1))]
        else:
            stem = [("conv0", nn.Conv2d(in_channels, c, 3, padding=1, bias=False))]
        self.features = nn.Sequential(OrderedDict(stem))
        blocks = list(cfg.block_config)
        for i, layers in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(
                layers, c, growth, cfg.bn_size, norm_cfg, cfg.act, cfg.memory_efficient))
            c += layers * growth
            if i != len(blocks) - 1:
                cout = int(c * cfg.compression)
                self.features.add_module(f"transition{i + 1}",
                                         Transition(c, cout, norm_cfg, cfg.act, cfg.down))
                c = cout
        self.features.add_module("norm5", make_norm(norm_cfg, c))
        self.act = make_act(cfg.act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = make_dropout(cfg.dropout, cfg.act)
        self.classifier = nn.Linear(c, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.act(self.features(x))).flatten(1)
        return self.classifier(self.dropout(x))


def build_densenet(cfg: Any, norm_cfg: Any, *, in_channels: int, num_outputs: int,
                   image_size: int, dense: bool = False) -> nn.Module:
    if dense:
        raise ConfigError(f"model={cfg.name} (a DenseNet) gives no per-pixel output: use model=unet "
                          "or model=plain_cnn for dense tasks")

    def fits(size: int) -> bool:
        if cfg.style == "imagenet":
            size = (size + 3) // 4  # 7x7 stride-2 conv and 3x3 stride-2 max-pool, both padded
        for _ in range(len(cfg.block_config) - 1):
            size = halve(size, cfg.down)
        return size >= 1

    check_image_size(image_size, fits, f"model={cfg.name}")
    return DenseNet(cfg, norm_cfg, in_channels, num_outputs)
