"""The common command-line overrides read without importing Hydra (~0.06 CPU s of every run).

Nearly every command line holds only `group=option` and `key=value` with a plain value: an integer,
a decimal or exponent float, true/false, null, or a name or path of letters, digits and `_ - . /`.
For these, Hydra's override grammar gives the values `parse` gives (a test compares both on many
strings); a composition then read from the cache (config_cache.py) never imports Hydra. Anything
else (quotes, lists, interpolations, sweeps, `~key`, `key@package`, inf/nan, ...) is left to Hydra's
parser: `parse_all` returns None and the caller parses the whole command line with Hydra.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)")
_NAME = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")


@dataclass(frozen=True)
class PlainOverride:
    """The part of Hydra's Override that composition reads, for a plain `[+]key=value`."""

    key_or_group: str
    parsed: Any
    input_line: str
    add: bool = False  # `+key=value` (vaitrain writes `experiment=NAME` as `+experiment=NAME`)
    package: None = None

    def value(self) -> Any:
        return self.parsed

    def is_add(self) -> bool:
        return self.add

    def is_delete(self) -> bool:
        return False

    def is_force_add(self) -> bool:
        return False

    def is_sweep_override(self) -> bool:
        return False


def parse(text: str) -> PlainOverride | None:
    """The override `text` when it has a plain form, else None."""
    key, eq, raw = text.partition("=")
    add = key.startswith("+") and not key.startswith("++")
    if add:
        key = key[1:]
    if not eq or not _KEY.fullmatch(key):
        return None
    lowered = raw.lower()
    value: Any
    if _INT.fullmatch(raw):
        value = int(raw)
    elif _FLOAT.fullmatch(raw):
        value = float(raw)
    elif lowered in ("true", "false"):
        value = lowered == "true"
    elif lowered == "null":
        value = None
    elif _NAME.fullmatch(raw) and lowered not in ("inf", "nan"):
        value = raw
    else:
        return None
    return PlainOverride(key, value, text, add)


def parse_all(overrides: Sequence[str]) -> list[PlainOverride] | None:
    """Every override in its plain form, or None when any one needs Hydra's parser."""
    parsed = [parse(text) for text in overrides]
    return None if any(p is None for p in parsed) else parsed  # type: ignore[return-value]
