"""Reading run directories back: the overrides a run was started with, its config as dotted keys.
(Used by resume, `vaitrain eval`, compare and the hparams summary, so there is one reading.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vaitrain.track.rundir import OVERRIDES_FILE


def saved_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides a run was started with (overrides.txt), without its resume=."""
    saved_file = Path(run_dir) / OVERRIDES_FILE
    lines = saved_file.read_text().splitlines() if saved_file.is_file() else []
    saved = [l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#")]  # "# resumed at ..." notes
    return [o for o in saved if not o.startswith("resume=")]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to {'a.b.c': value}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat
