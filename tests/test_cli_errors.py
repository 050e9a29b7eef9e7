"""Bad input at the CLI: one line on stderr, exit code 2, no run directory, no traceback."""
from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from vaitrain.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["train", "optim=adamm"], r"^error: optim=adamm is not a valid choice; choose one of: adam, adamw, "),
        (["train", "trainer.epoch=3"], r"^error: unknown config key 'trainer.epoch'; valid keys here: trainer.epochs"),
        (["train", "model=resnet2"], r"^error: model=resnet2 is not a valid choice; choose one of: resnet20, "),
        (["train", "trainer.epochs=3x="], r"^error: malformed override"),
        (["train", "resume=/nonexistent/run"], r"^error: resume=/nonexistent/run is not a vaitrain run directory"),
        (["config", "norm=groupp"], r"^error: norm=groupp is not a valid choice; choose one of: group, "),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, pattern):
    out = tmp_path / "runs"
    result = runner.invoke(app, [*args, f"out_dir={out}"])
    assert result.exit_code == 2, result.output
    assert re.search(pattern, result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not out.exists()


def test_config_prints_resolved_yaml():
    result = runner.invoke(app, ["config", "model=resnet50", "optim=adam"])
    assert result.exit_code == 0, result.output
    assert "name: resnet50" in result.stdout and "lr: 0.001" in result.stdout


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "eval", "config", "models", "inspect"):
        assert command in result.stdout
