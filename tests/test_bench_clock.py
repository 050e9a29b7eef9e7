"""bench.clock=process: CPU seconds of this process instead of wall time (for a shared CPU)."""
from __future__ import annotations

import json
import time

import pytest
import torch
from typer.testing import CliRunner

from vaitrain.bench.run import bench_settings
from vaitrain.bench.timing import time_steps, wall
from vaitrain.cli import app
from vaitrain.config import compose
from vaitrain.errors import ConfigError

CPU = torch.device("cpu")


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_process_clock_counts_cpu_work_not_waiting():
    """A step that sleeps 50 ms takes ~50 ms of wall time and ~0 CPU seconds; one that computes
    for 50 ms of CPU takes >= 50 ms on both clocks."""
    sleep = lambda: time.sleep(0.05)  # noqa: E731
    assert min(time_steps(sleep, 2, CPU)) >= 0.049
    assert max(time_steps(sleep, 2, CPU, clock="process")) < 0.02
    assert wall(sleep, CPU, clock="process") < 0.02 <= 0.049 <= wall(sleep, CPU)
    assert min(time_steps(lambda: _busy(0.05), 2, CPU, clock="process")) >= 0.05


def test_bench_clock_process_end_to_end(tmp_path):
    out = tmp_path / "b.json"
    args = ["bench", "model=plain_cnn", "model.depth=2", "model.width=8", "data.image_size=16",
            "bench.batch_size=4", "bench.warmup=1", "bench.steps=2", "bench.repeats=1", "bench.data_batches=2",
            "trainer.device=cpu", "bench.clock=process", "bench.baseline=bare", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["settings"]["clock"] == "process"
    row = data["rows"][0]
    assert row["status"] == "ok" and row["train_img_s"] > 0 and row["train_ratio"] > 0


def test_bench_clock_process_is_refused_on_a_gpu():
    cfg = compose(["bench.clock=process"])
    with pytest.raises(ConfigError, match=r"^bench.clock=process times CPU seconds.*trainer.device=cpu"):
        bench_settings(cfg, torch.device("cuda"))
    with pytest.raises(ConfigError, match=r"^bench.clock=sundial is not a valid choice; choose one of: "):
        compose(["bench.clock=sundial"])
