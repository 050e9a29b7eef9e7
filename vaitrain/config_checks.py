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
        if getattr(ov, "package", None) is not None:  # optim@x=adam: Hydra's packages, which no schema knows
            group = key.split("@")[0]
            raise ConfigError(f"'{ov.input_line}': choosing where a group goes with @ is not supported; "
                              f"write {group}={ov.value() if isinstance(ov.value(), str) else '...'}")
        if ov.is_delete():
            raise ConfigError(
                f"'~{key}': deleting a key or group is not supported (every option is needed); "
                f"set it to another value instead, e.g. {key}=... (see `vaitrain config`)"
            )
        if re.split(r"[./]", key)[0] == "hydra":  # hydra.run.dir=..., hydra/launcher=...
            if key == SEARCHPATH:
                _check_searchpath(ov)
                continue
            instead = next((v for k, v in HYDRA_EQUIVALENTS.items() if key == k or key.startswith(k + ".")), None)
            if instead:
                raise ConfigError(f"'{key}' is a Hydra setting vaitrain does not use; use {instead}")
            raise ConfigError(
                f"'{key}' is a Hydra setting vaitrain does not use (only {SEARCHPATH}=[file:///dir] for your own "
                "config files); remove it"
            )


def _check_searchpath(ov: Any) -> None:
    """Each entry of hydra.searchpath is file://<a folder that exists> (Hydra only warned, in two
    lines, about a missing one, and the files in it were then 'not a valid choice')."""
    value = ov.value()
    if ov.is_delete() or not isinstance(value, (list, tuple)):
        return  # Hydra's own 'must be a list' is one line already
    for entry in value:
        text = str(entry)
        folder = Path(text[len("file://"):]) if text.startswith("file://") else None
        if folder is None:
            raise ConfigError(f"{SEARCHPATH}: '{text}' is not a folder of config files; write "
                              f"{SEARCHPATH}=[file:///absolute/path/to/folder]")
        if not folder.is_dir():
            raise ConfigError(f"{SEARCHPATH}: {folder} is not a folder; write {SEARCHPATH}=[file:///absolute/path] "
                              "to a folder holding <group>/<option>.yaml files")


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


MAX_YAML_VALUES = 100_000  # values a user's config file may expand to through its aliases (*name)


def check_alias_expansion(dirs: Sequence[Path]) -> None:
    """The YAML files of the user's hydra.searchpath folders, refused when their aliases expand past
    MAX_YAML_VALUES: a few lines of nested aliases (a 'billion laughs' file) reach billions of
    values, which OmegaConf copies out one by one (a 1e6-value file hung `vaitrain config`). The
    files are only composed (node graph, aliases shared), never expanded, to count."""
    import yaml

    from vaitrain.file_kinds import read_text

    for folder in dirs:
        for path in sorted(Path(folder).rglob("*.yaml")):
            try:
                docs = list(yaml.compose_all(read_text(path), Loader=yaml.SafeLoader))
            except (OSError, ValueError, yaml.YAMLError, RecursionError):
                continue  # a FIFO, bad bytes or bad syntax: Hydra's own error (or skip) names it
            for doc in docs:
                if doc is not None and _expanded_values(doc) > MAX_YAML_VALUES:
                    raise ConfigError(f"{path}: its YAML aliases (*name) expand to over {MAX_YAML_VALUES:,} values (a "
                                      "'billion laughs' file) or refer to themselves; write the values out instead")


def _expanded_values(root: Any) -> int:
    """Nodes of a composed YAML document once every alias is expanded, counted without expanding
    (each node's count is kept by identity); a node that contains itself counts as unbounded."""
    import yaml

    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [x for pair in node.value for x in pair]
        return []

    counts: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            open_nodes.discard(id(node))
            counts[id(node)] = min(1 + sum(counts[id(c)] for c in children(node)), MAX_YAML_VALUES + 1)
            continue
        if id(node) in counts:
            continue
        if id(node) in open_nodes:  # &a [*a]: a node inside itself
            return MAX_YAML_VALUES + 1
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in counts)
    return counts[id(root)]


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



def check_lengths(cfg: DictConfig, lengths: dict[str, tuple[int, int | None, str]]) -> None:
    """A list option of the wrong length (optim.betas=[0.9]) fails here in one line, not as an
    index error inside a builder. `lengths`: key -> (fewest, most or None, an example value)."""
    for key, (fewest, most, example) in lengths.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        n = len(value)
        if n < fewest or (most is not None and n > most):
            want = f"{fewest} values" if fewest == most else f"at least {fewest} value{'s' * (fewest > 1)}"
            raise ConfigError(f"{key}={list(value)} has {n} value{'s' * (n != 1)}; it needs {want}, "
                              f"e.g. {key}={example}")


def merge_error(text: str) -> ConfigError | None:
    """One line, with the fix, for Hydra's 'Error merging override' (a value of the wrong kind for
    its key: not a bool, a scalar for a list, a list for a string, null for a required key)."""
    override = re.search(r"Error merging override (.*)", text)
    key = re.search(r"full_key: (\S+)", text)
    if not override or not key:
        return None
    given, key_name = override.group(1).strip(), re.sub(r"\[\d+\]$", "", key.group(1))
    raw = given.split("=", 1)[1] if "=" in given else ""
    if re.search(r"is not a valid bool", text):
        return ConfigError(f"{given} is not a valid bool; write {key_name}=true or {key_name}=false")
    if re.search(r"is not a ListConfig, list or tuple", text):
        return ConfigError(f"{given}: {key_name} is a list; write it in brackets, e.g. {key_name}=[{raw}]")
    kind = re.search(r"Cannot convert '(\w+)' to string", text)
    if kind:
        return ConfigError(f"{given}: {key_name} takes one value, not a {kind.group(1)}; quote a value that holds "
                           f"[ ] {{ }} or commas, e.g. {key_name}='...'")
    if re.search(r"is not Optional", text):
        return ConfigError(f"{given}: {key_name} needs a value, not null (see `vaitrain options` for what it takes)")
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    why = lines[0] if lines else "a value of the wrong kind"
    return ConfigError(f"cannot set {given}: {why} (see `vaitrain options` for what {key_name} takes)")


def check_bool_values(parsed: Iterable[Any], cfg: DictConfig) -> None:
    """OmegaConf turns any integer into a bool (trainer.compile=2 -> true): only 0 and 1 (and
    true/false, yes/no, on/off) are taken for a bool option, anything else is refused."""
    for ov in parsed:
        value = ov.value() if not ov.is_delete() and not ov.is_sweep_override() else None
        if not isinstance(value, int) or isinstance(value, bool) or value in (0, 1):
            continue
        key = str(ov.key_or_group)
        if isinstance(OmegaConf.select(cfg, key, default=None), bool):
            raise ConfigError(f"{key}={value} is not a valid bool; write {key}=true or {key}=false")


# A grid larger than this is a typo (range(100000)) far more often than a plan: each job is
# composed before the first starts, so it would hang silently for minutes. `vaitrain search`
# samples a large space instead.
MAX_SWEEP_JOBS = 1000


def range_length(ov: Any) -> int | None:
    """The number of values of a `range(...)` sweep, counted without listing them (range(10**9)
    would not fit in memory; a step of 0 would never end); None for other overrides."""
    from hydra.core.override_parser.types import RangeSweep

    value = ov.value()
    if not isinstance(value, RangeSweep):
        return None
    start, stop, step = value.start, value.stop, value.step
    if not step:
        raise ConfigError(f"'{ov.input_line}': the step of a range cannot be 0; write range(start,stop,step)")
    return max(0, math.ceil((stop - start) / step))


def check_sweep_axis(line: str, values: Sequence[str]) -> None:
    """A swept key with no values (range(3,1)) or a value twice (lr=0.1,0.1: the same run twice)."""
    if not values:
        raise ConfigError(f"'{line}' gives no values (a range counts up from start to stop by step, "
                          "e.g. range(1,4) = 1,2,3); give at least one")
    seen = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"'{line}' lists {v.split('=', 1)[-1]} twice: each value once (the same run twice "
                              "gives the same result; to repeat a run, sweep seed=1,2,3)")
        seen.add(v)


def check_sweep_size(counts: dict[str, int]) -> None:
    jobs = math.prod(counts.values()) if counts else 1
    if jobs > MAX_SWEEP_JOBS:
        sizes = " x ".join(f"{n} ({k})" for k, n in counts.items() if n > 1)
        raise ConfigError(f"the sweep makes {jobs} jobs ({sizes}), more than the {MAX_SWEEP_JOBS} a grid may "
                          "have: narrow the values, or sample the space with `vaitrain search`")


# Text options that cannot be empty: an empty out_dir put the runs straight into the working folder.
NOT_EMPTY = {"out_dir": "out_dir=runs"}


def check_not_empty(cfg: DictConfig) -> None:
    for key, example in NOT_EMPTY.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not str(value).strip():
            raise ConfigError(f"{key} is empty; give a folder, e.g. {example} (`.` for the current one)")


def check_crop(data: Any, size: int) -> None:
    """A random window larger than the (resized) image is mostly zero padding, and validation sees
    whole images of another size: training on padding, silently. RandomResizedCrop may upsample.
    `size`: data.image_size here; the loaded images' own size when that is 0 (data/__init__.py)."""
    crop = int(data.crop or 0)
    if crop > size > 0 and not bool(data.resized_crop):
        raise ConfigError(f"data.crop={crop} is larger than the {size} px images: the windows would be mostly "
                          f"padding; use data.crop <= {size}, or data.resized_crop=true to scale up")


def check_workers(cfg: DictConfig) -> None:
    """data.num_workers far above the cores (999) started that many loader processes, which froze a
    2-core machine for minutes; torch itself only warns above the core count."""
    from vaitrain.process_env import usable_cores

    workers = OmegaConf.select(cfg, "data.num_workers", default=0) or 0
    cores = usable_cores()
    if workers > 4 * cores:
        raise ConfigError(f"data.num_workers={workers} is far more than the {cores} CPU cores here (each is a "
                          f"process): use data.num_workers <= {cores}")
