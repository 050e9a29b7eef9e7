"""The root config and the registration of every group's schema in Hydra's ConfigStore."""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any, Optional

from vaitrain import registry
from vaitrain.schema.data import DataConfig
from vaitrain.schema.model import ModelConfig
from vaitrain.schema.optim import OptimConfig, SchedConfig
from vaitrain.schema.search import SearchConfig, SweepConfig
from vaitrain.schema.task import TaskConfig
from vaitrain.schema.trainer import BenchConfig, NormConfig, TrainerConfig

# Schema nodes are stored under names starting with "schema_" so they never show as choices.
SCHEMA_PREFIX = "schema_"



def family_schema(family: str) -> type:
    """The schema of a model family: its own dataclass (registry entry's `schema`), or for a family
    without keys of its own the common ModelConfig with `family` set."""
    schema = registry.MODELS.entry(family).schema
    if schema:
        return registry.resolve(schema)
    return make_dataclass(f"{family.title()}Config", [("family", str, family)], bases=(ModelConfig,))


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    # one schema per model family, as registry.MODELS lists them (YAML: `defaults: [schema_<family>]`)
    "model": {family: family_schema(family) for family in registry.MODELS},
    "data": {"data": DataConfig},
    "task": {"task": TaskConfig},
    "optim": {"optim": OptimConfig},
    "sched": {"sched": SchedConfig},
    "norm": {"norm": NormConfig},
    "trainer": {"trainer": TrainerConfig},
    "bench": {"bench": BenchConfig},
}


@dataclass
class RootConfig:
    model: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)  # train -m: jobs at once, launcher
    search: SearchConfig = field(default_factory=SearchConfig)  # vaitrain search (Optuna)
    seed: int = 0  # seeds the weights, the data order and the augmentation (same seed, same run)
    out_dir: str = "runs"  # run directories go under <out_dir>/<date>/
    resume: Optional[str] = None  # a run directory to continue
    init_from: Optional[str] = None  # a run directory or checkpoint file: its model weights start a new run
    name: str = ""  # optional tag appended to the run directory name


_registered = False


def register_schemas() -> None:
    """Store every schema once per process (ConfigStore is a process-wide singleton)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore  # Hydra is imported when it composes

    cs = ConfigStore.instance()
    cs.store(name=f"{SCHEMA_PREFIX}root", node=RootConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=f"{SCHEMA_PREFIX}{name}", node=node)
    _registered = True


__all__ = ["RootConfig", "register_schemas", "SCHEMA_PREFIX", "GROUP_SCHEMAS", "ModelConfig"]
