"""Tasks: the one interface the orchestrator's trainable calls, whatever the task.

A task is built from a *trial config* — a plain, JSON-serialisable dict (the orchestrator's
resolved cell; sna_core never reads YAML)::

    {
      "seed": 0,
      "dataset": {"name": "redundant_shapes", "task": "classification", "root": None,
                  "image_size": 32, "num_classes": 10, "kwargs": {}},
      "model": {"backbone": "resnet18", "stem": "cifar", "attention": "sna",
                "placement": "stem", "attention_kwargs": {"rank_k": 1}},
      "train": {"epochs": 3, "batch_size": 64, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                "weight_decay": 5e-4, "schedule": {"name": "multistep", "milestones": [2], "gamma": 0.2},
                "metric": "top1", "mode": "max", "loader_workers": 0,
                "limit_train_batches": None, "limit_eval_batches": None},
    }

``build_task(config)`` returns an object with the methods of :class:`Task`.

Keys (a missing optional key takes the default shown; any other key is an error naming it):

- ``seed``: int >= 0, default 0. Model initialisation and shuffling; not the data (generated sets
  take their own ``dataset.kwargs.seed``, default 0, so seeds vary the model on the same data).
- ``dataset.name``: a :func:`sna_core.data.list_datasets` name (required).
  ``task``: ``classification`` | ``multilabel`` | ``detection`` (default: the dataset's first task).
  ``root``: str or None (None: the dataset's default root; roots of the paper datasets default
  to ``$SNA_DATA_HOME/<name>``, ``SNA_DATA_HOME`` defaulting to ``~/sna_data``).
  ``image_size``, ``num_classes``: ints, default the dataset's :class:`~sna_core.data.DatasetInfo`.
  ``kwargs``: dict, default {}, passed to the dataset builder (``image_size`` is passed too);
  ``kwargs.in_channels`` also sets the model's input channels.
- ``model.backbone``: a :func:`sna_core.backbones.list_backbones` name (required).
  ``stem``: ``imagenet`` | ``cifar`` (default: the dataset's). ``attention``: default ``none``.
  ``placement``: ``none`` | ``stem`` | ``blocks`` | ``stem+blocks`` (default ``stem``).
  ``attention_kwargs``: dict, default {} (``rank_k`` goes here). ``stages``: list of stage
  numbers (1–4) for block placements, or None (default: all).
  ``detector``: a :func:`sna_core.detectors.list_detectors` name (``faster_rcnn`` | ``mask_rcnn``),
  required for task ``detection`` and absent otherwise (so other tasks' trial keys do not change).
  The detector is built on ``backbone`` with an FPN over its four stages; ``dataset.num_classes``
  counts object classes only (the background is added inside). ``detector_kwargs``: dict,
  default {}, detection only: keyword arguments of :func:`sna_core.detectors.build_detector`
  (``fpn``, ``pretrained_backbone``) and of torchvision's ``FasterRCNN`` / ``MaskRCNN`` (e.g.
  ``rpn_post_nms_top_n_test``, ``box_detections_per_img``); they override the task's own
  ``min_size`` / ``max_size`` (from ``dataset.image_size``) and ``image_mean`` / ``image_std``.
- ``train.epochs`` (1), ``batch_size`` (64), ``eval_batch_size`` (None: ``batch_size``),
  ``optimizer`` ``sgd`` | ``adam`` | ``adamw`` (``sgd``), ``lr`` (0.1), ``momentum`` (0.9; SGD
  momentum, Adam's β₁), ``beta2`` (0.999), ``nesterov`` (False), ``weight_decay`` (5e-4),
  ``schedule`` (``{"name": "none"}``; a bare name string is accepted) — one of
  ``{"name": "none"}``, ``{"name": "step", "step_size": int, "gamma": 0.1}``,
  ``{"name": "multistep", "milestones": [ints], "gamma": 0.1}``,
  ``{"name": "cosine", "t_max": epochs, "eta_min": 0.0}``; gamma in (0, 1], so the paper's
  "Adam, lr 0.1, gamma 1, step 10" is ``{"name": "step", "step_size": 10, "gamma": 1.0}``.
  Schedules step once per epoch. ``metric``: a key of ``evaluate()`` — classification ``top1``
  (default) | ``top5`` | ``loss``, multilabel ``auroc`` (default) | ``loss``, detection
  ``bbox_ap`` (default; ``ap40`` for VinDr-CXR, the paper's Table 4) | ``bbox_ap50`` |
  ``bbox_ap75`` | ``bbox_aps`` | ``bbox_apm`` | ``bbox_apl`` | ``ap40`` | ``ap40_pooled`` and, for
  ``mask_rcnn`` only, ``segm_ap`` ... ``segm_apl`` (see :mod:`sna_core.tasks.detection`);
  ``mode``: ``max`` | ``min`` (default ``min`` for ``loss``, else ``max``). ``loader_workers`` (0).
  ``limit_train_batches`` / ``limit_eval_batches``: None or int >= 1 (batches per epoch / eval).

:func:`validate_config` returns the config with every default filled in (a planner may call it
on each cell; it reads no files), raising :class:`TrialConfigError` otherwise.
"""

from sna_core.tasks.base import (
    EpochShuffleSampler,
    NonFiniteLossError,
    Task,
    seed_everything,
)
from sna_core.tasks.classification import (
    ClassificationTask,
    MultilabelClassificationTask,
)
from sna_core.tasks.config import TrialConfigError, validate_config
from sna_core.tasks.detection import DetectionTask
from sna_core.tasks.optim import build_optimizer, build_scheduler
from sna_core.tasks.registry import (
    TASK_TYPES,
    TaskNotAvailableError,
    build_task,
    list_tasks,
    register_task,
)

__all__ = [
    "TASK_TYPES",
    "ClassificationTask",
    "DetectionTask",
    "EpochShuffleSampler",
    "MultilabelClassificationTask",
    "NonFiniteLossError",
    "Task",
    "TaskNotAvailableError",
    "TrialConfigError",
    "build_optimizer",
    "build_scheduler",
    "build_task",
    "list_tasks",
    "register_task",
    "seed_everything",
    "validate_config",
]
