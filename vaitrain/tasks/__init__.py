"""Tasks: loss, metrics (meters) and TensorBoard images, one module per task.

`build_task(task_cfg, data)` picks the task by `task_cfg.name` from TASKS.
"""
from __future__ import annotations

from typing import Any, Callable

from vaitrain.errors import ConfigError, check_choice
from vaitrain.tasks.base import Meter, Task
from vaitrain.tasks.classification import ClassificationTask
from vaitrain.tasks.regression import RegressionTask
from vaitrain.tasks.segmentation import SegmentationTask

TASKS: dict[str, Callable[[Any, Any], Task]] = {
    "classification": ClassificationTask,
    "segmentation": SegmentationTask,
    "regression": RegressionTask,
}


def build_task(task_cfg: Any, data: Any) -> Task:
    """The Task named by task_cfg.name, sized from the data bundle (classes, target dim, stats)."""
    name = str(task_cfg.name)
    check_choice("task.name", name, TASKS)
    return TASKS[name](task_cfg, data)


def list_tasks() -> list[str]:
    return sorted(TASKS)


__all__ = ["build_task", "list_tasks", "Task", "Meter", "TASKS", "ConfigError"]
