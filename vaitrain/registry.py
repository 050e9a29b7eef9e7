"""Every named choice vaitrain builds from, one registry per kind: the single list of its names.

The config's allowed values (`config.CHOICES`), `vaitrain config --choices`, shell completion and
the error messages all come from these lists; the builders look their names up here. An entry
says where its builder lives as "module:attribute" and is imported only when built, so reading
the names (composing a config, `vaitrain config`) never imports torch.

Adding a model family: its module under vaitrain/models/ + an entry in MODELS + its YAML in
conf/model/ (+ a schema dataclass in vaitrain/schema/model.py only if it has new keys).
Adding a dataset: its module under vaitrain/data/ (registered with `data.base.register`) + an entry
in DATASETS + its YAML in conf/data/. See docs/ARCHITECTURE.md, "How to add ...".
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional


@dataclass(frozen=True)
class Entry:
    target: Optional[str] = None  # "module:attribute" of the builder; None where one function
    # builds every name of the kind (e.g. make_act in models/layers.py)
    schema: Optional[str] = None  # model families: "module:Dataclass" of the family's config schema


class Registry:
    """The names of one kind of choice (in the order they are listed to users) and their builders."""

    def __init__(self, key: str, entries: Mapping[str, Entry | str | None] | tuple[str, ...]) -> None:
        self.key = key  # the config key the names are the values of, e.g. "model.act"
        items = entries.items() if isinstance(entries, Mapping) else ((n, None) for n in entries)
        self._entries: dict[str, Entry] = {
            name: e if isinstance(e, Entry) else Entry(e) for name, e in items
        }

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> Entry:
        from vaitrain.errors import check_choice

        check_choice(self.key, name, self.names)
        return self._entries[name]

    def load(self, name: str) -> Any:
        """The builder registered under `name` (ConfigError naming the valid names otherwise)."""
        target = self.entry(name).target
        if target is None:
            raise LookupError(f"{self.key}={name} has no builder of its own")
        return resolve(target)

    def register(self, name: str, entry: Entry | str | None = None) -> None:
        """Add a name (a plug-in, or a test's stand-in)."""
        self._entries[name] = entry if isinstance(entry, Entry) else Entry(entry)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)


def resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


MODELS = Registry("model.family", {
    "resnet": Entry("vaitrain.models.resnet:build_resnet", "vaitrain.schema.model:ResNetConfig"),
    "densenet": Entry("vaitrain.models.densenet:build_densenet", "vaitrain.schema.model:DenseNetConfig"),
    "unet": Entry("vaitrain.models.unet:build_unet", "vaitrain.schema.model:UNetConfig"),
    "randwire": Entry("vaitrain.models.randwire:build_randwire", "vaitrain.schema.model:RandWireConfig"),
    "plain": Entry("vaitrain.models.plain:build_plain", "vaitrain.schema.model:PlainConfig"),
})

# The module whose `@register(name, tasks)` builder decodes the dataset (imported on build).
DATASETS = Registry("data.name", {
    "shapes": "vaitrain.data.shapes",
    "mnist": "vaitrain.data.torchvision_sets",
    "fashion_mnist": "vaitrain.data.torchvision_sets",
    "cifar10": "vaitrain.data.torchvision_sets",
    "cifar100": "vaitrain.data.torchvision_sets",
    "svhn": "vaitrain.data.torchvision_sets",
    "oxford_pets": "vaitrain.data.torchvision_sets",
    "voc": "vaitrain.data.torchvision_sets",
    "image_folder": "vaitrain.data.folders",
    "seg_folder": "vaitrain.data.folders",
    "csv_regression": "vaitrain.data.folders",
})

TASKS = Registry("task.name", {
    "classification": "vaitrain.tasks.classification:ClassificationTask",
    "segmentation": "vaitrain.tasks.segmentation:SegmentationTask",
    "regression": "vaitrain.tasks.regression:RegressionTask",
})

# Built by optim/optimizers.py's build_optimizer (alrao: optim/alrao.py around an inner `body`).
OPTIMIZERS = Registry("optim.name", ("sgd", "adam", "adamw", "alrao"))
ALRAO_BODIES = Registry("optim.body", ("sgd", "adam"))
SCHEDULES = Registry("sched.name", ("constant", "step", "multistep", "cosine", "onecycle"))  # optim/schedules.py

# Layer choices, built by the factories in models/layers.py.
NORMS = Registry("norm.name", ("batch", "group", "layer", "instance", "none"))
ACTIVATIONS = Registry("model.act", ("relu", "leaky_relu", "sigmoid", "tanh", "elu", "selu", "gelu"))
INITS = Registry("model.init", ("default", "xavier", "he", "lecun"))
INIT_DISTS = Registry("model.init_dist", ("normal", "uniform"))
DOWNS = Registry("model.down", ("maxpool", "avgpool", "strided"))
UPS = Registry("model.up", ("transposed", "bilinear", "maxunpool"))

# Every registry whose names are the allowed values of a config key (config.CHOICES takes these).
ALL: tuple[Registry, ...] = (
    DATASETS, TASKS, OPTIMIZERS, ALRAO_BODIES, SCHEDULES, NORMS, ACTIVATIONS, INITS, INIT_DISTS, DOWNS, UPS,
)


def choices() -> dict[str, tuple[str, ...]]:
    """config key -> allowed values, for every registry a config value names."""
    return {r.key: r.names for r in ALL}
