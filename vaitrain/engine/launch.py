"""`vaitrain train trainer.devices=N`: start N ranks on this machine with torch's elastic launcher,
as `torchrun --standalone --nproc_per_node=N -m vaitrain train ...` would.

Each rank runs `python -m vaitrain train <overrides>`; it finds RANK/WORLD_SIZE in its environment
and trains its shard. Several machines: call torchrun yourself (see scripts/slurm_train.sh).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import uuid

from vaitrain.errors import DeviceError

# Exit codes (as a shell reports them): a rank killed by signal S exits 128 + S.
_SIGNAL_BASE = 128


def launch(nproc: int, argv: list[str]) -> int:
    """Run `vaitrain <argv>` in `nproc` local processes; return the exit code to end with:
    0 when every rank finished, else rank 0's code (or the first failing rank's)."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: don't let N ranks oversubscribe the cores
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    # The agent's INFO/WARNING chatter (run ids, "shutting down workers") is not for users, nor
    # its report of exits the ranks explained themselves (an error line, the resume line).
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_explained_exits)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, so parallel runs never collide
        max_restarts=0,  # a failed run is resumed with resume=, not restarted from scratch
        monitor_interval=0.1,
        start_method="spawn",
        # after SIGTERM/SIGINT, the time ranks get to finish their step and write last.pt
        shutdown_timeout=int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "120")),
    )
    try:
        elastic_launch(config, sys.executable)("-m", "vaitrain", *argv)
    except ChildFailedError as err:
        return _exit_code(err.failures)
    except SignalException as err:  # the launcher itself got SIGTERM/SIGINT; ranks have stopped
        return _SIGNAL_BASE + int(err.sigval)
    except Exception as err:  # the rendezvous or a process start failed: nothing ran
        raise DeviceError(f"could not start {nproc} processes: {' '.join(str(err).split())[:200]}") from None
    return 0


def _explained_exits(record: logging.LogRecord) -> bool:
    """False (drop) for "failed (exitcode: N)" where N is a one-line error (2) or a clean stop
    (128 + SIGINT/SIGTERM); a crash (a signal death, a traceback's exit 1) is still reported."""
    return not re.search(r"failed \(exitcode: (2|130|143)\)", record.getMessage())


def _exit_code(failures: dict[int, object]) -> int:
    """Rank 0's exit code if it failed, else the lowest failing rank's; signal deaths -> 128 + S."""
    rank = 0 if 0 in failures else min(failures)
    code = int(getattr(failures[rank], "exitcode", 1))
    if code < 0:  # killed by a signal
        code = _SIGNAL_BASE - code
    return code or 1


__all__ = ["launch"]
