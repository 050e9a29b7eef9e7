"""`vaitrain bench` end to end at toy sizes (nothing timed is asserted): every task's real targets,
a failing model's row with exit 0, the files --out writes, the torchvision equivalents."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from vaitrain.bench.baselines import torchvision_model
from vaitrain.bench.run import bench_config, vaitrain_setup
from vaitrain.cli import app
from vaitrain.config import compose

runner = CliRunner()
TINY = ["data.image_size=16", "bench.batch_size=4", "bench.warmup=1", "bench.steps=1", "bench.repeats=1",
        "bench.data_batches=2", "trainer.device=cpu"]
PLAIN = ["model=plain_cnn", "model.depth=2", "model.width=8"]


def test_every_task_with_the_bare_baseline_to_json(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "-m", "task=classification,segmentation,regression", *PLAIN, *TINY,
            "bench.baseline=bare", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"torch", "cuda", "cudnn", "device_name", "threads", "vaitrain"} <= set(data["environment"])
    rows = data["rows"]
    assert [r["label"] for r in rows] == [f"plain_cnn task={t}" for t in ("classification", "segmentation", "regression")]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["baseline"] == "bare" and r["train_ratio"] > 0 and r["infer_ratio"] > 0
        assert r["batch"] == 4 and r["params"] > 0 and r["train_gflop"] > r["fwd_gflop"] > 0
        assert r["loader_img_s"] > 0 and r["epoch_img_s"] > 0 and r["peak_mem_mb"] > 0
    assert "vaitrain vs bare" in result.stdout and f"wrote {out}" in result.stdout


@pytest.mark.parametrize("task, dtype, shape", [
    ("classification", torch.int64, (4,)),
    ("segmentation", torch.int64, (4, 16, 16)),
    ("regression", torch.float32, None),
])
def test_the_timed_batch_has_the_tasks_own_targets(task, dtype, shape):
    cfg = compose([f"task={task}", *PLAIN, *TINY, "bench.data=false"])
    setup = vaitrain_setup(cfg, torch.device("cpu"), 4)
    assert setup.x.shape == (4, 3, 16, 16) and setup.y.dtype == dtype
    if shape is not None:
        assert tuple(setup.y.shape) == shape
    else:
        assert setup.y.dim() == 2 and setup.y.shape[0] == 4
    assert setup.loader is None


def test_a_failing_model_gets_a_row_and_exit_0(tmp_path):
    out = tmp_path / "bench.csv"
    args = ["bench", "-m", "model=resnet20,plain_cnn", "model.depth=2", "task=segmentation", *TINY,
            "bench.data=false", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["resnet20", "plain_cnn"]
    assert rows[0]["status"] == "failed" and "no per-pixel output" in rows[0]["note"]
    assert rows[1]["status"] == "ok" and float(rows[1]["train_img_s"]) > 0
    assert rows[0]["env_torch"] == torch.__version__
    assert "resnet20: FAILED:" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--out", "bench.txt"], "must end in .json or .csv"),
    (["bench.precision=fp16"], "bench.precision=fp16 needs a GPU"),
    (["bench.steps=0"], "bench.steps=0 is out of range"),
])
def test_bad_bench_input_is_one_line_exit_2(tmp_path, args, message):
    result = runner.invoke(app, ["bench", *TINY, *args])
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_bench_config_applies_batch_size_and_data_cap():
    cfg = compose(["bench.batch_size=8", "bench.image_size=24", "bench.data_batches=5"])
    c = bench_config(cfg, 8)
    assert (c.trainer.batch_size, c.data.image_size, c.data.num_train, c.data.num_val) == (8, 24, 40, 8)
    assert bench_config(compose(["bench.data=false"]), 8).data.num_train == 8
    assert bench_config(compose(["bench.data_batches=0"]), 8).data.num_train == cfg.data.num_train


@pytest.mark.parametrize("overrides, tv_name", [
    (["model=resnet50"], "resnet50"),
    (["model=densenet121"], "densenet121"),
    (["model=resnet18", "model.small_stem=true"], "resnet18"),
])
def test_torchvision_equivalent_has_the_same_parameters(overrides, tv_name):
    from vaitrain.models import build_model

    cfg = compose(overrides)
    ours = build_model(cfg.model, cfg.norm, in_channels=3, num_outputs=10, image_size=32)
    theirs, note = torchvision_model(cfg.model, cfg.norm, in_channels=3, num_outputs=10, dense=False)
    assert note.startswith(f"torchvision {tv_name}")
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    assert [tuple(v.shape) for v in theirs.state_dict().values()] == [tuple(v.shape) for v in ours.state_dict().values()]


@pytest.mark.parametrize("overrides, reason", [
    (["model=resnet20"], "no torchvision equivalent (CIFAR-style ResNet)"),
    (["model=resnet50", "norm=group"], "no torchvision equivalent (norm=group)"),
    (["model=unet"], "no torchvision equivalent"),
    (["model=densenet_bc100"], "no torchvision equivalent (DenseNet layout)"),
])
def test_no_torchvision_equivalent_says_why(overrides, reason):
    cfg = compose(overrides)
    assert torchvision_model(cfg.model, cfg.norm, in_channels=3, num_outputs=10, dense=False) == reason
