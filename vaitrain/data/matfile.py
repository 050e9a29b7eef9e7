"""Numeric arrays from a MATLAB v5 .mat file (what SVHN ships), without scipy.

scipy.io.loadmat is used when scipy is installed; otherwise this small reader handles the subset
SVHN needs: level-5 MAT files, zlib-compressed or plain elements, real numeric matrices (other
variables are skipped). Format: MATLAB "MAT-File Format" (level 5), sections 1-3. Neither path
runs code from the file (no pickle); a damaged or hostile file is one DataError, and a compressed
variable that would inflate past MAX_ELEMENT_BYTES is refused rather than filling the memory.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from vaitrain.errors import DataError

_MI_MATRIX, _MI_COMPRESSED = 14, 15
MAX_ELEMENT_BYTES = 2 << 30  # SVHN's largest variable (train X) is 157 MB
_DATA_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}


def load_mat(path: Path) -> dict[str, np.ndarray]:
    """The numeric variables of a .mat file, as numpy arrays in MATLAB's (column-major) shapes."""
    try:
        import scipy.io
    except ImportError:
        return _read(path)
    try:
        return {k: v for k, v in scipy.io.loadmat(str(path)).items() if isinstance(v, np.ndarray)}
    except Exception as err:  # scipy raises several types for a bad file (it never runs code from one)
        raise DataError(f"cannot read {path}: {' '.join(str(err).split())[:160] or type(err).__name__}") from None


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) < 128 or not data.startswith(b"MATLAB 5.0 MAT-file"):
        if data.startswith(b"MATLAB 7.3"):
            raise DataError(f"{path} is a MAT v7.3 (HDF5) file: pip install scipy h5py, or save it as v5")
        raise DataError(f"{path} is not a MATLAB 5 .mat file")
    order = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if order is None:
        raise DataError(f"{path} has a bad MAT header")
    out: dict[str, np.ndarray] = {}
    pos = 128
    try:
        while pos + 8 <= len(data):
            dtype, payload, pos = _element(data, pos, order)
            if dtype == _MI_COMPRESSED:
                inner = _inflate(payload, path)
                dtype, payload, _ = _element(inner, 0, order)
            if dtype == _MI_MATRIX:
                item = _matrix(payload, order)
                if item is not None:
                    out[item[0]] = item[1]
    except (struct.error, zlib.error, ValueError, KeyError, MemoryError) as err:
        raise DataError(f"cannot read {path}: corrupt MAT file ({err})") from None
    return out


def _inflate(payload: bytes, path: Path) -> bytes:
    """A compressed element, refused past MAX_ELEMENT_BYTES (a zlib bomb would fill the memory)."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(payload, MAX_ELEMENT_BYTES)
    if inflater.unconsumed_tail:
        raise DataError(f"{path} holds a variable over {MAX_ELEMENT_BYTES >> 30} GiB uncompressed: "
                        "not a dataset file vaitrain reads")
    return out


def _element(buf: bytes, pos: int, order: str) -> tuple[int, bytes, int]:
    """(data type, payload, offset of the next element) of the element at pos."""
    word, nbytes = struct.unpack_from(order + "II", buf, pos)
    if word >> 16:  # small data element: type and size packed in 4 bytes, data in the next 4
        small_type, small_n = (word & 0xFFFF, word >> 16)
        return small_type, buf[pos + 4:pos + 4 + small_n], pos + 8
    end = pos + 8 + nbytes
    if end > len(buf):
        raise ValueError("element runs past the end of the file")
    nxt = end if word == _MI_COMPRESSED else end + (-nbytes % 8)
    return word, buf[pos + 8:end], nxt


def _matrix(buf: bytes, order: str) -> tuple[str, np.ndarray] | None:
    _, flags, pos = _element(buf, 0, order)
    cls = struct.unpack_from(order + "I", flags)[0] & 0xFF
    _, dims_raw, pos = _element(buf, pos, order)
    dims = struct.unpack(order + f"{len(dims_raw) // 4}i", dims_raw)
    _, name, pos = _element(buf, pos, order)
    if cls not in _CLASSES:
        return None  # cell, struct, char, sparse ...: not needed here
    dtype, real, pos = _element(buf, pos, order)
    if dtype not in _DATA_TYPES:
        raise ValueError(f"unknown data type {dtype} in variable {name.decode('ascii', 'replace')!r}")
    arr = np.frombuffer(real, order + _DATA_TYPES[dtype]).astype(_CLASSES[cls])
    return name.decode("ascii", "replace"), arr.reshape(dims, order="F")
