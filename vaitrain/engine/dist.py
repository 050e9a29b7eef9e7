"""Distributed context: torchrun's environment -> process group, rank, DDP wrapping.

One process (no RANK/WORLD_SIZE in the environment) is the plain case: rank 0 of 1, and every
helper here is a no-op. With several processes: NCCL on GPUs, gloo on CPU; small control values
(stop flags, errors) travel over a gloo group on the CPU so agreeing on them never syncs a GPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

from vaitrain.errors import ConfigError, DeviceError, VaitrainError

T = TypeVar("T")
_control: Any = None  # the gloo group for control values (None: the default group is gloo)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


_UNSET = "unset RANK WORLD_SIZE LOCAL_RANK MASTER_ADDR MASTER_PORT (trainer.devices=N starts the processes itself)"


def _whole(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    if not value.strip().isdigit():  # int() raised ValueError in the middle of train's start-up
        raise DeviceError(f"{name}={value!r} in the environment is not a whole number: torchrun sets it for the "
                          f"processes it starts; one exported in this shell is left over: {_UNSET}")
    return int(value)


def env_ranks() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment, checked: a WORLD_SIZE, RANK or
    MASTER_PORT left exported in a shell (from an earlier torchrun by hand) was a ValueError
    traceback, or a wait for a rendezvous that never comes. One process: (1, 0, 0)."""
    world = _whole("WORLD_SIZE", "1")
    if world <= 1:
        return 1, 0, 0
    rank, local = _whole("RANK", "0"), _whole("LOCAL_RANK", "0")
    if rank >= world or local >= world:
        raise DeviceError(f"RANK={rank} / LOCAL_RANK={local} in the environment are not below WORLD_SIZE={world}: "
                          f"{_UNSET}")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k, "").strip()]
    if missing:
        raise DeviceError(f"WORLD_SIZE={world} is set in the environment but {' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not, so this is no torchrun process: {_UNSET}")
    port = _whole("MASTER_PORT", "0")
    if not 1 <= port <= 65535:
        raise DeviceError(f"MASTER_PORT={port} in the environment is not a port (1..65535): {_UNSET}")
    return world, rank, local


def from_environment() -> DistContext:
    world, rank, local = env_ranks()
    if world <= 1:
        return DistContext()
    return DistContext(rank=rank, world_size=world, local_rank=local)


def device_for_rank(device: torch.device, ctx: DistContext) -> torch.device:
    if ctx.enabled and device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"local rank {ctx.local_rank} has no GPU (this node has {torch.cuda.device_count()}); "
                "start at most one process per GPU (--nproc_per_node / trainer.devices)"
            )
        return torch.device("cuda", ctx.local_rank)
    return device


def check_setup(devices: int, device: torch.device, sync_bn: bool, batch_size: int = 0) -> None:
    """Refuse, before anything starts, a process count or option the machine cannot serve (and,
    given the batch size, a global batch the processes cannot split: said once, not by every rank)."""
    if devices > 1 and batch_size % devices:
        raise ConfigError(f"trainer.batch_size={batch_size} is not divisible by trainer.devices={devices}: the "
                          f"global batch is split evenly; use a multiple of {devices}")
    from vaitrain.process_env import usable_cores

    cores = usable_cores()
    if devices > 1 and device.type == "cpu" and devices > 4 * cores:  # trainer.devices=64: 64 processes on 2 cores
        raise DeviceError(f"trainer.devices={devices} on the CPU starts {devices} processes but there are {cores} "
                          f"CPU cores here: use trainer.devices <= {cores}")
    if devices > 1 and device.type == "cuda" and devices > torch.cuda.device_count():
        raise DeviceError(
            f"trainer.devices={devices} but this machine has {torch.cuda.device_count()} GPU(s); "
            "lower trainer.devices (or use torchrun --nnodes for several machines)"
        )
    if devices > 1 and sync_bn and device.type != "cuda":
        raise ConfigError(
            "trainer.sync_bn=true needs CUDA (torch's SyncBatchNorm runs on GPUs only); "
            "on CPU use norm=group or norm=layer, or trainer.sync_bn=false"
        )


def init(ctx: DistContext, device: torch.device) -> None:
    """NCCL on GPUs, gloo on CPU; a no-op for one process."""
    global _control
    if not ctx.enabled or torch_dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch_dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
    _control = torch_dist.new_group(backend="gloo") if backend != "gloo" else None


def shutdown(ctx: DistContext) -> None:
    global _control
    if ctx.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
        _control = None


def wrap(model: nn.Module, ctx: DistContext, device: torch.device, sync_bn: bool) -> nn.Module:
    """DDP around `model` (parameters stay shared, so `model` is what is checkpointed)."""
    if not ctx.enabled:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces BN children in place
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _ready() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _ready():
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return t


def agree_max(value: int) -> int:
    """The largest of every rank's `value` (a CPU all-reduce: stop signals, error flags)."""
    if not _ready():
        return value
    t = torch.tensor([int(value)], dtype=torch.int64)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX, group=_control)
    return int(t.item())


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    if not ctx.enabled:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def on_main(fn: Callable[[], T], ctx: DistContext) -> T:
    """Run `fn` on rank 0 only and hand its result to every rank. A VaitrainError there is raised
    on every rank (the others would otherwise wait for a result that never comes)."""
    result: Any = None
    error: str | None = None
    if ctx.is_main:
        try:
            result = fn()
        except VaitrainError as err:
            if not ctx.enabled:
                raise
            error = f"{type(err).__module__}.{type(err).__qualname__}\n{err}"
    result, error = broadcast_object((result, error), ctx)
    if error is not None:
        raise _rebuild(error)
    return result


def _rebuild(error: str) -> VaitrainError:
    import vaitrain.errors as errors

    qualname, _, message = error.partition("\n")
    cls = getattr(errors, qualname.rpartition(".")[2], VaitrainError)
    return cls(message) if isinstance(cls, type) and issubclass(cls, VaitrainError) else VaitrainError(message)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled and _ready():
        torch_dist.barrier(group=_control)
