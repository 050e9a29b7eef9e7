"""Shared pieces of the adversarial suite (tests/test_adversarial_*.py): how a refusal must look
and what must (not) be on disk afterwards."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from typer.testing import CliRunner

from vaitrain.cli import app

runner = CliRunner()

# A run of a few seconds on one core: ResNet-20 at quarter width on 16 px shapes.
TINY = [
    "model=resnet20", "model.width_mult=0.25", "norm=layer", "optim=sgd", "optim.lr=0.05",
    "data.image_size=16", "data.num_train=64", "data.num_val=32", "trainer.batch_size=16",
    "trainer.epochs=2", "trainer.log_every=1", "trainer.progress=none", "trainer.image_every=0",
    "trainer.threads=1", "trainer.device=cpu",
]


def cli(args: list[str]) -> Any:
    """`vaitrain <args>` in this process (torch's thread count restored afterwards)."""
    threads = torch.get_num_threads()
    try:
        return runner.invoke(app, [str(a) for a in args])
    finally:
        torch.set_num_threads(threads)


def refused(result: Any, pattern: str, code: int = 2) -> str:
    """Exit `code`, one line on stderr matching `pattern`, no traceback anywhere."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder with its size and mtime: equal snapshots = nothing rewritten."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def the_run(out: Path) -> Path:
    runs = [p.parent for p in Path(out).rglob("config.yaml")]
    assert len(runs) == 1, runs
    return runs[0]
