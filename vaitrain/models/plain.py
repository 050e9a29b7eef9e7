"""Plain nets without skips, for the vanishing-gradient and initialization experiments.

mlp: flatten the image -> `depth` hidden layers (Linear -> norm -> act) of `width` units -> Linear.
cnn: `depth` 3x3 convs (conv -> norm -> act) of `width` channels, model.down every `down_every`
layers (0 = never) -> global average pool -> Linear; with dense=True a 1x1 conv head gives a
per-pixel output instead (then the body must keep full resolution: down_every=0).
Layers carry a bias only when they have no norm after them. model.use_norm=false drops the norm
layers whatever `norm=` says (the self-normalizing SELU net, selu_mlp).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vaitrain.errors import ConfigError
from vaitrain.models.layers import check_image_size, halve, make_act, make_down, make_dropout, make_norm, scaled


def _norm_cfg(cfg: Any, norm_cfg: Any) -> Any:
    if getattr(cfg, "use_norm", True):
        return norm_cfg
    return _NoNorm


class _NoNorm:
    name = "none"


class PlainMLP(nn.Module):
    final_layer = "fc"

    def __init__(self, cfg: Any, norm_cfg: Any, in_features: int, num_outputs: int) -> None:
        super().__init__()
        width, norm_cfg = scaled(cfg.width, cfg.width_mult), _norm_cfg(cfg, norm_cfg)
        bias = getattr(norm_cfg, "name", "batch") == "none"
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(int(cfg.depth)):
            layers += [nn.Linear(in_features if i == 0 else width, width, bias=bias),
                       make_norm(norm_cfg, width, dims=1), make_act(cfg.act)]
        self.body = nn.Sequential(*layers)
        self.dropout = make_dropout(cfg.dropout, cfg.act)
        self.fc = nn.Linear(width if cfg.depth > 0 else in_features, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.body(x)))


class PlainCNN(nn.Module):
    final_layer = "head"

    def __init__(self, cfg: Any, norm_cfg: Any, in_channels: int, num_outputs: int,
                 dense: bool) -> None:
        super().__init__()
        width, norm_cfg = scaled(cfg.width, cfg.width_mult), _norm_cfg(cfg, norm_cfg)
        bias = getattr(norm_cfg, "name", "batch") == "none"
        every = int(cfg.down_every)
        if dense and every > 0:
            raise ConfigError("a dense plain CNN must keep full resolution: set model.down_every=0, "
                              "or use model=unet")
        layers: list[nn.Module] = []
        for i in range(int(cfg.depth)):
            if every > 0 and i > 0 and i % every == 0:
                layers.append(make_down(cfg.down, width))
            layers += [nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1, bias=bias),
                       make_norm(norm_cfg, width), make_act(cfg.act)]
        self.body = nn.Sequential(*layers)
        cout = width if cfg.depth > 0 else in_channels
        self.dense = dense
        self.pool = nn.Identity() if dense else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = make_dropout(cfg.dropout, cfg.act)
        self.head = nn.Conv2d(cout, num_outputs, 1) if dense else nn.Linear(cout, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.pool(self.body(x))))


def build_plain(cfg: Any, norm_cfg: Any, *, in_channels: int, num_outputs: int,
                image_size: int, dense: bool = False) -> nn.Module:
    if cfg.depth < 0:
        raise ConfigError(f"model.depth={cfg.depth} must be >= 0")
    if cfg.kind == "mlp":
        if dense:
            raise ConfigError(f"model={cfg.name} (an MLP) gives no per-pixel output: use model=unet or "
                              "model=plain_cnn for dense tasks")
        return PlainMLP(cfg, norm_cfg, in_channels * image_size * image_size, num_outputs)
    model = PlainCNN(cfg, norm_cfg, in_channels, num_outputs, dense)
    every = int(cfg.down_every)

    def fits(size: int) -> bool:
        for i in range(1, int(cfg.depth)):
            if every > 0 and i % every == 0:
                size = halve(size, cfg.down)
        return size >= 1

    check_image_size(image_size, fits, f"model={cfg.name}")
    return model
