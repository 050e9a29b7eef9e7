"""One line for a torch file that torch.load(weights_only=True) refused: code it refers to (named
without running anything), or damage. Shared by checkpoints (engine/checkpoint.py) and weights files
(models/weights.py)."""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

from vaitrain.errors import CheckpointError


def check_archive(path: Path, what: str = "checkpoint") -> None:
    """Before torch.load: torch.save writes its zip archive uncompressed, but torch's reader inflates
    compressed entries too, so a file of a few KB could expand to many GB in memory (a zip bomb).
    A compressed entry, or an archive without torch's data.pkl, is refused here in one line."""
    if not zipfile.is_zipfile(path):
        _check_legacy_claims(path, what)  # torch's legacy format, or not a torch file: torch.load says which
        return
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{what} '{path}' is truncated or corrupt ({err})") from None
    packed = next((e for e in entries if e.compress_type != zipfile.ZIP_STORED), None)
    if packed is not None:
        raise CheckpointError(f"{what} '{path}' has a compressed entry ({packed.filename}), which torch.save never "
                              "writes; refused (it could expand without bound): use the file as torch wrote it")
    if not any(e.filename.endswith("data.pkl") for e in entries):
        raise CheckpointError(f"{what} '{path}' is a zip archive but not a torch file (no data.pkl in it)")


# bytes per element of the storage classes torch's legacy format names (others count as 1: a lower bound)
_ELEMENT_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                  "IntStorage": 4, "ShortStorage": 2, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Stub:
    """Whatever a pickle names: built from our own class only, so reading the claims runs no code."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> "_Stub":
        return _Stub()

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass


def _check_legacy_claims(path: Path, what: str) -> None:
    """torch's legacy (non-zip) format allocates every storage at the size its pickle claims before
    reading any data: a file of a few hundred bytes can claim terabytes (torch.load then failed with
    'DefaultCPUAllocator: can't allocate memory', or reserved the memory first). The claims are read
    here with an unpickler that builds only stubs, and a total beyond the file's own size is refused.
    A file this cannot read is left to torch.load."""
    import io
    import pickle

    claims: dict[str, int] = {}

    class Claims(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            return _Stub if not name.endswith("Storage") else name

        def persistent_load(self, pid: object) -> object:
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[4], int):
                elem = _ELEMENT_BYTES.get(pid[1], 1) if isinstance(pid[1], str) else 1
                claims[str(pid[2])] = max(claims.get(str(pid[2]), 0), pid[4] * elem)
            return _Stub()

    try:
        # from memory: a length field a pickle claims (BINBYTES8 of 2**40) reads what is there, no more
        f = io.BytesIO(path.read_bytes())
        size = len(f.getvalue())
        if Claims(f, encoding="latin1").load() != _LEGACY_MAGIC:
            return
        for _ in range(3):  # protocol version, system info, then the object with the storages
            Claims(f, encoding="latin1").load()
    except Exception:  # not this format, or damaged: torch.load says which
        return
    claimed = sum(claims.values())
    if claimed > size:
        raise CheckpointError(f"{what} '{path}' is truncated or corrupt: its tensors claim {claimed:,} bytes of data "
                              f"but the file holds {size:,}; refused before allocating them")


def load_error(path: Path, err: Exception, what: str = "checkpoint",
               fix: str = "use the run's other checkpoint (best.pt/last.pt) or start a new run") -> CheckpointError:
    """One line for torch.load's multi-paragraph errors: refused code, or a damaged file. `what`
    names the file's role (checkpoint, weights file), `fix` what to do about a damaged one."""
    if isinstance(err, PermissionError) or (isinstance(err, OSError) and not path.is_file()):
        return CheckpointError(f"cannot read {what} '{path}' ({err.strerror or err}): fix its permissions")
    text = str(err)
    code = re.search(r"GLOBAL (\S+)", text)
    name = code.group(1) if code else _pickled_global(path) if "Unsupported operand" in text else None
    if name:
        legacy = "" if zipfile.is_zipfile(path) else " (a plain pickle, not torch's zip format)"
        return CheckpointError(
            f"{what} '{path}'{legacy} refers to code ({name}) and is refused: {what}s are loaded with "
            "weights_only=True, so a file cannot run code; use a file of tensors only (torch.save(model.state_dict(), f))"
        )
    if path.stat().st_size == 0:
        reason = "an empty file"
    else:  # torch's own explanation, without its boilerplate
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", text, re.S)
        reason = " ".join((detail.group(1) if detail else text.split(". ")[0]).split())[:120]
    return CheckpointError(f"{what} '{path}' is truncated or corrupt ({reason}); {fix}")


def _pickled_global(path: Path) -> str | None:
    """The first global a plain pickle names, read with pickletools (which runs nothing)."""
    import pickletools

    strings: list[str] = []
    found: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # a damaged stream: the globals found before the damage
        pass
    # torch's rebuild functions, OrderedDict and the bytes helpers are in any state_dict: the others first
    suspects = [g for g in found if g.split(".")[0] not in ("torch", "collections", "_codecs", "copyreg")]
    return (suspects or found or [None])[0]
