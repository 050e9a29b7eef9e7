"""resume=RUN_DIR on the command line: the run's own overrides come first, then the new ones.

This reads a run directory, so it lives here and not in config.py (composing a config reads no
run directory)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from vaitrain.config import compose
from vaitrain.errors import RunDirError
from vaitrain.track import rundir
from vaitrain.track.runs import saved_overrides


def resume_overrides(run_dir: Path, extra: list[str]) -> list[str]:
    """The overrides that re-create a run's config: its own overrides.txt, then the new ones
    (which win), then resume=<run_dir>."""
    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise RunDirError(
            f"resume={run_dir} is not a vaitrain run directory (no config.yaml / checkpoints/); "
            "pass a folder like runs/<date>/<run>"
        )
    extra = [o for o in extra if not o.startswith("resume=")]
    return saved_overrides(run_dir) + extra + [f"resume={run_dir}"]


def prepare(overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """Compose the config for `vaitrain train`; with resume=DIR, the run's own overrides come first."""
    resume = [o for o in overrides if o.startswith("resume=")]
    if resume:
        overrides = resume_overrides(Path(resume[-1].split("=", 1)[1]), overrides)
    return compose(overrides), overrides
