"""Checkpoints: plain tensors, numbers, strings, lists and dicts, so they load with
torch.load(weights_only=True) (a checkpoint cannot run code). Written atomically."""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from vaitrain.errors import CheckpointError, RunDirError
from vaitrain.file_kinds import not_regular_note
from vaitrain.torch_files import check_archive, load_error
from vaitrain.track.files import torch_bytes, write_bytes_atomic

FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any], *also: Path) -> None:
    """Write atomically to `path` (and then to each of `also`: the same state, e.g. last.pt and
    best.pt, serialized once); a failed write (disk full, quota, I/O error) leaves the previous file
    whole and is one RunDirError naming what was kept."""
    data = torch_bytes({"format": FORMAT, **state})
    for target in (Path(path), *map(Path, also)):
        try:
            write_bytes_atomic(target, data)
        except OSError as err:
            kept = f"the previous {target.name} is kept" if target.is_file() else f"no {target.name} was written yet"
            raise RunDirError(
                f"cannot write checkpoint '{target}' ({err.strerror or err}); {kept}: free space on that disk "
                "(or start on another with out_dir=DIR), then continue with resume=RUN_DIR"
            ) from None


def remove_partial_checkpoints(folder: Path) -> None:
    """Delete temp files a killed save left behind (`.last.pt.<random>.tmp`); the checkpoints
    themselves are only ever replaced whole, by rename."""
    for tmp in Path(folder).glob(".*.pt.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    note = not_regular_note(path)
    if note:  # a FIFO waited for ever in torch.load, a device never ended; 'no checkpoint at' misled
        raise CheckpointError(f"{note}: give a checkpoint file (best, last or the path of a .pt file)")
    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*.pt") if p.name != path.name) if path.parent.is_dir() else []
        if others:  # e.g. last.pt deleted by hand, best.pt still there
            raise CheckpointError(
                f"no checkpoint at '{path}', but {', '.join(others)} is in {path.parent}: use it "
                f"(vaitrain eval RUN --checkpoint {others[0][:-3]}), or copy it to {path.name} to resume from it"
            )
        raise CheckpointError(f"no checkpoint at '{path}'; was the run started and did it finish an epoch?")
    check_archive(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as err:
        raise load_error(path, err) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        found = state.get("format") if isinstance(state, dict) else None
        if isinstance(state, dict) and "model" in state and "format" not in state and "epoch" in state:
            raise CheckpointError(f"'{path}' is a checkpoint without a format number (an older vaitrain, before "
                                  f"format {FORMAT}): retrain with this vaitrain, or use the version that wrote it")
        if isinstance(found, int) and not isinstance(found, bool) and "model" in state:
            newer = found > FORMAT
            raise CheckpointError(
                f"'{path}' is a vaitrain checkpoint of format {found}, this vaitrain reads format {FORMAT}: "
                + ("upgrade vaitrain to read it" if newer else "retrain with this vaitrain, or use the version that wrote it"))
        raise CheckpointError(f"'{path}' is not a vaitrain checkpoint (format {FORMAT}); a plain state_dict "
                              "(torchvision's .pth files) is given as model.weights=FILE")
    bad = _odd_field(state)
    if bad:
        raise CheckpointError(f"checkpoint '{path}' is damaged or was not written by vaitrain: {bad}; use the run's "
                              "other checkpoint (best.pt/last.pt) or start a new run")
    return state


# The fields a checkpoint holds and the types vaitrain writes them with: a file that differs (edited,
# hand-made, damaged) is refused in one line here, not met as a TypeError deep inside eval or resume.
_INT_FIELDS = ("epoch", "step", "batch_in_epoch", "skipped_steps")
_STR_FIELDS = ("model_name", "task", "config_yaml")
_DICT_FIELDS = ("data_info", "optimizer", "scheduler", "scaler", "rng", "best", "ema")
_INFO_INTS = ("in_channels", "image_size", "num_classes", "target_dim")


def _odd_field(state: dict[str, Any]) -> str | None:
    """What in `state` is not as vaitrain writes it (None when all is)."""
    def tensors(value: Any) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())

    if not tensors(state["model"]) or not state["model"]:
        return "'model' is not a dict of tensors"
    odd = next((k for k, v in state["model"].items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if odd is not None:  # (training stops at a non-finite loss before saving: this file was changed)
        return f"the model's {odd} holds NaN or inf"
    if "data_stats" in state and not tensors(state["data_stats"]):
        return "'data_stats' is not a dict of tensors"
    for key, value in (state.get("data_stats") or {}).items():  # NaN here: every prediction NaN, silently
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"data_stats '{key}' holds NaN or inf"
        if key.endswith("std") and value.is_floating_point() and not bool((value > 0).all()):
            return f"data_stats '{key}' is not positive"
    for key in _INT_FIELDS:
        if key in state and (not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0):
            return f"'{key}' is {state[key]!r}, not a count"
    for key in _STR_FIELDS:
        if key in state and not isinstance(state[key], str):
            return f"'{key}' is not text"
    for key in _DICT_FIELDS:
        if key in state and state[key] is not None and not isinstance(state[key], dict):
            return f"'{key}' is not a dict"
    info = state.get("data_info")
    if info:
        for key in _INFO_INTS:
            if not isinstance(info.get(key), int) or isinstance(info.get(key), bool) or info[key] < 0:
                return f"data_info '{key}' is {info.get(key)!r}, not a count"
        for key in ("class_names", "target_names"):
            if not isinstance(info.get(key), list) or not all(isinstance(n, str) for n in info[key]):
                return f"data_info '{key}' is not a list of names"
    optimizer = state.get("optimizer")
    if optimizer is not None and not (isinstance(optimizer.get("state"), dict)
                                      and isinstance(optimizer.get("param_groups"), list)):
        return "'optimizer' lacks torch's state and param_groups"
    return None


def check_task(path: Path, state: dict[str, Any], task: str) -> None:
    """A checkpoint of another task is refused (before its data statistics are used)."""
    if state.get("task") not in (None, task):
        raise CheckpointError(
            f"checkpoint '{path}' was trained for task={state.get('task')}, not task={task}"
        )


def check_compatible(path: Path, state: dict[str, Any], model: nn.Module, model_name: str, task: str) -> None:
    """A checkpoint of another model or task is refused, naming what differs."""
    check_task(path, state, task)
    own = model.state_dict()
    saved = state["model"]
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [k for k in own if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if state.get("model_name") and state.get("model_name") != model_name:
            parts.append(f"it holds model={state.get('model_name')}, not model={model_name}")
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if shapes:
            k = shapes[0]
            parts.append(
                f"shape mismatch for {_few(shapes)} (e.g. {k}: checkpoint {tuple(saved[k].shape)} "
                f"vs model {tuple(own[k].shape)})"
            )
        raise CheckpointError(f"checkpoint '{path}' does not fit this model: " + "; ".join(parts))


def check_same_data(path: Path, state: dict[str, Any], data: Any) -> None:
    """The classes (or regression targets) of the data built now must be those the checkpoint was
    trained with: a class folder added, removed or renamed since shifts every label, and eval or a
    resume would go on silently with labels that no longer mean what the model learnt."""
    info = state.get("data_info") or {}
    if getattr(data, "task", "") == "segmentation":  # generic names (class1, ...): the model's shape tells
        return
    for key, now in (("class_names", list(data.class_names)), ("target_names", list(data.target_names))):
        then = info.get(key)
        if then is None or list(then) == now:
            continue
        k = next((i for i, (a, b) in enumerate(zip(then, now)) if a != b), min(len(then), len(now)))
        was = f"'{then[k]}'" if k < len(then) else "absent"
        is_now = f"'{now[k]}'" if k < len(now) else "absent"
        what = "class" if key == "class_names" else "target"
        raise CheckpointError(
            f"the data's {what}es differ from those '{path}' was trained with ({len(then)} then, {len(now)} now; "
            f"{what} {k} was {was}, now {is_now}): the labels would not mean what the model learnt; restore the "
            "data as it was, or train a new run")


# the options that set a split's size: given on the command line (`eval RUN data.num_val=5000`),
# another count is what the user asked for, not files added or removed
SIZE_KEYS = ("data.num_train", "data.num_val", "data.val_fraction")


def data_size_note(path: Path, state: dict[str, Any], data: Any, splits: tuple[str, ...],
                   given: Sequence[str] = ()) -> str | None:
    """A line when a split holds another number of samples than when `path` was saved (images added
    to or removed from the folder, CSV rows changed): the classes are checked above, the files are
    not, and a resume or eval then goes on with other data without a word. None when they agree
    (or the checkpoint predates the counts), or when `given` (the user's overrides) sets a size."""
    if any(o.split("=", 1)[0].lstrip("+") in SIZE_KEYS for o in given):
        return None
    info = state.get("data_info") or {}
    then, now = [], []
    for split in splits:
        was = info.get(f"num_{split}")
        is_now = int(getattr(getattr(data, split, None), "n", 0) or 0)
        if isinstance(was, int) and not isinstance(was, bool) and was > 0 and is_now and is_now != was:
            then.append(f"{was} {split}")
            now.append(f"{is_now} {split}")
    if not then:
        return None
    return (f"note: '{path}' was saved with {' / '.join(then)} samples, the data holds {' / '.join(now)} now "
            "(files added or removed since): ")


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")
