"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash at any moment leaves either the old file or the new one, never a partial file.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; records are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def torch_save_atomic(obj: Any, path: Path) -> None:
    """torch.save through an in-memory buffer, then an atomic write."""
    write_bytes_atomic(path, torch_bytes(obj))


def torch_bytes(obj: Any) -> bytes:
    """What torch.save writes for `obj` (serialized once where it goes to several files)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
