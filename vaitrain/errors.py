"""Typed errors the library raises; the CLI turns each into one line and exit code 2.

Messages say what is wrong and how to fix it, in one line, with no traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class VaitrainError(Exception):
    """A user-facing error whose message is one clear line."""


class ConfigError(VaitrainError):
    """A bad override, option, key, value or combination of options."""


class DataError(VaitrainError):
    """A dataset that is missing, empty or has a bad file."""


class CheckpointError(VaitrainError):
    """A checkpoint that is missing, corrupt or belongs to another model or task."""


class DeviceError(VaitrainError):
    """A device that was asked for but is absent."""


class RunDirError(VaitrainError):
    """A run or output directory that cannot be read or written."""


# how a diverged run's error reads (engine/step.check_finite); a sweep job's error crosses a process
# boundary as text, so the lab tells a diverged run (a result) from a crash by this phrase
NON_FINITE = "became non-finite (NaN/inf)"


class TrainingError(VaitrainError):
    """Training that cannot go on (a non-finite loss, for example)."""


def closest_first(value: str, choices: Iterable[str]) -> list[str]:
    """The choices that look like `value` (completions of it, then up to 3 close spellings, closest
    first), then all the others alphabetically: the likely fix leads and the rest is easy to scan."""
    choices = sorted(set(choices))
    completions = [c for c in choices if value and c.startswith(value)]
    similar = difflib.get_close_matches(value, [c for c in choices if c not in completions], n=3, cutoff=0.6)
    lead = completions + similar
    return lead + [c for c in choices if c not in lead]


def check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """Raise ConfigError naming the valid choices (closest first) unless value is one of them."""
    choices = list(choices)
    if value not in choices:
        ordered = ", ".join(closest_first(str(value), choices))
        raise ConfigError(f"{key}={value} is not a valid choice; choose one of: {ordered}")


class Interrupted(VaitrainError):
    """SIGINT/SIGTERM before the training loop took over (start-up): nothing was trained. The CLI
    exits with 128 + the signal's number, as a process the signal had killed would."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
