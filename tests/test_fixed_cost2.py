"""Issue 16 part 5, fixed cost per run: a composed group selection read from the cache is the config
Hydra composes, node for node, and an edited file, schema or choice is never answered from it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from vaitrain import config, config_cache
from vaitrain.errors import ConfigError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(config_cache.CACHE_ENV, str(folder))
    return folder / config_cache.FOLDER


def uncached(overrides: list[str], monkeypatch) -> DictConfig:
    with monkeypatch.context() as m:
        m.setenv(config_cache.CACHE_ENV, "")
        return config.compose(overrides)


def nodes(cfg, path: str = "") -> list[tuple]:
    """Every node: path, node class, schema class, struct/readonly flags, optional, raw value."""
    out = [(path, type(cfg).__name__, OmegaConf.get_type(cfg) if isinstance(cfg, DictConfig) else None,
            OmegaConf.is_struct(cfg), OmegaConf.is_readonly(cfg), cfg._is_optional())]
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    for k in keys:
        node = cfg._get_node(k)
        if isinstance(node, (DictConfig, ListConfig)):
            out += nodes(node, f"{path}.{k}")
        else:
            out.append((f"{path}.{k}", type(node).__name__, node._is_optional(), type(node._value()), node._value()))
    return out


OVERRIDE_SETS = [
    [],
    ["model=resnet20", "data=shapes", "data.num_train=512", "trainer.epochs=2", "out_dir=/tmp/x"],
    ["model=densenet40", "optim=sgd", "optim.momentum=0.8", "sched=multistep", "sched.milestones=[3,5]"],
    ["model=unet", "task=segmentation", "norm=group", "norm.groups=4", "data.resized_crop_scale=[0.2,1.0]"],
    ["model=randwire_small", "model.graph=er", "trainer.precision=bf16", "name='a b'"],
    ["model=plain_mlp", "task=regression", "data=csv_regression", "model.width=8"],
    ["experiment=cifar10_resnet20", "optim.lr=0.05", "trainer.epochs=3"],
    ["optim=adamw", "optim.betas=[0.8,0.9]", "seed=7", "resume=null", "name=${model.name}"],
    ["trainer.batch_size=64", "data.augment=false", "model.width_mult=0.5", "optim.lr=1e-3"],
]


@pytest.mark.parametrize("overrides", OVERRIDE_SETS, ids=lambda o: " ".join(o)[:60] or "defaults")
def test_cached_composition_is_hydras_node_for_node(overrides, cache, monkeypatch):
    reference = uncached(overrides, monkeypatch)
    first = config.compose(overrides)  # composed by Hydra, kept
    assert len(list(cache.glob("*.json"))) == 1
    second = config.compose(overrides)  # rebuilt from the entry
    for got in (first, second):
        assert OmegaConf.to_container(got) == OmegaConf.to_container(reference)
        assert nodes(got) == nodes(reference)
        assert config.to_yaml(got) == config.to_yaml(reference)


def test_value_overrides_share_one_entry_and_read_it(cache, monkeypatch):
    """The entry holds the group choices' composition: other key=value overrides are applied to it
    (the benchmark's case: each run has its own out_dir); Hydra is not asked again."""
    config.compose(["model=resnet32", "out_dir=/a"])
    calls = []
    monkeypatch.setattr(config, "_hydra_compose", lambda *a: calls.append(a) or pytest.fail("composed again"))
    cfg = config.compose(["model=resnet32", "out_dir=/b", "trainer.epochs=4"])
    assert (cfg.out_dir, cfg.trainer.epochs, cfg.model.depth) == ("/b", 4, 32)
    assert len(list(cache.glob("*.json"))) == 1 and not calls


@pytest.mark.parametrize("overrides", [
    ["model=resnet20", "trainer.epochs=abc"],  # a wrong type
    ["model=resnet20", "trainer.epoch=3"],  # an unknown key
    ["model.depht=3"],  # an unknown key in a group
    ["optim.betas=0.9"],  # a list given a number
    ["model=resnet20", "trainer.epochs=0"],  # out of range (validated after composition)
])
def test_errors_are_the_uncached_ones(overrides, cache, monkeypatch):
    with pytest.raises(ConfigError) as want:
        uncached(overrides, monkeypatch)
    config.compose([o for o in overrides if "=" in o and "." not in o.split("=")[0]])  # the entry exists
    for _ in range(2):
        with pytest.raises(ConfigError) as got:
            config.compose(overrides)
        assert str(got.value) == str(want.value)


@pytest.fixture
def conf_copy(tmp_path, monkeypatch) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(config.conf_dir(), conf)
    monkeypatch.setattr(config, "conf_dir", lambda: conf)
    return conf


def test_an_edited_or_added_file_is_never_answered_from_the_cache(conf_copy, cache):
    assert config.compose(["model=resnet20"]).model.depth == 20
    assert config.compose(["model=resnet20"]).model.depth == 20  # a hit
    path = conf_copy / "model" / "resnet20.yaml"
    path.write_text(path.read_text().replace("depth: 20", "depth: 32"))
    assert config.compose(["model=resnet20"]).model.depth == 32
    # a file the selection does not load changes the key too (group options, recipes)
    (conf_copy / "optim" / "mine.yaml").write_text("defaults:\n  - schema_optim\n  - _self_\nname: sgd\nlr: 0.5\n")
    assert config.compose(["optim=mine"]).optim.lr == 0.5
    assert config.compose(["model=resnet20"]).model.depth == 32
    assert len(list(cache.glob("*.json"))) == 4


def test_a_changed_schema_or_version_is_another_key(conf_copy, monkeypatch):
    from vaitrain.schema import root

    key = config_cache._key(["model=resnet20"], conf_copy)
    assert key == config_cache._key(["model=resnet20"], conf_copy)
    assert key != config_cache._key(["model=resnet32"], conf_copy)
    from dataclasses import dataclass

    @dataclass
    class NormConfig(root.NormConfig):
        groups: int = 16  # another default

    monkeypatch.setitem(root.GROUP_SCHEMAS, "norm", {"norm": NormConfig})
    assert config_cache._key(["model=resnet20"], conf_copy) != key
    monkeypatch.undo()
    monkeypatch.setattr("omegaconf.__version__", "0.0.0")
    assert config_cache._key(["model=resnet20"], conf_copy) != key


def test_a_file_with_a_resolver_is_not_cached(conf_copy, cache):
    """${oc.env:...} in a defaults list would read the environment while composing."""
    path = conf_copy / "trainer" / "default.yaml"
    path.write_text(path.read_text() + "\n# device: ${oc.env:DEVICE,cpu}\n")
    config.compose([])
    assert not cache.exists() or not list(cache.glob("*.json"))


def test_a_broken_or_foreign_entry_is_composed_again(cache, monkeypatch):
    overrides = ["model=resnet44", "trainer.epochs=2"]
    reference = uncached(overrides, monkeypatch)
    config.compose(overrides)
    (entry,) = cache.glob("*.json")
    for text in ("{not json", json.dumps({"format": -1}), json.dumps({"format": config_cache.FORMAT,
                                                                     "schemas": {"model": "nope"}, "config": {}})):
        entry.write_text(text)
        assert nodes(config.compose(overrides)) == nodes(reference)
        assert json.loads(entry.read_text())["format"] == config_cache.FORMAT  # written again, whole


def test_unusual_forms_and_user_folders_compose_through_hydra(tmp_path, cache, monkeypatch):
    (tmp_path / "optim").mkdir()
    (tmp_path / "optim" / "mine.yaml").write_text("defaults:\n  - schema_optim\n  - _self_\nname: sgd\nlr: 0.3\n")
    assert config.compose([f"hydra.searchpath=[file://{tmp_path}]", "optim=mine"]).optim.lr == 0.3
    assert not cache.exists() or not list(cache.glob("*.json"))
    parsed = config._parse(["++trainer.epochs=3"])
    assert config_cache.split_overrides(parsed, (*config.GROUPS, config.EXPERIMENT), config.conf_dir()) is None


def test_the_cache_can_be_turned_off(cache, monkeypatch):
    monkeypatch.setenv(config_cache.CACHE_ENV, "")
    config.compose(["model=resnet56"])
    assert not cache.exists()


@pytest.mark.parametrize("shape, dataformats", [((3, 40, 70), "CHW"), ((1, 19, 21), "CHW"), ((12, 10, 3), "HWC"),
                                                ((17, 16), "HW")])
def test_tensorboard_images_have_torchs_pixels(tmp_path, shape, dataformats):
    """TBWriter.add_image (PNG at zlib level 1) shows what SummaryWriter.add_image shows: the same
    size and the same pixels, from the same float-to-byte conversion (values just below a byte
    step and out of [0, 1] included)."""
    import io

    import numpy as np
    import torch
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from vaitrain.track.tb import TBWriter

    torch.manual_seed(0)
    img = torch.rand(shape) * 1.2 - 0.1
    n = min(img.numel(), 256)
    img.view(-1)[:n] = torch.arange(n) / 255  # byte values through float32
    ours = TBWriter(tmp_path / "ours")
    ours.add_image("sample", img, 3, dataformats=dataformats)
    ours.close()
    theirs = SummaryWriter(str(tmp_path / "theirs"))
    theirs.add_image("sample", img, 3, dataformats=dataformats)
    theirs.close()
    decoded = []
    for name in ("ours", "theirs"):
        acc = EventAccumulator(str(tmp_path / name), size_guidance={IMAGES: 0})
        acc.Reload()
        (event,) = acc.Images("sample")
        assert event.step == 3
        decoded.append((event.width, event.height, np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))))
    assert decoded[0][:2] == decoded[1][:2]
    assert np.array_equal(decoded[0][2], decoded[1][2])


def _hydras(text: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    ov = OverridesParser.create().parse_overrides([text])[0]
    return (ov.key_or_group, ov.is_add(), ov.is_delete(), ov.is_force_add(), ov.is_sweep_override(), ov.package,
            type(ov.value()), ov.value())


def _ours(text: str):
    from vaitrain.plain_overrides import parse

    ov = parse(text)
    if ov is None:
        return None
    return (ov.key_or_group, ov.is_add(), ov.is_delete(), ov.is_force_add(), ov.is_sweep_override(), ov.package,
            type(ov.value()), ov.value())


@pytest.mark.parametrize("text", [
    "a=1", "a=-0", "a=0", "a=1e-3", "a=1E5", "a=-1.5e+3", "a=0.0", "a=2.50", "a=true", "a=TRUE", "a=False",
    "a=null", "a=NULL", "a=nullx", "a=infx", "a=nan_x", "a=True1", "a=/tmp/x", "a=/", "a=_", "a=a-b", "a=a..b",
    "a=abc-", "a=a.1e5", "a=x/1", "a=e5", "+experiment=cifar10_fast", "model.width_mult=0.25", "out_dir=runs/a-b",
    "trainer.device=cuda", "name=", "a=07", "a=1_000", "a=1.", "a=.5", "a=inf", "a=Inf", "a=-inf", "a=nan",
    "a=1.5.2", "++a=1", "~a", "~a=1", "a-b=1", "a@b=1", "a=-", "a=00", "a='x'", "a=[1,2]", "a=1,2", "a=${b}",
    "a=x y", "a=choice(1,2)", "a=x:y", "a=\\\\x", "hydra.searchpath=[file:///x]", "+a.b=1", "a=ü",
])
def test_plain_overrides_read_as_hydra_reads_them(text):
    ours = _ours(text)
    if ours is not None:
        assert ours == _hydras(text)


def test_the_benchmark_command_line_is_plain():
    from vaitrain.plain_overrides import parse_all

    assert parse_all(["model=resnet20", "data.num_train=512", "data.augment=false", "trainer.device=cpu",
                      "optim.lr=1e-3", "out_dir=/tmp/tmpab_12/runs0", "experiment=x"]) is not None


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the dev extra
    given = None

if given is not None:
    @settings(max_examples=400, deadline=None)
    @given(st.text(alphabet="abeEfilnrstuxAFLNTU019_.-/+", min_size=0, max_size=10))
    def test_plain_values_read_as_hydra_reads_them(value):
        import math

        text = f"key.sub={value}"
        ours = _ours(text)
        if ours is None:
            return
        theirs = _hydras(text)
        if isinstance(ours[-1], float) and math.isnan(ours[-1]):
            assert isinstance(theirs[-1], float) and math.isnan(theirs[-1])
        else:
            assert ours == theirs
