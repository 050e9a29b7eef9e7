"""metrics.jsonl: one JSON object per line; see docs/ARCHITECTURE.md for the keys."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class MetricsLog:
    """Appends records; each line is flushed and fsynced so a crash loses at most the last line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=False)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (crash mid-write) is skipped, and so is any line
    that is not a record (damaged bytes, JSON that is not an object, a non-integer step or epoch),
    so every reader can rely on the keys it uses."""
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as err:  # unreadable (permissions): one line, not a traceback in compare-runs or resume
        from vaitrain.errors import RunDirError

        raise RunDirError(f"cannot read {path} ({err.strerror or err}): fix its permissions") from None
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict) and all(_is_count(record[k]) for k in ("step", "epoch") if k in record):
                yield record


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def truncate_after_step(path: Path, step: int) -> None:
    """On resume: drop records written after the checkpoint's global step (they will be redone)."""
    if not Path(path).is_file():
        return
    keep = [r for r in read_metrics(path) if int(r.get("step", 0)) <= step and r.get("kind") != "final"]
    text = "".join(json.dumps(r) + "\n" for r in keep)
    from vaitrain.track.files import write_text_atomic

    write_text_atomic(Path(path), text)
