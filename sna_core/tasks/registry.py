"""The task registry: ``dataset.task`` names → :class:`~sna_core.tasks.base.Task` classes.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022): classification (CIFAR-100, ImageNet, VinDr-CXR) and detection (COCO2017,
VOC2012, VinDr-CXR). Third-party tasks arrive through the entry-point group ``sna_core.tasks``.
"""

from __future__ import annotations

from typing import Any, Callable

from sna_core._registry import Registry
from sna_core.tasks.base import Task
from sna_core.tasks.classification import ClassificationTask, MultilabelClassificationTask
from sna_core.tasks.config import validate_config

TASK_TYPES: Registry[type[Task]] = Registry("task", entry_point_group="sna_core.tasks")
TASK_TYPES.add("classification", ClassificationTask)
TASK_TYPES.add("multilabel", MultilabelClassificationTask)


class TaskNotAvailableError(ValueError):
    """A valid task name whose implementation is not in this release (detection)."""


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
        raise TaskNotAvailableError(
            f"task {name!r} (dataset {config['dataset']['name']!r}) is not in this release: the "
            f"detectors (Faster/Mask R-CNN) come with the detection issue. Tasks available: "
            f"{', '.join(list_tasks())}"
        )
    return TASK_TYPES.get(name)(config)
