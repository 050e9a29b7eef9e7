"""Issue 13: progress on long steps, `vaitrain models` at the defaults, --version, options listing."""
from __future__ import annotations

import io
import re
import time

import pytest
from typer.testing import CliRunner

import vaitrain
from vaitrain import zoo
from vaitrain.cli import app
from vaitrain.track.progress import Progress


# ----- progress -------------------------------------------------------------------------------------
def test_bar_keeps_the_loss_after_the_next_advance() -> None:
    p = Progress("bar")
    p._progress = None
    p.start("train 1/1", 10)
    p.advance(0, loss=0.5)
    p.advance(1)  # the train loop advances after setting the loss: the loss must stay
    info = p._progress.tasks[0].fields["info"]
    p.close()
    assert info == "loss 0.5"


def test_plain_mode_prints_a_start_line_then_periodic_lines(capsys: pytest.CaptureFixture[str]) -> None:
    p = Progress("plain", quiet_s=0.05, every_s=0.1)
    p.start("validation", 4)
    p.advance(1, loss=1.25)
    time.sleep(0.6)  # a slow step: the timer thread speaks even though no step ended
    p.advance(1)
    p.finish()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "validation: started (4 steps)"
    periodic = [l for l in lines[1:-1] if l.startswith("validation: 1/4")]
    assert len(periodic) >= 2 and "loss 1.25" in periodic[0] and "left" in periodic[0]
    assert re.fullmatch(r"validation: done in 0:0\d", lines[-1])


def test_plain_mode_is_silent_for_short_steps(capsys: pytest.CaptureFixture[str]) -> None:
    p = Progress("plain")  # default quiet period: 2 s
    with p.step("validation", 3):
        for _ in range(3):
            p.advance()
    p.line("epoch 1/1  val/loss 0.1")
    assert capsys.readouterr().out == "epoch 1/1  val/loss 0.1\n"


def test_auto_mode_is_plain_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert Progress("auto", stream="stderr").mode == "plain"
    assert Progress("auto", enabled=False).mode == "none"


# ----- models ---------------------------------------------------------------------------------------
def test_models_counts_densenet_at_32px(monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    """The default `vaitrain models` died on DenseNet at 32 px: batch norm on a 1x1 map of one image."""
    monkeypatch.setattr(zoo, "list_models", lambda: ["densenet121", "resnet20"])
    rows, size = zoo.model_table([])
    assert size == 32
    by_name = {r[0]: r for r in rows}
    assert by_name["densenet121"][4] == ""
    # ResNet-20 on 32 px: 40.8 M multiply-adds per image (He et al. 2016, table 6) = 0.0816 GFLOPs
    assert by_name["resnet20"][2] == pytest.approx(0.0816, rel=0.02)
    assert by_name["resnet20"][1] == "269,462"


def test_a_model_that_cannot_be_counted_gets_a_row_saying_why(monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    monkeypatch.setattr(zoo, "list_models", lambda: ["plain_mlp", "resnet20"])
    real = zoo.count_flops

    def flaky(model, shape, **kw):  # type: ignore[no-untyped-def]
        if sum(p.numel() for p in model.parameters()) > 1_000_000:  # the MLP
            raise RuntimeError("meta kernel missing\nsecond line")
        return real(model, shape, **kw)

    monkeypatch.setattr(zoo, "count_flops", flaky)
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "FLOPs not counted: RuntimeError: meta kernel missing" in result.output
    assert "second line" not in result.output
    assert re.search(r"resnet20 .*269,462 .*0\.08", result.output)


# ----- discoverability ------------------------------------------------------------------------------
def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"vaitrain {vaitrain.__version__}"


def test_options_lists_keys_with_their_ranges_and_choices() -> None:
    from vaitrain.config import BOUNDS, CHOICES

    result = CliRunner().invoke(app, ["options", "optim"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    row = next(l for l in lines if "│ optim.lr " in l)
    assert f">= {BOUNDS['optim.lr'][0]:g}" in row
    assert "adam adamw alrao sgd" in next(l for l in lines if "│ optim= " in l)
    assert "|".join(CHOICES["optim.body"]) in next(l for l in lines if "│ optim.body " in l)
    assert "max global grad norm" in next(l for l in lines if "│ optim.grad_clip " in l)  # the schema's comment
    assert "model." not in result.output  # one group only


def test_options_show_the_keys_of_the_chosen_option() -> None:
    unet = CliRunner().invoke(app, ["options", "model", "model=unet"], env={"COLUMNS": "200"}).output
    resnet = CliRunner().invoke(app, ["options", "model"], env={"COLUMNS": "200"}).output
    assert "model.up " in unet and "model.up " not in resnet


def test_options_unknown_group_is_one_line() -> None:
    result = CliRunner().invoke(app, ["options", "optimizer"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: group=optimizer is not a valid choice; choose one of: optim, " + result.output.split("optim, ", 1)[1].strip()]


def _complete_zsh(line: str) -> str:
    result = CliRunner().invoke(app, [], prog_name="vaitrain",
                                env={"_VAITRAIN_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": line})
    assert result.exit_code == 0, result.output
    return result.output


def test_completion_of_groups_options_and_keys() -> None:
    from vaitrain.config import group_options

    out = _complete_zsh("vaitrain train model=")
    assert sorted(re.findall(r'"model=(\w+)"', out)) == sorted(group_options("model"))
    assert re.findall(r'"([\w.=]+)"', _complete_zsh("vaitrain train optim.l")) == [
        "optim.lr=", "optim.lr_max=", "optim.lr_min="]
    assert '"model.act=selu"' in _complete_zsh("vaitrain train model.act=se")


def test_completion_when_bash_splits_at_equals() -> None:
    from vaitrain.options import complete_override

    assert "=sgd" in complete_override(["train", "optim"], "=")  # the "=" word itself
    assert complete_override(["train", "optim", "="], "s") == ["sgd"]  # the word after "="
