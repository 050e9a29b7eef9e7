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
