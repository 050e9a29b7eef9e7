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
        return  # torch's legacy format or not an archive: torch.load says which
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
