"""Config composition (Hydra compose API), validation, sweep expansion.

The CLI hands over the user's overrides; this module returns a resolved, validated DictConfig or
raises ConfigError with one clear line. Nothing here writes to disk.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from vaitrain import config_cache
from vaitrain import config_checks as checks
from vaitrain import plain_overrides, registry
from vaitrain.errors import ConfigError, check_choice, closest_first
from vaitrain.schema.root import GROUP_SCHEMAS, SCHEMA_PREFIX, RootConfig, register_schemas

GROUPS = tuple(GROUP_SCHEMAS)
EXPERIMENT = "experiment"  # the recipes' group: conf/experiment/<name>.yaml, deltas only

# Enumerated string options: key -> valid values. Checked after composition so YAML files and
# command-line values are held to the same list.
# The names of what vaitrain builds (datasets, tasks, optimizers, schedules, norms, activations,
# inits, down/up-sampling) come from their registries (vaitrain/registry.py); the rest are values
# of one option each.
CHOICES: dict[str, tuple[str, ...]] = {
    **registry.choices(),
    "model.style": ("cifar", "imagenet"),
    "model.regime": ("small", "regular"),
    "model.graph": ("ws", "er", "ba"),
    "model.kind": ("mlp", "cnn"),
    "data.normalize": ("channel", "pixel", "none", "imagenet"),
    "data.resize": ("center_crop", "squash"),
    "model.freeze": ("none", "backbone"),
    # YAML / the command line turn true/false into booleans, which the str field holds as True/False
    "data.device_resident": ("auto", "true", "false"),
    "data.augment": ("true", "false", "trivial"),
    "data.variant": ("standard", "ambiguous"),
    "task.loss": ("mse", "l1"),
    "task.head": ("plain", "gaussian", "mdn"),
    "task.sigma_param": ("softplus", "exp"),
    "trainer.precision": ("auto", "fp32", "bf16", "fp16"),
    "trainer.progress": ("auto", "bar", "plain", "none"),
    "bench.precision": ("auto", "fp32", "bf16", "fp16"),
    "bench.mode": ("train", "infer", "both"),
    "bench.baseline": ("none", "torchvision", "bare"),
    "bench.clock": ("wall", "process"),
    "sweep.launcher": ("local", "slurm"),
    "search.launcher": ("local", "slurm"),
    "search.direction": ("auto", "maximize", "minimize"),
    "search.sampler": ("tpe", "random"),
    "search.pruner": ("median", "halving", "none"),
}

# Numeric bounds: key -> (minimum, maximum or None).
BOUNDS: dict[str, tuple[float, float | None]] = {
    "trainer.epochs": (1, None),
    "trainer.batch_size": (1, None),
    "trainer.grad_accum": (1, None),
    "trainer.devices": (1, None),
    "data.image_size": (0, None),
    "data.num_train": (0, None),
    "data.num_val": (0, None),
    "data.num_classes": (0, None),
    "data.val_fraction": (0.0, 0.95),
    "data.crop_fraction": (0.05, 1.0),
    "data.crop_padding": (0, None),
    "data.crop": (0, None),
    "data.color_jitter": (0.0, None),
    "data.hue": (0.0, 0.5),
    "data.erasing": (0.0, 1.0),
    "data.mixup": (0.0, None),
    "data.cutmix": (0.0, None),
    "data.mixup_prob": (0.0, 1.0),
    "data.mixup_switch_prob": (0.0, 1.0),
    "trainer.ema": (0.0, 0.999999),
    "data.num_workers": (0, None),
    "data.noise": (0.0, None),
    "model.dropout": (0.0, 0.999),
    "model.width_mult": (1e-3, None),
    "task.label_smoothing": (0.0, 0.999),
    "task.components": (1, None),
    "task.topk": (1, None),
    "task.dice_weight": (0.0, None),
    "task.min_sigma": (0.0, None),
    "optim.lr": (0.0, None),
    "optim.copies": (1, None),
    "optim.momentum": (0.0, 0.999999),
    "optim.weight_decay": (0.0, None),
    "optim.eps": (0.0, None),
    "optim.grad_clip": (0.0, None),
    "optim.lr_min": (0.0, None),
    "optim.lr_max": (0.0, None),
    "sched.warmup_epochs": (0.0, None),
    "sched.warmup_start": (0.0, 1.0),
    "sched.min_lr": (0.0, None),
    "sched.step_size": (1, None),
    "sched.gamma": (0.0, None),
    "sched.pct_start": (0.0, 1.0),
    "sched.div_factor": (1.0, None),
    "sched.final_div_factor": (1.0, None),
    "norm.groups": (1, None),
    "bench.batch_size": (0, None),
    "bench.image_size": (0, None),
    "bench.warmup": (0, None),
    "bench.steps": (1, None),
    "bench.repeats": (1, None),
    "bench.peak_tflops": (0.0, None),
    "bench.data_batches": (0, None),
    "sweep.parallel": (1, None),
    "search.parallel": (1, None),
    "search.trials": (1, None),
    "search.startup_trials": (0, None),
    "search.warmup_epochs": (0, None),
    "search.heartbeat": (1, None),
    "sweep.slurm.gpus_per_job": (0, None),
    "sweep.slurm.cpus_per_job": (1, None),
    "sweep.slurm.timeout_min": (1, None),
    "search.slurm.gpus_per_job": (0, None),
    "search.slurm.cpus_per_job": (1, None),
    "search.slurm.timeout_min": (1, None),
    # seeds: torch, numpy and Optuna all take an unsigned 32-bit seed
    "seed": (0, 2**32 - 1),
    "data.seed": (0, 2**32 - 1),
    "search.seed": (0, 2**32 - 1),
    "model.graph_seed": (0, 2**32 - 1),
    # 0 means off / the default for each of these (see schema/trainer.py); negatives meant nothing
    "trainer.threads": (0, None),
    "trainer.val_batch_size": (0, None),
    "trainer.layer_stats": (0, None),
    "trainer.image_every": (0, None),
    "trainer.stop_after": (0, None),
    "trainer.checkpoint_every": (0, None),
    "trainer.log_every": (1, None),
    "norm.eps": (0.0, None),
    "norm.momentum": (0.0, 1.0),
    "model.base_width": (1, None),
    "model.growth_rate": (1, None),
    "model.num_init_features": (1, None),
    "model.bn_size": (0, None),
    "model.channels": (1, None),
    "model.width": (1, None),
    "model.down_every": (0, None),
    "model.graph_p": (0.0, 1.0),
    "sweep.slurm.mem_gb": (0, None),
    "search.slurm.mem_gb": (0, None),
    # list options: the bounds hold for every element
    "optim.betas": (0.0, 0.999999),
    "model.block_config": (1, None),
    "sched.milestones": (0, None),
}

# List options of a fixed or minimum length: key -> (fewest, most or None elements, an example).
LENGTHS: dict[str, tuple[int, int | None, str]] = {
    "optim.betas": (2, 2, "[0.9,0.999]"),
    "model.block_config": (1, None, "[6,6,6]"),
}


def conf_dir() -> Path:
    """The packaged config folder (conf/ in the repo, vaitrain/conf in the wheel)."""
    try:
        return Path(str(importlib.resources.files("vaitrain.conf")))
    except ModuleNotFoundError:  # a source checkout on PYTHONPATH, not installed
        source = Path(__file__).resolve().parent.parent / "conf"
        if source.is_dir():
            return source
        raise


def group_options(group: str, extra_dirs: Sequence[Path] = ()) -> list[str]:
    """The options a config group offers, from its YAML files (packaged, then hydra.searchpath's)."""
    return sorted({p.stem for d in (conf_dir(), *extra_dirs) for p in (Path(d) / group).glob("*.yaml")})


_PATH_KEYS = ("root", "weights", "init_from", "out_dir", "resume", "name", "storage")  # values that are often paths


def _spaced_equals(overrides: Sequence[str]) -> None:
    """`optim.lr = 0.1` (or `optim.lr= 0.1`, `optim.lr =0.1`) reaches us as separate words; each was
    refused on its own ('malformed override optim.lr', 'optim.lr= is not a valid float')."""
    words = list(overrides)
    for i, (a, b) in enumerate(zip(words, words[1:])):
        c = words[i + 2] if i + 2 < len(words) else ""
        if "=" not in a and b == "=" and c and "=" not in c:
            key, value = a, c
        elif "=" not in a and b.startswith("=") and len(b) > 1:
            key, value = a, b[1:]
        elif a.endswith("=") and a.count("=") == 1 and b and "=" not in b:
            key, value = a[:-1], b
        else:
            continue
        raise ConfigError(f"'{key}', '=' and '{value}' arrived as separate words: write {key}={value} "
                          "with no spaces around '=' (or quote the whole override)")


def _parse(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    _spaced_equals(overrides)
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException:
            key, eq, value = text.partition("=")
            if eq and not value.isascii() and not value.startswith(("'", '"')):
                # Hydra's grammar reads letters beyond ASCII (a path /data/bilder_ü) only quoted
                raise ConfigError(f"malformed override '{text}': quote a value with non-ASCII characters, "
                                  f"e.g. {key}='{value}'") from None
            odd = next((c for c in value if c in "~()[]{}=&#"), None)
            pathlike = "/" in value or key.split(".")[-1] in _PATH_KEYS
            if eq and odd and (odd == "~" or pathlike) and not value.startswith(("'", '"')):
                # a shell passes ~ after `key=` on as typed (no variable name has a dot), and folder names
                # carry brackets ("photos (1)"): Hydra's grammar reads these characters only quoted
                home = str(Path(value).expanduser()) if value.startswith("~") else None
                plain = home and not any(c in home for c in "~()[]{}=&#")
                fix = f"write the path out, {key}={home}, or " if plain else ""
                raise ConfigError(f"malformed override '{text}': Hydra's grammar reads '{odd}' only in a quoted value: "
                                  f"{fix}quote it for the shell and Hydra, \"{key}='{value}'\"") from None
            raise ConfigError(
                f"malformed override '{text}': write key=value (e.g. trainer.epochs=3) "
                "or group=option (e.g. optim=adam)"
            ) from None
    return parsed


def _check_group_choices(parsed: Iterable[Any]) -> None:
    parsed = list(parsed)
    extra = checks.search_dirs(parsed)
    for ov in parsed:
        key = ov.key_or_group
        if key in (*GROUPS, EXPERIMENT) and not ov.is_delete():
            values = ov.sweep_string_iterator() if ov.is_sweep_override() else [ov.value()]
            for value in values:
                check_choice(key, str(value), group_options(key, extra))


def _unknown_key_error(key: str, cfg_hint: DictConfig | None) -> ConfigError:
    parent, _, leaf = key.rpartition(".")
    valid: list[str] = []
    if cfg_hint is not None:
        node = OmegaConf.select(cfg_hint, parent) if parent else cfg_hint
        if isinstance(node, DictConfig):
            valid = [str(k) for k in node.keys()]
    if valid:
        names = ", ".join(f"{parent + '.' if parent else ''}{k}" for k in closest_first(leaf, valid))
        return ConfigError(f"unknown config key '{key}'; valid keys here: {names}")
    return ConfigError(f"unknown config key '{key}'; see `vaitrain config` for the valid keys")


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with the overrides, resolve it and validate every option."""
    # A recipe (conf/experiment/, or the user's folder on hydra.searchpath) is a group outside the
    # defaults list, so `experiment=NAME` means `+experiment=NAME`.
    overrides = [f"+{o}" if o.split("=", 1)[0] == EXPERIMENT else o for o in overrides]
    # plain key=value forms without importing Hydra (a cached composition then needs none of it)
    plain = plain_overrides.parse_all(overrides)
    parsed = _parse(overrides) if plain is None else plain
    # `+group.key=` would add a key no schema knows, so a typo would pass silently. `+group=option`
    # (a user's experiment file) stays; `_target_`-style keys get their own refusal in validate().
    added = [o for o in overrides if o.startswith("+") and "." in o.split("=", 1)[0]
             and not o.split("=", 1)[0].rsplit(".", 1)[-1].startswith("_")]
    if added:
        raise ConfigError(
            f"'{added[0]}': adding keys with + is not supported; every option already exists "
            "(see `vaitrain config`), so write key=value"
        )
    checks.refuse_unsupported(parsed)
    sweep = next((ov for ov in parsed if ov.is_sweep_override()), None)
    if sweep is not None:
        key = str(sweep.key_or_group)
        if key.split(".")[-1] in _PATH_KEYS:  # a comma in a folder name ("pics,2024") reads as a sweep list
            text = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), key)
            value = text.split("=", 1)[-1]
            raise ConfigError(f"sweep values (a,b or range(...)) need -m/--multirun; for a path with a comma, quote it "
                              f"for the shell and Hydra, \"{key}='{value}'\"")
        raise ConfigError("sweep values (a,b or range(...)) need -m/--multirun")
    _check_group_choices(parsed)
    dirs = [conf_dir(), *checks.search_dirs(parsed)]
    checks.check_alias_expansion(dirs[1:])  # the user's folders only: the packaged files are ours
    # The group choices' composition is read from the cache when these files composed it before
    # (config_cache.py); a user's config folder, and anything unusual, composes through Hydra.
    cfg = config_cache.compose(parsed, (*GROUPS, EXPERIMENT), conf_dir(),
                               lambda choices: _hydra_compose(choices, dirs)) if len(dirs) == 1 else None
    if cfg is None:
        cfg = _hydra_compose(overrides, dirs)
    try:
        OmegaConf.resolve(cfg)
    except Exception as err:  # interpolation errors
        raise ConfigError(f"cannot resolve the config: {_first_line(err).split(' full_key:')[0]}") from None
    validate(cfg)
    checks.check_root_keys(cfg, RootConfig)
    checks.check_bool_values(parsed, cfg)
    _imply_pretrained_normalization(cfg, parsed)
    return cfg


def _hydra_compose(overrides: list[str], dirs: Sequence[Path]) -> DictConfig:
    """Hydra's composition of conf/config.yaml with the overrides (struct, unresolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException

    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        try:
            return hydra_compose(config_name="config", overrides=overrides)
        except MissingConfigException as err:
            raise ConfigError(_first_line(err).split(" Config search path:")[0]) from None
        except HydraException as err:
            raise _composition_error(_full_text(err), overrides, hydra_compose, dirs) from None
        except Exception as err:  # YAML syntax errors, and whatever else Hydra lets through
            raise checks.yaml_error(err) or ConfigError(f"cannot compose the config: {_first_line(err)}") from None


def _imply_pretrained_normalization(cfg: DictConfig, parsed: Iterable[Any]) -> None:
    """Pretrained weights (model.weights) were trained on ImageNet-normalized inputs: their mean/std
    is used unless the command line names data.normalize; written into the run's config.yaml."""
    if not str(cfg.model.get("weights") or ""):
        return
    if any(str(ov.key_or_group) == "data.normalize" for ov in parsed):
        return
    cfg.data.normalize = "imagenet"


def _full_text(err: BaseException) -> str:
    parts = []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return "\n".join(parts)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return " ".join(text.split()) if text else type(err).__name__


def _composition_error(text: str, overrides: list[str], hydra_compose: Any, dirs: Sequence[Path] = ()) -> ConfigError:
    """One line for Hydra's multi-line composition errors."""
    import re

    bad_type = re.search(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", text)
    key = re.search(r"full_key: (\S+)", text)
    if bad_type and key:
        value, _, expected = bad_type.groups()
        return ConfigError(f"{key.group(1)}={value} is not a valid {expected.lower()}")
    merged = checks.merge_error(text)
    if merged is not None:
        return merged
    in_file = re.search(r"In '([^']+)'.*\n.*Key '([^']+)' not in '(\w+)'", text)
    if in_file and key:
        group = key.group(1).split(".")[0]
        hint = hydra_compose(config_name="config", overrides=[])
        valid = list(hint[group].keys()) if group in hint and hint[group] is not None else list(hint.keys())
        names = ", ".join(closest_first(in_file.group(2), [str(v) for v in valid]))
        where = checks.config_file(in_file.group(1), dirs) or f"conf/{in_file.group(1)}.yaml"
        return ConfigError(f"unknown key '{in_file.group(2)}' in config file {where}; valid keys: {names}")
    unknown = re.search(r"Could not override '([^']*)'", text)
    if unknown and unknown.group(1) and key:
        groups = [o for o in overrides if o.split("=", 1)[0] in GROUPS]
        return _unknown_key_error(unknown.group(1), hydra_compose(config_name="config", overrides=groups))
    if unknown:
        return ConfigError(f"malformed override: '{unknown.group(1)}' is no config key or group; write key=value")
    return ConfigError(" ".join(text.split("\n")[0].split()))


# Hydra's instantiation keys. vaitrain builds objects only through its own registries, so such a
# key (from a user's YAML or a `+key=` override) would be silently ignored: it is refused instead.
INSTANTIATE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def _refuse_instantiation(node: Any, path: str = "") -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{path}.{k}" if path else str(k)
        if k in INSTANTIATE_KEYS:
            raise ConfigError(
                f"config key '{key}' asks Hydra to instantiate '{v}'; vaitrain builds objects only "
                "from its own registries (model=, optim=, ...): remove the key"
            )
        _refuse_instantiation(v, key)


def validate(cfg: DictConfig) -> None:
    """Check enumerated and bounded options; combinations are checked by the builders."""
    _refuse_instantiation(OmegaConf.to_container(cfg, resolve=False))
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            if str(value) in ("True", "False"):  # YAML's true/false in a string field
                value = str(value).lower()
                OmegaConf.update(cfg, key, value)
            check_choice(key, str(value), choices)
    checks.check_finite(cfg, BOUNDS)
    checks.check_lengths(cfg, LENGTHS)
    checks.check_not_empty(cfg)
    checks.check_workers(cfg)
    checks.check_crop(cfg.data, int(cfg.data.image_size))
    for key, (lo, hi) in BOUNDS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        items = list(enumerate(value)) if isinstance(value, ListConfig) else [(None, value)]
        for i, item in items:
            if item < lo or (hi is not None and item > hi):
                rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                where = key if i is None else f"{key}[{i}]"
                raise ConfigError(f"{where}={item} is out of range; it must be {rng}")


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The Cartesian product of sweep overrides as job lists: `a,b`, `choice(...)`, `range(...)`
    and, for a config group, `glob(...)` over its options (e.g. `model=glob(resnet*,exclude=resnet110)`).

    Built on Hydra's public override parser (hydra.core.override_parser), not on its sweeper's
    internals; as Hydra's own sweeper does, a key given twice keeps its first place, last value."""
    import itertools

    from hydra.core.override_parser.types import Glob

    parsed = _parse(overrides)
    axes: dict[str, list[str]] = {}
    for ov in parsed:
        key = ov.get_key_element()
        if ov.is_interval_sweep():
            raise ConfigError(
                f"'{key}=interval(...)' is a continuous range, which a grid cannot list: "
                "give values (a,b,c or range(start,stop,step)) or search it with `vaitrain search`"
            )
        if isinstance(ov.value(), Glob):
            if ov.key_or_group not in GROUPS:
                raise ConfigError(
                    f"'{key}=glob(...)' matches config-group options (e.g. model=glob(resnet*)); "
                    f"{key} is no group: list its values as a,b,c"
                )
            options = ov.value().filter(group_options(ov.key_or_group))
            if not options:
                raise ConfigError(f"'{ov.input_line}' matches none of {key}'s options: {', '.join(group_options(key))}")
            axes[key] = [f"{key}={o}" for o in options]
        elif ov.is_sweep_override():
            n = checks.range_length(ov)
            checks.check_sweep_size({**{k: len(v) for k, v in axes.items() if k != key}, key: n or 0})
            axes[key] = [f"{key}={v}" for v in ov.sweep_string_iterator()]
            checks.check_sweep_axis(ov.input_line, axes[key])
        else:
            axes[key] = [f"{key}={ov.get_value_element_as_str()}"]
    checks.check_sweep_size({k: len(v) for k, v in axes.items()})
    _check_group_choices(p for p in _parse([v for values in axes.values() for v in values]))
    return [list(job) for job in itertools.product(*axes.values())]


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
