"""Adversarial suite, second pass over the command line: values of the wrong kind or out of any
sensible range, devices this machine lacks, sweeps that list nothing (or far too much), output paths
that are folders, and what a new user types first (`vaitrain help`, `-h`). Each ends in one line,
exit 2 and nothing written, or in a run that does what was asked."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from adversarial import TINY, cli, refused
from vaitrain.config import BOUNDS, GROUPS, LENGTHS, compose, group_options


def train_refused(tmp_path: Path, args: list[str], pattern: str, multirun: bool = False) -> str:
    """`train` refuses before anything is written: no out_dir at all."""
    out = tmp_path / "runs"
    line = refused(cli(["train", *(["-m"] if multirun else []), *TINY, *args, f"out_dir={out}"]), pattern)
    assert not out.exists(), list(out.rglob("*"))
    return line


# ----- every numeric option has a range ------------------------------------------------------------

# Numeric options whose valid values depend on another option: their builder checks them
# (a CIFAR ResNet's depth is 6n+2, a U-Net's >= 1, an MLP's 0 hidden layers is a linear model).
CHECKED_BY_BUILDER = {"model.depth", "model.compression", "model.nodes", "model.graph_k", "model.graph_m",
                      "task.ignore_index", "data.resized_crop_scale", "data.resized_crop_ratio"}


def _numeric_keys() -> dict[str, object]:
    """Every int/float option (and list of numbers) of every config group's every option."""
    found: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        for k, v in node.items():  # type: ignore[attr-defined]
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                walk(v, key)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                found.setdefault(key, v)
            elif isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                found.setdefault(key, v)

    for group in ("model", "optim", "sched", "task"):  # the groups whose options add keys of their own
        for option in group_options(group):
            walk(OmegaConf.to_container(compose([f"{group}={option}"]), resolve=True), "")
    return found


def test_every_numeric_option_has_a_range():
    """A numeric key without bounds let `trainer.threads=-1` or `seed=2**64` through to torch (a
    traceback) and `trainer.val_batch_size=-1` or `norm.momentum=2` through silently."""
    keys = _numeric_keys()
    assert len(keys) > 60 and set(GROUPS) >= {"model", "trainer"}
    unbounded = sorted(k for k in keys if k not in BOUNDS and k not in CHECKED_BY_BUILDER)
    assert unbounded == [], unbounded


@pytest.mark.parametrize("override, pattern", [
    ("trainer.threads=-1", r"^error: trainer.threads=-1 is out of range; it must be >= 0$"),
    ("seed=99999999999999999999", r"^error: seed=99999999999999999999 is out of range; it must be in \[0, 4294967295\]"),
    ("seed=-1", r"^error: seed=-1 is out of range"),
    ("data.seed=-5", r"^error: data.seed=-5 is out of range"),
    ("trainer.log_every=0", r"^error: trainer.log_every=0 is out of range; it must be >= 1"),
    ("trainer.val_batch_size=-1", r"^error: trainer.val_batch_size=-1 is out of range; it must be >= 0"),
    ("trainer.stop_after=-2", r"^error: trainer.stop_after=-2 is out of range"),
    ("norm.momentum=2", r"^error: norm.momentum=2.0 is out of range; it must be in \[0.0, 1.0\]"),
    ("norm.eps=-1", r"^error: norm.eps=-1.0 is out of range"),  # was blamed on the learning rate
    ("optim.betas=[1.5,0.9]", r"^error: optim.betas\[0\]=1.5 is out of range"),
    ("model=unet model.base_width=0", r"^error: model.base_width=0 is out of range; it must be >= 1"),
    ("model=randwire_small model.channels=0", r"^error: model.channels=0 is out of range"),
    ("model=randwire_small model.graph_p=2", r"^error: model.graph_p=2.0 is out of range; it must be in \[0.0, 1.0\]"),
    ("model=densenet40 model.block_config=[0,0,0]", r"^error: model.block_config\[0\]=0 is out of range"),
    ("sched=multistep sched.milestones=[-5]", r"^error: sched.milestones\[0\]=-5 is out of range"),
])
def test_out_of_range_values(tmp_path, override, pattern):
    train_refused(tmp_path, override.split(), pattern)


@pytest.mark.parametrize("override, pattern", [
    ("optim.betas=[0.9]", r"^error: optim.betas=\[0.9\] has 1 value; it needs 2 values, e.g. optim.betas=\[0.9,0.999\]"),
    ("model=densenet40 model.block_config=[]", r"^error: model.block_config=\[\] has 0 values; it needs at least 1"),
])
def test_list_of_the_wrong_length(tmp_path, override, pattern):
    assert set(LENGTHS) == {"optim.betas", "model.block_config"}
    train_refused(tmp_path, override.split(), pattern)


# ----- values of the wrong kind ----------------------------------------------------------------------

@pytest.mark.parametrize("override, pattern", [
    ("data.flip=maybe", r"^error: data.flip=maybe is not a valid bool; write data.flip=true or data.flip=false$"),
    ("trainer.channels_last=2", r"^error: trainer.channels_last=2 is not a valid bool; write "),  # was taken as true
    ("trainer.compile=-1", r"^error: trainer.compile=-1 is not a valid bool"),
    ("trainer.channels_last=1.5", r"^error: trainer.channels_last=1.5 is not a valid bool"),
    ("sched.milestones=30", r"^error: sched.milestones=30: sched.milestones is a list; write it in brackets, "
                            r"e.g. sched.milestones=\[30\]$"),
    ("optim.betas=0.9", r"^error: optim.betas=0.9: optim.betas is a list"),
    ("model.act={a:1}", r"^error: model.act=\{a:1\}: model.act takes one value, not a dict"),
    ("name=[a,b]", r"^error: name=\[a,b\]: name takes one value, not a list"),
    ("optim.lr=null", r"^error: optim.lr=null: optim.lr needs a value, not null"),
    ("trainer.epochs=true", r"^error: trainer.epochs=True is not a valid integer"),
])
def test_value_of_the_wrong_kind(tmp_path, override, pattern):
    """Hydra said only 'Error merging override data.flip=maybe' (and took 2 for true)."""
    line = train_refused(tmp_path, [override], pattern)
    assert "Error merging" not in line


def test_bool_words_and_0_1_are_taken():
    """The refusal above is not blanket: YAML's words and 0/1 are bools (OmegaConf's rules)."""
    for word, value in (("yes", True), ("off", False), ("1", True), ("0", False), ("True", True)):
        assert compose([f"trainer.channels_last={word}"]).trainer.channels_last is value


# ----- devices and steps that cannot work here ----------------------------------------------------------

@pytest.mark.skipif(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
                    reason="this machine has Apple's MPS")
def test_mps_on_a_machine_without_it(tmp_path):
    """trainer.device=mps passed the device check and failed in the data's .to(): a traceback."""
    train_refused(tmp_path, ["trainer.device=mps"],
                  r"^error: trainer.device=mps but Apple's MPS is not available on this machine .*trainer.device=cpu")


def test_grad_accum_longer_than_an_epoch(tmp_path):
    """64 samples / batch 16 = 4 batches: grad_accum=5 made no optimizer step at all, and the run
    said 'completed' with train/loss 0."""
    train_refused(tmp_path, ["trainer.grad_accum=5"],
                  r"^error: trainer.grad_accum=5 is more than the 4 batches of an epoch \(trainer.batch_size=16\): "
                  r"use trainer.grad_accum <= 4")


def test_pooling_that_no_image_size_survives(tmp_path):
    """plain_cnn pooling after every one of 20 layers: the 'smallest size that fits' search found
    none (StopIteration)."""
    train_refused(tmp_path, ["model=plain_cnn", "model.down_every=1"],
                  r"^error: model=plain_cnn down-samples even an 8192 px image to nothing")


def test_empty_out_dir_and_resume(tmp_path, monkeypatch):
    """out_dir= put the run straight into the working folder; resume= read as resume=."""
    monkeypatch.chdir(tmp_path)
    refused(cli(["train", *TINY, "out_dir="]), r"^error: out_dir is empty; give a folder, e.g. out_dir=runs")
    refused(cli(["train", *TINY, "resume="]), r"^error: resume= is empty; give the run directory")
    assert list(tmp_path.iterdir()) == []


# ----- sweeps ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, pattern", [
    ("seed=range(3,1)", r"^error: 'seed=range\(3,1\)' gives no values"),  # was an IndexError
    ("seed=range(0,10,0)", r"^error: 'seed=range\(0,10,0\)': the step of a range cannot be 0"),  # never ended
    ("seed=range(1000000000)", r"^error: the sweep makes 1000000000 jobs \(1000000000 \(seed\)\), more than "
                               r"the 1000 a grid may have"),  # composed silently for hours
    ("optim.lr=0.1,0.1", r"^error: 'optim.lr=0.1,0.1' lists 0.1 twice: each value once"),
    ("seed=range(40) optim.lr=range(1,40)", r"^error: the sweep makes 1560 jobs \(40 \(seed\) x 39 \(optim.lr\)\)"),
])
def test_sweeps_that_list_nothing_or_too_much(tmp_path, override, pattern):
    train_refused(tmp_path, override.split(), pattern, multirun=True)


# ----- commands and their flags -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli2") / "runs"
    result = cli(["train", *TINY, "trainer.epochs=1", f"out_dir={out}"])
    assert result.exit_code == 0, result.output
    return next(out.rglob("config.yaml")).parent


def test_eval_checkpoint_that_is_no_file(trained, tmp_path):
    refused(cli(["eval", str(trained), "--checkpoint", "bets"]),
            r"^error: --checkpoint bets: give best, last or the path of a .pt file \(bets is no file\)")
    refused(cli(["eval", str(trained), "--checkpoint", str(tmp_path)]), r"\(.* is a folder\)$")


def test_predict_on_a_device_this_machine_lacks(trained, tmp_path):
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        pytest.skip("this machine has Apple's MPS")
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "a.png")
    refused(cli(["predict", str(trained), str(tmp_path / "a.png"), "--device", "mps"]),
            r"^error: trainer.device=mps but Apple's MPS is not available")


def test_export_to_a_folder_is_refused(trained, tmp_path):
    """--out DIR was an IsADirectoryError from the final rename, after the export's work."""
    refused(cli(["export", str(trained), "--format", "torchscript", "--out", str(tmp_path)]),
            rf"^error: --out {tmp_path} is a folder; name the file to write, e.g. --out {tmp_path}/model.pt")
    assert list(tmp_path.iterdir()) == []


def test_onnx_export_is_one_file_with_nothing_left_beside_it(trained, tmp_path):
    """torch's exporter wrote the weights to '.model.onnx.<random>.tmp.data', which the renamed
    .onnx still named and which stayed behind as a hidden file (a second export: a second one)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    import onnx

    out = tmp_path / "model.onnx"
    result = cli(["export", str(trained), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]
    model = onnx.load(str(out), load_external_data=False)
    assert not [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert out.stat().st_mode & 0o044 == (out.with_name("model.onnx.json").stat().st_mode & 0o044)  # not 0600
    json.loads(out.with_name("model.onnx.json").read_text())


@pytest.mark.parametrize("port", ["65536", "70000", "-1"])  # 0 is any free port (test_compare_cli)
def test_compare_runs_port_out_of_range(trained, port):
    """--port 70000 --serve was an OverflowError from socket.bind."""
    refused(cli(["compare-runs", str(trained), "--serve", "--port", port]), r"^error: Invalid value for '--port'")


def test_models_with_a_model_choice():
    """`vaitrain models model=bogus` printed every model's row with the error, exit 0;
    `model=unet` was ignored (every row sets model=)."""
    refused(cli(["models", "model=bogus"]), r"^error: model=bogus is not a valid choice; choose one of: ")
    result = cli(["models", "model=resnet20", "data.image_size=16"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "resnet" in line or "unet" in line or "densenet" in line]
    assert len(rows) == 1 and "resnet20" in rows[0], result.stdout


@pytest.mark.parametrize("args", [["help"], ["-h"], ["help", "train"], ["train", "-h"]])
def test_help_as_a_new_user_asks_for_it(args):
    """`vaitrain help` was 'No such command', `-h` 'No such option'."""
    result = cli(args)
    assert result.exit_code == 0, result.output
    usage = " train [OPTIONS] [overrides]" if "train" in args else " [OPTIONS] COMMAND [ARGS]"
    assert usage in result.stdout
    assert result.stdout.rstrip() == cli([*(a for a in args if a not in ("help", "-h")), "--help"]).stdout.rstrip()


def test_help_for_a_command_that_does_not_exist():
    refused(cli(["help", "trian"]), r"^error: no command 'trian'; the commands are: train, ")


def test_more_threads_than_cores_gets_a_hint():
    """trainer.threads=999 on 2 cores ran ~7x slower than threads=1 without a word."""
    import os

    from vaitrain.engine.threads import oversubscription_hint

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    hint = oversubscription_hint(torch.device("cpu"), usable + 1)
    assert hint == (f"hint: trainer.threads={usable + 1} is more than the {usable} CPU cores this process may use; "
                    f"the extra threads only slow it down (trainer.threads={usable} or fewer)")
    assert oversubscription_hint(torch.device("cpu"), usable) is None


def test_lab_refused_before_its_first_run_leaves_no_folder(tmp_path):
    """`vaitrain lab init bogus=1` said so in one line but left runs/<date>/<time>-lab-init/lab.json
    ('running' for ever); a folder that was there before stays."""
    out = tmp_path / "runs"
    refused(cli(["lab", "init", "--size", "tiny", "--out-dir", str(out), "bogus=1"]), r"^error: unknown config key 'bogus'")
    assert not out.exists()
    out.mkdir()
    refused(cli(["lab", "init", "--size", "tiny", "--out-dir", str(out), "bogus=1"]), r"^error: unknown config key 'bogus'")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("override, pattern", [
    ("optim@x=adam", r"^error: 'optim@x=adam': choosing where a group goes with @ is not supported; write optim=adam$"),
    ("+optim@x=adam", r"^error: '\+optim@x=adam': choosing where a group goes with @"),  # named a packaged file
    ("model@_global_=unet", r"^error: 'model@_global_=unet': choosing where .*write model=unet$"),
    ("data.image_size=${oc.env:HOME}", r"^error: cannot resolve the config: .*could not be converted to Integer$"),
])
def test_packages_and_interpolations(tmp_path, override, pattern):
    """`optim@x=adam` was 'no config key or group', `+optim@x=adam` an unknown key in
    conf/optim/schema_optim.yaml; an interpolation's type error ended in 'full_key: ... object_type=...'."""
    train_refused(tmp_path, [override], pattern)


def test_refused_out_dir_leaves_no_folders(tmp_path):
    """out_dir=<new>/<new>/<name too long> was refused in one line, but the two new folders above it
    stayed behind."""
    out = tmp_path / "new" / "deeper" / ("y" * 300)
    refused(cli(["train", *TINY, f"out_dir={out}"]), r"^error: cannot write runs under .*\(File name too long\); "
                                                       r"choose a writable folder with out_dir=DIR")
    assert list(tmp_path.iterdir()) == []


def test_batch_that_the_processes_cannot_split_is_said_once(tmp_path):
    """trainer.devices=3 with batch 16 launched 3 processes, each printing the refusal: 3 lines."""
    train_refused(tmp_path, ["trainer.devices=3"],
                  r"^error: trainer.batch_size=16 is not divisible by trainer.devices=3: .*use a multiple of 3$")


def test_sweep_stopped_by_sigterm_exits_143(tmp_path, monkeypatch):
    """A single run stopped by SIGTERM exits 128+15; a sweep whose job it stopped exited 130 as for Ctrl-C."""
    import types

    import vaitrain.engine

    calls = []

    def stopped(cfg, overrides, **kw):  # the job's loop saw SIGTERM and stopped after a checkpoint
        calls.append(overrides)
        return types.SimpleNamespace(status="stopped", signal=15, run_dir=None)

    monkeypatch.setattr(vaitrain.engine, "train", stopped)
    result = cli(["train", "-m", *TINY, "seed=1,2", f"out_dir={tmp_path}"])
    assert result.exit_code == 143, result.output
    assert len(calls) == 1 and "continue with: vaitrain train -m resume=" in result.stderr


def test_freezing_a_random_backbone_is_said(tmp_path):
    """model.freeze=backbone without weights trained the final layer over random features silently."""
    result = cli(["train", *TINY, "trainer.epochs=1", "trainer.progress=plain", "model.freeze=backbone",
                  f"out_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert ("note: model.freeze=backbone without model.weights or init_from: the backbone keeps its random "
            "initialization and only the final layer trains") in result.output


@pytest.mark.parametrize("fmt, name, pattern", [
    ("torchscript", "model.onnx", r"^error: --out .*model.onnx names a ONNX file but --format is torchscript: name it model.pt"),
    ("onnx", "model.pt", r"^error: --out .*model.pt names a TorchScript file but --format is onnx: name it model.onnx"),
])
def test_export_to_the_other_formats_file_name(trained, tmp_path, fmt, name, pattern):
    """--format torchscript --out model.onnx wrote a TorchScript archive named .onnx, exit 0."""
    refused(cli(["export", str(trained), "--format", fmt, "--out", str(tmp_path / name)]), pattern)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["compare-runs", "inspect"])
def test_plot_named_other_than_png(trained, tmp_path, command):
    """--plot curves.txt wrote a PNG into a .txt file (compare-runs after printing its table)."""
    args = [str(trained)] if command == "compare-runs" else [*TINY]
    result = cli([command, *args, "--plot", str(tmp_path / "curves.txt")])
    refused(result, r"^error: --plot .*curves.txt: the plot is a PNG image; name it curves.png$")
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value, pattern", [
    ("[file:///nonexistent/conf]", r"^error: hydra.searchpath: /nonexistent/conf is not a folder; write "),
    ("[pkg://os]", r"^error: hydra.searchpath: 'pkg://os' is not a folder of config files"),
])
def test_searchpath_that_is_no_folder(tmp_path, value, pattern):
    """Hydra only warned (a 2-line UserWarning) and went on: the user's recipes were then 'not a valid choice'."""
    train_refused(tmp_path, [f"hydra.searchpath={value}"], pattern)


def test_loader_workers_far_above_the_cores(tmp_path):
    """data.num_workers=999 (streamed data) started 999 processes: the machine froze for minutes."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    train_refused(tmp_path, ["data.device_resident=false", "data.num_workers=999"],
                  rf"^error: data.num_workers=999 is far more than the {cores} CPU cores here .*<= {cores}$")
    assert compose([f"data.num_workers={cores}"]).data.num_workers == cores


def test_more_cpu_processes_than_cores(tmp_path):
    """trainer.devices=64 on the CPU started 64 gloo processes on a 2-core machine."""
    # (up to 4x the cores is taken: on a 1-core CI machine the 2-process tests still run)
    train_refused(tmp_path, ["trainer.device=cpu", "trainer.devices=64", "trainer.batch_size=64", "data.num_train=128"],
                  r"^error: trainer.devices=64 on the CPU starts 64 processes but there are \d+ CPU cores here")


def test_more_local_jobs_at_once_than_cores(tmp_path):
    """sweep.parallel=999 with range(1000) would start 999 training processes at once."""
    line = train_refused(tmp_path, ["seed=range(20)", "sweep.parallel=999"],
                         r"^error: sweep.parallel=999 runs 999 jobs at once on this machine, which has \d+ CPU cores",
                         multirun=True)
    assert "sweep.launcher=slurm" in line


def test_a_key_of_an_option_not_chosen_is_said(tmp_path):
    """optim.lr_min=0.1 with optim=adam (Alrao's key) composed and was ignored without a word."""
    result = cli(["train", *TINY, "trainer.epochs=1", "trainer.progress=plain", "optim=adam", "optim.lr_min=0.1",
                  f"out_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert ("note: optim.lr_min=0.1 has no effect: optim=adam does not read optim.lr_min "
            "(`vaitrain options optim optim=adam` lists what it does)") in result.output
    assert "note: optim.lr=" not in result.output and "note: model." not in result.output
