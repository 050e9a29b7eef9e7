"""Progress display: rich bars on a terminal, one plain line per epoch otherwise (CI logs)."""
from __future__ import annotations

import sys
from typing import Any, Mapping


def _fmt(metrics: Mapping[str, float]) -> str:
    parts = []
    for k, v in metrics.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
        else:
            parts.append(f"{k} {v}")
    return "  ".join(parts)


class Progress:
    """mode: bar | plain | none | auto (bar when stdout is a terminal, else plain)."""

    def __init__(self, mode: str = "auto", enabled: bool = True) -> None:
        if mode == "auto":
            mode = "bar" if sys.stdout.isatty() else "plain"
        self.mode = mode if enabled else "none"
        self._progress: Any = None
        self._task: Any = None

    def start(self, description: str, total: int) -> None:
        if self.mode != "bar":
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress as RichProgress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._progress is None:
            self._progress = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._progress.start()
        self._task = self._progress.add_task(description, total=total, info="")

    def advance(self, n: int = 1, **info: float) -> None:
        if self.mode == "bar" and self._task is not None:
            self._progress.update(self._task, advance=n, info=_fmt(info))

    def finish(self) -> None:
        if self.mode == "bar" and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def line(self, text: str) -> None:
        """A line that stays (epoch summaries, messages)."""
        if self.mode == "none":
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def epoch_line(self, epoch: int, epochs: int, metrics: Mapping[str, float]) -> None:
        self.line(f"epoch {epoch}/{epochs}  {_fmt(metrics)}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
