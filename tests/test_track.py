"""Records: unique run directories, atomic writes, metrics.jsonl reading."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from vaitrain.errors import RunDirError
from vaitrain.track import files, rundir
from vaitrain.track.metrics_log import MetricsLog, read_metrics, truncate_after_step


def test_run_dirs_started_in_the_same_second_never_collide(tmp_path, monkeypatch):
    ids = iter(["aaaaaa", "aaaaaa", "bbbbbb"])  # a clash on the second run forces a retry
    monkeypatch.setattr(rundir, "_run_id", lambda: next(ids))
    a = rundir.create_run_dir(tmp_path, "resnet20", "shapes")
    b = rundir.create_run_dir(tmp_path, "resnet20", "shapes")
    assert a != b and a.is_dir() and b.is_dir()
    assert a.parent.name.count("-") == 2  # <YYYY-MM-DD>
    assert a.name.split("-")[3:] == ["resnet20", "shapes", "aaaaaa"]
    assert (a / "checkpoints").is_dir()


def test_unwritable_out_dir_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunDirError, match="cannot write runs under"):
        rundir.create_run_dir(blocker / "runs", "m", "d")


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    files.torch_save_atomic({"w": torch.ones(3)}, target)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        files.torch_save_atomic({"w": torch.zeros(3)}, target)
    monkeypatch.undo()
    state = torch.load(target, weights_only=True)
    assert torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_metrics_log_round_trip_and_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.write({"kind": "epoch", "epoch": 1, "step": 10, "val/loss": 0.5})
    log.write({"kind": "epoch", "epoch": 2, "step": 20, "val/loss": float("nan")})
    log.close()
    with open(path, "a") as f:
        f.write('{"kind": "epoch", "ste')  # a crash mid-line
    records = list(read_metrics(path))
    assert [r["step"] for r in records] == [10, 20]
    assert records[1]["val/loss"] == "nan"
    truncate_after_step(path, 10)
    assert [r["step"] for r in read_metrics(path)] == [10]


def test_env_json_has_versions(tmp_path):
    rundir.write_run_files(tmp_path, "a: 1\n", ["optim=adam"], torch.device("cpu"))
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["threads"] >= 1
    assert (tmp_path / "overrides.txt").read_text() == "optim=adam\n"
