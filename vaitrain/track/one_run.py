"""`eval`, `predict` and `export` take one run directory; a glob such as the README's
`runs/*/*-demo-*` matches several once a name is used twice, and the shell hands the second run
to the command as an override or an image folder, which then fails for a reason that names neither."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vaitrain.errors import ConfigError
from vaitrain.track.rundir import is_run_dir


def refuse_more_runs(run_dir: Path, rest: Sequence[str], command: str) -> None:
    """Raise when one of the arguments after run_dir is itself a run directory."""
    more = [Path(a) for a in rest if "=" not in a and is_run_dir(Path(a))]
    if not more:
        return
    runs = [Path(run_dir), *more]
    newest = max(runs, key=lambda p: (p / "config.yaml").stat().st_mtime if (p / "config.yaml").exists() else 0)
    raise ConfigError(f"{len(runs)} run directories given ({runs[0]}, {runs[1]}{', ...' if len(runs) > 2 else ''}): "
                      f"a glob matched several runs; `vaitrain {command}` takes one, e.g. the newest: {newest}")
