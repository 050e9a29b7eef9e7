"""Starting weights: a state_dict file (torchvision's format, or a vaitrain checkpoint's model) loaded
into a freshly built model, and `model.freeze=backbone`.

Tensors are matched by name. Where only the final layer (the model's `final_layer`: classes
differ) or the stem's first convolution (input channels differ) has another shape, that layer keeps
its fresh initialization and the report names it as new; any other difference (another
architecture, another norm) is one CheckpointError naming the tensors. Files load with
`torch.load(weights_only=True)`: a file cannot run code.

`model.weights=imagenet` looks for torchvision's own file (e.g. resnet18-f37072fd.pth) in torch's
hub cache (`torch.hub.get_dir()/checkpoints`, where torchvision's `ResNet18_Weights` downloads go)
and never downloads: absent, the error names the file, the folder and the URL.
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaitrain.errors import CheckpointError, ConfigError
from vaitrain.file_kinds import not_regular_note
from vaitrain.torch_files import check_archive, load_error

# vaitrain model names whose default build has torchvision's layout (and ImageNet weights there)
TORCHVISION_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "densenet121", "densenet169", "densenet201")

# torchvision's DenseNet files predate its module names: "denselayer1.norm.1" is "denselayer1.norm1"
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


@dataclass
class LoadReport:
    source: str
    kept: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # tensors left at their fresh initialization

    def message(self) -> str:
        text = f"weights from {self.source}: {len(self.kept)} tensors loaded"
        if self.new:
            text += f"; new (re-initialized): {', '.join(self.new)}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kept": len(self.kept), "new": list(self.new)}


def hub_checkpoints() -> Path:
    """Where torchvision's weight downloads go (TORCH_HOME, else ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_file(model_name: str) -> Path:
    """torchvision's ImageNet weight file for `model_name`, from the hub cache (no download)."""
    if model_name not in TORCHVISION_NAMES:
        raise ConfigError(f"model.weights=imagenet exists for model={'|'.join(TORCHVISION_NAMES)}, not "
                          f"model={model_name}: give a state_dict file (model.weights=PATH) or use init_from=RUN_DIR")
    from torchvision.models import get_model_weights

    enum = get_model_weights(model_name)
    default = enum.DEFAULT
    candidates = [default] + [w for w in enum if w is not default]
    folder = hub_checkpoints()
    for w in candidates:
        path = folder / Path(w.url).name
        if path.is_file():
            return path
    name = Path(default.url).name
    raise CheckpointError(f"model.weights=imagenet: {name} is not in {folder}/ (vaitrain never downloads it): put "
                          f"{default.url} there, or give its path as model.weights=PATH")


def resolve_weights_path(spec: str, model_name: str) -> Path:
    if spec == "imagenet":
        return imagenet_file(model_name)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise CheckpointError(f"model.weights={spec} is a folder: give the state_dict file in it (a .pth file), or "
                              "init_from=RUN_DIR for a vaitrain run")
    note = not_regular_note(path)
    if note:
        raise CheckpointError(f"model.weights={note}: give a state_dict .pth file")
    if not path.is_file():
        raise CheckpointError(f"model.weights={spec}: no such file; give a state_dict .pth file (e.g. torchvision's "
                              "resnet18-f37072fd.pth) or model.weights=imagenet")
    return path


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a state_dict file: a plain {name: tensor} dict, or a dict holding one under
    'model' (a vaitrain checkpoint) or 'state_dict'; 'module.' prefixes (DDP) dropped."""
    check_archive(path, "weights file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as err:
        raise load_error(path, err, "weights file", "save the weights again (torch.save(model.state_dict(), f))") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"'{path}' holds no state_dict (a dict of tensor names to tensors)")
    out = {}
    for k, v in obj.items():
        k = str(k)
        k = k[len("module."):] if k.startswith("module.") else k
        m = _DENSENET_OLD_KEY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def _stem_name(own: dict[str, Tensor]) -> str | None:
    """The first convolution's weight: the one tensor that depends on the input channels."""
    return next((k for k, v in own.items() if v.ndim == 4), None)


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str) -> LoadReport:
    """Copy `state` into `model` (see the module docstring); returns what was kept and what is new."""
    own = model.state_dict()
    final = str(getattr(model, "final_layer", ""))
    stem = _stem_name(own)
    stem_layer = stem.rsplit(".", 1)[0] if stem else None
    report = LoadReport(source)
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    # the final layer may differ in its outputs (dim 0: classes) and the stem in its inputs (dim 1:
    # channels), nothing else: another width there is another architecture
    replaceable = {final: 0, stem_layer: 1}
    bad_shapes = [k for k in shapes if not _differs_only_in(own[k], state[k], replaceable.get(k.rsplit(".", 1)[0]))]
    if unexpected or missing or bad_shapes:
        parts = []
        if missing:
            parts.append(f"the model's {_few(missing)} are not in the file")
        if unexpected:
            parts.append(f"the file's {_few(unexpected)} are not in the model")
        if bad_shapes:
            k = bad_shapes[0]
            parts.append(f"{_few(bad_shapes)} differ in shape (e.g. {k}: file {tuple(state[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        raise CheckpointError(f"{source} does not fit model {type(model).__name__}: " + "; ".join(parts)
                              + " (weights of another architecture or norm?)")
    new_layers = {k.rsplit(".", 1)[0] for k in shapes}
    _check_values(state, [k for k in own if k in state and k.rsplit(".", 1)[0] not in new_layers], own, source)
    load = {}
    for k, v in own.items():
        if k not in state or k.rsplit(".", 1)[0] in new_layers:
            if not k.endswith("num_batches_tracked"):
                report.new.append(k)
            continue
        load[k] = state[k].to(dtype=v.dtype)
        report.kept.append(k)
    model.load_state_dict(load, strict=False)
    return report


def _differs_only_in(mine: Tensor, theirs: Tensor, dim: int | None) -> bool:
    if dim is None or mine.ndim != theirs.ndim or mine.ndim <= dim:
        return False
    return all(a == b for i, (a, b) in enumerate(zip(mine.shape, theirs.shape)) if i != dim)


def _check_values(state: dict[str, Tensor], keys: list[str], own: dict[str, Tensor], source: str) -> None:
    """Tensors about to be copied: a float model tensor from an integer one (its values would be
    truncated numbers) or NaN/inf weights (a run that fails many steps later, blaming the learning
    rate) are refused here, naming the tensor."""
    for k in keys:
        v = state[k]
        if own[k].is_floating_point() != v.is_floating_point() and not k.endswith("num_batches_tracked"):
            raise CheckpointError(f"{source}: {k} is {v.dtype} in the file but {own[k].dtype} in the model: "
                                  "not weights of this model")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{source}: {k} holds NaN or inf values: the weights are damaged (a diverged "
                                  "run?); use another file")


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


# ---------------------------------------------------------------- freezing

def _eval_only_train(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


_FROZEN_CLASSES: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    """A subclass whose train() keeps eval mode: a frozen norm layer uses (and never updates) its
    running statistics, even when the loop calls model.train()."""
    if cls not in _FROZEN_CLASSES:
        _FROZEN_CLASSES[cls] = type(f"Frozen{cls.__name__}", (cls,), {"train": _eval_only_train})
    return _FROZEN_CLASSES[cls]


def freeze_backbone(model: nn.Module) -> list[str]:
    """Everything but the final layer stops learning: parameters get requires_grad=False and norm
    layers with running statistics stay in eval mode. Returns the trainable parameter names."""
    final = str(getattr(model, "final_layer", ""))
    if not final:
        raise ConfigError(f"model.freeze=backbone needs a model with a final layer ({type(model).__name__} has none)")
    trainable = []
    for name, p in model.named_parameters():
        keep = name.startswith(final + ".")
        p.requires_grad_(keep)
        if keep:
            trainable.append(name)
    for name, module in model.named_modules():
        if name == final or name.startswith(final + "."):
            continue
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            module.__class__ = _frozen_class(type(module))
            module.train(False)
    return trainable
