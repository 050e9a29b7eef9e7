"""Progress display for every step that can take more than a couple of seconds.

On a terminal: a rich bar (description, bar, n/total, the latest values such as the loss,
elapsed, remaining). Off a terminal (CI logs, `> file`): nothing for the first QUIET_S seconds,
then a start line and a plain line at least every PLAIN_EVERY_S seconds (a timer thread prints
them, so one slow step still shows the run is alive), and nothing else; lines that stay (epoch
summaries) are printed in both modes.
"""
from __future__ import annotations

import shutil
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, TextIO

QUIET_S = 2.0  # shorter steps print nothing off a terminal
PLAIN_EVERY_S = 30.0  # off a terminal: a line at least this often while a step runs
MODES = ("auto", "bar", "plain", "none")


def _fmt(metrics: Mapping[str, Any]) -> str:
    parts = []
    for k, v in metrics.items():
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class Progress:
    """mode: bar | plain | none | auto (bar when `stream` is a terminal, else plain).

    `start(description, total)` opens a step (total=None: no count, e.g. a download),
    `advance(n, **info)` moves it on and keeps the latest info values (loss=...) on show,
    `finish()` closes it, `line(text)` prints a line that stays.
    """

    def __init__(self, mode: str = "auto", enabled: bool = True, *, stream: str = "stdout",
                 quiet_s: float = QUIET_S, every_s: float = PLAIN_EVERY_S, done_lines: bool = True) -> None:
        self._stream_name = stream
        out = self._out()
        if mode == "auto":
            mode = "bar" if out.isatty() else "plain"
        self.mode = mode if enabled else "none"
        self.quiet_s = quiet_s
        self.every_s = every_s
        self.done_lines = done_lines  # off a terminal, "<step>: done in m:ss" (False: a summary line follows)
        self._progress: Any = None
        self._task: Any = None
        self._info: dict[str, Any] = {}
        self._lock = threading.Lock()
        # plain mode: the open step
        self._desc = ""
        self._total: int | None = None
        self._done = 0
        self._t0 = 0.0
        self._next_line = 0.0
        self._announced = False
        self._timer: threading.Thread | None = None
        self._stop_timer = threading.Event()

    def _out(self) -> TextIO:
        return sys.stderr if self._stream_name == "stderr" else sys.stdout

    # ----- a step ---------------------------------------------------------------------------------
    def start(self, description: str, total: int | None = None) -> None:
        self.finish()
        self._info = {}
        if self.mode == "bar":
            self._start_bar(description, total)
        elif self.mode == "plain":
            with self._lock:
                self._desc, self._total, self._done = description, total, 0
                self._t0 = time.monotonic()
                self._next_line = self._t0 + self.quiet_s
                self._announced = False
            self._stop_timer.clear()
            self._timer = threading.Thread(target=self._tick, name="vaitrain-progress", daemon=True)
            self._timer.start()

    def advance(self, n: int = 1, **info: Any) -> None:
        self._info.update(info)
        if self.mode == "bar" and self._task is not None:
            self._progress.update(self._task, advance=n, info=_fmt(self._info))
        elif self.mode == "plain":
            with self._lock:
                self._done += n

    def finish(self) -> None:
        if self.mode == "bar" and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        elif self.mode == "plain" and self._timer is not None:
            self._stop_timer.set()
            self._timer.join()
            self._timer = None
            with self._lock:
                if self._announced and self.done_lines:
                    self._print(f"{self._desc}: done in {_clock(time.monotonic() - self._t0)}")

    @contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator["Progress"]:
        """`with progress.step("validation", n) as p: ... p.advance()`."""
        self.start(description, total)
        try:
            yield self
        finally:
            self.finish()

    # ----- lines that stay ------------------------------------------------------------------------
    def line(self, text: str) -> None:
        """A line that stays (epoch summaries, messages)."""
        if self.mode == "none":
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        else:
            with self._lock:
                self._print(text)

    def epoch_line(self, epoch: int, epochs: int, metrics: Mapping[str, float]) -> None:
        self.line(f"epoch {epoch}/{epochs}  {_fmt(metrics)}")

    def close(self) -> None:
        self.finish()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # ----- internals ------------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        out = self._out()
        if self.mode == "bar":  # a terminal: wrap between words as rich does, not mid-word
            width = shutil.get_terminal_size().columns
            text = "\n".join(textwrap.fill(part, width, break_long_words=False, break_on_hyphens=False)
                             for part in text.split("\n"))
        out.write(text + "\n")
        out.flush()

    def _start_bar(self, description: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn, TextColumn,
            TimeElapsedColumn, TimeRemainingColumn,
        )

        if self._progress is None:
            self._progress = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
                console=Console(stderr=self._stream_name == "stderr"),
            )
            self._progress.start()
        self._task = self._progress.add_task(description, total=total, info="")

    def _tick(self) -> None:
        while not self._stop_timer.wait(min(0.25, self.every_s / 4)):
            with self._lock:
                now = time.monotonic()
                if now < self._next_line:
                    continue
                count = f"{self._done}/{self._total}" if self._total is not None else f"{self._done}"
                elapsed = now - self._t0
                if not self._announced:
                    self._announced = True
                    self._print(f"{self._desc}: started ({self._total} steps)" if self._total is not None
                                else f"{self._desc}: started")
                else:
                    rest = ""
                    if self._total and self._done:
                        rest = f"  ~{_clock(elapsed / self._done * (self._total - self._done))} left"
                    info = f"  {_fmt(self._info)}" if self._info else ""
                    done = f"{count}{info}  " if self._total is not None or self._done else ""
                    self._print(f"{self._desc}: {done}{_clock(elapsed)} elapsed{rest}")
                self._next_line = now + self.every_s


def for_stderr(mode: str = "auto") -> Progress:
    """Progress for commands whose stdout is the result (tables, JSON): bars and lines on stderr."""
    return Progress(mode, stream="stderr")
