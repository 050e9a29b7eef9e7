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


class TrainingError(VaitrainError):
    """Training that cannot go on (a non-finite loss, for example)."""


def closest_first(value: str, choices: Iterable[str]) -> list[str]:
    """Choices ordered by similarity to `value` (closest first), then alphabetically."""
    def key(choice: str) -> tuple[bool, float, str]:
        ratio = difflib.SequenceMatcher(None, value, choice).ratio()
        return (not choice.startswith(value), -ratio, choice)  # a completion of the typo first

    return sorted(set(choices), key=key)


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
