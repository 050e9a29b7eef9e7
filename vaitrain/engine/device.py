"""Device, precision and reproducibility settings."""
from __future__ import annotations

import contextlib
import random
from typing import Any, ContextManager

import torch

from vaitrain.errors import CheckpointError, DeviceError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """auto -> cuda if available else cpu; an absent device is a DeviceError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"trainer.device={name} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"trainer.device={name} but CUDA is not available on this machine; "
                "use trainer.device=cpu (or auto)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"trainer.device={name} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"trainer.device={name} but Apple's MPS is not available on this machine "
                              "(macOS with Apple silicon only); use trainer.device=cpu (or auto)")
        if device.index not in (None, 0):
            raise DeviceError(f"trainer.device={name} but there is one MPS device; use trainer.device=mps")
    elif device.type != "cpu":
        raise DeviceError(f"trainer.device={name} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA, fp32 elsewhere (CPU bf16 convolutions are far slower; NOTES.md)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> ContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    try:
        random.setstate(state["python"])
        torch.set_rng_state(state["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"the checkpoint's random-number state is damaged ({type(err).__name__}): resume from "
                              "the run's other checkpoint or start a new run") from None
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
