"""`vaitrain export RUN --format onnx|torchscript --out FILE`: a trained model out of the tool.

The model is exported in eval mode for the run's input (channels, image_size) with a dynamic batch
axis. With include_normalization (the default) the file takes images as float32 N,C,H,W in [0, 1]
(x/255) and normalizes them itself; without it, it takes normalized images and the sidecar JSON
(FILE.json) gives the mean/std to apply. The sidecar also names the classes or targets and says how
to read the outputs. After writing, the exported file is run on a batch (TorchScript through torch,
ONNX through onnxruntime when installed) and compared with PyTorch: a max abs difference above the
tolerance is an error and nothing is kept. The ONNX export needs the `export` extra (onnx,
onnxscript; onnxruntime for the check).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaitrain.errors import ConfigError, RunDirError, VaitrainError

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4
CHECK_BATCH = 3  # differs from the export batch (2): the dynamic batch axis is exercised


class ExportError(VaitrainError):
    """A model that cannot be exported, or an exported file that does not match PyTorch."""


class WithNormalization(nn.Module):
    """x in [0, 1] -> (x - mean) / std -> the model."""

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor):
        super().__init__()
        self.model = model
        shape = (1, -1, 1, 1) if mean.dim() == 1 else (1, *mean.shape)
        self.register_buffer("mean", mean.detach().float().reshape(shape).clone())
        self.register_buffer("std", std.detach().float().reshape(shape).clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    max_abs_diff: float
    checked_with: str  # onnxruntime | torch | "" (not run: onnxruntime missing)
    export_seconds: float
    input_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)  # lines for the user (config.yaml edited by hand)


def export_run(run_dir: Path, fmt: str, out: Path, *, checkpoint: str = "best", include_normalization: bool = True,
               overrides: list[str] = (), tolerance: float = TOLERANCE) -> ExportResult:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} is not a format; choose one of: {', '.join(FORMATS)}")
    from vaitrain.engine.trained import load_trained

    out = Path(out)
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist")
    other = {"onnx": (".pt", ".pth", ".ts", ".jit"), "torchscript": (".onnx",)}[fmt]
    if out.suffix.lower() in other:  # a TorchScript archive named .onnx would fail in any ONNX runtime
        raise ConfigError(f"--out {out} names a {'TorchScript' if fmt == 'onnx' else 'ONNX'} file but --format is {fmt}: "
                          f"name it {out.with_suffix('.onnx' if fmt == 'onnx' else '.pt').name}, or give the other --format")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the file to write, e.g. --out {out / ('model.onnx' if fmt == 'onnx' else 'model.pt')}")
    from vaitrain.track.rundir import check_output

    check_output("--out", out, out.with_name(out.name + ".json"))  # the file and its description
    trained = load_trained(run_dir, checkpoint, list(overrides), device="cpu")
    info = trained.info
    c, s = int(info["in_channels"]), int(info["image_size"])
    model: nn.Module = trained.model
    if include_normalization:
        model = WithNormalization(model, trained.stats["mean"], trained.stats["std"])
    model.eval()
    example = torch.rand(2, c, s, s)
    check = torch.rand(CHECK_BATCH, c, s, s, generator=torch.Generator().manual_seed(0))
    if not include_normalization:
        example, check = _normalized(example, trained.stats), _normalized(check, trained.stats)
    with torch.no_grad():
        expected = model(check).float()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as err:  # a read-only or special folder (the working directory for a bare --out m.pt)
        raise RunDirError(f"--out {out}: cannot write in {out.parent.resolve()} ({err.strerror}); "
                          "choose a writable folder for --out") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        t0 = time.perf_counter()
        if fmt == "torchscript":
            _torchscript(model, example, tmp)
        else:
            _onnx(model, example, tmp)
        seconds = time.perf_counter() - t0
        got, checked_with = _run_exported(fmt, tmp, check)
        diff = float((got - expected).abs().max()) if got is not None else float("nan")
        if got is not None and not diff <= tolerance:
            raise ExportError(f"the exported {fmt} model differs from PyTorch by {diff:.3g} (max abs) on a batch of "
                              f"{CHECK_BATCH}, over the tolerance {tolerance:g}: not written")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would keep the file from everyone else
        sidecar = out.with_name(out.name + ".json")
        from vaitrain.track.files import write_text_atomic

        # the description first: a full disk leaves neither file rather than a model without one
        write_text_atomic(sidecar, json.dumps(_describe(trained, fmt, include_normalization, (c, s)), indent=2) + "\n")
        os.replace(tmp, out)
    except OSError as err:
        raise RunDirError(f"cannot write {out} ({err.strerror or err}): free space there or choose another --out") from None
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, sidecar, fmt, diff, checked_with, seconds, (c, s, s), trained.notes)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normalized(x: Tensor, stats: dict[str, Tensor]) -> Tensor:
    mean, std = stats["mean"].float(), stats["std"].float()
    if mean.dim() == 1:
        mean, std = mean[:, None, None], std[:, None, None]
    return (x - mean) / std


def _torchscript(model: nn.Module, example: Tensor, path: Path) -> None:
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
            archive = io.BytesIO()
            torch.jit.save(traced, archive)
    except Exception as err:
        raise ExportError(f"{type(_inner(model)).__name__} cannot be exported to TorchScript (torch.jit.trace: "
                          f"{_first(err)}); try --format onnx") from None
    # written by Python: torch.jit.save to a path on a full disk aborts the whole process (C++ abort)
    path.write_bytes(archive.getvalue())


def _onnx(model: nn.Module, example: Tensor, path: Path) -> None:
    missing = [m for m in ("onnx", "onnxscript") if not _importable(m)]
    if missing:
        raise ExportError(f"--format onnx needs {' and '.join(missing)}: pip install 'vaitrain[export]'")
    batch = torch.export.Dim("batch", min=1)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            # external_data=False: the weights inside the one file. With torch's default they went to
            # '<temp name>.data' beside it, which the .onnx named and the rename left behind
            torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                              input_names=["image"], output_names=["output"], verbose=False, external_data=False)
    except Exception as err:
        raise ExportError(f"{type(_inner(model)).__name__} cannot be exported to ONNX (torch.onnx.export: "
                          f"{_first(err)}); try --format torchscript") from None


def _run_exported(fmt: str, path: Path, x: Tensor) -> tuple[Tensor | None, str]:
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the format is what was asked for
            loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return loaded(x).float(), "torch"
    if not _importable("onnxruntime"):
        return None, ""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return torch.from_numpy(out).float(), "onnxruntime"


def _describe(trained: Any, fmt: str, include_normalization: bool, cs: tuple[int, int]) -> dict[str, Any]:
    info, task = trained.info, trained.task
    c, s = cs
    doc: dict[str, Any] = {
        "format": fmt,
        "input": {"name": "image", "shape": ["batch", c, s, s], "dtype": "float32",
                  "channels": "grayscale" if c == 1 else "RGB"},
        "normalization_included": include_normalization,
        "mean": trained.stats["mean"].flatten().tolist() if trained.stats["mean"].dim() == 1 else "per pixel",
        "std": trained.stats["std"].flatten().tolist() if trained.stats["std"].dim() == 1 else "per pixel",
        "resize": {"mode": info.get("resize"), "crop_fraction": info.get("crop_fraction"), "size": s},
        "task": task.name,
        "checkpoint": str(trained.checkpoint),
    }
    doc["input"]["values"] = ("x / 255 in [0, 1]; the model subtracts mean and divides by std" if include_normalization
                              else "(x / 255 - mean) / std, per channel")
    if task.name in ("classification", "segmentation"):
        doc["classes"] = list(info["class_names"])
        doc["output"] = ("logits (batch, classes): softmax for probabilities" if task.name == "classification"
                         else "logits (batch, classes, H, W): argmax over classes for the mask")
    else:
        doc["targets"] = list(info["target_names"])
        doc["target_mean"] = trained.stats["target_mean"].tolist()
        doc["target_std"] = trained.stats["target_std"].tolist()
        doc["head"] = task.head
        doc["output"] = {
            "plain": "(batch, D) standardized: value = output * target_std + target_mean",
            "gaussian": f"(batch, 2D): [mu | s]; value = mu * target_std + target_mean; sigma = {task.sigma_param}"
                        f"(s) + {task.min_sigma} (standardized) times target_std",
            "mdn": f"(batch, K(D+2)), K={task.k}: [alpha logits (K) | s (K) | mu (K*D)]; weights = softmax(alpha); "
                   f"sigma_k = {task.sigma_param}(s_k) + {task.min_sigma}; values as for plain",
        }[task.head]
    return doc


def _inner(model: nn.Module) -> nn.Module:
    return model.model if isinstance(model, WithNormalization) else model


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _first(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(err).__name__)
