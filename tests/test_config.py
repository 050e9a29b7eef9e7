"""Config composition: every option composes; bad input fails with one line naming valid choices."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from vaitrain.config import CHOICES, GROUPS, compose, conf_dir, expand_sweep, group_options
from vaitrain.errors import ConfigError
from vaitrain.schema.root import SCHEMA_PREFIX


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(group):
    options = group_options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        cfg = compose([f"{group}={option}"])
        node = cfg[group]
        assert node is not None
        if group in ("model", "task", "optim", "sched", "norm"):
            assert node.name == option  # a group option's `name` is the option itself
        if group == "data":  # ... or the dataset the file names (variants: shapes_ambiguous -> shapes)
            assert node.name == OmegaConf.load(conf_dir() / "data" / f"{option}.yaml").name


def test_issue_names_exist():
    want = {
        "model": "resnet20 resnet32 resnet44 resnet56 resnet110 resnet18 resnet34 resnet50 resnet101 densenet121 "
        "densenet169 densenet201 densenet_bc100 densenet40 unet randwire_small randwire_regular plain_mlp "
        "plain_cnn selu_mlp",
        "task": "classification segmentation regression",
        "optim": "sgd adam adamw alrao",
        "sched": "constant step multistep cosine onecycle",
        "norm": "batch group layer instance none",
        "data": "shapes shapes_ambiguous",
    }
    for group, names in want.items():
        assert set(names.split()) <= set(group_options(group)), group


def test_schemas_are_not_choices():
    for group in GROUPS:
        assert not any(o.startswith(SCHEMA_PREFIX) for o in group_options(group))


# Model keys that only some model families have: the model option to compose them with.
_MODEL_FOR_KEY = {"model.up": "unet", "model.down": "unet", "model.regime": "randwire_small",
                  "model.graph": "randwire_small", "model.kind": "plain_mlp", "model.style": "resnet18"}


def test_every_enumerated_value_composes():
    # Values of many keys are composed together (one compose per value index) to keep this quick.
    contexts: dict[str, list[str]] = {}
    for key in CHOICES:
        contexts.setdefault(_MODEL_FOR_KEY.get(key, "resnet20"), []).append(key)
    for model, keys in contexts.items():
        width = max(len(CHOICES[k]) for k in keys)
        for i in range(width):
            values = {k: CHOICES[k][i % len(CHOICES[k])] for k in keys}
            cfg = compose([f"model={model}"] + [f"{k}={v}" for k, v in values.items()])
            for k, v in values.items():
                assert OmegaConf.select(cfg, k) == v, (k, v)  # the value lands where the key says


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_a_value_outside_the_choices_is_refused(key):
    """Each enumerated key is checked: a value not in its list fails in one line naming the list."""
    model = _MODEL_FOR_KEY.get(key, "resnet20")
    with pytest.raises(ConfigError, match=rf"^{key}=bogus_value is not a valid choice; choose one of: ") as err:
        compose([f"model={model}", f"{key}=bogus_value"])
    assert set(str(err.value).split("choose one of: ")[1].split(", ")) == {str(v) for v in CHOICES[key]}


def test_defaults():
    cfg = compose([])
    assert cfg.model.name == "resnet20" and cfg.data.name == "shapes"
    assert cfg.task.name == "classification" and cfg.optim.name == "adam"


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["optim=adamm"], r"^optim=adamm is not a valid choice; choose one of: adam, "),
        (["trainer.epoch=3"], r"^unknown config key 'trainer.epoch'; valid keys here: trainer.epochs, "),
        (["trainer.epochs=abc"], r"^trainer.epochs=abc is not a valid integer$"),
        (["model.act=relux"], r"^model.act=relux is not a valid choice; choose one of: relu, "),
        (["model.growth_rate=3"], r"^unknown config key 'model.growth_rate'"),
        (["trainer.epochs=0"], r"^trainer.epochs=0 is out of range; it must be >= 1$"),
        (["trainer.epochs=3x="], r"^malformed override 'trainer.epochs=3x='"),
        (["optim=sgd,adam"], r"need -m/--multirun"),
        (["+trainer.epoch=3"], r"^'\+trainer.epoch=3': adding keys with \+ is not supported"),
    ],
)
def test_bad_overrides(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern) as err:
        compose(overrides)
    assert "\n" not in str(err.value)


def test_typo_inside_yaml_fails(tmp_path, monkeypatch):
    """A misspelt key inside a YAML file fails because the file names its schema."""
    import shutil

    import vaitrain.config as config

    conf = tmp_path / "conf"
    shutil.copytree(config.conf_dir(), conf)
    (conf / "optim" / "typo.yaml").write_text("defaults:\n  - schema_optim\n  - _self_\n\nname: sgd\nlrr: 0.1\n")
    monkeypatch.setattr(config, "conf_dir", lambda: conf)
    with pytest.raises(ConfigError, match="lrr"):
        compose(["optim=typo"])


def test_sweep_expansion_is_the_cartesian_product():
    jobs = expand_sweep(["optim=sgd,adam", "norm=batch,group,none", "seed=range(2)"])
    assert len(jobs) == 12
    assert ["optim=sgd", "norm=batch", "seed=0"] in jobs
    with pytest.raises(ConfigError, match="optim=adamm"):
        expand_sweep(["optim=sgd,adamm"])
