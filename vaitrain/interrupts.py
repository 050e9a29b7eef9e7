"""SIGINT/SIGTERM/SIGHUP during start-up (imports, composing, building the data and the model): one
line and exit 128 + signal instead of Python's KeyboardInterrupt or the default signal death.

Once the training loop runs, its own handler (engine/checkpointing.StopFlag) takes over: a
signal there stops after the current step and writes last.pt.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from vaitrain.errors import Interrupted

# SIGHUP: the terminal or ssh session went away; the run stops as for SIGTERM (last.pt written)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def handling(handler: Callable[[int, Any], None], signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """`handler` for `signals` for the duration, the previous handlers after. Only the main thread
    may install handlers: elsewhere (a sweep run from a thread) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in signals}
    # `nohup vaitrain ...` ignores SIGHUP on purpose: it stays ignored
    signals = [s for s in signals if not (s == signal.SIGHUP and old[s] == signal.SIG_IGN)]
    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def startup_signals() -> Iterator[None]:
    """Turn a stop signal into `Interrupted` (a one-line error) for the duration."""

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        raise Interrupted(f"stopped by {name} during start-up, before training began; nothing was trained", signum)

    with handling(handler):
        yield


@contextmanager
def command_signals(command: str) -> Iterator[None]:
    """For commands without a loop of their own (eval, predict, export, compare-runs, report, inspect,
    models): a stop signal anywhere, in the imports or the model loading as in the work, is one line
    and exit 128 + signal (SIGTERM was the default death, exit 143 without a word). Their CSV/JSON,
    HTML and model files are written atomically: an interrupted command never leaves half of one."""

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        raise Interrupted(f"stopped by {name} before `vaitrain {command}` finished; run it again", signum)

    with handling(handler):
        yield
