"""`vaitrain predict RUN PATH...`: a trained model on new image files.

Each file is decoded the way the run's data was (grayscale/RGB/RGBA/palette converted to the
model's channels, brought to its square input by the run's data.resize, normalized with the
checkpoint's statistics), in batches (files decoded on a thread pool while the model runs batch
by batch). A file that cannot be read is reported and skipped.

Outputs:
- classification: the top-k classes with their softmax probabilities, a row per file (CSV or JSON);
- segmentation: a class-index PNG per file at the file's own size (the whole image is resized to
  the model's input and the class scores are resized back before the argmax), optionally an
  overlay PNG; plus an index CSV/JSON of the written files;
- regression: the values in the targets' units; gaussian heads add each target's sigma, MDN heads
  each component's weight, mean and sigma.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vaitrain.data.augment import normalize, normalizer
from vaitrain.data.images import SQUASH, Fit, load_image_sized, parallel_map, scan_images, skipped_note
from vaitrain.errors import ConfigError, DataError, RunDirError, VaitrainError
from vaitrain.file_kinds import special_kind
from vaitrain.track.one_run import refuse_more_runs
from vaitrain.track.runs import printable

FORMATS = ("csv", "json")


@dataclass
class PredictResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per file that worked
    errors: list[str] = field(default_factory=list)  # one line per file skipped
    written: list[Path] = field(default_factory=list)  # files written (outputs, masks, overlays)
    total: int = 0
    notes: list[str] = field(default_factory=list)  # lines for the user (e.g. --topk above the classes)


def expand_paths(args: Sequence[str], notes: list[str] | None = None) -> list[Path]:
    """Files, folders (their images, recursively, sorted) and globs; a path that names nothing, or a
    folder without images, is an error (nothing is predicted then). `notes` gets a line per folder
    naming the files left out for their extension (as training counts them)."""
    out: list[Path] = []
    for arg in args:
        p = Path(arg).expanduser()
        if p.is_dir():
            found, others = scan_images(p, broken_ok=True)  # hidden files left out; no recursion limit
            if notes is not None:
                notes += skipped_note(others, p)
            if not found:
                raise DataError(f"{p} holds no image files ({', '.join(('.png', '.jpg', '.jpeg', '...'))})")
            out += found
        elif p.is_file():
            out.append(p)
        elif any(c in arg for c in "*?["):
            try:
                found = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
            except RecursionError:  # glob's ** recurses once per folder level
                raise DataError(f"{arg} reaches folders too deep for a glob: give the folder itself") from None
            if not found:
                raise DataError(f"no file matches {arg}")
            out += found
        elif special_kind(p):  # a FIFO or device given as an image: 'does not exist' misled
            raise DataError(f"{arg} is {special_kind(p)}, not an image file: give image files, folders or globs")
        else:
            raise DataError(f"{arg} does not exist: give image files, folders or globs")
    if not out:
        raise DataError("no input files: give image files, folders or globs")
    # a file named twice (a folder and a glob over it, the same folder twice) is predicted once
    unique: dict[str, Path] = {}
    for p in out:
        unique.setdefault(os.path.abspath(p), p)
    return list(unique.values())


def _output_format(out: Path | None, task: str) -> str | None:
    if out is None:
        if task == "segmentation":
            raise ConfigError("segmentation predictions are PNG files: give --out DIR for them")
        return None
    if task == "segmentation":
        return "dir"
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ConfigError(f"--out {out}: write predictions to a .csv or .json file")
    return suffix


def _check_out(out: Path, fmt: str | None) -> None:
    """Refuse an --out that cannot be written before any image is decoded (not after the work):
    a folder where a file goes or the reverse, a file on the way, or a folder without write access.
    Missing folders are created when the results are written."""
    folder = fmt == "dir"
    from vaitrain.track.rundir import check_output

    check_output("--out", out / "predictions.csv" if folder else out)
    if out.exists() and out.is_dir() != folder:
        raise RunDirError(f"--out {out} is a {'file' if folder else 'folder'}: give a "
                          f"{'folder for the mask PNGs' if folder else 'file name such as preds.csv'}")
    existing = out if folder else out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"--out {out}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"--out {out}: no permission to write in {existing}; choose another --out")


def _written(path: Path, err: OSError) -> RunDirError:
    return RunDirError(f"cannot write {path} ({err.strerror or err}): choose another --out or free space there")


class Preprocess:
    """File -> normalized float tensor (C, S, S), as the run's data pipeline did it."""

    def __init__(self, info: dict[str, Any], stats: dict[str, torch.Tensor], fit: Fit):
        self.mode = "L" if int(info["in_channels"]) == 1 else "RGB"
        self.size = int(info["image_size"])
        self.fit = fit
        self.scale, self.shift = normalizer(stats["mean"], stats["std"], torch.device("cpu"))

    def uint8(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        return load_image_sized(path, self.mode, self.size, self.fit)

    def batch(self, images: list[torch.Tensor]) -> torch.Tensor:
        return normalize(torch.stack(images), self.scale, self.shift)


def predict(run_dir: Path, inputs: Sequence[str], *, checkpoint: str = "best", out: Path | None = None,
            topk: int | None = None, batch_size: int = 64, overlay: bool = False, device: str | None = None,
            overrides: Sequence[str] = (), progress: Any = None) -> PredictResult:
    """Run the model of `run_dir` on the files `inputs` name; see the module docstring."""
    from vaitrain.engine.trained import load_trained

    refuse_more_runs(run_dir, inputs, "predict")
    left_out: list[str] = []
    paths = expand_paths(inputs, left_out)
    if batch_size < 1 or (topk is not None and topk < 1):
        raise ConfigError("--batch-size and --topk must be >= 1")
    trained = load_trained(run_dir, checkpoint, list(overrides), device)
    task = trained.task.name
    if overlay and task != "segmentation":
        raise ConfigError(f"--overlay draws segmentation masks over the images; {run_dir} is a {task} run: drop --overlay")
    if topk is not None and task != "classification":
        raise ConfigError(f"--topk ranks classes; {run_dir} is a {task} run: drop --topk")
    result = PredictResult(total=len(paths), notes=[*trained.notes, *left_out])
    classes = int(getattr(trained.task, "num_classes", 0) or 0)
    if topk is not None and task == "classification" and topk > classes:
        result.notes.append(f"--topk {topk}: the model knows {classes} classes, so each row lists {classes}")
    topk = 5 if topk is None else topk
    fmt = _output_format(out, task)
    if out is not None:
        _check_out(out, fmt)
    info = trained.info
    # segmentation maps back onto the whole image, so it sees the whole image (squash)
    fit = SQUASH if task == "segmentation" else Fit(str(info.get("resize", "squash")),
                                                     float(info.get("crop_fraction", 1.0)))
    pre = Preprocess(info, trained.stats, fit)
    writer = _SegWriter(out, trained, overlay) if task == "segmentation" else None
    if writer is not None:
        writer.check_inputs_kept(paths)
    if progress is not None:
        progress.start("predict", len(paths))
    try:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            decoded = parallel_map(lambda i: _try(pre.uint8, chunk[i]), len(chunk))
            good = [(p, d) for p, d in zip(chunk, decoded) if not isinstance(d, str)]
            result.errors += [printable(f"{p}: {d}") for p, d in zip(chunk, decoded) if isinstance(d, str)]
            if good:
                x = pre.batch([d[0] for _, d in good]).to(trained.device)
                with torch.no_grad():
                    raw = trained.model(x).float().cpu()
                sizes = [d[1] for _, d in good]
                if writer is not None:
                    try:
                        result.rows += writer.write([p for p, _ in good], raw, sizes, [d[0] for _, d in good])
                    except OSError as err:
                        raise _written(writer.out, err) from None
                else:
                    result.rows += _rows(trained, [p for p, _ in good], raw, topk)
            if progress is not None:
                progress.advance(len(chunk))
    finally:
        if progress is not None:
            progress.finish()
    if writer is not None:
        result.written += writer.written
    if result.rows and out is not None:
        target = out / "predictions.csv" if fmt == "dir" else out
        _write_table(target, result.rows, "csv" if fmt == "dir" else fmt or "csv")
        result.written.append(target)
    return result


def _try(fn: Callable[[Path], Any], path: Path) -> Any:
    """fn(path), or the one-line reason it failed (a string)."""
    try:
        return fn(path)
    except VaitrainError as err:
        text = str(err)
        return text.replace(f" {path}:", ":").replace(f"{path}: ", "").replace(f" {path}", "")
    except Exception as err:  # whatever a decoder raises on a damaged file
        return f"cannot read ({' '.join(str(err).split())[:100] or type(err).__name__})"


def _names(names: Sequence[str], n: int, prefix: str) -> list[str]:
    return [str(names[i]) if i < len(names) else f"{prefix}{i}" for i in range(n)]


def _rows(trained: Any, paths: list[Path], raw: torch.Tensor, topk: int) -> list[dict[str, Any]]:
    task = trained.task
    if task.name == "classification":
        classes = _names(trained.info["class_names"], task.num_classes, "class")
        prob = raw.softmax(1)
        k = min(topk, task.num_classes)
        p, idx = prob.topk(k, dim=1)
        return [{"path": _path_text(path),
                 "top": [{"class": classes[int(j)], "index": int(j), "prob": float(q)} for q, j in zip(p[i], idx[i])]}
                for i, path in enumerate(paths)]
    return _regression_rows(trained, paths, raw)


def _regression_rows(trained: Any, paths: list[Path], raw: torch.Tensor) -> list[dict[str, Any]]:
    task = trained.task
    names = _names(trained.info["target_names"], task.dim, "y")
    mean, std = task.target_stats(torch.device("cpu"))
    parts = task.decode(raw)
    pred = parts["pred"] * std + mean
    rows = []
    for i, path in enumerate(paths):
        row: dict[str, Any] = {"path": _path_text(path), "values": dict(zip(names, map(float, pred[i])))}
        if task.head == "gaussian":
            sigma = parts["logsig"][i].exp() * std
            row["sigma"] = dict(zip(names, map(float, sigma)))
        elif task.head == "mdn":
            weights = parts["logit_alpha"][i].softmax(-1)
            comps = []
            for k in range(task.k):
                comps.append({"weight": float(weights[k]),
                              "mean": dict(zip(names, map(float, parts["mu"][i, k] * std + mean))),
                              "sigma": dict(zip(names, map(float, parts["logsig"][i, k].exp() * std)))})
            row["components"] = comps
        rows.append(row)
    return rows


def _path_text(path: Path) -> str:
    """A file's path as UTF-8 text: a name with bytes that are not UTF-8 (from another system's zip)
    is written with those bytes as \\xNN; writing the CSV failed on it (UnicodeEncodeError)."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: top-k as class_1, prob_1 ...; nested dicts as name, name_sigma, w1, name_mean1 ..."""
    flat: dict[str, Any] = {"path": row["path"]}
    for j, t in enumerate(row.get("top", []), start=1):
        flat[f"class_{j}"], flat[f"prob_{j}"] = t["class"], round(t["prob"], 6)
    for name, v in row.get("values", {}).items():
        flat[name] = v
    for name, v in row.get("sigma", {}).items():
        flat[f"{name}_sigma"] = v
    for k, comp in enumerate(row.get("components", []), start=1):
        flat[f"weight{k}"] = comp["weight"]
        for name, v in comp["mean"].items():
            flat[f"{name}_mean{k}"] = v
        for name, v in comp["sigma"].items():
            flat[f"{name}_sigma{k}"] = v
    for key in ("mask", "overlay", "height", "width"):
        if key in row:
            flat[key] = row[key]
    return flat


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    """The predictions as CSV (one flat row per file) or JSON text."""
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    from vaitrain.csv_cells import dict_csv_text  # class names starting with = + - @ stay text in a spreadsheet

    flat = [_flat(r) for r in rows]
    return dict_csv_text(list(flat[0]), flat)


def _write_table(path: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    from vaitrain.track.files import write_text_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, format_rows(rows, fmt))
    except OSError as err:
        raise _written(path, err) from None


class _SegWriter:
    """Class-index PNGs at each file's own size (and overlays) into the --out folder."""

    def __init__(self, out: Path | None, trained: Any, overlay: bool):
        assert out is not None
        self.out, self.overlay, self.trained = Path(out), overlay, trained
        self.written: list[Path] = []
        self.used: set[str] = set()
        n = trained.task.num_classes
        if n > 256:
            raise ConfigError(f"{n} classes do not fit an 8-bit class-index PNG")

    def _stem(self, path: Path) -> str:
        stem, k = path.stem, 1
        while stem in self.used:  # the same name in two folders
            k += 1
            stem = f"{path.stem}_{k}"
        self.used.add(stem)
        return stem

    def check_inputs_kept(self, paths: list[Path]) -> None:
        """Refuse (before any work) an --out folder where a mask or overlay would replace one of the
        input images, e.g. `predict RUN photos/ --out photos/` and a photos/cat.png."""
        inputs = {p.resolve(): p for p in paths}
        names = _SegWriter(self.out, self.trained, self.overlay)
        for path in paths:
            stem = names._stem(path)
            for target in [self.out / f"{stem}.png"] + ([self.out / f"{stem}.overlay.png"] if self.overlay else []):
                if target.resolve() in inputs:
                    raise RunDirError(f"--out {self.out}: the mask {target.name} would replace the input "
                                      f"{inputs[target.resolve()]}; choose another --out folder")

    def write(self, paths: list[Path], raw: torch.Tensor, sizes: list[tuple[int, int]],
              images: list[torch.Tensor]) -> list[dict[str, Any]]:
        from PIL import Image

        from vaitrain.tasks import images as draw

        self.out.mkdir(parents=True, exist_ok=True)
        rows = []
        colours = draw.palette(self.trained.task.num_classes)
        for i, path in enumerate(paths):
            h, w = sizes[i]
            scores = F.interpolate(raw[i:i + 1], size=(h, w), mode="bilinear", align_corners=False)
            mask = scores[0].argmax(0).to(torch.uint8)
            stem = self._stem(path)
            target = self.out / f"{stem}.png"
            _save_png(Image.fromarray(mask.numpy()), target)
            self.written.append(target)
            row = {"path": _path_text(path), "mask": _path_text(target), "height": h, "width": w}
            if self.overlay:
                from vaitrain.data.images import load_image

                mode = "L" if images[i].shape[0] == 1 else "RGB"
                full = load_image(path, mode, 0).float() / 255
                if full.shape[0] == 1:
                    full = full.repeat(3, 1, 1)
                # classes in colour over the image; background (class 0) left as it is
                blended = torch.where(mask.bool(), draw.overlay(full, mask, colours), full)
                arr = (blended.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                over = self.out / f"{stem}.overlay.png"
                _save_png(Image.fromarray(np.ascontiguousarray(arr)), over)
                self.written.append(over)
                row["overlay"] = str(over)
            rows.append(row)
        return rows


def _save_png(image: Image.Image, target: Path) -> None:
    """Encoded in memory, then renamed into place: a full disk never leaves half a mask PNG (or
    half of the one a previous predict wrote there)."""
    from io import BytesIO

    from vaitrain.track.files import write_bytes_atomic

    buf = BytesIO()
    image.save(buf, format="PNG")
    write_bytes_atomic(target, buf.getvalue())


def summary_lines(result: PredictResult) -> Iterable[str]:
    yield f"{len(result.rows)} of {result.total} files predicted, {len(result.errors)} skipped"
