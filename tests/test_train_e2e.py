"""Real (tiny) training runs through the whole stack: records, learning, resume, eval."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vaitrain.config import compose
from vaitrain.engine import evaluate_run, prepare, train
from vaitrain.track.metrics_log import read_metrics

# Tiny but real: ResNet-20 at quarter width on 16 px shapes.
TINY = ["model.width_mult=0.25", "data.image_size=16", "data.num_train=256", "data.num_val=128",
        "trainer.batch_size=32", "trainer.progress=none", "trainer.log_every=4"]


def _run(tmp_path: Path, overrides: list[str]):
    overrides = [*overrides, f"out_dir={tmp_path / 'runs'}"]
    cfg, overrides = prepare(overrides)
    return train(cfg, overrides)


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def test_run_leaves_complete_records(tmp_path):
    result = _run(tmp_path, [*TINY, "trainer.epochs=2"])
    run = result.run_dir
    assert result.status == "completed" and result.epoch == 2 and result.step == 16
    for name in ("config.yaml", "overrides.txt", "env.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert "trainer.epochs=2" in (run / "overrides.txt").read_text()
    records = list(read_metrics(run / "metrics.jsonl"))
    kinds = [r["kind"] for r in records]
    assert kinds.count("epoch") == 2 and kinds[-1] == "final" and kinds.count("train") == 4
    final = records[-1]
    assert final["status"] == "completed" and final["params"] == sum(
        p.numel() for p in torch.load(run / "checkpoints/last.pt", weights_only=True)["model"].values()
        if p.dtype.is_floating_point) - _buffers(run)
    scalars, acc = _scalars(run)
    for tag in ("train/loss", "val/loss", "val/acc1", "train/lr", "train/throughput", "train/time_per_epoch"):
        assert tag in scalars, tag
    assert [s for s, _ in scalars["val/acc1"]] == [8, 16]  # one point per epoch at the global step
    assert acc.Tags()["images"], "sample grid missing"
    # jsonl and TensorBoard agree
    assert math.isclose(scalars["val/loss"][-1][1], records[-2]["val/loss"], rel_tol=1e-5)


def _buffers(run: Path) -> int:
    state = torch.load(run / "checkpoints/last.pt", weights_only=True)["model"]
    return sum(v.numel() for k, v in state.items() if "running_" in k)


def test_training_learns_shapes(tmp_path):
    """Loss falls and val accuracy clears chance (1/6) by a wide margin."""
    overrides = ["data.num_train=1536", "data.num_val=256", "data.image_size=24", "trainer.batch_size=64",
                 "trainer.epochs=4", "trainer.progress=none", "model.width_mult=0.5", "trainer.log_every=6",
                 "data.augment=false", "optim.lr=0.003"]
    result = _run(tmp_path, overrides)
    records = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    first, last = records[0]["train/loss"], records[-1]["train/loss"]
    assert last < 0.6 * first, (first, last)
    assert result.metrics["val/acc1"] > 0.6, result.metrics


def test_resume_matches_uninterrupted_run(tmp_path):
    """Stopped after epoch 1 and resumed, a run ends with the same weights as one never stopped."""
    common = [*TINY, "trainer.epochs=3", "model.dropout=0.2"]  # dropout: the RNG state must be restored too
    full = _run(tmp_path / "a", common)
    part = _run(tmp_path / "b", [*common, "trainer.stop_after=1"])
    assert part.status == "stopped" and part.epoch == 1
    resumed = _run(tmp_path / "b", [f"resume={part.run_dir}", "trainer.stop_after=0"])
    assert resumed.run_dir == part.run_dir and resumed.epoch == 3
    a = torch.load(full.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(resumed.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    # the resumed run continued the same records and TensorBoard steps
    records = list(read_metrics(part.run_dir / "metrics.jsonl"))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    scalars, _ = _scalars(part.run_dir)
    # (sorted: TensorBoard reads event files in name order, and two writers of one process within
    # one second are named by a counter, "...pid.10" before "...pid.9")
    assert sorted(s for s, _ in scalars["val/loss"]) == [8, 16, 24]


def test_eval_of_saved_run_reproduces_its_metrics(tmp_path):
    result = _run(tmp_path, [*TINY, "trainer.epochs=1"])
    report = evaluate_run(result.run_dir, "last")
    assert report["epoch"] == 1
    for k, v in result.metrics.items():
        if k.startswith("val/"):
            assert math.isclose(report["metrics"][k], v, rel_tol=1e-5, abs_tol=1e-6), k
