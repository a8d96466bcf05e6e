"""The trial config: validation and defaults (schema in :mod:`sna_core.tasks`).

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022). The recipe keys use its words (``rank_k``, ``placement``, ``attention``)
and can express both its text ("Adam, lr 0.1, gamma 1, step size 10") and the authors' code
(SGD, lr 0.1, momentum 0.9, multistep [60, 120, 160], gamma 0.2).

:func:`validate_config` returns a normalised deep copy — every optional key filled with its
default — and raises :class:`TrialConfigError` naming the key path, the offending value and the
valid choices. It is pure (reads no files, builds nothing), so a planner can run it on every
cell before anything starts.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

from sna_core._registry import closest
from sna_core.data import dataset_info
from sna_core.data.registry import TASKS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "multistep", "cosine")
STEMS = ("imagenet", "cifar")
PLACEMENTS = ("none", "stem", "blocks", "stem+blocks")
MODES = ("min", "max")
# Metrics each task's evaluate() returns, usable as train.metric.
COCO_STATS = ("ap", "ap50", "ap75", "aps", "apm", "apl")
BOX_METRICS = tuple(f"bbox_{stat}" for stat in COCO_STATS)
MASK_METRICS = tuple(f"segm_{stat}" for stat in COCO_STATS)  # only detectors that predict masks
TASK_METRICS = {
    "classification": ("top1", "top5", "loss"),
    "multilabel": ("auroc", "loss"),
    "detection": (*BOX_METRICS, *MASK_METRICS, "ap40", "ap40_pooled"),
}
DEFAULT_METRIC = {"classification": "top1", "multilabel": "auroc", "detection": "bbox_ap"}
# Datasets whose paper table uses another metric than their task's default: Table 4, VinDr-CXR
# detection, reports AP at IoU > 0.4.
DATASET_DEFAULT_METRIC = {("vindr_cxr", "detection"): "ap40"}

SECTIONS = ("seed", "dataset", "model", "train")
DATASET_KEYS = ("name", "task", "root", "image_size", "num_classes", "kwargs")
MODEL_KEYS = ("backbone", "stem", "attention", "placement", "attention_kwargs", "stages", "detector", "detector_kwargs")
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 64,
    "eval_batch_size": None,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "beta2": 0.999,
    "nesterov": False,
    "weight_decay": 5e-4,
    "schedule": {"name": "none"},
    "metric": None,
    "mode": None,
    "loader_workers": 0,
    "limit_train_batches": None,
    "limit_eval_batches": None,
}
SCHEDULE_KEYS: dict[str, dict[str, Any]] = {  # per schedule: its keys and defaults (None: required)
    "none": {},
    "step": {"step_size": None, "gamma": 0.1},
    "multistep": {"milestones": None, "gamma": 0.1},
    "cosine": {"t_max": None, "eta_min": 0.0},  # t_max defaults to train.epochs
}


class TrialConfigError(ValueError):
    """A trial config that cannot run. ``key`` is the dotted path of the offending entry."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.detail = key, message
        super().__init__(f"trial config {key}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Ray ships exceptions between processes by pickling; the default would call cls(text).
        return type(self), (self.key, self.detail)


def _unknown_keys(section: dict[str, Any], known: tuple[str, ...] | list[str], path: str) -> None:
    for key in section:
        if key not in known:
            hint = closest(str(key), list(known))
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            raise TrialConfigError(f"{path}.{key}" if path else str(key), f"unknown key.{suggestion} Known: {', '.join(known)}")


def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TrialConfigError(path, f"must be a mapping, got {type(value).__name__} {value!r}")
    return value


def _int(value: Any, path: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrialConfigError(path, f"must be an integer{' or null' if optional else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise TrialConfigError(path, f"must be >= {minimum}, got {value!r}")
    return value


def _number(value: Any, path: str, check: Callable[[float], bool], requirement: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not check(float(value)):
        raise TrialConfigError(path, f"must be {requirement}, got {value!r}")
    return float(value)


def _choice(value: Any, choices: tuple[str, ...], path: str) -> str:
    if value not in choices:
        hint = closest(str(value), list(choices))
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        raise TrialConfigError(path, f"unknown value {value!r}.{suggestion} Valid: {', '.join(choices)}")
    return value


def _schedule(raw: Any, epochs: int) -> dict[str, Any]:
    if raw is None:
        raw = {"name": "none"}
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = _mapping(raw, "train.schedule")
    name = _choice(raw.get("name"), SCHEDULES, "train.schedule.name")
    defaults = SCHEDULE_KEYS[name]
    _unknown_keys(raw, ["name", *defaults], "train.schedule")
    schedule: dict[str, Any] = {"name": name}
    for key, default in defaults.items():
        value = raw.get(key, default)
        path = f"train.schedule.{key}"
        if key == "step_size":
            if value is None:
                raise TrialConfigError(path, "is required for the 'step' schedule")
            value = _int(value, path, minimum=1)
        elif key == "milestones":
            if not isinstance(value, (list, tuple)) or not value:
                raise TrialConfigError(path, f"must be a non-empty list of epochs, got {value!r}")
            value = [_int(epoch, f"{path}[{index}]", minimum=1) for index, epoch in enumerate(value)]
            if value != sorted(set(value)):
                raise TrialConfigError(path, f"must be strictly increasing, got {value!r}")
        elif key == "gamma":
            # gamma 1 is allowed on purpose: the paper's "gamma 1, step size 10" (never decays).
            value = _number(value, path, lambda g: 0.0 < g <= 1.0, "in (0, 1]")
        elif key == "t_max":
            value = epochs if value is None else _int(value, path, minimum=1)
        elif key == "eta_min":
            value = _number(value, path, lambda v: v >= 0.0, "a number >= 0")
        schedule[key] = value
    return schedule


def _detector(value: Any) -> str:
    """A registered detector name (imports the detectors lazily: only detection configs need them)."""
    from sna_core.detectors import list_detectors

    known = list_detectors()
    if value is None:
        raise TrialConfigError("model.detector", f"is required for task 'detection' (a detector name: {', '.join(known)})")
    return _choice(value, tuple(known), "model.detector")


def _detector_kwargs(detector: str, raw: Any) -> dict[str, Any]:
    from sna_core.detectors.registry import check_detector_options

    options = dict(_mapping(raw, "model.detector_kwargs"))
    try:
        check_detector_options(detector, options)
    except ValueError as error:
        raise TrialConfigError("model.detector_kwargs", str(error)) from None
    return options


def _detector_uses_masks(name: str) -> bool:
    from sna_core.detectors import detector_uses_masks

    return detector_uses_masks(name)


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """A normalised deep copy of the trial ``config`` with every default filled in."""
    config = _mapping(config, "<root>")
    _unknown_keys(config, SECTIONS, "")
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TrialConfigError("<root>", f"must be plain JSON (dicts, lists, str, numbers, bool, null): {error}") from None
    config = copy.deepcopy(config)
    seed = _int(config.get("seed", 0), "seed", minimum=0)

    dataset = _mapping(config.get("dataset"), "dataset")
    _unknown_keys(dataset, DATASET_KEYS, "dataset")
    if "name" not in dataset:
        raise TrialConfigError("dataset.name", "is required")
    try:
        info = dataset_info(dataset["name"])
    except KeyError as error:
        raise TrialConfigError("dataset.name", str(error)) from None
    task = _choice(dataset.get("task", info.tasks[0]), TASKS, "dataset.task")
    if task not in info.tasks:
        raise TrialConfigError("dataset.task", f"dataset {info.name!r} does not serve task {task!r}; its tasks: {', '.join(info.tasks)}")
    root = dataset.get("root")
    if root is not None and (not isinstance(root, str) or not root):
        raise TrialConfigError("dataset.root", f"must be a non-empty path string or null, got {root!r}")
    dataset_out = {
        "name": info.name,
        "task": task,
        "root": root,
        "image_size": _int(dataset.get("image_size", info.image_size), "dataset.image_size", minimum=1),
        "num_classes": _int(dataset.get("num_classes", info.classes_for(task)), "dataset.num_classes", minimum=1),
        "kwargs": dict(_mapping(dataset.get("kwargs", {}) or {}, "dataset.kwargs")),
    }

    model = _mapping(config.get("model"), "model")
    _unknown_keys(model, MODEL_KEYS, "model")
    if not isinstance(model.get("backbone"), str) or not model["backbone"]:
        raise TrialConfigError("model.backbone", f"is required (a backbone name), got {model.get('backbone')!r}")
    attention = model.get("attention", "none")
    if not isinstance(attention, str) or not attention:
        raise TrialConfigError("model.attention", f"must be an attention name, got {attention!r}")
    stages = model.get("stages")
    if stages is not None:
        if not isinstance(stages, (list, tuple)) or not stages:
            raise TrialConfigError("model.stages", f"must be a non-empty list of stage numbers or null, got {stages!r}")
        stages = [_int(stage, f"model.stages[{index}]", minimum=1) for index, stage in enumerate(stages)]
    model_out = {
        "backbone": model["backbone"],
        "stem": _choice(model.get("stem", info.stem), STEMS, "model.stem"),
        "attention": attention,
        "placement": _choice(model.get("placement", "stem"), PLACEMENTS, "model.placement"),
        "attention_kwargs": dict(_mapping(model.get("attention_kwargs", {}) or {}, "model.attention_kwargs")),
        "stages": stages,
    }
    if task == "detection":
        model_out["detector"] = _detector(model.get("detector"))
        model_out["detector_kwargs"] = _detector_kwargs(model_out["detector"], model.get("detector_kwargs", {}) or {})
    else:  # absent from other tasks' configs, so their trial keys stay as they were
        for key in ("detector", "detector_kwargs"):
            if model.get(key) not in (None, {}):
                raise TrialConfigError(f"model.{key}", f"only applies to task 'detection', not {task!r}; got {model[key]!r}")

    train = _mapping(config.get("train", {}), "train")
    _unknown_keys(train, list(TRAIN_DEFAULTS), "train")
    merged = {**TRAIN_DEFAULTS, **train}
    epochs = _int(merged["epochs"], "train.epochs", minimum=1)
    metric = merged["metric"]
    if metric is None:
        metric = DATASET_DEFAULT_METRIC.get((info.name, task), DEFAULT_METRIC[task])
    metric = _choice(metric, TASK_METRICS[task], "train.metric")
    if metric in MASK_METRICS and not _detector_uses_masks(model_out["detector"]):
        raise TrialConfigError(
            "train.metric", f"{metric!r} needs a detector that predicts masks (mask_rcnn); model.detector is {model_out['detector']!r}"
        )
    mode = merged["mode"] if merged["mode"] is not None else ("min" if metric == "loss" else "max")
    train_out = {
        "epochs": epochs,
        "batch_size": _int(merged["batch_size"], "train.batch_size", minimum=1),
        "eval_batch_size": _int(merged["eval_batch_size"], "train.eval_batch_size", minimum=1, optional=True),
        "optimizer": _choice(merged["optimizer"], OPTIMIZERS, "train.optimizer"),
        "lr": _number(merged["lr"], "train.lr", lambda v: v > 0.0, "a number > 0"),
        "momentum": _number(merged["momentum"], "train.momentum", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        "beta2": _number(merged["beta2"], "train.beta2", lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        "nesterov": merged["nesterov"],
        "weight_decay": _number(merged["weight_decay"], "train.weight_decay", lambda v: v >= 0.0, "a number >= 0"),
        "schedule": _schedule(merged["schedule"], epochs),
        "metric": metric,
        "mode": _choice(mode, MODES, "train.mode"),
        "loader_workers": _int(merged["loader_workers"], "train.loader_workers", minimum=0),
        "limit_train_batches": _int(merged["limit_train_batches"], "train.limit_train_batches", minimum=1, optional=True),
        "limit_eval_batches": _int(merged["limit_eval_batches"], "train.limit_eval_batches", minimum=1, optional=True),
    }
    if not isinstance(train_out["nesterov"], bool):
        raise TrialConfigError("train.nesterov", f"must be true or false, got {train_out['nesterov']!r}")
    if train_out["nesterov"] and (train_out["optimizer"] != "sgd" or train_out["momentum"] == 0.0):
        raise TrialConfigError("train.nesterov", "needs optimizer 'sgd' with momentum > 0")
    return {"seed": seed, "dataset": dataset_out, "model": model_out, "train": train_out}
