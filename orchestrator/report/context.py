"""What every part of the report needs besides the groups: the epoch to read, links to MLflow runs,
complexity in the paper's units, and the dataset registry's class names and counts.

Report of Fang et al., "Combating spatial redundancy with spectral norm attention in
convolutional learners" (Neurocomputing 511, 2022).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sna_core.data.registry import ClassCounts

__all__ = ["ReportContext", "Skipped", "registry_class_counts", "registry_class_names", "run_url"]


@dataclass(frozen=True)
class Skipped:
    """A table, figure or claim the grid does not cover, and why (one line in the report)."""

    what: str
    reason: str

    def line(self) -> str:
        return f"{self.what} skipped: {self.reason}"


def run_url(ui_url: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    """``<ui>/#/experiments/<id>/runs/<run id>``: the MLflow UI's page of one run."""
    if not ui_url or not experiment_id or not run_id:
        return None
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def registry_class_names(dataset_name: str, count: int | None = None) -> list[str]:
    """Names of classes ``0..count-1`` from the dataset registry (``count`` None: all the registry
    names); ``class <i>`` where unknown.

    A dataset may name its multi-label outputs apart from its detection classes
    (``DatasetInfo.multilabel_class_names`` or ``task_class_names["multilabel"]``, e.g. VinDr-CXR's
    14 findings + "No finding").
    """
    names: Sequence[str] = ()
    try:
        from sna_core.data import dataset_info

        info = dataset_info(dataset_name)
        names = info.class_names
        if (count or 0) > len(names):  # more outputs than detection classes: the multi-label names
            names = getattr(info, "multilabel_class_names", None) or (
                getattr(info, "task_class_names", None) or {}).get("multilabel") or names
    except (KeyError, ValueError, LookupError):
        names = ()
    if count is None:
        return list(names)
    return [names[index] if index < len(names) else f"class {index}" for index in range(count)]


def registry_class_counts(dataset_name: str, task: str | None = None,
                          dataset: Mapping[str, Any] | None = None) -> ClassCounts | Skipped:
    """Per-class counts per split from the dataset registry (``DatasetInfo.class_counts``) for
    ``task``, at the root and with the builder kwargs of ``dataset`` (a trial config's
    ``dataset`` section; None: the registry's default root); else why there are none."""
    from sna_core.data import dataset_info
    from sna_core.data.registry import DatasetRootError, resolve_root

    dataset = dataset or {}
    try:
        info = dataset_info(dataset_name)
    except (KeyError, ValueError, LookupError):
        return Skipped("train/test counts", f"dataset {dataset_name!r} is not in the dataset registry")
    if info.class_counts is None:
        return Skipped("train/test counts", f"the dataset registry does not count the classes of {dataset_name!r}")
    try:
        root = resolve_root(dataset_name, dataset.get("root"))
        task = task or dataset.get("task") or info.tasks[0]
        return info.class_counts(root, task=task, **dict(dataset.get("kwargs") or {}))
    except (DatasetRootError, OSError, ValueError, TypeError) as error:
        return Skipped("train/test counts", f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class ReportContext:
    at: str = "final"  # "final" (last epoch) or "best" (best_<metric> where logged)
    ui_url: str | None = None  # the MLflow UI that serves the tracking store
    experiment_id: str | None = None
    paper_flops: Mapping[str, float] = field(default_factory=dict)  # group id → the paper's "FLOPs" (G)
    class_names: Callable[[str, int | None], list[str]] = registry_class_names
    # (dataset name, task, the trial config's dataset section or None) → counts, or why none
    class_counts: Callable[[str, str | None, Mapping[str, Any] | None], ClassCounts | Skipped] = registry_class_counts

    def run_url(self, run_id: str | None) -> str | None:
        return run_url(self.ui_url, self.experiment_id, run_id)
