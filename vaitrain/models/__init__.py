"""The model zoo: `build_model` turns a model config (+ norm config) into an nn.Module with the
builder that `registry.MODELS` lists for `model_cfg.family`. Models know nothing of data, tasks,
the loop or the config files: they are built from plain values.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from vaitrain import registry
from vaitrain.errors import ConfigError
from vaitrain.models.layers import collect_group_norm_errors, init_weights

if TYPE_CHECKING:
    from vaitrain.schema.model import ModelConfig
    from vaitrain.schema.trainer import NormConfig


def build_model(model_cfg: ModelConfig, norm_cfg: NormConfig | None, *, in_channels: int, num_outputs: int,
                image_size: int, dense: bool = False) -> nn.Module:
    """Build and initialize the model a config describes.

    dense=False: output (N, num_outputs); dense=True: (N, num_outputs, H, W). A model that cannot
    work with these options raises ConfigError (one line) before anything else happens.
    A family's builder: builder(model_cfg, norm_cfg, *, in_channels, num_outputs, image_size,
    dense) -> nn.Module with a `final_layer` attribute.
    """
    family = getattr(model_cfg, "family", None)
    if family not in registry.MODELS:
        raise ConfigError(f"model family '{family}' is unknown; known: {', '.join(sorted(registry.MODELS))}")
    if in_channels < 1 or num_outputs < 1:
        raise ConfigError(f"a model needs in_channels >= 1 and num_outputs >= 1 "
                          f"(got {in_channels}, {num_outputs})")
    builder = registry.MODELS.load(family)
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


__all__ = ["build_model", "init_weights"]
