"""Reading a user's pickle files without running code (the CIFAR "python version" batches).

`pickle.load` calls whatever global a file names, so a crafted batch file could run anything. This
unpickler resolves only the globals that rebuild numpy arrays and scalars (and protocol 2's
bytes-from-latin-1 helper); every other global is refused before it is looked up. Lists, dicts,
strings and numbers need no globals at all.
"""
from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaitrain.errors import DataError


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Protocol 2 stores bytes as `_codecs.encode(text, 'latin1')`; no other codec is allowed."""
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    # files written under numpy 1 name numpy.core, under numpy 2 numpy._core: both map to the same
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    allowed[("_codecs", "encode")] = _latin1_bytes
    return allowed


class ArrayUnpickler(pickle.Unpickler):
    """An Unpickler whose find_class knows numpy arrays and nothing else."""

    _allowed: dict[tuple[str, str], Callable[..., Any]] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if ArrayUnpickler._allowed is None:
            ArrayUnpickler._allowed = _numpy_globals()
        found = ArrayUnpickler._allowed.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def load_arrays(path: Path, what: str) -> Any:
    """The object pickled in `path` (dicts, lists, strings, numbers, numpy arrays), read with
    latin-1 for Python 2 strings as the CIFAR files need. Anything else: one-line DataError."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _Refused as err:
        raise DataError(
            f"{path} refers to code ({err.name}) and is refused: {what} files hold only numpy arrays, "
            "lists and strings; replace it with the original file"
        ) from None
    except Exception as err:  # a damaged pickle raises many types (EOFError, KeyError, ValueError ...)
        detail = " ".join(str(err).split())[:120] or type(err).__name__
        raise DataError(f"cannot read {path}: not a valid {what} file ({detail})") from None
