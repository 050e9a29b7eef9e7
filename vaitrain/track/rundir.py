"""Run directories: <out_dir>/<YYYY-MM-DD>/<HH-MM-SS>-<model>-<data>-<id>/ and what goes in them."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import secrets
import sys
from pathlib import Path
from typing import Any

import torch

from vaitrain.errors import RunDirError
from vaitrain.file_kinds import not_regular_note, special_kind
from vaitrain.track.files import write_text_atomic

CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.txt"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"
CKPT_DIR = "checkpoints"


# What a run directory (or a sweep or search folder) is made of: an output path a user gives (--out,
# --plot) never replaces one of these, e.g. `export RUN --out RUN/checkpoints/best.pt`.
_OWN_FILES = (CONFIG_FILE, OVERRIDES_FILE, ENV_FILE, METRICS_FILE, "start.json", "graphs.json", ".lock",
              "sweep.json", "search.json", "study.db")
_OWN_DIRS = (CKPT_DIR, TB_DIR, "logs")


def check_output(option: str, *paths: Path) -> None:
    """RunDirError when any of `paths`, files about to be written (replaced by a rename), is a device,
    pipe or socket (`--out /dev/full` would replace the device node itself), or is (or, through a
    link, resolves to) a file of a run, sweep or search folder: its config, records, checkpoints or
    TensorBoard events. New files beside them (e.g. RUN/model.onnx) are fine."""
    for out in paths:
        out = Path(out).expanduser()
        if out.exists() and not out.is_file() and not out.is_dir():
            raise RunDirError(f"{option} {out} is a device, pipe or socket, not a file: give a file path")
        target = out.resolve()
        for folder in target.parents:
            rel = target.relative_to(folder)
            own = rel.parts[0] in _OWN_DIRS if len(rel.parts) > 1 else rel.name in _OWN_FILES
            if own and (is_run_dir(folder) or (folder / "sweep.json").is_file() or (folder / "search.json").is_file()):
                raise RunDirError(f"{option} {out} would replace {rel} of the run {folder}: choose a path outside "
                                  "the run's own files")


def check_writable(out_dir: Path, option: str = "out_dir=DIR") -> None:
    """Fail with one line, before any work, if runs cannot be written under out_dir (`option`: how
    the command names it, e.g. `--out-dir DIR` for vaitrain lab)."""
    out_dir = Path(out_dir)
    made = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # deepest first
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        for folder in made:  # a refused out_dir leaves none of the folders this call made
            try:
                folder.rmdir()
            except OSError:
                pass
        # 'File exists' for out_dir=/etc/hostname read as if the folder were taken: say what it is
        blocker = next((d for d in (out_dir, *out_dir.parents) if d.exists() and not d.is_dir()), None)
        reason = f"{blocker} is {special_kind(blocker) or 'a file'}, not a folder" if blocker else err.strerror or err
        raise RunDirError(
            f"cannot write runs under '{out_dir}' ({reason}); "
            f"choose a writable folder with {option}"
        ) from None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_." else "_" for c in text)[:40]


def _run_id() -> str:
    return secrets.token_hex(3)


def create_unique_dir(parent: Path, stem: str, what: str = "run") -> Path:
    """A new directory <parent>/<stem>-<random id>; mkdir(exist_ok=False) retries on a clash, so
    two processes starting in the same second never share one (runs, sweeps and searches)."""
    for _ in range(100):
        path = Path(parent) / f"{stem}-{_run_id()}"
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        except OSError as err:
            raise RunDirError(f"cannot create {what} directory '{path}': {err.strerror or err}") from None
        return path
    raise RunDirError(f"could not find a free {what} directory name under {parent}")


TASK_LABELS = {"classification": "cls", "segmentation": "seg", "regression": "reg"}


def data_label(cfg: Any) -> str:
    """What a run directory says about its data and task: `shapes-seg`, `shapes_ambiguous-mdn`
    (the data variant, and the regression head when it is not the plain one)."""
    data = str(cfg.data.name)
    if str(cfg.data.get("variant", "standard")) != "standard":
        data += f"_{cfg.data.variant}"
    task = str(cfg.task.name)
    head = str(cfg.task.get("head", "plain"))
    label = head if task == "regression" and head != "plain" else TASK_LABELS.get(task, task)
    return f"{data}-{label}"


def create_run_dir(
    out_dir: Path, model: str, data: str, name: str = "", *, dated: bool = True
) -> Path:
    """A new, unique run directory <out_dir>/<date>/<time>-<model>-<data>[-<name>]-<id>
    (without the <date> level when dated=False, as for the jobs of a sweep); `data` may have
    several '-'-separated parts (data_label: `shapes-seg`)."""
    check_writable(out_dir)
    now = _dt.datetime.now()
    day = Path(out_dir) / now.strftime("%Y-%m-%d") if dated else Path(out_dir)
    parts = [now.strftime("%H-%M-%S"), _slug(model), *(_slug(p) for p in data.split("-"))]
    if name:
        parts.append(_slug(name))
    run = create_unique_dir(day, "-".join(parts))
    (run / CKPT_DIR).mkdir()
    return run


def is_run_dir(path: Path) -> bool:
    """config.yaml, and metrics.jsonl or checkpoints/. A FIFO or device in a file's place counts as
    the file: check_run_files then refuses it in one line ('not a run directory' misled)."""
    path = Path(path)

    def there(p: Path) -> bool:
        return p.is_file() or special_kind(p) not in (None, "a folder")

    return there(path / CONFIG_FILE) and (there(path / METRICS_FILE) or (path / CKPT_DIR).is_dir())


def check_run_files(path: Path, folders: bool = True) -> None:
    """RunDirError when a run's own file is a named pipe, device or socket: reading it would wait for
    ever (a FIFO) or never end (/dev/zero); such a file is never what vaitrain wrote. folders: also
    when tb/ or checkpoints/ is a file (what eval and resume use; compare-runs reads neither)."""
    tb = Path(path) / TB_DIR
    try:  # TensorBoard's reader opens every file in tb/: a FIFO there hung `vaitrain report`
        events = [f"{TB_DIR}/{e.name}" for e in os.scandir(tb)] if tb.is_dir() else []
    except OSError:
        events = []
    for name in (CONFIG_FILE, OVERRIDES_FILE, METRICS_FILE, ENV_FILE, f"{CKPT_DIR}/best.pt", f"{CKPT_DIR}/last.pt",
                 *events):
        note = not_regular_note(Path(path) / name)
        if note:
            raise RunDirError(f"{note}; a run's {name} is a file vaitrain writes: restore it from a copy of the run "
                              "or train again")
    for name in (TB_DIR, CKPT_DIR) if folders else ():  # a file in a folder's place: resume's makedirs was a FileExistsError traceback
        folder = Path(path) / name
        if folder.exists() and not folder.is_dir():
            raise RunDirError(f"{folder} is a file, not the folder a run keeps its "
                              f"{'TensorBoard events' if name == TB_DIR else 'checkpoints'} in: restore it from a copy "
                              "of the run or train again")


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and device facts recorded with every run (env.json)."""
    import vaitrain

    env: dict[str, Any] = {
        "vaitrain": vaitrain.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
    }
    version = _torchvision_version()
    if version:
        env["torchvision"] = version
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["gpu_count"] = torch.cuda.device_count()
    return env


def _torchvision_version() -> str | None:
    """torchvision.__version__ (e.g. 0.29.1+cu130) read from its version.py: importing torchvision
    only to record this would cost every run ~1 CPU second."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("torchvision")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        try:
            text = (Path(folder) / "version.py").read_text()
        except OSError:
            continue
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        if found:
            return found.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchvision")
    except PackageNotFoundError:
        return None


def write_run_files(run: Path, config_yaml: str, overrides: list[str], device: torch.device) -> None:
    write_text_atomic(run / CONFIG_FILE, config_yaml)
    write_text_atomic(run / OVERRIDES_FILE, "\n".join(overrides) + ("\n" if overrides else ""))
    write_text_atomic(run / ENV_FILE, json.dumps(environment(device), indent=2) + "\n")
