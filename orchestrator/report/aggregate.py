"""Runs → groups of seeds: mean, standard deviation (ddof = 1) and n per cell of the grid minus its
seed axis.

The comparison tables of Fang et al., "Combating spatial redundancy with spectral norm attention
in convolutional learners" (Neurocomputing 511, 2022, Tables 1–4, Figs. 4–5) print one number per
method; a sweep has several seeds per method. A :class:`Group` is every run that differs only in
its seed: same dataset, task, backbone, stem, detector, attention, rank-k, placement and *recipe*
(the cell's resolved ``train`` settings, so that the same axes trained two ways, e.g. the paper's
optimiser and the authors' code recipe, are two groups and never mix).

Only FINISHED runs give numbers; a FAILED/KILLED run counts as failed, RUNNING as running, and a
SCHEDULED run or a planned cell without a run (``MISSING``) as missing. A value a finished run did
not log, or logged as NaN, or an AP logged as -1 (pycocotools' "undefined"), is left out (never
read as 0). With an Optuna ``search:`` only each
cell's best trial (tag ``sna.best=true``) enters a group.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

__all__ = [
    "GROUP_AXES",
    "STATES",
    "Group",
    "RunRecord",
    "Stat",
    "aggregate_table",
    "annotate_results",
    "attention_sort_key",
    "build_groups",
    "label",
    "state_of_status",
]

# A group is one value of each of these; the seed axis is what is aggregated over.
GROUP_AXES: tuple[str, ...] = ("dataset", "task", "backbone", "stem", "detector", "attention", "rank_k",
                               "placement", "recipe")
FINISHED, FAILED, RUNNING, MISSING = "finished", "failed", "running", "missing"
STATES: tuple[str, ...] = (FINISHED, FAILED, RUNNING, MISSING)
_STATE_OF_STATUS = {"FINISHED": FINISHED, "FAILED": FAILED, "KILLED": FAILED, "RUNNING": RUNNING,
                    "SCHEDULED": MISSING, "MISSING": MISSING}

# The paper's column order (Tables 1–4): the backbone alone first, local then global attention, SNA last.
_ATTENTION_ORDER = ("none", "se", "eca", "sa", "aa", "cbam", "sna")
_LABELS = {
    "none": "none", "se": "SE", "eca": "ECA", "sa": "SA", "aa": "AA", "cbam": "CBAM", "sna": "SNA",
    "resnet18": "ResNet-18", "resnet50": "ResNet-50", "densenet121": "DenseNet-121",
    "faster_rcnn": "Faster R-CNN", "mask_rcnn": "Mask R-CNN",
    "cifar100": "CIFAR-100", "imagenet": "ImageNet", "coco2017": "COCO2017", "voc2012": "VOC2012",
    "vindr_cxr": "VinDr-CXR", "fashion_mnist": "Fashion-MNIST",
}


def label(name: Any) -> str:
    """How the paper writes an axis value (``resnet18`` → ``ResNet-18``); unknown names as they are."""
    return _LABELS.get(str(name), str(name))


def attention_sort_key(name: str) -> tuple[int, str]:
    """Sort attentions in the paper's column order, unknown (plugin) blocks after, by name."""
    return (_ATTENTION_ORDER.index(name), "") if name in _ATTENTION_ORDER else (len(_ATTENTION_ORDER), name)


def state_of_status(status: str | None) -> str:
    """finished / failed / running / missing for an MLflow status (or results' ``MISSING``)."""
    return _STATE_OF_STATUS.get(status or "MISSING", MISSING)


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (ddof = 1; None below two values) and n of some values."""

    mean: float | None
    std: float | None
    n: int
    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        kept = tuple(float(value) for value in values)
        if not kept:
            return cls(None, None, 0, ())
        return cls(statistics.fmean(kept), statistics.stdev(kept) if len(kept) > 1 else None, len(kept), kept)


@dataclass(frozen=True)
class RunRecord:
    """One row of the results table as a group sees it."""

    key: str
    run_id: str | None
    status: str
    seed: int | None
    metrics: Mapping[str, float]
    failure_reason: str | None = None
    row: int = -1  # index in the results table

    @property
    def state(self) -> str:
        return state_of_status(self.status)

    def value(self, candidates: Sequence[str]) -> float | None:
        """The first of ``candidates`` this run logged as a finite number (None if none)."""
        for name in candidates:
            value = self.metrics.get(name)
            if value is not None and math.isfinite(value):
                return float(value)
        return None


@dataclass
class Group:
    """The runs of one cell of the grid without its seed axis."""

    axes: dict[str, Any]
    dataset_name: str  # the registry name (the axis may be an alias such as vindr_cxr_cls)
    recipe_label: str  # "" when the dataset has one recipe; else the grid that defines it
    grid: str
    config: Mapping[str, Any] | None  # one cell's resolved trial config (read-only)
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def id(self) -> str:
        """A short stable name for the group (for file names and links)."""
        text = json.dumps([self.axes.get(axis) for axis in GROUP_AXES], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def counts(self) -> dict[str, int]:
        found = Counter(run.state for run in self.runs)
        return {state: found.get(state, 0) for state in STATES}

    def stat(self, candidates: Sequence[str] | str) -> Stat:
        """The statistic over finished runs of the first candidate metric each run logged."""
        names = (candidates,) if isinstance(candidates, str) else tuple(candidates)
        return Stat.of(value for run in self.runs if run.state == FINISHED
                       if (value := run.value(names)) is not None)

    def state(self, candidates: Sequence[str] | str = ()) -> str:
        """``value`` when some finished run has the metric; else why not: ``na`` (finished runs
        without it), ``failed``, ``running`` or ``missing``."""
        if candidates and self.stat(candidates).n:
            return "value"
        counts = self.counts()
        if counts[FINISHED]:
            return "na" if candidates else "value"
        if counts[FAILED]:
            return FAILED
        if counts[RUNNING]:
            return RUNNING
        return MISSING

    def image_size(self) -> int | None:
        size = (self.config or {}).get("dataset", {}).get("image_size")
        return int(size) if isinstance(size, int) else None

    def method(self, *, with_rank: bool = False, with_placement: bool = False, with_recipe: bool = False) -> str:
        """The method's label (``SNA``, ``SNA k=2``, ``SNA (blocks)``)."""
        text = label(self.axes["attention"])
        if with_rank and self.axes.get("rank_k") is not None:
            text += f" k={self.axes['rank_k']}"
        if with_placement:
            text += f" ({self.axes['placement']})"
        if with_recipe and self.recipe_label:
            text += f" [{self.recipe_label}]"
        return text


# pycocotools / sna_core.metrics.detection write -1 for an AP that is undefined (no small objects,
# a class without ground truth): not a value.
_AP_METRIC = re.compile(r"^(?:final_|best_)?(?:bbox_|segm_)?ap(?:\d+|s|m|l)?(?:_|$)")


def _is_value(name: str, value: float) -> bool:
    return not (value < 0 and _AP_METRIC.match(name))


def _recipe(train: Mapping[str, Any] | None) -> str:
    text = json.dumps(train or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _train_of_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name.startswith("params.train.")}


def build_groups(table: pa.Table, cells: Iterable[Any] | None = None) -> list[Group]:
    """Group the rows of :func:`orchestrator.results.results_table` over seeds, in plan order.

    ``cells`` (the plan's :class:`orchestrator.plan.Cell` list) supplies stem, detector, grid and
    the unsampled train settings; without it they come from the logged params.
    """
    cell_by_key = {cell.key: cell for cell in cells or ()}
    groups: dict[tuple, Group] = {}
    grids_of_recipe: dict[tuple[str, str, str], Counter] = {}
    for index, row in enumerate(table.to_pylist()):
        if row.get("search_cell") and row.get("search_best") is not True:
            continue  # an Optuna trial that is not its cell's best
        cell = cell_by_key.get(row.get("search_cell") or row["key"])
        config = cell.config if cell is not None else None
        if cell is not None:
            stem, detector, grid = cell.stem, cell.detector, cell.grid
            recipe = _recipe(config.get("train"))
            dataset_name = config["dataset"]["name"]
        else:
            stem, detector, grid = row.get("params.model.stem"), row.get("params.model.detector"), ""
            recipe = _recipe(_train_of_row(row))
            dataset_name = row.get("params.dataset.name") or row["dataset"]
        axes = {"dataset": row["dataset"], "task": row["task"], "backbone": row["backbone"], "stem": stem,
                "detector": detector, "attention": row["attention"], "rank_k": row["rank_k"],
                "placement": row["placement"], "recipe": recipe}
        group_key = tuple(axes[axis] for axis in GROUP_AXES)
        group = groups.get(group_key)
        if group is None:
            group = groups[group_key] = Group(axes=axes, dataset_name=dataset_name, recipe_label="", grid=grid,
                                              config=config)
        metrics = {name[len("metrics."):]: value for name, value in row.items()
                   if name.startswith("metrics.") and value is not None and _is_value(name[len("metrics."):], value)}
        group.runs.append(RunRecord(key=row["key"], run_id=row["run_id"], status=row["status"], seed=row["seed"],
                                    metrics=metrics, failure_reason=row.get("failure_reason"), row=index))
        grids_of_recipe.setdefault((row["dataset"], row["task"], recipe), Counter())[grid] += 1
    recipes_of_dataset: dict[tuple[str, str], set[str]] = {}
    for dataset, task, recipe in grids_of_recipe:
        recipes_of_dataset.setdefault((dataset, task), set()).add(recipe)
    for group in groups.values():
        dataset, task, recipe = group.axes["dataset"], group.axes["task"], group.axes["recipe"]
        if len(recipes_of_dataset[(dataset, task)]) > 1:
            grid = grids_of_recipe[(dataset, task, recipe)].most_common(1)[0][0]
            group.recipe_label = grid or f"recipe {recipe}"
    return list(groups.values())


def annotate_results(table: pa.Table, groups: Sequence[Group]) -> pa.Table:
    """``table`` with the group columns added: ``stem``, ``detector``, ``grid``, ``recipe``,
    ``recipe_label`` and ``group_id`` (null for rows outside every group, e.g. Optuna trials
    that are not their cell's best)."""
    columns: dict[str, list[Any]] = {name: [None] * table.num_rows
                                     for name in ("group_id", "stem", "detector", "grid", "recipe", "recipe_label")}
    for group in groups:
        for run in group.runs:
            columns["group_id"][run.row] = group.id
            columns["stem"][run.row] = group.axes["stem"]
            columns["detector"][run.row] = group.axes["detector"]
            columns["grid"][run.row] = group.grid
            columns["recipe"][run.row] = group.axes["recipe"]
            columns["recipe_label"][run.row] = group.recipe_label
    for name, values in columns.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, pa.array(values, type=pa.string()))
    return table


def aggregate_table(groups: Sequence[Group]) -> pa.Table:
    """One row per group: its axes, run counts per state, seeds and run ids, and for every metric
    ``<metric>.mean``, ``<metric>.std`` (ddof = 1, null below two values) and ``<metric>.n``."""
    metric_names = sorted({name for group in groups for run in group.runs for name in run.metrics})
    columns: dict[str, tuple[pa.DataType, list[Any]]] = {
        "group_id": (pa.string(), [group.id for group in groups]),
        **{axis: (pa.int64() if axis == "rank_k" else pa.string(), [group.axes[axis] for group in groups])
           for axis in GROUP_AXES},
        "recipe_label": (pa.string(), [group.recipe_label for group in groups]),
        "grid": (pa.string(), [group.grid for group in groups]),
        "n_runs": (pa.int64(), [len(group.runs) for group in groups]),
        **{f"n_{state}": (pa.int64(), [group.counts()[state] for group in groups]) for state in STATES},
        "seeds": (pa.list_(pa.int64()), [[run.seed for run in group.runs] for group in groups]),
        "run_ids": (pa.list_(pa.string()), [[run.run_id for run in group.runs] for group in groups]),
        "statuses": (pa.list_(pa.string()), [[run.status for run in group.runs] for group in groups]),
    }
    for name in metric_names:
        stats = [group.stat(name) for group in groups]
        columns[f"{name}.mean"] = (pa.float64(), [stat.mean for stat in stats])
        columns[f"{name}.std"] = (pa.float64(), [stat.std for stat in stats])
        columns[f"{name}.n"] = (pa.int64(), [stat.n for stat in stats])
    return pa.table({name: pa.array(values, type=kind) for name, (kind, values) in columns.items()})
