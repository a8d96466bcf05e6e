"""The task registry: ``dataset.task`` names → :class:`~sna_core.tasks.base.Task` classes.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022): classification (CIFAR-100, ImageNet, VinDr-CXR) and detection (COCO2017,
VOC2012, VinDr-CXR). Third-party tasks arrive through the entry-point group ``sna_core.tasks``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sna_core._registry import Registry
from sna_core.tasks.base import Task
from sna_core.tasks.classification import (
    ClassificationTask,
    MultilabelClassificationTask,
)
from sna_core.tasks.config import validate_config
from sna_core.tasks.detection import DetectionTask

TASK_TYPES: Registry[type[Task]] = Registry("task", entry_point_group="sna_core.tasks")
TASK_TYPES.add("classification", ClassificationTask)
TASK_TYPES.add("multilabel", MultilabelClassificationTask)
TASK_TYPES.add("detection", DetectionTask)


class TaskNotAvailableError(ValueError):
    """A valid task name (``sna_core.data.registry.TASKS``) without a registered implementation
    (e.g. a plugin task that failed to load)."""


def register_task(name: str, *, override: bool = False) -> Callable[[type[Task]], type[Task]]:
    """Decorator registering a :class:`Task` subclass for ``dataset.task == name``."""
    return TASK_TYPES.register(name, override=override)


def list_tasks() -> list[str]:
    return TASK_TYPES.names()


def build_task(config: dict[str, Any]) -> Task:
    """The :class:`Task` for a trial config (validated first; see :func:`validate_config`)."""
    config = validate_config(config)
    name = config["dataset"]["task"]
    if name not in TASK_TYPES:
        broken = TASK_TYPES.broken().get(name)
        reason = f"its plugin failed to load: {broken}" if broken else "no implementation is registered for it"
        raise TaskNotAvailableError(
            f"task {name!r} (dataset {config['dataset']['name']!r}) cannot be built: {reason}. "
            f"Tasks available: {', '.join(list_tasks())}"
        )
    return TASK_TYPES.get(name)(config)
