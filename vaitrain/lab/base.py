"""What every lab topic shares: its claim, what it measured, where its runs went.

A topic is a function `run(ctx) -> Outcome`. It makes the lecture's point with a few runs (through
`ctx.sweep`, a normal vaitrain sweep: records, resume and compare-runs work on it) or a few
inspections (pure computation on vaitrain's own models, data and optimizers), and returns one
`Finding` per claim it checks: the claim in one sentence, what was measured next to it, and
whether the measurement agrees. A finding that disagrees is reported as such, never dropped.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

SIZES = ("default", "tiny")  # default: minutes on a laptop CPU; tiny: seconds (CI)


@dataclass
class Finding:
    claim: str  # the lecture's claim, one sentence
    measured: str  # what the runs measured, numbers in words
    holds: bool  # the measurement agrees with the claim
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass
class Figure:
    caption: str
    png: bytes


@dataclass
class Outcome:
    findings: list[Finding]
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)  # title, columns, rows


@dataclass
class Topic:
    name: str
    claim: str  # the one-sentence claim `vaitrain lab` lists
    lecture: str  # the row of the lecture table (DESIGN.md) it belongs to
    trains: bool  # runs training jobs (else inspections only)
    run: Callable[["LabContext"], Outcome]


@dataclass
class LabContext:
    """What a topic gets: its size, its folder, the user's extra overrides and a progress line."""
    size: str
    lab_dir: Path
    overrides: list[str] = field(default_factory=list)
    progress: Callable[[str], None] | None = None
    sweeps: list[Path] = field(default_factory=list)  # the sweep folders run so far

    @property
    def tiny(self) -> bool:
        return self.size == "tiny"

    def say(self, line: str) -> None:
        if self.progress:
            self.progress(line)

    def sweep(self, name: str, overrides: Sequence[str]) -> Any:
        """Run (or, when the lab folder already holds it, resume) a sweep under lab_dir/<name>/.
        Returns vaitrain.sweep.SweepResult; its run_dirs are in job order."""
        from vaitrain.sweep import SWEEP_FILE, run_sweep

        parent = self.lab_dir / name
        done = sorted(parent.glob(f"*/*/{SWEEP_FILE}")) if parent.is_dir() else []
        self.say(f"lab: sweep '{name}'" + (" (resumed)" if done else ""))
        if done:
            result = run_sweep([f"resume={done[-1].parent}"], progress=self.progress)
        else:
            result = run_sweep([*overrides, *self.overrides], out_dir=parent, progress=self.progress)
        self.sweeps.append(result.sweep_dir)
        if result.interrupted:  # the findings would be read off the jobs that ran: stop, the lab resumes it
            from vaitrain.errors import Interrupted

            signum = int(result.signal or signal.SIGINT)
            raise Interrupted(f"stopped by {signal.Signals(signum).name} in the lab's sweep '{name}'", signum)
        from vaitrain.errors import NON_FINITE, TrainingError

        # a run that diverged (SGD at lr 1.0) is one of the results a lab compares: its records up to
        # the divergence stand; any other failure would leave a finding fewer runs than its claim needs
        diverged = [j for j in result.failed if NON_FINITE in (j.error or "")]
        for job in diverged:
            self.say(f"lab: sweep '{name}' job {job.index + 1} ({' '.join(job.overrides)}) diverged: "
                     "its metrics up to then are compared")
        failed = [j for j in result.failed if j not in diverged]
        if failed:
            job = failed[0]
            raise TrainingError(f"{len(failed)} of {len(result.jobs)} runs of the lab's sweep '{name}' failed "
                                f"(job {job.index + 1}: {job.error})")
        return result

    def compose_extra(self) -> list[str]:
        """The user's overrides for inspections: only keys a model/data build reads."""
        return [o for o in self.overrides if not o.split("=", 1)[0].lstrip("+~").startswith(("sweep.", "out_dir"))]


def ratio_text(x: float) -> str:
    return f"{x:.3g}"
