"""What can be set, for `vaitrain options [GROUP]` and shell completion.

Everything is read from where the options are defined, so the listing follows them: the groups
and their options from conf/ (config.GROUPS, config.group_options), allowed values and ranges
from config.CHOICES / config.BOUNDS, the keys, defaults and one-line docs from the schema
dataclasses (the comment after each field). Keys are those of the composed config, so they are
the ones that apply to the chosen options (`vaitrain options model model=unet`).
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from functools import lru_cache
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from vaitrain import config as _config
from vaitrain.errors import check_choice

_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")


@lru_cache(maxsize=None)
def _field_docs(schema: type) -> dict[str, str]:
    """{field: the comment on its line} of a schema dataclass and its bases."""
    docs: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        block: list[str] = []  # comment lines just above a field document it when it has none of its own
        open_doc = ""  # a field whose comment opened a parenthesis the next comment lines close
        for line in lines:
            m = _FIELD_COMMENT.match(line)
            if m:
                docs[m.group(1)] = m.group(2).strip()
                open_doc = m.group(1) if _unclosed(docs[m.group(1)]) else ""
            elif open_doc and line.strip().startswith("#"):
                docs[open_doc] += " " + line.strip().lstrip("#").strip()
                open_doc = open_doc if _unclosed(docs[open_doc]) else ""
                continue
            elif line.strip().startswith("#"):
                block.append(line.strip().lstrip("#").strip())
                continue
            else:
                field = re.match(r"^\s+(\w+)\s*:", line)
                if field and block and not _SECTION.match("    # " + " ".join(block)):
                    docs.setdefault(field.group(1), block[0] + ("" if len(block) == 1 else " ..."))
            block = []
    return docs


def _unclosed(doc: str) -> bool:
    return doc.count("(") > doc.count(")")


def _allowed(key: str, default: Any) -> str:
    if key in _config.CHOICES:
        return "|".join(_config.CHOICES[key])
    if key in _config.BOUNDS:
        lo, hi = _config.BOUNDS[key]
        return f">= {lo:g}" if hi is None else f"{lo:g} .. {hi:g}"
    if isinstance(default, bool):
        return "true|false"
    if isinstance(default, int):
        return "integer"
    if isinstance(default, float):
        return "number"
    if isinstance(default, (list, tuple)) or OmegaConf.is_list(default):
        return "list"
    return "text"


def _leaves(node: DictConfig, prefix: str) -> Iterable[tuple[str, Any, str]]:
    """(dotted key, default, doc) of every leaf under node."""
    schema = OmegaConf.get_type(node)
    docs = _field_docs(schema) if schema is not None and dataclasses.is_dataclass(schema) else {}
    for name in node.keys():
        value = node._get_node(name)  # noqa: SLF001 - the node keeps lists/dicts unresolved
        key = f"{prefix}.{name}"
        if OmegaConf.is_dict(value):
            yield from _leaves(value, key)  # type: ignore[arg-type]
        else:
            plain = OmegaConf.to_container(value) if OmegaConf.is_list(value) else node[name]
            yield key, plain, docs.get(str(name), "")


def option_rows(group: str | None = None, overrides: Iterable[str] = ()) -> list[list[str]]:
    """Rows [key, allowed values or range, current value, doc]: for each group (or just `group`)
    first `group=` and its options, then its keys in the composed config."""
    cfg = _config.compose(list(overrides))
    # the groups, then the root's other nodes (sweep, search: no files to pick) and its plain keys
    nodes = [str(k) for k in cfg if OmegaConf.is_dict(cfg._get_node(k))]  # noqa: SLF001
    names = [*_config.GROUPS, *(n for n in nodes if n not in _config.GROUPS), _config.EXPERIMENT, "top"]
    if group is not None:
        check_choice("group", group, names)
        names = [group]
    rows: list[list[str]] = []
    for g in names:
        if g == _config.EXPERIMENT:
            rows.append([f"{g}=", " ".join(_config.group_options(g)), "",
                         "a recipe: a file of conf/experiment/ holding only changes to the defaults"])
            continue
        if g == "top":
            docs = _field_docs(OmegaConf.get_type(cfg)) if OmegaConf.get_type(cfg) else {}
            rows += [[str(k), _allowed(str(k), cfg[k]), _show(cfg[k]), docs.get(str(k), "")]
                     for k in cfg if str(k) not in nodes]
            continue
        options = _config.group_options(g) if g in _config.GROUPS else []
        chosen = str(cfg[g].get("name", "")) if "name" in cfg[g] else ""
        if len(options) > 1:
            rows.append([f"{g}=", " ".join(options), chosen, f"which {g} (a file in conf/{g}/)"])
        for key, value, doc in _leaves(cfg[g], g):
            if key == f"{g}.name" and len(options) > 1:
                continue  # the same as g=
            rows.append([key, _allowed(key, value), _show(value), doc])
    return rows


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# ----- shell completion -------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _all_keys() -> dict[str, tuple[str, ...]]:
    """Every settable key -> its values to offer (empty: free text), for the default options of
    each group and every model family's schema."""
    cfg = _config.compose([])
    keys: dict[str, tuple[str, ...]] = {}
    for g in _config.GROUPS:
        keys[f"{g}"] = tuple(_config.group_options(g))
        for key, value, _ in _leaves(cfg[g], g):
            keys[key] = _values(key, value)
    # keys of the other model families, from their schema dataclasses (composing each model's
    # config would cost seconds per TAB)
    from vaitrain.schema.root import GROUP_SCHEMAS

    for schema in GROUP_SCHEMAS.get("model", {}).values():
        for f in dataclasses.fields(schema):
            default = f.default if f.default is not dataclasses.MISSING else None
            keys.setdefault(f"model.{f.name}", _values(f"model.{f.name}", default))
    for key in ("seed", "out_dir", "resume", "name"):
        keys.setdefault(key, ())
    return keys


def _values(key: str, value: Any) -> tuple[str, ...]:
    if key in _config.CHOICES:
        return tuple(_config.CHOICES[key])
    if isinstance(value, bool):
        return ("true", "false")
    return ()


def _chosen(args: list[str], group: str) -> str | None:
    """The option the words so far choose for `group` (`model=unet`, or bash's `model` `=` `unet`)."""
    chosen = None
    for i, word in enumerate(args):
        if word.startswith(f"{group}=") and len(word) > len(group) + 1:
            chosen = word[len(group) + 1:]
        elif word == group and args[i + 1:i + 2] == ["="] and len(args) > i + 2:
            chosen = args[i + 2]
    return chosen


# model.<key>s that `model=NAME` sets, not the user
_MODEL_KEYS_NOT_OFFERED = ("model.name", "model.family")


def _model_keys(model: str | None) -> set[str] | None:
    """The model.* keys of the chosen model's family (model=unet: U-Net's, not every family's;
    none chosen: the default model's), from the `schema_<family>` its YAML names; None when
    unknown (a model from hydra.searchpath): then every family's keys are offered."""
    from vaitrain.schema.root import GROUP_SCHEMAS

    name = model or str(_config.compose([]).model.name)
    try:
        text = (_config.conf_dir() / "model" / f"{name}.yaml").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    family = re.search(r"^\s*-\s*schema_(\w+)\s*$", text, re.MULTILINE)
    schema = GROUP_SCHEMAS["model"].get(family.group(1)) if family else None
    if schema is None:
        return None
    return {f"model.{f.name}" for f in dataclasses.fields(schema)} - set(_MODEL_KEYS_NOT_OFFERED)


def complete_override(args: list[str], incomplete: str) -> list[str]:
    """Completions of one override word: `mod` -> `model=`, `model.`...; `model=` -> the models;
    `optim.lr` -> `optim.lr=`; `model=unet model.` -> U-Net's keys. Bash splits words at '='
    (COMP_WORDBREAKS): then `model`, `=` and the value arrive as separate words, and a value is
    offered for the '=' word."""
    keys = _all_keys()
    if "model.".startswith(incomplete) or incomplete.startswith("model."):
        model_keys = _model_keys(_chosen(args, "model"))
        if model_keys is not None:
            keys = {k: v for k, v in keys.items() if not k.startswith("model.") or k in model_keys}
    if incomplete == "=" and args and args[-1] in keys:  # bash: the word after `model` is "="
        return [f"={v}" for v in keys[args[-1]]]
    if incomplete == "" and args and args[-1] in keys:  # the same, as click hands it over: "=" -> ""
        return list(keys[args[-1]])
    if len(args) >= 2 and args[-1] == "=" and args[-2] in keys:  # bash: the value after "="
        return [v for v in keys[args[-2]] if v.startswith(incomplete)]
    if "=" in incomplete:
        key, _, typed = incomplete.partition("=")
        return [f"{key}={v}" for v in keys.get(key, ()) if v.startswith(typed)]
    found = [f"{k}=" for k in keys if k.startswith(incomplete)]
    return sorted(found)


# ----- which keys apply to the chosen options -----------------------------------------------------------
_SECTION = re.compile(r"^\s+#\s*([a-z_]+(?:\s*[,|/]\s*[a-z_]+)*)\s*$")
_FIELD = re.compile(r"^\s+(\w+)\s*:")


@lru_cache(maxsize=None)
def _sections(schema: type) -> dict[str, tuple[str, ...]]:
    """{field: the options it belongs to} from a schema's section comments: a comment line that is
    only option names (`# alrao`, `# segmentation`) starts the fields of those options; fields
    before any such line apply to every option."""
    try:
        lines = inspect.getsource(schema).splitlines()
    except (OSError, TypeError):
        return {}
    owners: dict[str, tuple[str, ...]] = {}
    current: tuple[str, ...] = ()
    for line in lines:
        section = _SECTION.match(line)
        if section:
            current = tuple(re.split(r"\s*[,|/]\s*", section.group(1)))
            continue
        field = _FIELD.match(line)
        if field and current:
            owners[field.group(1)] = current
    return owners


def applying_config(cfg: DictConfig) -> tuple[dict[str, Any], list[str]]:
    """The config as a dict without the keys that belong to other options of their group
    (optim.lr_min when optim=adam, task.dice_weight for classification), and those keys."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    hidden: list[str] = []
    for group in _config.GROUPS:
        node = cfg.get(group)
        schema = OmegaConf.get_type(node) if node is not None else None
        if schema is None or not dataclasses.is_dataclass(schema) or "name" not in node:
            continue
        chosen = str(node.name)
        for key, owners in _sections(schema).items():
            if key in container[group] and chosen not in owners:
                del container[group][key]
                hidden.append(f"{group}.{key}")
    return container, hidden
