"""Running out of a resource (memory on the CPU or the GPU, disk space) as one line naming the
resource, the setting to change and the last good checkpoint, instead of a traceback."""
from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from vaitrain.errors import RunDirError, TrainingError, VaitrainError

# OSError numbers that mean "the disk cannot take more" rather than a bad path
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_out_of_memory(err: BaseException) -> str | None:
    """'CUDA' / 'CPU' when err is an allocation failure, else None."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return "GPU" if "CUDA" in str(err) or torch.cuda.is_available() else "device"
    if isinstance(err, MemoryError):
        return "CPU"
    if isinstance(err, RuntimeError) and ("can't allocate memory" in str(err) or "not enough memory" in str(err)):
        return "CPU"
    if isinstance(err, RuntimeError) and "DataLoader worker" in str(err) and "Killed" in str(err):
        return "CPU"  # the kernel's OOM killer took a loader worker
    return None


@contextmanager
def resource_errors(last_checkpoint: Callable[[], Path | None]) -> Iterator[None]:
    """Turn out-of-memory and disk-full errors raised inside into one-line VaitrainErrors.
    last_checkpoint() names the run's last.pt (None before a run directory exists)."""
    try:
        yield
    except VaitrainError:
        raise
    except (MemoryError, RuntimeError, OSError) as err:
        last = last_checkpoint()
        kept = (f"the last good checkpoint is {last}" if last is not None and last.is_file()
                else "no checkpoint was written yet")
        where = is_out_of_memory(err)
        if where:
            raise TrainingError(
                f"out of {where} memory; {kept}: lower trainer.batch_size or data.image_size "
                "(or use data.device_resident=false for data that does not fit, fewer data.num_workers "
                "for streamed data), then run again"
                + (" with resume=RUN_DIR" if last is not None and last.is_file() else "")
            ) from None
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            name = f" writing {err.filename}" if err.filename else ""
            raise RunDirError(
                f"the disk is full ({err.strerror}{name}); {kept}: free space, or set out_dir=DIR on another "
                "disk for new runs"
            ) from None
        raise
