"""Checks on overrides and composed configs that keep every unknown or unusable input to one line.

config.py composes; this module says no: Hydra grammar it accepts but vaitrain does not honour
(`~key` deletions, `hydra.*` settings), keys a `+key=` override slipped past the schema, numbers
that are not finite, and YAML errors in a user's config file (named by its real path).
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from vaitrain.errors import ConfigError, closest_first

# The one hydra.* key vaitrain honours: a folder of the user's own config files, searched after
# the packaged ones (`hydra.searchpath=[file:///abs/dir]`; then `optim=mine`, `+experiment=x`).
SEARCHPATH = "hydra.searchpath"
# hydra.* keys with a vaitrain equivalent: the message names it.
HYDRA_EQUIVALENTS = {
    "hydra.run.dir": "out_dir=DIR (runs go under <out_dir>/<date>/)",
    "hydra.sweep.dir": "out_dir=DIR (a sweep goes under <out_dir>/<date>/)",
    "hydra.sweep.subdir": "out_dir=DIR",
    "hydra.job.name": "name=TAG (appended to the run directory's name)",
    "hydra.job.chdir": "out_dir=DIR (vaitrain never changes the working directory)",
    "hydra.verbose": "nothing: vaitrain prints its own progress (trainer.progress=...)",
}


MAX_KEY = 200  # no config key or group is longer


def refuse_unsupported(parsed: Iterable[Any]) -> None:
    """`~key` deletions and hydra.* keys other than hydra.searchpath, each in one line."""
    for ov in parsed:
        key = str(ov.key_or_group)
        if not key:
            raise ConfigError(f"malformed override '{ov.input_line}': the key is missing; write key=value "
                              "(e.g. trainer.epochs=3) or group=option (e.g. optim=adam)")
        if len(key) > MAX_KEY:  # Hydra would look for a config file of that name (an OS error)
            raise ConfigError(f"unknown config key '{key[:40]}...' ({len(key)} characters); "
                              "see `vaitrain config` for the valid keys")
        if ov.is_delete():
            raise ConfigError(
                f"'~{key}': deleting a key or group is not supported (every option is needed); "
                f"set it to another value instead, e.g. {key}=... (see `vaitrain config`)"
            )
        if re.split(r"[./]", key)[0] == "hydra":  # hydra.run.dir=..., hydra/launcher=...
            if key == SEARCHPATH:
                continue
            instead = next((v for k, v in HYDRA_EQUIVALENTS.items() if key == k or key.startswith(k + ".")), None)
            if instead:
                raise ConfigError(f"'{key}' is a Hydra setting vaitrain does not use; use {instead}")
            raise ConfigError(
                f"'{key}' is a Hydra setting vaitrain does not use (only {SEARCHPATH}=[file:///dir] for your own "
                "config files); remove it"
            )


def search_dirs(parsed: Iterable[Any]) -> list[Path]:
    """The folders named by `hydra.searchpath=[file://...]`, in order."""
    dirs: list[Path] = []
    for ov in parsed:
        if str(ov.key_or_group) != SEARCHPATH or ov.is_delete():
            continue
        value = ov.value()
        for entry in value if isinstance(value, (list, tuple)) else [value]:
            text = str(entry)
            if text.startswith("file://"):
                dirs.append(Path(text[len("file://"):]))
    return dirs


def config_file(name: str, dirs: Sequence[Path]) -> Path | None:
    """The real file behind Hydra's config name (e.g. 'experiment/typo'), searched as Hydra does."""
    for d in dirs:
        candidate = Path(d) / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def yaml_error(err: Exception) -> ConfigError | None:
    """One line for a YAML syntax error in a config file, naming the file, line and column."""
    import yaml

    if not isinstance(err, yaml.YAMLError):
        return None
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = " ".join(str(getattr(err, "problem", "") or err).split())
    context = getattr(err, "context", None)
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "a config file"
    why = f"{problem} ({' '.join(str(context).split())})" if context else problem
    return ConfigError(f"YAML syntax error in {where}: {why}")


def check_root_keys(cfg: DictConfig, root_schema: type) -> None:
    """A top-level key no schema knows (from `+newkey=1`, or an experiment file without
    `# @package _global_`) would be ignored silently: refused, naming the valid keys."""
    valid = [f.name for f in dataclasses.fields(root_schema)]
    for key in cfg.keys():
        if str(key) not in valid:
            names = ", ".join(closest_first(str(key), valid))
            raise ConfigError(
                f"unknown config key '{key}'; valid top-level keys: {names} (a file added with "
                "+group=option needs '# @package _global_' as its first line to set them)"
            )


def check_finite(cfg: DictConfig, bounds: dict[str, tuple[float, float | None]]) -> None:
    """NaN and +-inf are refused for every float option (range checks cannot see NaN: every
    comparison with it is false), naming the valid range where there is one."""
    for key, value in _floats(cfg, ""):
        if math.isfinite(value):
            continue
        plain = re.sub(r"\[\d+\]", "", key)
        if plain in bounds:
            lo, hi = bounds[plain]
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"{key}={value} is not a finite number; it must be {rng}")
        raise ConfigError(f"{key}={value} is not a finite number; give a finite value")


def _floats(node: Any, prefix: str) -> Iterable[tuple[str, float]]:
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _floats(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _floats(v, f"{prefix}[{i}]")
    elif isinstance(node, float):
        yield prefix, node
