"""Composed group selections, kept on disk: the same group choices over the same files compose once.

Hydra composes a config in two steps: the defaults list (every group's option YAML with its schema,
Hydra's own config groups, each loaded, deep-copied and merged: ~0.1-0.15 CPU s of every run), then
the command line's key=value overrides, each applied with `OmegaConf.update(cfg, key, value,
merge=True)`. The first step depends only on the group choices (model=, data=, experiment=, ...),
the files under conf/, the schema dataclasses and the Hydra/OmegaConf versions. Its result is kept
as JSON (no pickle: reading an entry runs no code) under the user's cache folder, named by a hash of
all of those, and rebuilt into the typed structured config; the overrides are then applied as Hydra
applies them. Any change of a file's bytes, a schema field, a version or the group choices is
another name: a stale entry is never read.

An entry is written only after its rebuild was compared with Hydra's own composition, node by node
(value, node type, schema class, optional, struct/readonly flags), in the process that composed it.
Only plain `group=option` and `key=value` overrides take this path; anything else (`+key=`, `++`,
`~`, `key@package=`, hydra.searchpath folders, resolvers such as `${oc.env:...}` in the files), any
override the rebuilt config refuses, and an unusable cache folder compose through Hydra as before,
so every error is Hydra's own. VAITRAIN_CACHE_DIR names the folder ("" turns the cache off;
default $XDG_CACHE_HOME/vaitrain or ~/.cache/vaitrain).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

FORMAT = 2  # bump when what an entry holds, or how it is rebuilt, changes
CACHE_ENV = "VAITRAIN_CACHE_DIR"
FOLDER = "compose"
KEEP = 64  # entries kept; the oldest go when a new one is written
# A resolver call (`${oc.env:X}`, `${now:...}`) in a file may read something outside the files
# while the defaults list is composed: such a tree is not cached.
_RESOLVER = re.compile(rb"\$\{\s*[\w.]+\s*:")


def cache_dir() -> Path | None:
    """The folder of composed selections, or None when VAITRAIN_CACHE_DIR is set to ""."""
    given = os.environ.get(CACHE_ENV)
    if given is not None:
        return Path(given) / FOLDER if given else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vaitrain" / FOLDER


def split_overrides(parsed: Sequence[Any], groups: Sequence[str], conf: Path) -> tuple[list[str], list[Any]] | None:
    """(the group choices as given, the key=value overrides) when every override has a plain form
    this path applies as Hydra does; None otherwise."""
    choices, values = [], []
    for ov in parsed:
        key = str(ov.key_or_group)
        if ov.package is not None or ov.is_delete() or ov.is_force_add() or key.split(".")[0] == "hydra":
            return None
        if key not in groups and "." not in key and (conf / key).is_dir():  # a folder Hydra takes for a group
            return None
        if key in groups:
            if not isinstance(ov.value(), str) or (ov.is_add() and key != groups[-1]):
                return None
            choices.append(ov.input_line)
        elif ov.is_add():  # +key=value: Hydra's add semantics, not a plain update
            return None
        else:
            values.append(ov)
    return choices, values


def compose(parsed: Sequence[Any], groups: Sequence[str], conf: Path,
            hydra_compose: Callable[[list[str]], DictConfig]) -> DictConfig | None:
    """The composed config (struct, before resolution) for the overrides, or None when the caller
    composes it through Hydra. `groups`: the group names, the add-only recipe group last;
    `hydra_compose(overrides)`: Hydra's composition of these overrides."""
    split = split_overrides(parsed, groups, conf)
    folder = cache_dir()
    if split is None or folder is None:
        return None
    choices, values = split
    try:
        key = _key(choices, conf)
    except Exception:  # an unreadable file, Hydra's version not found: composed by Hydra
        return None
    if key is None:
        return None
    path = folder / f"{key}.json"
    cfg = _read(path)
    if cfg is None:
        try:
            cfg = hydra_compose(choices)
        except Exception:  # the full composition raises its own error
            return None
        _write(path, cfg)
    try:
        for ov in values:  # as Hydra's ConfigLoaderImpl applies a plain key=value
            OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=True)
    except Exception:  # an unknown key, a wrong type: Hydra composes it and says so
        return None
    return cfg


def _key(choices: list[str], conf: Path) -> str | None:
    import omegaconf
    import yaml

    digest = hashlib.sha256(json.dumps([FORMAT, list(sys.version_info[:2]), hydra_version(), omegaconf.__version__,
                                        yaml.__version__, choices]).encode())
    digest.update(schema_fingerprint().encode())
    for path in sorted(conf.rglob("*.yaml")):
        data = path.read_bytes()
        if _RESOLVER.search(data):
            return None
        name = path.relative_to(conf).as_posix().encode()
        digest.update(len(name).to_bytes(8, "little") + name + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def hydra_version() -> str:
    """Hydra's __version__, read from its package file: importing Hydra costs ~0.06 CPU s, which a
    composition read from the cache does not otherwise pay."""
    spec = importlib.util.find_spec("hydra")
    origin = spec.origin if spec is not None else None
    found = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", Path(origin).read_text()) if origin else None
    if found is None:
        raise ModuleNotFoundError("hydra's __version__ not found")
    return found.group(1)


def schema_fingerprint() -> str:
    """Every schema dataclass vaitrain registers, as text: names, fields, types, defaults."""
    from vaitrain.schema.root import GROUP_SCHEMAS, RootConfig

    rows: list[str] = []
    seen: set[type] = set()

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        rows.append(f"{cls.__module__}.{cls.__qualname__} {cls.__dataclass_params__!r}")  # type: ignore[attr-defined]
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            rows.append(f"  {f.name}: {hints.get(f.name, f.type)!r} = {default!r} {dict(f.metadata)!r}")
            for t in (hints.get(f.name), *typing.get_args(hints.get(f.name)), type(default)):
                if isinstance(t, type) and dataclasses.is_dataclass(t):
                    walk(t)

    walk(RootConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, cls in schemas.items():
            rows.append(f"{group}/{name}")
            walk(cls)
    return "\n".join(rows)


def _schema_names(cfg: DictConfig) -> dict[str, str]:
    """Each group's schema, by its name in GROUP_SCHEMAS (what the rebuild starts from)."""
    from vaitrain.schema.root import GROUP_SCHEMAS

    names = {}
    for group, schemas in GROUP_SCHEMAS.items():
        kind = OmegaConf.get_type(cfg, group)
        names[group] = next(name for name, cls in schemas.items() if cls is kind)
    return names


def _rebuild(entry: dict[str, Any]) -> DictConfig:
    """The typed config of an entry: its values put into the schema dataclasses, made structured
    in one pass (a merge into OmegaConf.structured(RootConfig) costs ~1.5x as much)."""
    from vaitrain.schema.root import GROUP_SCHEMAS, RootConfig

    values = dict(entry["config"])
    for group, name in entry["schemas"].items():  # model: Any in RootConfig, a family's schema here
        values[group] = _instance(GROUP_SCHEMAS[group][name], values[group])
    cfg = OmegaConf.structured(_instance(RootConfig, values))
    OmegaConf.set_struct(cfg, True)
    return cfg


def _instance(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        value = values.pop(f.name)
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = _instance(kind, dict(value))
        fields[f.name] = value
    if values:
        raise KeyError(f"not in {cls.__name__}: {sorted(values)}")
    return cls(**fields)


def _read(path: Path) -> DictConfig | None:
    try:
        from vaitrain.file_kinds import read_text

        entry = json.loads(read_text(path))  # a FIFO in the cache hung every command that composes
        # an entry of another name copied in, or edited by hand, would be a silently wrong config
        if entry.get("format") != FORMAT or entry.get("key") != path.stem or entry.get("digest") != _digest(entry):
            return None
        return _rebuild(entry)
    except Exception:  # absent, unreadable or not an entry of this vaitrain: composed again
        return None


def _write(path: Path, cfg: DictConfig) -> None:
    """Keep cfg's selection, only if its rebuild is cfg node for node; never fails the run."""
    try:
        entry = {"format": FORMAT, "key": path.stem, "schemas": _schema_names(cfg),
                 "config": OmegaConf.to_container(cfg, resolve=False)}
        entry["digest"] = _digest(entry)
        text = json.dumps(entry, allow_nan=True)
        if signature(_rebuild(json.loads(text))) != signature(cfg):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)  # readers see the whole entry or none
        except OSError:  # a full disk or quota: no half-written temporary file left in the cache
            tmp.unlink(missing_ok=True)
            raise
        _prune(path.parent)
    except Exception:
        return


def _digest(entry: dict[str, Any]) -> str:
    """What the entry holds (its name, schemas and values), hashed: it must match on reading."""
    content = json.dumps([entry.get("key"), entry.get("schemas"), entry.get("config")], sort_keys=True, allow_nan=True)
    return hashlib.sha256(content.encode()).hexdigest()


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for old in entries[:-KEEP]:
        old.unlink(missing_ok=True)


def signature(node: Any) -> Any:
    """A config as a nested tuple of what makes it what it is: per node its type, metadata
    (declared and schema type, optional, key, flags) and, for a leaf, its raw value."""
    meta = {k: v for k, v in vars(node._metadata).items() if k != "resolver_cache"}
    head = (type(node).__name__, tuple(sorted((k, repr(v)) for k, v in meta.items())))
    if isinstance(node, (DictConfig, ListConfig)):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return head + (repr(node._value()),)
        keys = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
        return head + tuple((repr(k), signature(node._get_node(k))) for k in keys)
    return head + (type(node._value()).__name__, repr(node._value()))
