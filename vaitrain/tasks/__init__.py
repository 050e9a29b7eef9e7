"""Tasks: loss, metrics (meters) and TensorBoard images, one module per task.

`build_task(task_cfg, data)` picks the task class by `task_cfg.name` from `registry.TASKS`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vaitrain import registry
from vaitrain.errors import ConfigError
from vaitrain.tasks.base import Meter, Task

if TYPE_CHECKING:
    from vaitrain.data import DataBundle
    from vaitrain.schema.task import TaskConfig

# name -> Task class (main_metric, main_mode, ... are class attributes), from the registry
TASKS: dict[str, type[Task]] = {name: registry.TASKS.load(name) for name in registry.TASKS}


def build_task(task_cfg: TaskConfig, data: DataBundle) -> Task:
    """The Task named by task_cfg.name, sized from the data bundle (classes, target dim, stats)."""
    task_class = registry.TASKS.load(str(task_cfg.name))
    return task_class(task_cfg, data)


__all__ = ["build_task", "Task", "Meter", "TASKS", "ConfigError"]
