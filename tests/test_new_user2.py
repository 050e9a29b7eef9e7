"""A second new user's first hour: what they see in TensorBoard, in the shell's completion, in the
help and the messages must be what they expect from a peer tool (and true)."""
from __future__ import annotations

import colorsys
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from typer.testing import CliRunner

from vaitrain import config
from vaitrain.cli import app
from vaitrain.tasks import images
from vaitrain.tasks.segmentation import SegmentationTask


class _Writer:
    def __init__(self) -> None:
        self.images: dict[str, torch.Tensor] = {}

    def add_image(self, tag: str, img: torch.Tensor, step: int) -> None:
        self.images[tag] = img


def _seg_grid(k: int = 2) -> tuple[torch.Tensor, torch.Tensor, SegmentationTask]:
    task = SegmentationTask(SimpleNamespace(ignore_index=255, dice_weight=0.0),
                            SimpleNamespace(num_classes=3, class_names=["background", "cell", "nucleus"], stats=None))
    x = torch.rand(k, 3, 16, 16)
    y = torch.randint(0, 3, (k, 16, 16))
    out = torch.randn(k, 3, 16, 16)
    writer = _Writer()
    task.log_images(writer, "val/samples", x, y, out, step=0)
    return writer.images["val/samples"], x, task


def test_segmentation_samples_name_their_columns_and_classes():
    """The grid of (image, truth, prediction) rows has a title above each column and a colour
    legend below, as a reader of TensorBoard cannot tell the three columns apart otherwise."""
    grid, x, _ = _seg_grid()
    cell, pad, header = 96, 2, 14  # 16 px cells upscaled 6x (nearest), grid padding, title strip
    rgb = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    # the first cell, below the titles, is the input itself, upscaled by pixel repetition
    first = rgb[header + pad:header + pad + cell, pad:pad + cell]
    expected = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy().repeat(6, 0).repeat(6, 1)
    assert np.abs(first.astype(int) - expected.astype(int)).max() <= 1
    # the title strip: white text over each of the three columns, and the widest over 'prediction'
    strip = rgb[:header].astype(int).sum(-1) > 600
    widths = []
    for j in range(3):
        cols = np.nonzero(strip[:, pad + j * (cell + pad):pad + j * (cell + pad) + cell].any(0))[0]
        assert cols.size, f"no title over column {j}"
        widths.append(cols.max() - cols.min())
    assert widths[2] > 1.5 * widths[0]  # 'prediction' is twice as long as 'image'
    # the legend below the two rows: a swatch of each class's colour (background black, then
    # golden-ratio hues from red at s=0.8, v=1)
    legend = rgb[header + pad + 2 * (cell + pad):].reshape(-1, 3)
    colours = {tuple(legend_row) for legend_row in legend.tolist()}
    for k in (1, 2):
        expected_rgb = tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(((k - 1) * 0.618034) % 1.0, 0.8, 1.0))
        assert expected_rgb in colours, (k, expected_rgb)


def _complete(words: list[str]) -> list[str]:
    """What bash's completion function gets from `vaitrain ...<TAB>` (bash splits words at '=')."""
    env = {"COMP_WORDS": "\n".join(["vaitrain", *words]), "COMP_CWORD": str(len(words)),
           "_VAITRAIN_COMPLETE": "complete_bash"}
    r = CliRunner().invoke(app, [], env=env, prog_name="vaitrain")
    assert r.exit_code == 0, r.output
    return r.output.split()


def test_completion_of_model_keys_follows_the_chosen_model():
    """`vaitrain train model=unet model.<TAB>` offers the keys `vaitrain config model=unet` has,
    not those of every model family (small_stem, growth_rate: refused for a U-Net)."""
    unet = {f"model.{k}=" for k in config.compose(["model=unet"]).model} - {"model.name=", "model.family="}
    assert set(_complete(["train", "model", "=", "unet", "model."])) == unet
    default = {f"model.{k}=" for k in config.compose([]).model} - {"model.name=", "model.family="}
    assert set(_complete(["train", "model."])) == default  # no model= given: the default model's


def test_completion_after_equals_offers_the_values_in_the_shell():
    """Bash hands `model=<TAB>` over as the words `model` `=`: the README's promise that this lists
    the models held only for a hand-made word list (Typer passes no previous words)."""
    models = sorted(p.stem for p in (config.conf_dir() / "model").glob("*.yaml"))
    assert sorted(_complete(["train", "model", "="])) == models
    assert _complete(["train", "optim", "=", "ad"]) == ["adam", "adamw"]
    assert set(_complete(["train", "optim", "=", "sgd", "optim.mo"])) == {"optim.momentum="}


def test_lines_on_a_terminal_wrap_between_words(monkeypatch, capsys):
    """The start lines on an 80- or 60-column terminal: the terminal cut 'validati|on' mid-word
    where rich's own lines (the epoch summaries) wrap between words."""
    from vaitrain.track.progress import Progress

    monkeypatch.setenv("COLUMNS", "60")
    text = ("note: 24 optimizer steps in all: batch norm's running statistics, which validation uses, "
            "will still be 8% their initial values, so val/* may lag train/loss; raise trainer.epochs")
    Progress(mode="bar").line(text)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines)
    assert " ".join(lines).split() == text.split()  # every word whole, none lost
    Progress(mode="plain").line(text)  # a log file keeps the line whole (grep finds it)
    assert capsys.readouterr().out == text + "\n"


def test_search_names_the_best_values_as_overrides_to_train_with(tmp_path, monkeypatch):
    """`best:` gave a Python dict ({'optim.lr': 0.0040...}); now the overrides themselves, which
    `vaitrain train` takes as written and which are the best trial's own config values. The
    table's run column names each trial's folder by its end, which fits 80 columns (the whole
    name folded into three lines a row)."""
    import pytest
    import yaml

    from vaitrain import cli

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(cli._Console, "made", None)

    pytest.importorskip("optuna", reason="the search extra is not installed")
    tiny = ["data.num_train=64", "data.num_val=32", "data.image_size=16", "trainer.batch_size=32",
            "model=plain_cnn", "trainer.threads=1", "trainer.progress=none", "trainer.image_every=0",
            "trainer.epochs=1", f"out_dir={tmp_path}"]
    r = CliRunner().invoke(app, ["search", "optim.lr=log(1e-3,1e-1)", "optim=choice(sgd,adam)",
                                 "search.trials=2", *tiny])
    assert r.exit_code == 0, r.output
    m = re.search(r"^best: trial \d+ val/acc1=[\d.]+: (.+)  \((.+)\)$", r.stdout, re.MULTILINE)
    assert m and "{" not in m.group(1), r.stdout
    given = dict(word.split("=", 1) for word in m.group(1).split())
    assert set(given) == {"optim.lr", "optim"}
    saved = yaml.safe_load((Path(m.group(2)) / "config.yaml").read_text())
    assert float(given["optim.lr"]) == saved["optim"]["lr"] and given["optim"] == saved["optim"]["name"]
    composed = config.compose(m.group(1).split())  # what `vaitrain train <those>` composes
    assert composed.optim.lr == saved["optim"]["lr"] and composed.optim.name == saved["optim"]["name"]
    rows = [line.split() for line in r.stdout.splitlines() if re.match(r"^\s+\d+\s+complete", line)]
    assert len(rows) == 2 and all(len(line) <= 80 for line in r.stdout.splitlines() if "complete" in line)
    folders = [p.name for p in Path(m.group(2)).parent.iterdir() if p.is_dir()]
    for row in rows:  # '…-trial0001-1a2b3c' is the end of exactly one trial folder's name
        assert row[-1].startswith("…-") and sum(f.endswith(row[-1][1:]) for f in folders) == 1, (row, folders)


def test_inspect_table_at_80_columns_keeps_names_whole(monkeypatch):
    """`vaitrain inspect model=plain_mlp` on an 80-column terminal: the table is 83 columns with
    two paddings around each column rule, so rich folded every name ('Line|ar', 'body.|1',
    '128x2|56') although one space between columns fits it in 76."""
    from vaitrain import cli

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(cli._Console, "made", None)  # a console of the 80 columns
    r = CliRunner().invoke(app, ["inspect", "model=plain_mlp", "model.act=relu", "model.init=he",
                                 "data.num_train=128", "data.num_val=64"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    body = [line.split() for line in lines if line.strip().startswith(("body.", "fc "))]
    # plain_mlp's default depth: Linear+ReLU pairs named body.<index>, then the head fc
    assert len(body) >= 10 and all(row[1] in ("Linear", "ReLU") and "x" in row[2] for row in body)
    assert all(row[0].startswith("body.") and row[0][5:].isdigit() for row in body[:-1])


def test_csv_regression_keeps_the_whole_of_wide_images(tmp_path):
    """Regression on 96x48 photos whose target is a dot's x position: the centre crop every other
    folder dataset uses cut away the outer quarters, so a dot near an edge vanished while its
    target still named it; csv_regression squashes the whole image (positions scale with it)."""
    from PIL import Image

    from vaitrain.data import build_data

    xs = [4, 12, 30, 48, 66, 84, 92, 8, 88, 50]
    lines = ["path,x"]
    for i, x in enumerate(xs):
        arr = np.full((48, 96, 3), 128, np.uint8)
        arr[:, x - 2:x + 2] = (255, 0, 0)  # a red bar 4 px wide centred on x
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{x / 96}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "val.csv").write_text("\n".join(lines[:3]) + "\n")
    cfg = config.compose(["task=regression", "data=csv_regression", f"data.root={tmp_path}",
                          "data.image_size=32", "data.normalize=none", "data.standardize_targets=false"])
    data = build_data(cfg.data, "regression", device="cpu", batch_size=len(xs), val_batch_size=64, seed=0)
    images, targets = data.train.images, data.train.targets  # decoded uint8, before augmentation
    assert images.shape[0] == len(xs)
    for img, target in zip(images, targets):
        red = img[0].float().mean(0) - img[1].float().mean(0)  # per column: red minus green
        assert red.max() > 40, "the bar was cut away"
        found = float((red.clamp_min(0) * torch.arange(32)).sum() / red.clamp_min(0).sum()) + 0.5
        assert abs(found / 32 - float(target)) < 0.04, (found, float(target))


def test_help_shows_no_python_types_for_flags_and_lists(monkeypatch):
    """Typer's help printed `--json <bool>` (read as `--json true`, which is then a malformed
    override) and `overrides... <list[str]>`; flags and repeated arguments now show no type,
    while a value's kind (`<path>`, `<int>`) stays."""
    monkeypatch.setenv("COLUMNS", "120")
    runner = CliRunner()
    commands = ["train", "search", "eval", "config", "options", "models", "inspect", "bench",
                "compare-runs", "predict", "export", "lab", "report"]
    for command in commands:
        out = runner.invoke(app, [command, "--help"]).output
        assert "--help" in out and "<bool>" not in out and "list[" not in out, (command, out)
    out = runner.invoke(app, ["predict", "--help"]).output
    assert "--overlay" in out and "<path>" in out and "<int>" in out  # value options keep their kind
    assert "<bool>" not in runner.invoke(app, ["--help"]).output


def test_export_normalization_flag_reads_whole_at_80_columns_and_works(tmp_path, monkeypatch):
    """`vaitrain export --help` at 80 columns cut the pair to '--include-normali…
    --no-include-norm…'; the one visible flag reads whole, the default's name is still taken, and
    the file without normalization given (x/255 - mean)/std equals the one with it given x/255."""
    import json

    monkeypatch.setenv("COLUMNS", "80")
    runner = CliRunner()
    assert "--no-include-normalization " in runner.invoke(app, ["export", "--help"]).output
    r = runner.invoke(app, ["train", "model=plain_cnn", "data.num_train=32", "data.num_val=16",
                            "data.image_size=16", "trainer.batch_size=16", "trainer.epochs=1",
                            "trainer.threads=1", "trainer.progress=none", "trainer.image_every=0",
                            f"out_dir={tmp_path / 'runs'}"])
    assert r.exit_code == 0, r.output
    (run,) = (tmp_path / "runs").glob("*/*")
    baked, raw = tmp_path / "baked.pt", tmp_path / "raw.pt"
    for flag, out in (("--include-normalization", baked), ("--no-include-normalization", raw)):
        r = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(out), flag])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "x.pt"),
                            "--include-normalization", "--no-include-normalization"])
    assert r.exit_code == 2 and "contradict" in r.stderr and not (tmp_path / "x.pt").exists()
    side = json.loads((tmp_path / "raw.pt.json").read_text())
    assert side["normalization_included"] is False
    assert json.loads((tmp_path / "baked.pt.json").read_text())["normalization_included"] is True
    x = torch.rand(2, 3, 16, 16)
    mean, std = torch.tensor(side["mean"]).view(1, -1, 1, 1), torch.tensor(side["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(baked))(x), torch.jit.load(str(raw))((x - mean) / std), atol=1e-5)


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), colour, np.uint8)).save(path)


def test_photos_without_class_folders_are_told_the_layout_not_no_images(tmp_path):
    """data.root at a folder of photos (or at one class's folder): 'no images found under photos'
    while the folder held them; now the count and the layout image_folder reads."""
    for i in range(5):
        _png(tmp_path / "photos" / f"p{i}.png", (200, 30, 30))
    r = CliRunner().invoke(app, ["train", "data=image_folder", f"data.root={tmp_path / 'photos'}",
                                 f"out_dir={tmp_path / 'runs'}", "trainer.progress=none"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert "holds 5 image(s) but no <class>/ folders" in r.stderr and "no images found" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_an_image_beside_the_class_folders_is_named_not_dropped_unsaid(tmp_path):
    root = tmp_path / "photos"
    for cls, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        for i in range(6):
            _png(root / cls / f"{i}.png", colour)
    _png(root / "new.png", (200, 30, 30))
    _png(root / "newer.png", (30, 30, 200))
    r = CliRunner().invoke(app, ["train", "model=plain_cnn", "data=image_folder", f"data.root={root}",
                                 "trainer.batch_size=4", "trainer.epochs=1", "trainer.threads=1",
                                 "trainer.progress=plain", "trainer.image_every=0", f"out_dir={tmp_path / 'runs'}"])
    assert r.exit_code == 0, r.output
    assert f"left out 2 image(s) lying directly in {root}" in r.output
    m = re.search(r"(\d+) train / (\d+) val images", r.output)
    assert m and int(m.group(1)) + int(m.group(2)) == 12  # the class folders' images only


def test_a_one_epoch_run_is_plotted_on_whole_epoch_ticks(tmp_path, monkeypatch):
    """A run of one epoch (a student's first try): the report's and compare-runs' curves had an
    epoch axis ticked 0.945, 0.960, ... 1.050, since two whole epochs did not fit in the range."""
    import vaitrain.report as report
    from vaitrain.compare import default_metrics
    from vaitrain.compare_plot import plot_runs
    from vaitrain.track.runs import load_run

    r = CliRunner().invoke(app, ["train", "model=plain_cnn", "data.num_train=32", "data.num_val=16",
                                 "data.image_size=16", "trainer.batch_size=8", "trainer.epochs=1",
                                 "trainer.log_every=1", "trainer.threads=1", "trainer.progress=none",
                                 "trainer.image_every=0", f"out_dir={tmp_path / 'runs'}"])
    assert r.exit_code == 0, r.output
    (run,) = [load_run(p) for p in (tmp_path / "runs").glob("*/*")]
    figures = []
    monkeypatch.setattr(report, "png_bytes", lambda fig, dpi=90: figures.append(fig) or b"png")
    assert report.curves_png([run], "val/loss", []) == b"png" and report.curves_png([run], "train/loss", []) == b"png"
    figures.append(plot_runs([run], default_metrics([run]), tmp_path / "curves.png"))
    for fig in figures:
        fig.canvas.draw()
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            ticks = [float(t) for t in ax.get_xticks() if lo <= t <= hi]
            if ax.get_xlabel() == "epoch":
                assert ticks == [1.0], ticks
    assert any(ax.get_xlabel() == "epoch" for fig in figures for ax in fig.axes)


def test_hparams_table_shows_the_keys_of_the_command_line_first(tmp_path):
    """HParams' table shows 5 columns at first, ordered (TensorBoard's own rule, used here) by
    whether a key differs, then by name: `-m optim=sgd,adam norm=batch,group` with a few fixed
    overrides showed data.name, data.num_train, data.num_val, model.name, norm.name, and hid
    optim.name, one of the two swept keys."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import backend_context, metadata, plugin_data_pb2

    from vaitrain.engine.records import given_hparams, hparam_domains, run_hparams
    from vaitrain.track.tb import TBWriter

    overrides = ["model=plain_cnn", "data.num_train=128", "data.num_val=64", "optim=adam", "norm=group"]
    chosen = run_hparams(config.compose(overrides), overrides)
    assert {"optim.name", "norm.name", "data.name", "task.name"} <= set(chosen)
    tb = TBWriter(tmp_path / "tb")
    tb.hparams(chosen, {"val/acc1": 0.5, "val/loss": 1.0}, hparam_domains(chosen), first=given_hparams(chosen, overrides))
    tb.close()
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    content = ea.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    backend_context._sort_and_reduce_to_hparams_limit(experiment)  # what the dashboard receives
    shown = [info.name for info in experiment.hparam_infos][:5]
    assert {"optim.name", "norm.name"} <= set(shown), shown
    assert "data.name" not in shown and "task.name" not in shown  # always there, not chosen


def test_layer_axes_are_ticked_at_whole_layers(tmp_path, monkeypatch):
    """`vaitrain inspect --plot` and the report's activation-by-depth panel numbered layers 0.0,
    2.5, 5.0, 7.5: there is no layer 2.5."""
    import vaitrain.report as report
    from vaitrain.inspect_init import inspect_jobs, plot_inspection
    from vaitrain.track.runs import load_run

    figures = [plot_inspection(inspect_jobs(["model=plain_mlp", "model.act=relu", "model.init=he",
                                             "data.num_train=128", "data.num_val=32"]))]
    r = CliRunner().invoke(app, ["train", "model=plain_mlp", "data.num_train=32", "data.num_val=16",
                                 "data.image_size=16", "trainer.batch_size=8", "trainer.epochs=1",
                                 "trainer.layer_stats=1", "trainer.threads=1", "trainer.progress=none",
                                 "trainer.image_every=0", f"out_dir={tmp_path / 'runs'}"])
    assert r.exit_code == 0, r.output
    (run,) = [load_run(p) for p in (tmp_path / "runs").glob("*/*")]
    monkeypatch.setattr(report, "png_bytes", lambda fig, dpi=90: figures.append(fig) or b"png")
    assert report.layer_stats_png(run) == b"png"
    checked = 0
    for fig in figures:
        fig.canvas.draw()
        for ax in fig.axes:
            if ax.get_xlabel().startswith("layer"):
                lo, hi = ax.get_xlim()
                ticks = [float(t) for t in ax.get_xticks() if lo <= t <= hi]
                assert len(ticks) >= 2 and all(t.is_integer() for t in ticks), ticks
                checked += 1
    assert checked == 3  # inspect's two panels, the report's depth panel


def test_bash_completion_leaves_no_space_after_a_key(tmp_path):
    """In bash, `model.u<TAB>` gave `model.up= ` (a space after the '='), so the value typed next
    was a word of its own; the installed script now asks for no space after a lone `key=`, and
    bash's words `model` `=` then reach the values."""
    import shutil
    import subprocess
    import sys

    import pytest

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    script = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="vaitrain").output
    assert "_vaitrain_completion" in script and "compopt -o nospace" in script
    wrapper = tmp_path / "bin" / "vaitrain"  # the console entry, as pip writes it
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!{sys.executable}\nfrom vaitrain.cli import app\napp(prog_name='vaitrain')\n")
    wrapper.chmod(0o755)
    (tmp_path / "completion.bash").write_text(script)
    test = """source completion.bash
compopt() { echo "compopt $1 $2"; }  # the builtin works only inside a real completion
try() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); _vaitrain_completion vaitrain; echo "reply: ${COMPREPLY[*]}"; }
try vaitrain train model = unet model.u
try vaitrain train model = unet model.up = bi
"""
    env = {**os.environ, "PATH": f"{wrapper.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([bash, "--norc", "--noprofile", "-c", test], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert out == ["compopt -o nospace", "reply: model.up=", "reply: bilinear"], out


def test_report_curves_of_many_runs_keep_the_legend_off_the_lines(tmp_path, monkeypatch):
    """`vaitrain report runs` over 40 runs: the legend inside the axes covered every curve (and
    matplotlib warned that the layout collapsed); above 8 runs it goes below the axes."""
    import warnings

    import vaitrain.report as report
    from fake_runs import merged, write_run
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from vaitrain.track.runs import load_run

    runs = [load_run(write_run(tmp_path, {"val/loss": [1.0 / (i + 1), 0.5 / (i + 1)]}, tb=False,
                               config=merged(**{"optim.lr": 0.01 * (i + 1)}), name=f"lr{i}"))
            for i in range(12)]
    figures = []
    monkeypatch.setattr(report, "png_bytes", lambda fig, dpi=90: figures.append(fig) or b"png")
    for some in (runs[:3], runs):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a collapsed layout is a UserWarning
            assert report.curves_png(some, "val/loss", ["optim.lr"]) == b"png"
            figures[-1].savefig(tmp_path / "c.png")
    few, many = figures
    assert few.axes[0].get_legend() is not None and not few.legends  # 3 runs: inside, as before
    assert many.axes[0].get_legend() is None and len(many.legends) == 1
    canvas = FigureCanvasAgg(many)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = many.legends[0].get_window_extent(renderer)
    axes = many.axes[0].get_window_extent(renderer)
    assert legend.y1 <= axes.y0 and legend.y0 >= 0  # wholly below the plot, inside the picture
    assert len(many.legends[0].get_texts()) == 12


def test_a_run_says_which_epoch_best_pt_is_when_not_the_last(tmp_path):
    """The done line shows the last epoch's metrics while eval, predict and export load best.pt:
    40 photos reached val/acc1=1 at epoch 1, the run ended 'val/acc1=1 val/loss=0.69' and eval
    printed val/loss 0.89 'epoch 1' without a word why. Checked against metrics.jsonl (the first
    epoch reaching the best val/acc1) and against what eval loads."""
    import json

    import pytest
    from PIL import Image

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for cls, colour in (("red", (200, 30, 30)), ("green", (30, 180, 40)), ("blue", (30, 40, 200))):
        for i in range(10):
            arr = np.clip(np.array(colour) + rng.integers(-30, 30, (12, 12, 3)), 0, 255).astype(np.uint8)
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    runner = CliRunner()
    r = runner.invoke(app, ["train", "model=plain_cnn", "data=image_folder", f"data.root={root}",
                            "data.val_fraction=0.2", "trainer.batch_size=4", "trainer.epochs=3",
                            "trainer.threads=1", "trainer.progress=none", "trainer.image_every=0",
                            f"out_dir={tmp_path / 'runs'}"])
    assert r.exit_code == 0, r.output
    (run,) = (tmp_path / "runs").glob("*/*")
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = {e["epoch"]: e["val/acc1"] for e in epochs if e["kind"] == "epoch"}
    best_epoch = min(e for e, v in acc.items() if v == max(acc.values()))  # a tie keeps the first
    line = re.search(r"^best\.pt is epoch (\d+) of 3 \(val/acc1=([\d.]+)\)", r.stdout, re.M)
    assert (line is not None) == (best_epoch < 3), r.stdout
    if line:
        assert int(line.group(1)) == best_epoch and float(line.group(2)) == pytest.approx(acc[best_epoch], abs=1e-4)
    shown = json.loads(runner.invoke(app, ["eval", str(run), "--json"]).stdout)
    assert shown["epoch"] == best_epoch


def test_epoch_line_gives_the_epoch_time_a_unit():
    """The epoch line read 'img/s 303  epoch_time 13.1': a time without its unit; now 's/epoch',
    the seconds TensorBoard plots as train/time_per_epoch."""
    from vaitrain.engine.records import _summary

    shown = _summary({"train/loss": 0.5, "val/loss": 0.4, "val/acc1": 0.9, "train/throughput": 303.0,
                      "train/time_per_epoch": 13.1}, "acc1")
    assert shown == {"train/loss": 0.5, "val/loss": 0.4, "val/acc1": 0.9, "img/s": 303.0, "s/epoch": 13.1}


def test_plain_regression_reports_no_best_of_k():
    """eval of a plain-head regression listed val/err and val/best_of_k, the same number (one
    mean: the closest of K=1 hypotheses); best_of_k belongs to the heads with several."""
    from vaitrain.tasks.regression import RegressionTask

    data = SimpleNamespace(target_dim=2, target_names=["x", "y"], stats=None,
                           target_mean=torch.zeros(2), target_std=torch.ones(2))
    for head, expected in (("plain", False), ("gaussian", True), ("mdn", True)):
        cfg = config.compose(["task=regression", f"task.head={head}"]).task
        task = RegressionTask(cfg, data)
        meter = task.new_meter()
        meter.update(torch.randn(4, task.num_outputs), torch.randn(4, 2))
        assert ("best_of_k" in meter.compute()) == expected, head
        assert ("best_of_k" in RegressionTask.metrics_reported(cfg)) == expected, head
