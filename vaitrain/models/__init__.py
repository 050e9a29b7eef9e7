"""The model zoo: `build_model` turns a model config (+ norm config) into an nn.Module through a
registry of builders keyed on `model_cfg.family`. Models know nothing of data, tasks or the loop.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from vaitrain.errors import ConfigError
from vaitrain.models.densenet import build_densenet
from vaitrain.models.layers import collect_group_norm_errors, init_weights
from vaitrain.models.plain import build_plain
from vaitrain.models.randwire import build_randwire
from vaitrain.models.resnet import build_resnet
from vaitrain.models.unet import build_unet

Builder = Callable[..., nn.Module]

REGISTRY: dict[str, Builder] = {
    "resnet": build_resnet,
    "densenet": build_densenet,
    "unet": build_unet,
    "randwire": build_randwire,
    "plain": build_plain,
}


def register(family: str, builder: Builder) -> None:
    """Add a model family: builder(model_cfg, norm_cfg, *, in_channels, num_outputs, image_size,
    dense) -> nn.Module with a `final_layer` attribute."""
    REGISTRY[family] = builder


def build_model(model_cfg: Any, norm_cfg: Any, *, in_channels: int, num_outputs: int,
                image_size: int, dense: bool = False) -> nn.Module:
    """Build and initialize the model a config describes.

    dense=False: output (N, num_outputs); dense=True: (N, num_outputs, H, W). A model that cannot
    work with these options raises ConfigError (one line) before anything else happens.
    """
    family = getattr(model_cfg, "family", None)
    if family not in REGISTRY:
        raise ConfigError(f"model family '{family}' is unknown; known: {', '.join(sorted(REGISTRY))}")
    if in_channels < 1 or num_outputs < 1:
        raise ConfigError(f"a model needs in_channels >= 1 and num_outputs >= 1 "
                          f"(got {in_channels}, {num_outputs})")
    builder = REGISTRY[family]
    kwargs = dict(in_channels=int(in_channels), num_outputs=int(num_outputs),
                  image_size=int(image_size), dense=bool(dense))
    if getattr(norm_cfg, "name", None) == "group":
        with collect_group_norm_errors(int(norm_cfg.groups)):
            model = builder(model_cfg, norm_cfg, **kwargs)
    else:
        model = builder(model_cfg, norm_cfg, **kwargs)
    init_weights(model, model_cfg.init, model_cfg.init_dist)
    model.final_layer = model.final_layer  # an instance attribute, so wrappers can read/replace it
    return model


def list_models() -> list[str]:
    """Names of the model configs (conf/model/*.yaml)."""
    from vaitrain.config import conf_dir

    return sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


__all__ = ["build_model", "list_models", "register", "REGISTRY", "init_weights"]
