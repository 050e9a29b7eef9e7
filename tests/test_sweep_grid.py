"""Grid expansion (issue 15) on Hydra's public override parser: glob() over a group's options,
interval() refused in one line, Hydra's own key order and last-value-wins."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vaitrain.cli import app
from vaitrain.config import expand_sweep, group_options
from vaitrain.errors import ConfigError


def test_the_cartesian_product_in_the_given_key_order() -> None:
    jobs = expand_sweep(["optim=sgd,adam", "seed=range(2)", "trainer.epochs=1", "norm=choice(batch,group)"])
    expected = [[f"optim={o}", f"seed={s}", "trainer.epochs=1", f"norm={n}"]
                for o, s, n in itertools.product(("sgd", "adam"), (0, 1), ("batch", "group"))]
    assert jobs == expected


def test_a_key_given_twice_keeps_its_place_and_its_last_value() -> None:
    assert expand_sweep(["seed=1,2", "optim=sgd", "seed=5"]) == [["seed=5", "optim=sgd"]]


def test_glob_lists_a_groups_options() -> None:
    jobs = expand_sweep(["model=glob(resnet*,exclude=[resnet1*,resnet5*])", "seed=0"])
    want = [m for m in group_options("model") if m.startswith("resnet") and not m.startswith(("resnet1", "resnet5"))]
    assert want and jobs == [[f"model={m}", "seed=0"] for m in want]


@pytest.mark.parametrize("bad, message", [
    ("optim.lr=interval(0.001,0.1)", "vaitrain search"),
    ("seed=glob(1*)", "no group"),
    ("model=glob(nothing*)", "matches none"),
])
def test_unsupported_sweeps_are_one_line(tmp_path: Path, bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        expand_sweep([bad])
    res = CliRunner().invoke(app, ["train", "-m", bad, f"out_dir={tmp_path / 'o'}"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and not (tmp_path / "o").exists()
