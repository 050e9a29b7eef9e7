"""A real tiny sweep through the CLI: two training jobs, their records, the compare table, hparams."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch
from typer.testing import CliRunner

from test_tensorboard import read_hparams
from vaitrain.cli import app
from vaitrain.compare import compare, config_diff, load_run
from vaitrain.sweep import SWEEP_FILE

# trainer.threads=1: on a busy 2-core machine two OpenMP threads made an epoch ~100x slower
TINY = ["trainer.epochs=2", "data.num_train=128", "data.num_val=64", "model=resnet20",
        "model.width_mult=0.25", "data.image_size=16", "trainer.batch_size=64", "trainer.progress=none",
        "trainer.threads=1"]


@pytest.fixture
def keep_threads() -> Iterator[None]:
    n = torch.get_num_threads()  # trainer.threads sets the process-wide count
    yield
    torch.set_num_threads(n)


def test_real_sweep_end_to_end(tmp_path: Path, keep_threads: None) -> None:
    out = tmp_path / "runs"
    res = CliRunner().invoke(app, ["train", "-m", "optim=sgd,adam", *TINY, f"out_dir={out}"])
    assert res.exit_code == 0, res.stderr + res.stdout

    (sweep_dir,) = [p for day in out.iterdir() for p in day.iterdir()]
    doc = json.loads((sweep_dir / SWEEP_FILE).read_text())
    assert [j["status"] for j in doc["jobs"]] == ["completed", "completed"]
    run_dirs = [sweep_dir / j["run_dir"] for j in doc["jobs"]]
    for i, run in enumerate(run_dirs):
        assert run.parent == sweep_dir and f"_job{i:02d}-" in run.name
        for name in ("config.yaml", "overrides.txt", "env.json", "metrics.jsonl", "tb"):
            assert (run / name).exists(), name

    runs = [load_run(p) for p in run_dirs]
    assert [r.config["optim.name"] for r in runs] == ["sgd", "adam"]
    diff = config_diff(runs)
    assert diff[0] == "optim.name" and not any(k.startswith(("model.", "data.", "trainer.")) for k in diff)
    for run in runs:
        assert run.status == "completed" and run.epochs_done == 2
        assert run.series["val/acc1"].source == "tb" and len(run.series["val/acc1"].values) == 2
        assert run.params and run.params > 0 and run.throughput and run.wall_time
    rows = compare(runs).rows
    assert all(r["val/acc1.best_epoch"] in (1, 2) and r["val/loss.final"] is not None for r in rows)

    # the sweep ends with the compare table of its jobs
    # the table names each run by what tells it apart (its swept values and job tag)
    assert all(f"_job{i:02d}" in res.stdout for i in range(len(runs))) and "optim.name" in res.stdout
    assert "sweep: 2 jobs (2 completed)" in res.stdout

    # the HParams dashboard's records, written by the engine at the end of each run
    hp = read_hparams(run_dirs[1] / "tb")
    assert hp["hparams"]["optim.name"] == "adam"
    assert {"val/acc1", "val/loss"} <= set(hp["metrics"])  # the run's own tags: no hparam/* copies
