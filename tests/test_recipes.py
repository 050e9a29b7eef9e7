"""Issue 11: the recipes in conf/experiment/ — each composes to exactly its deltas, a one-epoch
tiny version of each runs, and a user's own folder of recipes loads the documented way."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from crash_runs import invoke, the_run
from vaitrain.config import compose, conf_dir, group_options

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPES = group_options("experiment")
FAST = ["trainer.epochs=1", "trainer.batch_size=16", "data.num_train=32", "data.num_val=16", "trainer.threads=1",
        "trainer.device=cpu", "trainer.progress=none", "trainer.image_every=0", "trainer.precision=fp32"]
TINY = {  # the recipe on the embedded shapes data, with a small net: only sizes change
    "cifar10_resnet20": ["data=shapes", "data.image_size=16", "model.width_mult=0.25"],
    "cifar10_resnet56": ["data=shapes", "data.image_size=16", "model.width_mult=0.25"],
    "cifar10_resnet110": ["data=shapes", "data.image_size=16", "model.width_mult=0.25", "sched.warmup_epochs=0.5"],
    "cifar10_densenet_bc100": ["data=shapes", "data.image_size=16", "model.growth_rate=4",
                               "model.block_config=[2,2,2]"],
    "cifar10_fast": ["data=shapes", "data.image_size=16", "model.width_mult=0.125"],
    "seg_folder_unet": ["data=shapes", "data.image_size=32", "data.crop=16", "model.base_width=4", "model.depth=2"],
}


def test_the_shipped_recipes_are_the_issue_list():
    assert RECIPES == sorted(TINY)


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_composes_to_its_deltas_and_states_its_source(name):
    path = conf_dir() / "experiment" / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("# @package _global_") and "Source:" in text and "vaitrain: not yet measured" in text
    deltas = OmegaConf.load(path)
    cfg = compose([f"experiment={name}"])
    groups = {}
    for entry in deltas.pop("defaults"):
        (key, option), = entry.items()
        groups[key.split("/")[-1]] = option
    for group, option in groups.items():  # the options the recipe picks
        picked = OmegaConf.load(conf_dir() / group / f"{option}.yaml")
        assert cfg[group].name == picked.name
    flat = {k: v for k, v in _leaves(OmegaConf.to_container(deltas))}
    assert flat
    for key, value in flat.items():  # every delta lands where it says
        assert OmegaConf.select(cfg, key) == value or str(OmegaConf.select(cfg, key)) == str(value), key


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@pytest.mark.parametrize("name", RECIPES)
def test_a_one_epoch_tiny_version_of_each_recipe_runs(name, tmp_path):
    result = invoke(["train", f"experiment={name}", *TINY[name], *FAST, f"out_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    run = the_run(tmp_path)
    final = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["status"] == "completed" and final["epoch"] == 1
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.optim.name == compose([f"experiment={name}"]).optim.name  # the recipe, not the defaults


def test_a_users_own_recipe_folder_loads_with_hydra_searchpath(tmp_path, monkeypatch):
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: resnet56\ntrainer:\n  epochs: 7\n")
    monkeypatch.chdir(tmp_path)
    cfg = compose(["experiment=mine", "hydra.searchpath=[file://my_conf]"])
    assert cfg.model.name == "resnet56" and cfg.trainer.epochs == 7
    assert compose(["experiment=mine", "hydra.searchpath=[file://my_conf]", "trainer.epochs=2"]).trainer.epochs == 2


def test_an_unknown_recipe_is_one_line_with_the_recipes_listed() -> None:
    from typer.testing import CliRunner

    from vaitrain.cli import app
    from vaitrain.config import group_options

    r = CliRunner().invoke(app, ["train", "experiment=cifar10_resnt20"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    listed = r.stderr.split("choose one of: ", 1)[1].strip().split(", ")
    assert listed[0] == "cifar10_resnet20" and sorted(listed) == group_options("experiment")
