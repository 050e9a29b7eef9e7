"""The process the CLI starts in: standard streams, working directory, locale, OpenMP variable.

A run must not die (or half-write its run directory) because of how it was started: a closed
stdout/stderr, a reader that went away (`vaitrain train ... | head -1`), a deleted working
directory, a command line the locale cannot decode. Checks raise vaitrain.errors.*; cli.main
prints them. Torch-free: this runs before anything heavy is imported.
"""
from __future__ import annotations

import atexit
import errno
import gc
import io
import logging
import os
import re
import sys
from typing import Any, Sequence

from vaitrain.errors import ConfigError, RunDirError

_OMP_THREADS = re.compile(r"\s*[1-9][0-9]*\s*(,\s*[1-9][0-9]*\s*)*")  # libgomp's list form: 4 or 4,2


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. under taskset or SLURM), not the
    machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def open_std_fds() -> None:
    """Closed fds 0/1/2 (`vaitrain train >&-`) reopened on /dev/null: otherwise the first file
    vaitrain opens would get fd 1 or 2 and every print, or torch's C++ warnings, would land in it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            new = os.open(os.devnull, os.O_RDWR)
            if new != fd:
                os.dup2(new, fd)
                os.close(new)
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        if getattr(sys, name) is None:  # Python found the fd closed at start-up
            setattr(sys, name, open(fd, mode, closefd=False, encoding="utf-8", errors="backslashreplace"))


# output that could not be written (stdout redirected to a full disk): {"stdout": "No space left on device"}
LOST_OUTPUT: dict[str, str] = {}


class _ReaderGoneFile(io.FileIO):
    """fd 1 or 2 that outlives its reader: once a pipe's reader exits (`| head -1`), the terminal
    hangs up or the file it was redirected to cannot grow (disk full), writes go to /dev/null
    instead of raising into the middle of training or a report. The work finishes and is recorded
    in the run directory; a failed write is kept in LOST_OUTPUT for cli.main to say so at the end
    (a gone reader or terminal is not an error). (Guarded at the bytes level: click and rich write
    to sys.stdout.buffer as well.)"""

    name_: str = "stdout"

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as err:
            if err.errno not in (errno.EPIPE, errno.EIO):  # EIO: the terminal hung up (ssh dropped)
                LOST_OUTPUT.setdefault(self.name_, err.strerror or str(err))
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self.fileno())
            finally:
                os.close(null)
            return memoryview(data).nbytes


def guard_output_streams() -> None:
    """sys.stdout/sys.stderr rebuilt on _ReaderGoneFile, with their encoding and buffering."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            fd = stream.fileno()
            encoding, errors, line_buffering = stream.encoding, stream.errors, stream.line_buffering
            write_through = bool(getattr(stream, "write_through", False))  # python -u, PYTHONUNBUFFERED
            stream.flush()
        except (AttributeError, OSError, ValueError):  # an in-memory stream (a test's capture): as it is
            continue
        raw = _ReaderGoneFile(fd, "w", closefd=False)
        raw.name_ = name
        setattr(sys, name, io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding, errors=errors,
                                            line_buffering=line_buffering or name == "stderr",
                                            write_through=write_through or name == "stderr"))


class _NoMatplotlibDirNotice(logging.Filter):
    """matplotlib's two-line notice when HOME is unwritable or XDG_CACHE_HOME/XDG_CONFIG_HOME is a
    file: it then uses a temporary folder on its own, so the run is fine; only the noise goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not text.startswith(("mkdir -p failed for path", "Matplotlib created a temporary"))


def quiet_matplotlib_dir_notice() -> None:
    logging.getLogger("matplotlib").addFilter(_NoMatplotlibDirNotice())


_EXIT_COLLECTION_SKIPPED = False


def skip_exit_collection() -> None:
    """At exit, CPython's finalization runs full garbage collections over every object still alive
    (~350k once torch is imported: about 0.5 CPU s, 7 % of a two-epoch CPU run) only to free memory
    the OS takes back anyway. Freezing the heap in the last exit handler skips them. What it gives
    up: objects left in reference cycles are not finalized at exit, which Python never promises;
    vaitrain closes and flushes its files and writers before a command returns, and atexit handlers,
    thread joins and the flush of stdout/stderr all still run. Registered once, by the console
    entry only (in-process callers such as tests are not affected until their own exit)."""
    global _EXIT_COLLECTION_SKIPPED
    if not _EXIT_COLLECTION_SKIPPED:
        atexit.register(gc.freeze)  # handlers run last-in first-out: ours runs after later-registered ones
        _EXIT_COLLECTION_SKIPPED = True


def lost_output() -> str | None:
    """After a command: one line naming the output that could not be written, or None."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if not LOST_OUTPUT:
        return None
    what = ", ".join(f"{name} ({why})" for name, why in LOST_OUTPUT.items())
    return (f"could not write all of this command's output to {what}; what it printed is incomplete "
            "(its files, e.g. the run directory, are not affected): free space where the output goes")


def check_environment(argv: Sequence[str]) -> None:
    """Refuse, in one line, what would otherwise fail later with a foreign message or a wrong result."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise RunDirError("the working directory no longer exists (deleted while this shell was in it): "
                          "cd to an existing folder and run again") from None
    undecodable = next((a for a in argv if any("\udc80" <= c <= "\udcff" for c in a)), None)
    if undecodable is not None:
        shown = undecodable.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ConfigError(f"argument {shown!r} is not text in this locale's encoding "
                          f"({sys.getfilesystemencoding()}): run with a UTF-8 locale, e.g. LC_ALL=C.UTF-8")
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp is not None and omp.strip() and not _OMP_THREADS.fullmatch(omp):
        raise ConfigError(f"OMP_NUM_THREADS={omp!r} is not a positive whole number (OpenMP would ignore it "
                          "with a warning): unset it or set e.g. OMP_NUM_THREADS=1; trainer.threads sets "
                          "vaitrain's own thread count")
