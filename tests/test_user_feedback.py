"""Issue 13: progress on long steps, `vaitrain models` at the defaults, --version, options listing."""
from __future__ import annotations

import io
import math
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


# ----- images through torchvision, NLL against torch's ------------------------------------------------
def test_grid_layout_by_hand() -> None:
    import torch

    from vaitrain.tasks import images

    cells = [torch.full((3, 2, 2), float(v)) for v in (0.1, 0.2, 0.3)]
    g = images.grid(cells, nrow=2, pad=1)
    assert g.shape == (3, 7, 7)  # 2 rows x 2 columns of (2 + 1) px, + 1 px border
    assert float(g[0, 1, 1]) == pytest.approx(0.1) and float(g[0, 1, 4]) == pytest.approx(0.2)
    assert float(g[0, 4, 1]) == pytest.approx(0.3)
    assert float(g[0, 0, 0]) == 0.5 and float(g[0, 4, 4]) == 0.5  # padding and the empty cell are grey


def test_overlay_blends_class_colours_and_greys_ignored_pixels() -> None:
    import torch

    from vaitrain.tasks import images

    img = torch.rand(3, 4, 4)
    mask = torch.tensor([[0, 1, 2, 255]] * 4)
    colours = images.palette(3)
    out = images.overlay(img, mask, colours, ignore_index=255, alpha=0.5)
    for col, k in ((0, 0), (1, 1), (2, 2)):
        expect = 0.5 * img[:, 0, col] + 0.5 * torch.round(colours[k] * 255) / 255
        assert torch.allclose(out[:, 0, col], expect, atol=1 / 255)
    assert torch.all(out[:, :, 3] == 0.5)


def test_confusion_image_labels_the_predicted_columns() -> None:
    import torch

    from vaitrain.tasks import images

    m = torch.tensor([[5.0, 1.0], [0.0, 7.0]])
    labelled = images.heatmap(m, ["circle", "square"], "t")
    plain = images.heatmap(m, None, "t")
    assert labelled.shape[1] > plain.shape[1] + 50  # a band for the column labels
    band = labelled[:, 16:16 + 60, 70:]  # above the cells, right of the row labels
    cell = 40
    for j in range(2):
        assert float(band[:, :, j * cell:(j + 1) * cell].min()) < 0.3, f"column {j} has no label"


def test_gaussian_nll_matches_torch() -> None:
    """F.gaussian_nll_loss takes a variance (clamped at eps=1e-6); the head works in log-sigma so a
    large |log sigma| stays finite, so torch's is the check here, not the implementation."""
    import torch
    import torch.nn.functional as F

    from vaitrain.tasks.regression import gaussian_nll

    g = torch.Generator().manual_seed(0)
    mu, y = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)
    logsig = torch.randn(64, 3, generator=g) * 0.5
    ours = gaussian_nll(mu, logsig, y)
    ref = F.gaussian_nll_loss(mu, y, torch.exp(2 * logsig), full=True, reduction="none").sum(-1)
    assert torch.allclose(ours, ref, atol=1e-5)
    # below sigma = 1e-3 torch's clamp of the variance changes the density; the head's log-sigma does not
    tiny = torch.full_like(mu, -10.0)
    exact = (-10.0 + 0.5 * math.log(2 * math.pi)) * 3
    assert float(gaussian_nll(mu, tiny, mu)[0]) == pytest.approx(exact, rel=1e-6)
    clamped = F.gaussian_nll_loss(mu, mu, torch.exp(2 * tiny), full=True, reduction="none").sum(-1)
    assert float(clamped[0]) > exact + 5


# ----- compare-runs tables that fit the terminal ------------------------------------------------------
def test_short_run_names_keep_what_tells_runs_apart() -> None:
    from vaitrain.compare_table import short_run_names

    sweep = ["04-57-33-resnet20-shapes-cls-job00-db43a9", "04-57-37-resnet20-shapes-cls-job01-d1f29b"]
    assert short_run_names(sweep) == ["job00", "job01"]
    mixed = ["04-55-07-resnet20-shapes_ambiguous-mdn-26a68e", "04-54-57-unet-shapes-seg-3a07a2"]
    assert short_run_names(mixed) == ["resnet20-shapes_ambiguous-mdn", "unet-shapes-seg"]  # time and id add nothing
    same_tag = ["04-55-07-unet-x-aaaaaa", "04-55-09-unet-x-bbbbbb"]
    assert short_run_names(same_tag) == ["04-55-07-aaaaaa", "04-55-09-bbbbbb"]  # only time and id differ
    assert short_run_names(["a-x-1", "b-x-2"]) == ["a-1", "b-2"]


def _sweep_runs(root, n: int = 4):  # type: ignore[no-untyped-def]
    from fake_runs import merged, write_run

    return [write_run(root, {"val/acc1": [0.1 * i, 0.2], "val/loss": [2.0, 1.0 + i]}, train_loss=[2.5, 2.0],
                      config=merged(**{"optim.lr": 0.1 / (i + 1), "optim.weight_decay": 1e-4 * i,
                                       "model.width_mult": 0.5 + i, "norm.name": ("batch", "group")[i % 2]}),
                      name=f"job{i:02d}")
            for i in range(n)]


@pytest.mark.parametrize("columns", [80, 120, 200])
def test_compare_runs_fits_the_terminal(tmp_path, columns: int) -> None:  # type: ignore[no-untyped-def]
    runs = _sweep_runs(tmp_path)
    result = CliRunner().invoke(app, ["compare-runs", *map(str, runs)], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    lines = result.output.rstrip("\n").splitlines()
    assert max(map(len, lines)) <= columns
    for value in ("0.1", "0.05", "0.03333", "batch", "group", "job00", "job03"):  # every run's values are there
        assert value in result.output, value
    wide = CliRunner().invoke(app, ["compare-runs", "--wide", *map(str, runs)], env={"COLUMNS": str(columns)})
    assert max(map(len, wide.output.splitlines())) > 200  # --wide: every column in full
    assert "val/acc1.best_epoch" in wide.output and "hidden" not in wide.output


def test_compare_runs_hides_columns_by_name_when_it_must(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runs = _sweep_runs(tmp_path, n=16)  # too many runs to turn the table
    result = CliRunner().invoke(app, ["compare-runs", *map(str, runs)], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert max(map(len, result.output.splitlines())) <= 120
    assert re.search(r"\(\d+ columns hidden to fit 120 columns: val/acc1\.best_epoch, .*; --wide shows all\)",
                     result.output)


# ----- eval / inspect tables --------------------------------------------------------------------------
def _render(table, width: int) -> str:  # type: ignore[no-untyped-def]
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_a_narrow_table_keeps_its_title_on_one_line() -> None:
    from vaitrain.cli import _table

    title = "val split (epoch 3, step 24)"
    out = _render(_table(title, ["metric", "value"], [["val/acc1", 0.25], ["val/loss", 1.5]]), 80)
    assert title in out.splitlines()[0]


def test_numbers_are_never_split_at_80_columns() -> None:
    from vaitrain.cli import _table

    columns = ["layer", "type", "output shape", "act mean", "act var", "grad norm", "grad rms", "weight var"]
    rows = [[f"layer{i}.0.conv{i}", "BatchNorm2d", "128x16x32x32", -0.011543 * i, 0.41582, 0.0020123,
             1.3891e-06 * (i + 1), 0.0123] for i in range(3)]
    out = _render(_table("at init", columns, rows), 80)
    assert max(map(len, out.splitlines())) <= 80
    for row in rows:
        for v in row[3:]:
            assert f"{v:.4g}" in out, v


# ----- threads ----------------------------------------------------------------------------------------
def test_oversubscription_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from vaitrain.engine import threads

    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "other_vaitrain_runs", lambda: 0)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (6.5, 6.0, 5.0))
    hint = threads.oversubscription_hint(torch.device("cpu"), 0)
    assert hint is not None and "load average 6.5 on 2 cores" in hint and "trainer.threads=1" in hint
    assert threads.oversubscription_hint(torch.device("cpu"), 1) is None  # threads chosen: no hint
    assert threads.oversubscription_hint(torch.device("cuda"), 0) is None
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert threads.oversubscription_hint(torch.device("cpu"), 0) is None  # an idle machine
    monkeypatch.setattr(threads, "other_vaitrain_runs", lambda: 2)
    assert "2 other vaitrain runs" in threads.oversubscription_hint(torch.device("cpu"), 0)


def test_other_runs_are_found_in_proc() -> None:
    import subprocess
    import sys

    from vaitrain.engine.threads import other_vaitrain_runs

    before = other_vaitrain_runs()
    # a process whose argv looks like `.../vaitrain train` (sleeping, so it costs nothing)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "/x/bin/vaitrain", "train"])
    try:
        time.sleep(0.2)
        assert other_vaitrain_runs() == before + 1
    finally:
        child.kill()
        child.wait()


def test_interrupted_sweep_summary_counts_states_and_says_how_to_resume(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from vaitrain import sweep

    def fake_run_sweep(overrides, progress=None):  # type: ignore[no-untyped-def]
        jobs = [sweep.SweepJob(0, ["optim=sgd"], "completed"), sweep.SweepJob(1, ["optim=adam"], "stopped"),
                sweep.SweepJob(2, ["optim=adamw"], "interrupted"), sweep.SweepJob(3, ["optim=alrao"], "interrupted")]
        return sweep.SweepResult(tmp_path / "sw", list(overrides), jobs, interrupted=True)

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    result = CliRunner().invoke(app, ["train", "-m", "optim=sgd,adam,adamw,alrao"])
    assert result.exit_code == 130
    assert f"sweep: 4 jobs (1 completed, 1 stopped, 2 interrupted); {tmp_path / 'sw' / 'sweep.json'}" in result.output
    assert f"continue with: vaitrain train -m resume={tmp_path / 'sw'}" in result.output


def test_a_run_off_a_terminal_says_what_it_prepares_and_trains(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from vaitrain.track import progress

    monkeypatch.setattr(progress, "QUIET_S", 0.0)  # every step counts as long here
    monkeypatch.setattr(progress.Progress.__init__, "__defaults__", ("auto", True))
    monkeypatch.setattr(progress.Progress.__init__, "__kwdefaults__",
                        {"stream": "stdout", "quiet_s": 0.0, "every_s": 0.05, "done_lines": True})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "data.num_train=32", "data.num_val=16", "trainer.batch_size=8",
                                      "trainer.epochs=1", "trainer.threads=1", "model=plain_mlp", "trainer.progress=plain"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "preparing the shapes data and plain_mlp: started" in out
    assert re.search(r"^run runs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-plain_mlp-shapes-cls-[0-9a-f]{6}$", out, re.M)
    assert re.search(r"plain_mlp \(\d\.\d\d M params\), classification on shapes: 32 train / 16 val images at 32 px; "
                     r"1 epoch x 4 steps of 8; adam, cpu, fp32", out)
    assert "train 1/1: started (4 steps)" in out
    assert "train 1/1: done" not in out  # the epoch line follows instead
    assert re.search(r"^done: .*  val/acc1=[\d.]+  val/loss=[\d.]+$", out, re.M)


def test_config_shows_the_keys_that_apply(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    def shown(*args: str) -> dict:  # type: ignore[type-arg]
        result = CliRunner().invoke(app, ["config", *args])
        assert result.exit_code == 0, result.output
        return yaml.safe_load(result.stdout)

    adam = shown("optim=adam")
    assert "lr_min" not in adam["optim"] and "lr" in adam["optim"]  # Alrao's keys
    assert "dice_weight" not in adam["task"] and "label_smoothing" in adam["task"]  # segmentation's
    assert "lr_min" in shown("optim=alrao")["optim"]
    seg = shown("task=segmentation", "model=unet")
    assert "dice_weight" in seg["task"] and "topk" not in seg["task"]
    assert "lr_min" in shown("optim=adam", "--all")["optim"]
    note = CliRunner().invoke(app, ["config", "optim=adam"]).stdout.splitlines()[-1]
    assert note.startswith("# ") and "optim.lr_min" in note and note.endswith("--all shows them")


def test_every_key_has_a_one_line_doc() -> None:
    """`vaitrain options` shows each key's doc from its schema field's comment: none may be missing."""
    from vaitrain.config import group_options
    from vaitrain.options import option_rows

    undocumented = set()
    for model in group_options("model"):  # every model family's keys
        undocumented |= {r[0] for r in option_rows("model", [f"model={model}"]) if not r[3]}
    undocumented |= {r[0] for r in option_rows() if not r[3]}
    assert not undocumented, f"add a `# what it does` comment to these schema fields: {sorted(undocumented)}"


def test_options_list_the_sweep_search_recipe_and_top_level_keys() -> None:
    """Every key the config accepts is listed somewhere: the sweep/search nodes, experiment= and the
    top-level keys (seed, out_dir, resume, init_from, name) too."""
    from vaitrain.config import compose, group_options
    from vaitrain.options import option_rows

    keys = {r[0] for r in option_rows()}
    cfg = compose([])
    for node in ("sweep", "search"):
        assert {f"{node}.{k}" for k in cfg[node] if not hasattr(cfg[node][k], "keys")} <= keys
    assert {"seed", "out_dir", "resume", "init_from", "name", "experiment="} <= keys
    recipes = next(r for r in option_rows("experiment") if r[0] == "experiment=")[1].split()
    assert recipes == group_options("experiment") and recipes


def test_choice_lists_lead_with_the_closest_then_go_alphabetically() -> None:
    from vaitrain.errors import closest_first

    assert closest_first("resnt20", ["unet", "resnet32", "resnet20", "densenet40", "alpha"]) == [
        "resnet20", "resnet32", "alpha", "densenet40", "unet"]
    assert closest_first("res", ["unet", "resnet20", "resnet110"])[:2] == ["resnet110", "resnet20"]  # completions
    assert closest_first("zzz", ["b", "a"]) == ["a", "b"]
