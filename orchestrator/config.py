"""The experiment file: one YAML document describing a grid of trials, read and validated before
anything starts.

The grid reproduces the programme of Fang et al., "Combating spatial redundancy with spectral norm
attention in convolutional learners", Neurocomputing 511 (2022) 105-116: datasets × backbones ×
attention blocks × SNA rank-k × placement × seeds.

Layout (every key is optional unless marked)::

    name: sna-quickstart                  # required: the MLflow experiment
    description: free text
    matrix:                               # one grid; or `grids:` (a list of {name, matrix,
      dataset: [cifar100]                 #   exclude, include, train}) for several sub-grids
      backbone: [resnet18]
      attention: [none, se, sna]
      rank_k: [1, 2]                      # varies only for "sna"; other blocks get one cell
      placement: [stem]                   # none | stem | blocks | stem+blocks  (default [stem])
      seed: [0, 1]                        # (default [0])
      stem: [auto]                        # auto (the dataset's) | cifar | imagenet
      detector: [faster_rcnn]             # detection datasets only; others get one cell
    exclude: [{task: detection, attention: aa}]   # partial cells; a list value matches any of it
    include: [{attention: sna, rank_k: [4, 8]}]   # adds cells; unnamed axes come from the matrix;
                                                  # `train:` inside an include patches its cells
    datasets:
      cifar10_alias: {name: cifar100, task: classification, root: /data/c100, image_size: 32,
                      num_classes: 100, kwargs: {}}
    train: {epochs: 3, optimizer: sgd, lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4,
            schedule: {name: multistep, milestones: [2], gamma: 0.2}, batch_size: 64,
            metric: top1, mode: max, limit_train_batches: null, limit_eval_batches: null,
            loader_workers: 0, overrides: {cifar100: {lr: 0.05}}}
    resources: {num_workers: 1, cpus_per_worker: 1, gpus_per_worker: 0, max_concurrent: null,
                max_failures: 0, start_ahead: 1}
    tracking: {uri: sqlite:///mlflow.db}  # $MLFLOW_TRACKING_URI wins
    storage: sna_results                  # Ray results; relative to the YAML's folder
    search: {space: {lr: {type: float, low: 1.0e-4, high: 0.1, log: true}}, n_trials: 8,
             metric: top1, mode: max, seed: 0}

Every error is a :class:`~orchestrator.errors.ConfigError` reading ``FILE:LINE: key.path:
message``; loading starts nothing and writes nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.errors import ConfigError
from sna_core.backbones import PLACEMENTS
from sna_core.backbones import STEMS as BACKBONE_STEMS
from sna_core.tasks import config as task_config

# ------------------------------------------------------------------------------------------------
# Vocabulary

AXES = ("dataset", "backbone", "attention", "rank_k", "placement", "seed", "stem", "detector")
REQUIRED_AXES = ("dataset", "backbone", "attention")
AXIS_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "rank_k": (1,),
    "placement": ("stem",),
    "seed": (0,),
    "stem": ("auto",),
    "detector": ("faster_rcnn",),
}
# A partial cell (exclude / include) may also select on the dataset's task.
PARTIAL_CELL_KEYS = AXES + ("task",)

# auto: the stem the dataset's DatasetInfo recommends (cifar for small images).
STEMS = ("auto",) + BACKBONE_STEMS
TASKS = ("classification", "multilabel", "detection")
# Attention blocks whose rank_k is a real hyper-parameter (SNA's rank-k approximation, Fig. 4).
RANKED_ATTENTIONS = frozenset({"sna"})
# The detectors of Table 3 / Table 4. They arrive with the detection issue; until sna_core grows a
# detector registry these are the names a plan accepts.
PLANNED_DETECTORS = ("faster_rcnn", "mask_rcnn")

# The train vocabulary is the task layer's (sna_core.tasks.config): one source of truth for what a
# trial accepts. A cell's train settings are completed with its defaults by validate_config.
OPTIMIZERS = task_config.OPTIMIZERS
SCHEDULES = task_config.SCHEDULE_KEYS  # name -> {parameter: default (None: required)}
MODES = task_config.MODES
TRAIN_KEYS = tuple(task_config.TRAIN_DEFAULTS)

TOP_LEVEL_KEYS = (
    "name", "description", "matrix", "grids", "exclude", "include", "datasets", "train",
    "resources", "tracking", "storage", "search",
)
GRID_KEYS = ("name", "matrix", "exclude", "include", "train")
DATASET_KEYS = ("name", "task", "root", "image_size", "num_classes", "kwargs")
TRAIN_KEYS = (
    "epochs", "optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size", "metric",
    "mode", "limit_train_batches", "limit_eval_batches", "loader_workers",
)
RESOURCE_KEYS = ("num_workers", "cpus_per_worker", "gpus_per_worker", "max_concurrent", "max_failures", "start_ahead")
SEARCH_KEYS = ("space", "n_trials", "metric", "mode", "seed")
SEARCH_PARAM_KEYS = ("type", "low", "high", "log", "step", "choices")
SEARCHABLE = ("lr", "momentum", "beta2", "weight_decay", "batch_size", "epochs")


# ------------------------------------------------------------------------------------------------
# Results of loading


@dataclass(frozen=True)
class Resources:
    """Ray resources of one trial: ``num_workers`` Ray Train workers of this size each."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_concurrent: int | None = None  # None: as many trials as the cluster fits
    max_failures: int = 0  # Train worker-group restarts and Tune retries per trial; -1: forever
    # Trials started beyond those that train at once: their Ray Train controllers start while the
    # running trials compute, then wait for CPUs (hides the controller's start-up). 0: off.
    start_ahead: int = 1


@dataclass(frozen=True)
class SearchSpace:
    """An Optuna search run inside every cell: ``n_trials`` samples of ``space``."""

    space: dict[str, dict[str, Any]]  # param -> {type: float|int|categorical, low, high, log, step, choices}
    n_trials: int
    metric: str | None  # None: the cell's train.metric
    mode: str | None  # None: the cell's train.mode
    seed: int | None  # the sampler's seed


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: an entry of the file
class PartialCell:
    """One entry of ``exclude`` or ``include``: axis (or ``task``) -> accepted values."""

    values: dict[str, tuple[Any, ...]]
    train: dict[str, Any] | None  # include only: a patch of train settings for its cells
    key: str  # its key path, e.g. "grids[0].exclude[1]"
    line: int | None

    def matches(self, cell: Mapping[str, Any]) -> bool:
        return all(cell[axis] in accepted for axis, accepted in self.values.items())


@dataclass(frozen=True)
class Grid:
    """A matrix with its own exclude / include lists (the whole file is one grid unless it uses
    ``grids:``)."""

    name: str
    matrix: dict[str, tuple[Any, ...]]  # every axis of AXES, defaults filled in
    exclude: tuple[PartialCell, ...]
    include: tuple[PartialCell, ...]
    train: dict[str, Any]  # a patch applied to every cell of the grid ({} for none)
    key: str  # "matrix" or "grids[i]"

    @property
    def matrix_key(self) -> str:
        return "matrix" if self.key == "matrix" else f"{self.key}.matrix"


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment file. ``orchestrator.plan.expand`` turns it into cells."""

    name: str
    path: str  # the YAML file, as given
    file_hash: str  # sha256 of the file's bytes (MLflow tag sna.config_hash)
    raw: dict  # the parsed YAML
    tracking_uri: str  # $MLFLOW_TRACKING_URI > tracking.uri > sqlite:///<yaml dir>/mlflow.db
    storage_path: str  # absolute Ray results path (default <yaml dir>/sna_results)
    resources: Resources
    search: SearchSpace | None
    datasets: dict[str, dict]  # entry -> {name, task, root, image_size, num_classes, kwargs}; root resolved
    train: dict[str, Any]  # the file's train settings as written (no overrides, no defaults)
    train_overrides: dict[str, dict[str, Any]]  # dataset entry -> train patch
    grids: tuple[Grid, ...]
    base_dir: str  # the YAML's folder, absolute
    description: str = ""
    lines: dict[str, int] = field(default_factory=dict, repr=False)  # key path -> 1-based line
    roots_as_written: dict[str, str | None] = field(default_factory=dict, repr=False)  # entry -> root text

    def line_of(self, key: str) -> int | None:
        """The line of ``key`` or of its nearest enclosing key."""
        return _line_of(self.lines, key)

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, line=self.line_of(key), key=key)


# ------------------------------------------------------------------------------------------------
# YAML with line numbers


class LineNumberLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also records the 1-based line of every mapping key and list item
    by key path (``matrix.rank_k[1]``), refuses duplicate keys and reads ``1e-4`` as a float."""

    def load_with_lines(self) -> tuple[Any, dict[str, int]]:
        node = self.get_single_node()
        if node is None:
            return None, {}
        lines: dict[str, int] = {}
        self._record(node, "", lines)
        return self.construct_document(node), lines

    def _record(self, node: yaml.Node, path: str, lines: dict[str, int]) -> None:
        if node.tag.startswith("tag:yaml.org,2002:python/"):
            raise _TagRefused(node, path)
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key_text = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                child = f"{path}.{key_text}" if path else str(key_text)
                if key_text in seen:
                    raise _DuplicateKey(key_node, child)
                seen.add(key_text)
                lines.setdefault(child, key_node.start_mark.line + 1)
                self._record(value_node, child, lines)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = f"{path}[{index}]"
                lines.setdefault(child, item.start_mark.line + 1)
                self._record(item, child, lines)


# YAML 1.1 reads "1e-4" (no dot) as a string; learning rates are written that way.
LineNumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _TagRefused(Exception):
    def __init__(self, node: yaml.Node, path: str) -> None:
        self.node, self.path = node, path


class _DuplicateKey(Exception):
    def __init__(self, node: yaml.Node, path: str) -> None:
        self.node, self.path = node, path


def read_yaml(path: str) -> tuple[Any, dict[str, int], bytes]:
    """Parse ``path`` safely: (data, key path -> line, the file's bytes)."""
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as error:
        raise ConfigError(f"cannot read the experiment file: {error.strerror}", path=path) from None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text (byte {error.start})", path=path) from None
    loader = LineNumberLoader(text)
    try:
        data, lines = loader.load_with_lines()
    except _TagRefused as refused:
        raise ConfigError(
            f"the tag {refused.node.tag.replace('tag:yaml.org,2002:', '!!')} is refused: experiment "
            "files are read with a safe loader, which builds plain data only",
            path=path, line=refused.node.start_mark.line + 1, key=refused.path or None,
        ) from None
    except _DuplicateKey as duplicate:
        raise ConfigError(
            "duplicate key (YAML would silently keep only the last one)",
            path=path, line=duplicate.node.start_mark.line + 1, key=duplicate.path,
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        detail = " ".join(part for part in (error.context, error.problem) if part)
        raise ConfigError(
            f"YAML syntax error: {detail}", path=path, line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"YAML error: {error}", path=path) from None
    finally:
        loader.dispose()
    return data, lines, content


def _line_of(lines: Mapping[str, int], key: str) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else ""
    return None


# ------------------------------------------------------------------------------------------------
# Registry names (read from sna_core, plugins included)


def known_datasets() -> list[str]:
    from sna_core.data import list_datasets

    return list_datasets()


def known_backbones() -> list[str]:
    from sna_core.backbones import list_backbones

    return list_backbones()


def known_attention() -> list[str]:
    from sna_core.attention import list_attention

    return list_attention()


def known_detectors() -> list[str]:
    try:
        from sna_core.detectors import list_detectors  # type: ignore[attr-defined]
    except ImportError:
        return list(PLANNED_DETECTORS)
    return list_detectors()


# ------------------------------------------------------------------------------------------------
# Validation helpers


class _Checker:
    """Turns a value at a key path into a typed value or a ConfigError naming file, line, key."""

    def __init__(self, path: str, lines: dict[str, int]) -> None:
        self.path, self.lines = path, lines

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, line=_line_of(self.lines, key), key=key or None)

    def mapping(self, value: Any, key: str, *, allowed: Iterable[str] | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping (key: value lines), got {_describe(value)}")
        if allowed is not None:
            allowed = tuple(allowed)
            for name in value:
                if name not in allowed:
                    child = f"{key}.{name}" if key else str(name)
                    raise self.error(child, f"unknown key {name!r}.{_hint(str(name), allowed)} Valid keys: {', '.join(allowed)}")
        return value

    def list_of(self, value: Any, key: str, *, allow_scalar: bool = True, allow_empty: bool = False) -> list:
        if isinstance(value, list):
            if not value and not allow_empty:
                raise self.error(key, "must be a non-empty list")
            return value
        if allow_scalar and value is not None and not isinstance(value, dict):
            return [value]
        raise self.error(key, f"must be a list, got {_describe(value)}")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {_describe(value)}")
        return value

    def integer(self, value: Any, key: str, *, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be an integer >= {minimum}, got {value}")
        return value

    def number(self, value: Any, key: str, *, minimum: float | None = None, exclusive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key, f"must be a number, got {_describe(value)}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise self.error(key, f"must be a number {'>' if exclusive else '>='} {minimum:g}, got {value!r}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {_describe(value)}")
        return value

    def choice(self, value: Any, key: str, choices: Iterable[str], kind: str) -> str:
        choices = list(choices)
        if not isinstance(value, str) or value not in choices:
            text = str(value)
            raise self.error(key, f"unknown {kind} {value!r}.{_hint(text, choices)} Known: {', '.join(choices) or '(none)'}")
        return value


# Spellings from other tools that difflib cannot connect to ours.
SYNONYMS = {
    "learning_rate": "lr", "wd": "weight_decay", "bs": "batch_size", "max_epochs": "epochs",
    "num_epochs": "epochs", "scheduler": "schedule", "lr_scheduler": "schedule", "optim": "optimizer",
    "workers": "num_workers", "k": "rank_k", "rank": "rank_k", "model": "backbone", "arch": "backbone",
    "mlflow": "tracking", "results": "storage", "storage_path": "storage",
}


def _hint(name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    if SYNONYMS.get(name) in choices:
        return f" Did you mean {SYNONYMS[name]!r}?"
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


# ------------------------------------------------------------------------------------------------
# Sections


def _check_datasets(check: _Checker, raw: Any, registry: list[str], base_dir: str) -> tuple[dict[str, dict], dict[str, str | None]]:
    from sna_core.data import dataset_info

    entries: dict[str, dict] = {}
    written_roots: dict[str, str | None] = {}
    section = check.mapping(raw if raw is not None else {}, "datasets")
    for entry_name, spec in section.items():
        key = f"datasets.{entry_name}"
        if not isinstance(entry_name, str):
            raise check.error("datasets", f"dataset entry names must be strings, got {_describe(entry_name)}")
        spec = check.mapping(spec if spec is not None else {}, key, allowed=DATASET_KEYS)
        registry_name = spec.get("name", entry_name)
        check.choice(registry_name, f"{key}.name" if "name" in spec else key, registry, "dataset")
        info = dataset_info(registry_name)
        entries[entry_name], written_roots[entry_name] = _resolve_dataset(check, key, spec, info, base_dir)
    return entries, written_roots


def _resolve_dataset(check: _Checker, key: str, spec: dict, info: Any, base_dir: str) -> tuple[dict, str | None]:
    task = spec.get("task", info.tasks[0])
    check.choice(task, f"{key}.task", TASKS, "task")
    if task not in info.tasks:
        raise check.error(f"{key}.task", f"dataset {info.name!r} cannot serve task {task!r}; it serves: {', '.join(info.tasks)}")
    root = spec.get("root")
    if root is not None:
        root = check.string(root, f"{key}.root")
    kwargs = check.mapping({} if spec.get("kwargs") is None else spec["kwargs"], f"{key}.kwargs")
    try:  # kwargs are part of the trial identity, which is hashed as JSON
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise check.error(f"{key}.kwargs", f"must hold plain JSON values (strings, numbers, booleans, lists, mappings): {error}") from None
    resolved = {
        "name": info.name,
        "task": task,
        "root": resolve_root(root, base_dir),
        "image_size": check.integer(spec.get("image_size", info.image_size), f"{key}.image_size", minimum=1),
        "num_classes": check.integer(spec.get("num_classes", info.classes_for(task)), f"{key}.num_classes", minimum=1),
        "kwargs": kwargs,
    }
    return resolved, root


def resolve_root(root: str | None, base_dir: str) -> str | None:
    """A dataset root as a worker needs it: ``~`` and ``$VARS`` expanded, relative to the YAML."""
    if root is None or "://" in root:
        return root
    expanded = os.path.expanduser(os.path.expandvars(root))
    return os.path.normpath(os.path.join(base_dir, expanded))


def _check_schedule(check: _Checker, value: Any, key: str) -> dict[str, Any]:
    shorthand = isinstance(value, str)  # `schedule: cosine` for `schedule: {name: cosine}`
    spec = check.mapping({"name": value} if shorthand else value, key)
    name = check.choice(spec.get("name"), key if shorthand or "name" not in spec else f"{key}.name", SCHEDULES, "schedule")
    params = SCHEDULES[name]
    check.mapping(spec, key, allowed=("name", *params))
    schedule: dict[str, Any] = {"name": name}
    for param, default in params.items():
        value_key = f"{key}.{param}"
        if param not in spec:
            if default is None and param != "t_max":  # t_max defaults to the epochs
                raise check.error(key, f"schedule {name!r} needs {param!r}")
            continue
        if param in ("step_size", "t_max"):
            schedule[param] = check.integer(spec[param], value_key, minimum=1)
        elif param == "gamma":
            gamma = check.number(spec[param], value_key, minimum=0.0, exclusive=True)
            if gamma > 1.0:  # 1 is allowed: the paper's "gamma 1, step 10" (never decays)
                raise check.error(value_key, f"must be in (0, 1], got {gamma!r}")
            schedule[param] = gamma
        elif param == "eta_min":
            schedule[param] = check.number(spec[param], value_key, minimum=0.0)
        else:  # milestones: epochs, strictly increasing
            milestones = [check.integer(m, f"{value_key}[{i}]", minimum=1) for i, m in enumerate(check.list_of(spec[param], value_key))]
            if milestones != sorted(set(milestones)):
                raise check.error(value_key, f"milestones must increase strictly, got {milestones}")
            schedule[param] = milestones
    return schedule


def _check_train_patch(check: _Checker, raw: Any, key: str) -> dict[str, Any]:
    """Validate a (partial) train mapping; returns it normalised (floats as floats, etc.)."""
    spec = check.mapping(raw if raw is not None else {}, key, allowed=TRAIN_KEYS)
    out: dict[str, Any] = {}
    for name, value in spec.items():
        k = f"{key}.{name}"
        if name == "epochs" or name == "batch_size":
            out[name] = check.integer(value, k, minimum=1)
        elif name == "loader_workers":
            out[name] = check.integer(value, k, minimum=0)
        elif name in ("limit_train_batches", "limit_eval_batches", "eval_batch_size"):
            out[name] = None if value is None else check.integer(value, k, minimum=1)
        elif name == "optimizer":
            out[name] = check.choice(value, k, OPTIMIZERS, "optimizer")
        elif name == "lr":
            out[name] = check.number(value, k, minimum=0.0, exclusive=True)
        elif name in ("momentum", "beta2"):
            out[name] = check.number(value, k, minimum=0.0)
            if out[name] >= 1.0:
                raise check.error(k, f"must be in [0, 1), got {value!r}")
        elif name == "weight_decay":
            out[name] = check.number(value, k, minimum=0.0)
        elif name == "nesterov":
            out[name] = check.boolean(value, k)
        elif name == "schedule":
            out[name] = _check_schedule(check, value, k)
        elif name == "metric":
            out[name] = None if value is None else check.string(value, k)
        elif name == "mode":
            out[name] = None if value is None else check.choice(value, k, MODES, "mode")
    return out


def _check_train(check: _Checker, raw: Any, dataset_names: set[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    section = check.mapping(raw, "train", allowed=TRAIN_KEYS + ("overrides",))
    if "epochs" not in section:
        raise check.error("train", "needs 'epochs' (an integer >= 1)")
    overrides_raw = section.get("overrides") or {}
    train = _check_train_patch(check, {k: v for k, v in section.items() if k != "overrides"}, "train")
    overrides: dict[str, dict[str, Any]] = {}
    for dataset, patch in check.mapping(overrides_raw, "train.overrides").items():
        key = f"train.overrides.{dataset}"
        if dataset not in dataset_names:
            known = sorted(dataset_names)
            raise check.error(key, f"unknown dataset {dataset!r}.{_hint(str(dataset), known)} Known: {', '.join(known)}")
        overrides[dataset] = _check_train_patch(check, patch, key)
    return train, overrides


def _check_resources(check: _Checker, raw: Any) -> Resources:
    spec = check.mapping(raw if raw is not None else {}, "resources", allowed=RESOURCE_KEYS)
    defaults = Resources()
    max_concurrent = spec.get("max_concurrent")
    return Resources(
        num_workers=check.integer(spec.get("num_workers", defaults.num_workers), "resources.num_workers", minimum=1),
        cpus_per_worker=check.number(spec.get("cpus_per_worker", defaults.cpus_per_worker), "resources.cpus_per_worker", minimum=0.0, exclusive=True),
        gpus_per_worker=check.number(spec.get("gpus_per_worker", defaults.gpus_per_worker), "resources.gpus_per_worker", minimum=0.0),
        max_concurrent=None if max_concurrent is None else check.integer(max_concurrent, "resources.max_concurrent", minimum=1),
        max_failures=check.integer(spec.get("max_failures", defaults.max_failures), "resources.max_failures", minimum=-1),
        start_ahead=check.integer(spec.get("start_ahead", defaults.start_ahead), "resources.start_ahead", minimum=0),
    )


def _check_search(check: _Checker, raw: Any) -> SearchSpace | None:
    if raw is None:
        return None
    spec = check.mapping(raw, "search", allowed=SEARCH_KEYS)
    if "space" not in spec:
        raise check.error("search", "needs 'space' (parameter -> {type, low, high, ...})")
    space: dict[str, dict[str, Any]] = {}
    space_raw = check.mapping(spec["space"], "search.space", allowed=SEARCHABLE)
    if not space_raw:
        raise check.error("search.space", f"must name at least one of: {', '.join(SEARCHABLE)}")
    for param, param_spec in space_raw.items():
        key = f"search.space.{param}"
        param_spec = check.mapping(param_spec, key, allowed=SEARCH_PARAM_KEYS)
        kind = check.choice(param_spec.get("type"), f"{key}.type" if "type" in param_spec else key, ("float", "int", "categorical"), "search type")
        entry: dict[str, Any] = {"type": kind}
        if kind == "categorical":
            choices = check.list_of(param_spec.get("choices"), f"{key}.choices", allow_scalar=False)
            entry["choices"] = choices
        else:
            for bound in ("low", "high"):
                if bound not in param_spec:
                    raise check.error(key, f"a {kind} parameter needs 'low' and 'high'")
            as_number = check.integer if kind == "int" else check.number
            low = as_number(param_spec["low"], f"{key}.low")
            high = as_number(param_spec["high"], f"{key}.high")
            if low >= high:
                raise check.error(f"{key}.high", f"must be greater than low ({low!r}), got {high!r}")
            log = check.boolean(param_spec.get("log", False), f"{key}.log")
            if log and low <= 0:
                raise check.error(f"{key}.low", f"a log-scale range needs low > 0, got {low!r}")
            entry.update(low=low, high=high, log=log)
            if "step" in param_spec:
                if log:
                    raise check.error(f"{key}.step", "a log-scale range takes no step (Optuna refuses both)")
                step = as_number(param_spec["step"], f"{key}.step")
                if step <= 0:
                    raise check.error(f"{key}.step", f"must be > 0, got {step!r}")
                entry["step"] = step
        space[param] = entry
    return SearchSpace(
        space=space,
        n_trials=check.integer(spec.get("n_trials", 1), "search.n_trials", minimum=1),
        metric=None if spec.get("metric") is None else check.string(spec["metric"], "search.metric"),
        mode=None if spec.get("mode") is None else check.choice(spec["mode"], "search.mode", MODES, "mode"),
        seed=None if spec.get("seed") is None else check.integer(spec["seed"], "search.seed"),
    )


class _AxisNames:
    """The valid values of each axis, read from sna_core's registries once per load."""

    def __init__(self, dataset_entries: Iterable[str]) -> None:
        self.registry_datasets = known_datasets()
        entries = list(dataset_entries)
        self.datasets = entries + [name for name in self.registry_datasets if name not in entries]
        self.names: dict[str, list[str]] = {
            "dataset": self.datasets,
            "backbone": known_backbones(),
            "attention": known_attention(),
            "placement": list(PLACEMENTS),
            "stem": list(STEMS),
            "detector": known_detectors(),
            "task": list(TASKS),
        }
        from sna_core.attention import ATTENTION
        from sna_core.backbones import BACKBONES
        from sna_core.data import DATASETS

        # A plugin that failed to import is named with its error, not as an unknown name.
        self.broken = {"attention": ATTENTION.broken(), "backbone": BACKBONES.broken(), "dataset": DATASETS.broken()}

    def value(self, check: _Checker, axis: str, value: Any, key: str) -> Any:
        if axis == "rank_k":
            return check.integer(value, key, minimum=1)
        if axis == "seed":
            return check.integer(value, key, minimum=0)
        if isinstance(value, str) and value in self.broken.get(axis, {}):
            raise check.error(key, f"{axis} plugin {value!r} failed to load: {self.broken[axis][value]}")
        return check.choice(value, key, self.names[axis], axis)

    def values(self, check: _Checker, axis: str, raw: Any, key: str) -> tuple[Any, ...]:
        items = check.list_of(raw, key)
        key_of = (lambda i: f"{key}[{i}]") if isinstance(raw, list) else (lambda i: key)
        checked = [self.value(check, axis, item, key_of(i)) for i, item in enumerate(items)]
        return tuple(dict.fromkeys(checked))  # a value listed twice is one value


def _check_partial_cells(check: _Checker, raw: Any, key: str, names: _AxisNames, *, include: bool) -> tuple[PartialCell, ...]:
    if raw is None:
        return ()
    items = check.list_of(raw, key, allow_scalar=False, allow_empty=True)
    allowed = PARTIAL_CELL_KEYS + (("train",) if include else ())
    cells = []
    for index, item in enumerate(items):
        item_key = f"{key}[{index}]"
        spec = check.mapping(item, item_key, allowed=allowed)
        if not any(name in PARTIAL_CELL_KEYS for name in spec):
            raise check.error(item_key, f"names no axis; use some of: {', '.join(PARTIAL_CELL_KEYS)}")
        values = {axis: names.values(check, axis, spec[axis], f"{item_key}.{axis}") for axis in PARTIAL_CELL_KEYS if axis in spec}
        if not include and "auto" in values.get("stem", ()):
            raise check.error(f"{item_key}.stem", "an exclude matches cells' resolved stems: name cifar or imagenet, not auto")
        train = _check_train_patch(check, spec["train"], f"{item_key}.train") if "train" in spec else None
        cells.append(PartialCell(values=values, train=train, key=item_key, line=_line_of(check.lines, item_key)))
    return tuple(cells)


def _check_matrix(check: _Checker, raw: Any, key: str, names: _AxisNames) -> dict[str, tuple[Any, ...]]:
    spec = check.mapping(raw, key, allowed=AXES)
    for axis in REQUIRED_AXES:
        if axis not in spec:
            raise check.error(key, f"needs the axis {axis!r} (required: {', '.join(REQUIRED_AXES)})")
    return {axis: names.values(check, axis, spec[axis], f"{key}.{axis}") if axis in spec else AXIS_DEFAULTS[axis] for axis in AXES}


def _check_grids(check: _Checker, raw: dict, names: _AxisNames) -> tuple[Grid, ...]:
    if "matrix" in raw and "grids" in raw:
        raise check.error("grids", "use either 'matrix' (one grid) or 'grids' (several), not both")
    if "matrix" not in raw and "grids" not in raw:
        raise check.error("", "needs 'matrix' (the grid's axes) or 'grids' (a list of sub-grids)")
    global_exclude = _check_partial_cells(check, raw.get("exclude"), "exclude", names, include=False)
    if "matrix" in raw:
        include = _check_partial_cells(check, raw.get("include"), "include", names, include=True)
        matrix = _check_matrix(check, raw["matrix"], "matrix", names)
        return (Grid(name="main", matrix=matrix, exclude=global_exclude, include=include, train={}, key="matrix"),)
    if "include" in raw:
        raise check.error("include", "with 'grids', put each include inside the grid whose matrix it extends")
    grids = []
    seen_names: dict[str, str] = {}
    for index, item in enumerate(check.list_of(raw["grids"], "grids", allow_scalar=False)):
        key = f"grids[{index}]"
        spec = check.mapping(item, key, allowed=GRID_KEYS)
        if "matrix" not in spec:
            raise check.error(key, "needs 'matrix'")
        name = check.string(spec.get("name", f"grid{index}"), f"{key}.name" if "name" in spec else key)
        if name in seen_names:
            raise check.error(f"{key}.name", f"grid name {name!r} is already used by {seen_names[name]}")
        seen_names[name] = key
        grids.append(Grid(
            name=name,
            matrix=_check_matrix(check, spec["matrix"], f"{key}.matrix", names),
            exclude=global_exclude + _check_partial_cells(check, spec.get("exclude"), f"{key}.exclude", names, include=False),
            include=_check_partial_cells(check, spec.get("include"), f"{key}.include", names, include=True),
            train=_check_train_patch(check, spec["train"], f"{key}.train") if "train" in spec else {},
            key=key,
        ))
    return tuple(grids)


def _tracking_uri(check: _Checker, raw: Any, base_dir: str, environ: Mapping[str, str]) -> str:
    """$MLFLOW_TRACKING_URI > tracking.uri > sqlite:///<yaml dir>/mlflow.db. A relative sqlite
    path is taken from the current folder when it comes from the environment and from the YAML's
    folder when the file names it (Ray workers run elsewhere, so the result is absolute)."""
    from_env = environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return _absolute_uri(check, from_env, os.getcwd(), "", "$MLFLOW_TRACKING_URI ")
    key = "tracking"
    uri = None
    if isinstance(raw, str):
        uri = check.string(raw, key)
    elif raw is not None:
        spec = check.mapping(raw, key, allowed=("uri",))
        key = "tracking.uri"
        uri = None if spec.get("uri") is None else check.string(spec["uri"], key)
    if uri is None:
        return "sqlite:///" + os.path.join(base_dir, "mlflow.db")
    return _absolute_uri(check, uri.strip(), base_dir, key, "")


def _absolute_uri(check: _Checker, uri: str, relative_to: str, key: str, source: str) -> str:
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if not scheme or scheme == "file":
        raise check.error(key, f"{source}{uri!r} is not a usable MLflow store: use sqlite:///path/to/mlflow.db, "
                               "http://host:port or postgresql://... (MLflow >= 3.13 refuses the plain-folder store)")
    if not uri.startswith("sqlite:///"):
        return uri
    path, question, query = uri[len("sqlite:///"):].partition("?")
    if not path or path == ":memory:" or os.path.isabs(path):
        return uri
    return "sqlite:///" + os.path.normpath(os.path.join(relative_to, os.path.expanduser(path))) + question + query


def _storage_path(check: _Checker, raw: Any, base_dir: str) -> str:
    if raw is None:
        return os.path.join(base_dir, "sna_results")
    text = check.string(raw, "storage")
    if "://" in text:
        return text
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(os.path.expandvars(text))))


def _used_datasets(grids: Iterable[Grid]) -> list[str]:
    used: dict[str, None] = {}
    for grid in grids:
        used.update(dict.fromkeys(grid.matrix["dataset"]))
        for partial in grid.include:
            used.update(dict.fromkeys(partial.values.get("dataset", ())))
    return list(used)


def load_experiment(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> ExperimentConfig:
    """Read and validate an experiment file. Raises ConfigError; starts and writes nothing."""
    path = os.fspath(path)
    environ = os.environ if environ is None else environ
    data, lines, content = read_yaml(path)
    check = _Checker(path, lines)
    if data is None:
        raise check.error("", "the file is empty; it needs at least 'name', 'matrix' and 'train'")
    raw = check.mapping(data, "", allowed=TOP_LEVEL_KEYS)
    if "name" not in raw:
        raise check.error("", "needs 'name' (the MLflow experiment name)")
    name = check.string(raw["name"], "name")
    description = "" if raw.get("description") is None else check.string(raw["description"], "description")
    base_dir = os.path.dirname(os.path.abspath(path))

    registry_datasets = known_datasets()
    datasets, roots = _check_datasets(check, raw.get("datasets"), registry_datasets, base_dir)
    names = _AxisNames(datasets)
    grids = _check_grids(check, raw, names)
    from sna_core.data import dataset_info

    for dataset in _used_datasets(grids):
        if dataset not in datasets:  # a registry name used directly: its registry defaults
            datasets[dataset], roots[dataset] = _resolve_dataset(check, f"datasets.{dataset}", {}, dataset_info(dataset), base_dir)
    if "train" not in raw:
        raise check.error("", "needs 'train' (at least train.epochs)")
    train, overrides = _check_train(check, raw["train"], set(names.datasets))

    return ExperimentConfig(
        name=name,
        path=path,
        file_hash=hashlib.sha256(content).hexdigest(),
        raw=raw,
        tracking_uri=_tracking_uri(check, raw.get("tracking"), base_dir, environ),
        storage_path=_storage_path(check, raw.get("storage"), base_dir),
        resources=_check_resources(check, raw.get("resources")),
        search=_check_search(check, raw.get("search")),
        datasets=datasets,
        train=train,
        train_overrides=overrides,
        grids=grids,
        base_dir=base_dir,
        description=description,
        lines=lines,
        roots_as_written=roots,
    )
