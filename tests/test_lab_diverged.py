"""A lab's sweep: a run that diverged is a result the topic compares; any other failure stops it."""
from __future__ import annotations

from pathlib import Path

import pytest

from vaitrain.errors import TrainingError
from vaitrain.lab.base import LabContext
from vaitrain.sweep import SweepJob, SweepResult


def _fake_sweep(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, errors: list[str | None]) -> None:
    jobs = [SweepJob(i, [f"optim.lr={i}"], status="completed" if e is None else "failed", error=e)
            for i, e in enumerate(errors)]
    monkeypatch.setattr("vaitrain.sweep.run_sweep", lambda *a, **k: SweepResult(tmp_path / "s", [], jobs))


def test_a_diverged_run_is_compared_and_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vaitrain.engine.step import check_finite

    # the real message of a diverged run, from the check that raises it
    import torch

    model = torch.nn.Linear(1, 1)
    with pytest.raises(TrainingError) as err:
        check_finite(model, torch.tensor(True), 7, tmp_path / "last.pt")
    lines: list[str] = []
    _fake_sweep(monkeypatch, tmp_path, [None, str(err.value)])
    ctx = LabContext("tiny", tmp_path, progress=lines.append)
    result = ctx.sweep("sgd", ["optim=sgd"])
    assert len(result.jobs) == 2
    assert any("job 2 (optim.lr=1) diverged" in line for line in lines), lines


def test_any_other_failure_stops_the_lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_sweep(monkeypatch, tmp_path, [None, "out of memory on cpu"])
    with pytest.raises(TrainingError, match=r"1 of 2 runs of the lab's sweep 'sgd' failed \(job 2: out of memory"):
        LabContext("tiny", tmp_path).sweep("sgd", ["optim=sgd"])
