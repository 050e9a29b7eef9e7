"""One list of names per kind (vaitrain/registry.py): every registered name composes and builds,
every YAML option is registered, the config's choices come from the registries, and composing a
config imports no torch and reads no run directory."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from vaitrain import registry
from vaitrain.config import CHOICES, compose, conf_dir
from vaitrain.errors import ConfigError

# Model keys that only some families have: a model option that has them.
_MODEL_FOR_KEY = {"model.up": "unet", "model.down": "unet"}


def _raw(group: str) -> dict[str, dict]:
    """conf/<group>/*.yaml as written (no composition): option -> its keys."""
    return {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in sorted((conf_dir() / group).glob("*.yaml"))}


@pytest.mark.parametrize("reg", registry.ALL, ids=lambda r: r.key)
def test_every_registered_name_composes_and_is_the_config_choice(reg):
    assert CHOICES[reg.key] == reg.names
    model = _MODEL_FOR_KEY.get(reg.key, "resnet20")
    for name in reg:
        cfg = compose([f"model={model}", f"{reg.key}={name}"])
        assert OmegaConf.select(cfg, reg.key) == name
    with pytest.raises(ConfigError, match=rf"^{reg.key}=nope is not a valid choice; choose one of: ") as err:
        compose([f"model={model}", f"{reg.key}=nope"])
    assert set(str(err.value).split("choose one of: ")[1].split(", ")) == set(reg.names)


def test_every_yaml_option_is_registered():
    for option, raw in _raw("model").items():
        family = raw["defaults"][0].removeprefix("schema_")
        assert family in registry.MODELS, option
    for group, reg in (("data", registry.DATASETS), ("task", registry.TASKS), ("optim", registry.OPTIMIZERS),
                       ("sched", registry.SCHEDULES), ("norm", registry.NORMS)):
        for option, raw in _raw(group).items():
            assert raw["name"] in reg, f"conf/{group}/{option}.yaml names {raw['name']}, not registered"
    # ... and every family and dataset has a YAML to choose it by
    families = {raw["defaults"][0].removeprefix("schema_") for raw in _raw("model").values()}
    assert families == set(registry.MODELS.names)
    assert {raw["name"] for raw in _raw("data").values()} == set(registry.DATASETS.names)


def test_every_layer_name_builds():
    from vaitrain.models.layers import init_weights, make_act, make_down, make_norm, make_up

    x = torch.randn(2, 8, 4, 4)
    for name in registry.ACTIVATIONS:
        assert make_act(name, inplace=False)(x).shape == x.shape, name
    for name in registry.NORMS:
        assert make_norm(OmegaConf.create({"name": name, "groups": 4}), 8)(x).shape == x.shape, name
    for name in registry.DOWNS:
        assert make_down(name, 8)(x).shape == (2, 8, 2, 2), name
    for name in registry.UPS:
        up = make_up(name, 8, 8)
        if name == "maxunpool":
            y, idx = nn.MaxPool2d(2, 2, return_indices=True)(x)
            assert up(y, idx).shape == x.shape
        else:
            assert up(x[:, :, :2, :2]).shape[-2:] == (4, 4), name
    for init in registry.INITS:
        for dist in registry.INIT_DISTS:
            init_weights(nn.Linear(4, 4), init, dist)
    for reg, build in ((registry.ACTIVATIONS, lambda n: make_act(n)), (registry.DOWNS, lambda n: make_down(n, 8))):
        with pytest.raises(ConfigError, match="not a valid choice"):
            build("nope")


def test_every_optimizer_schedule_task_and_family_builds():
    from vaitrain.data.base import SOURCES
    from vaitrain.engine.components import build_components

    tiny = ["data.num_train=8", "data.num_val=4", "data.image_size=16", "trainer.batch_size=4",
            "trainer.epochs=2", "trainer.threads=1"]
    for name in registry.OPTIMIZERS:
        c = build_components(compose([*tiny, "model=plain_mlp", "model.depth=1", "model.width=8",
                                      f"optim={name}"]), torch.device("cpu"))
        assert c.opt.optimizer.param_groups, name
    for name in registry.SCHEDULES:
        c = build_components(compose([*tiny, "model=plain_mlp", "model.depth=1", "model.width=8",
                                      f"sched={name}"]), torch.device("cpu"))
        c.opt.optimizer.step()
        c.opt.scheduler.step()
    for name in registry.TASKS:
        task_class = registry.TASKS.load(name)
        assert task_class.__name__.lower().startswith(name[:5]), name
    for family in registry.MODELS:
        assert callable(registry.MODELS.load(family))
    # the dataset registry lists exactly the sources its modules register, each in the module named
    for name in registry.DATASETS:
        registry.resolve(str(registry.DATASETS.entry(name).target))
    assert set(SOURCES) == set(registry.DATASETS.names)
    for name, entry in SOURCES.items():
        assert entry.builder.__module__ == registry.DATASETS.entry(name).target, name


class _Tiny(nn.Module):
    final_layer = "fc"

    def __init__(self, num_outputs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def build_tiny(model_cfg, norm_cfg, *, num_outputs: int, **_kw) -> nn.Module:
    return _Tiny(num_outputs)


def test_a_registered_family_is_built():
    """A family is one registry entry ("module:builder") + its config: build_model finds it."""
    from vaitrain.models import build_model

    cfg = OmegaConf.create({"family": "tiny", "init": "he", "init_dist": "normal"})
    registry.MODELS.register("tiny", f"{__name__}:build_tiny")
    try:
        from vaitrain.schema.model import ModelConfig
        from vaitrain.schema.root import family_schema

        schema = family_schema("tiny")  # no keys of its own: the common ModelConfig, family set
        assert issubclass(schema, ModelConfig) and schema().family == "tiny" and schema().act == "relu"
        model = build_model(cfg, None, in_channels=3, num_outputs=5, image_size=8)
        assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 5)
        assert model.fc.weight.std().item() == pytest.approx((2 / 192) ** 0.5, rel=0.15)  # he init ran
    finally:
        registry.MODELS.unregister("tiny")
    with pytest.raises(ConfigError, match="^model family 'tiny' is unknown; known: ") as err:
        build_model(cfg, None, in_channels=3, num_outputs=5, image_size=8)
    assert str(err.value).split("known: ")[1].split(", ") == sorted(registry.MODELS)


def test_layers_point_down():
    """Composing a config (and `vaitrain config`) imports neither torch nor the run readers; the
    model package does not import the config module."""
    code = ("import sys; from vaitrain.config import compose; compose(['model=unet']);"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('vaitrain.')"
            " and m.split('.')[1] in ('engine', 'track', 'models', 'data', 'tasks', 'optim')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys; import vaitrain.models; print('vaitrain.config' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
