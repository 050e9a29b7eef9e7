"""Reading a file the user named without hanging on it: a named pipe (FIFO) blocks a reader until a
writer comes, a device such as /dev/zero or /dev/urandom never ends. Such a path is refused as what
it is; `exists() and not is_file()` read as 'no such file' or 'missing' before.

Torch-free (config_cache and the run readers use it).
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def special_kind(path: Path | str) -> str | None:
    """What `path` is when it exists (links followed) but is no regular file: 'a named pipe (FIFO)',
    'a character device', 'a folder' ...; None for a regular file or a path that is not there."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(mode) else kind_of(mode)


class NotRegularFile(OSError):
    """An OSError whose strerror says what the path is instead ('a named pipe (FIFO), not a regular
    file'): callers that turn OSError into 'cannot read X (strerror)' say it as it is."""

    def __init__(self, path: Path | str, kind: str):
        super().__init__(errno.EINVAL, f"{kind}, not a regular file", str(path))


def not_regular_note(path: Path | str) -> str | None:
    """'PATH is a named pipe (FIFO), not a regular file' for a special file, else None."""
    kind = special_kind(path)
    return f"{path} is {kind}, not a regular file" if kind and kind != "a folder" else None


def read_bytes(path: Path | str) -> bytes:
    """path's bytes; NotRegularFile (an OSError) for a FIFO, device, socket or folder. The file is
    opened without blocking, so a FIFO with no writer is refused instead of waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, kind_of(mode))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def read_text(path: Path | str, encoding: str = "utf-8", errors: str = "strict") -> str:
    """read_bytes decoded (UnicodeDecodeError, a ValueError, for bytes that are not `encoding`)."""
    return read_bytes(path).decode(encoding, errors)
