"""How a new run's model starts: `model.weights=PATH|imagenet` (a state_dict file) or
`init_from=RUN_DIR|FILE` (another run's checkpoint); then `model.freeze`. Resumed runs and
`eval` take their weights from their own checkpoint instead."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from vaitrain.errors import CheckpointError, ConfigError
from vaitrain.models.weights import LoadReport, freeze_backbone, load_weights, read_state_dict, resolve_weights_path
from vaitrain.track import rundir


def init_checkpoint(spec: str) -> Path:
    """init_from=RUN_DIR (its best.pt, else last.pt) or a checkpoint file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        folder = path / rundir.CKPT_DIR
        found = next((folder / n for n in ("best.pt", "last.pt") if (folder / n).is_file()), None)
        if found is None:
            raise CheckpointError(f"init_from={spec} holds no checkpoints/best.pt or last.pt: give a finished run "
                                  "or a .pt file")
        return found
    if not path.is_file():
        raise CheckpointError(f"init_from={spec}: no such run directory or checkpoint file")
    return path


def start_weights(cfg: Any, net: nn.Module) -> LoadReport | None:
    """Load the configured starting weights into a freshly built model (None when there are none)."""
    weights, init_from = str(cfg.model.get("weights") or ""), cfg.get("init_from")
    if weights and init_from:
        raise ConfigError("model.weights and init_from both name starting weights: give one of them")
    if cfg.get("resume") and (weights or init_from):
        return None  # the run's own checkpoint wins
    if weights:
        path = resolve_weights_path(weights, str(cfg.model.name))
        return load_weights(net, read_state_dict(path), str(path))
    if init_from:
        from vaitrain.engine.checkpoint import load_checkpoint

        path = init_checkpoint(str(init_from))
        state = load_checkpoint(path)
        weights = state["model"]
        if "ema" in state:  # trainer.ema: the average is what best.pt was chosen on
            from vaitrain.engine.ema import ema_weights

            weights = ema_weights(state["ema"])
        return load_weights(net, dict(weights), str(path))
    return None


def apply_freeze(cfg: Any, net: nn.Module) -> None:
    if str(cfg.model.get("freeze", "none")) == "backbone":
        freeze_backbone(net)


START_FILE = "start.json"


def write_start_record(run_dir: Path, report: LoadReport, cfg: Any, stats: dict[str, Any]) -> None:
    """start.json in the run directory: where the weights came from, what is new, and the input
    normalization used with them."""
    import json

    from vaitrain.track.files import write_text_atomic

    record = {**report.as_dict(), "normalize": str(cfg.data.normalize),
              "mean": [round(float(v), 6) for v in stats["mean"].flatten()[:4]],
              "std": [round(float(v), 6) for v in stats["std"].flatten()[:4]]}
    write_text_atomic(Path(run_dir) / START_FILE, json.dumps(record, indent=2) + "\n")
