"""One run directory, one writer: an advisory lock on <run>/.lock held while a run trains.

`flock` (not POSIX `lockf`): the lock belongs to the open file, so a second attempt fails even in
the same process, and the kernel drops it when the process ends in any way (exit, crash,
SIGKILL), so a lock is never left stale. The file holds the holder's PID for the message.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from vaitrain.errors import RunDirError

LOCK_FILE = ".lock"


class RunLock:
    """Held from acquire() until release() or the process's end."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"cannot lock run directory '{self.path.parent}' ({err.strerror or err})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_pid(fd)
            os.close(fd)
            if not _held_elsewhere(err):
                raise RunDirError(f"cannot lock run directory '{self.path.parent}' ({err.strerror or err})") from None
            who = f"process {holder}" if holder else "another process"
            raise RunDirError(
                f"run directory '{self.path.parent}' is in use by {who} (a `vaitrain train` writing it); "
                f"wait for it to end or stop it (kill -TERM {holder or 'PID'}), then resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)  # an unlocked file names no holder
            except OSError:
                pass
            os.close(fd)  # closing drops the lock

    @property
    def held(self) -> bool:
        return self._fd is not None


class FolderLock:
    """An flock on a folder itself (no file left in it), e.g. one runner per sweep folder; dropped by
    the kernel on any exit, kill -9 included. `busy`: the line when another process holds it; a file
    system without locks (Lustre without -o flock: ENOSYS; ENOLCK) says so instead."""

    def __init__(self, folder: Path, *, name: str, busy: str) -> None:
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise RunDirError(f"cannot open the {name} '{folder}' ({err.strerror or err})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if _held_elsewhere(err):
                raise RunDirError(busy) from None
            raise RunDirError(f"cannot lock the {name} '{folder}' ({err.strerror or err}): its file system "
                              "does not support locks; give out_dir= on a local disk") from None
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def _held_elsewhere(err: OSError) -> bool:
    return err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
