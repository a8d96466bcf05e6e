"""The dataset registry: names the experiment files use, with what a planner needs to know.

Every entry carries a :class:`DatasetInfo` (task, classes, image size, expected on-disk layout and
where the data comes from) so that a grid can be planned and validated before any loader runs
or any file is read. ``build_dataset(name, root, split, **kwargs)`` builds the torch Dataset.
Third-party datasets arrive through the entry-point group ``sna_core.datasets`` (an entry point
naming a :class:`DatasetInfo`).

Datasets of the paper (Combating spatial redundancy with spectral norm attention in convolutional
learners, Neurocomputing 2022, §4.1): CIFAR-100, ImageNet, COCO2017, VOC2012 and VinDr-CXR.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from sna_core._registry import Registry

TASKS = ("classification", "multilabel", "detection")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetRootError(FileNotFoundError):
    """A dataset root is missing or malformed. The message names the path, the expected layout and
    where the data comes from."""


@dataclass(frozen=True)
class ClassCounts:
    """How often each class occurs per split (the train/test columns of the paper's Table 4)."""

    splits: Mapping[str, tuple[int, ...]]  # split → one count per class, in class order
    unit: str  # what one count is, e.g. "images with the finding"
    source: str  # the file that was counted


class DatasetNotAvailableError(DatasetRootError):
    """The dataset is registered (so grids that name it can be planned) but its loader is not part
    of this release. A subclass of :class:`DatasetRootError` so that a pre-flight check that
    stops on unusable data stops on this too."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    tasks: tuple[str, ...]  # tasks this dataset can serve, the first is the default
    num_classes: int
    image_size: int  # the training crop / resize side, in pixels
    in_channels: int
    builder: Callable[..., Dataset] = field(repr=False)  # builder(root, split, task=..., **kwargs)
    # None: needs no files (embedded or generated data). The paper datasets' defaults are absolute,
    # under data_home() as read at import; a relative default is taken under data_home() on use.
    default_root: str | None = None
    layout: str = ""  # the expected on-disk layout, quoted in errors
    source: str = ""  # where to get the data, quoted in errors
    stem: str = "imagenet"  # the backbone stem that suits the image size ("cifar" for small images)
    train_size: int | None = None  # images per training epoch, for compute estimates
    splits: tuple[str, ...] = ("train", "val")
    needs_files: bool = True  # False for embedded or generated data (no root to check)
    # Paths relative to the root that must exist before a loader is worth starting.
    required_paths: tuple[str, ...] = ()
    # Where ``required_paths`` may sit below the root, tried in order (e.g. VOC's root may be the
    # folder holding VOCdevkit/, VOCdevkit/ itself or VOC2012/ itself). "" is the root.
    root_prefixes: tuple[str, ...] = ("",)
    class_names: tuple[str, ...] = ()  # index → name; empty when not known without reading data
    mean: tuple[float, ...] = IMAGENET_MEAN  # per-channel normalisation of [0, 1] pixels
    std: tuple[float, ...] = IMAGENET_STD
    available: bool = True  # False: registered for planning, loader not in this release
    notes: str = ""  # anything a planner should know (label conventions, paper deviations)
    # Outputs per task where a task differs from ``num_classes`` (VinDr-CXR: 14 findings for
    # detection, 15 multi-label outputs with "No finding").
    task_num_classes: Mapping[str, int] = field(default_factory=dict)
    # ``class_counts(root, task=..., **builder kwargs)`` → :class:`ClassCounts` for that task's
    # classes and the splits those kwargs give; raises DatasetRootError when it has nothing to
    # count. None: the dataset does not count its classes.
    class_counts: Callable[..., ClassCounts] | None = field(default=None, repr=False)

    def classes_for(self, task: str | None = None) -> int:
        """The number of model outputs (detection: classes without background) for ``task``."""
        return int(self.task_num_classes.get(task or self.tasks[0], self.num_classes))


DATASETS: Registry[DatasetInfo] = Registry("dataset", entry_point_group="sna_core.datasets")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    unknown = [task for task in info.tasks if task not in TASKS]
    if not info.tasks or unknown:
        raise ValueError(f"dataset {info.name!r}: tasks {info.tasks!r} must be a non-empty subset of {TASKS}")
    DATASETS.add(info.name, info)
    return info


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def data_home() -> str:
    """Where the paper datasets' default roots live: ``$SNA_DATA_HOME``, else ``~/sna_data``
    (read when sna_core.data is imported, for the built-in defaults)."""
    return os.path.expanduser(os.environ.get("SNA_DATA_HOME", "~/sna_data"))


def resolve_root(name: str, root: str | None = None) -> str | None:
    """The root a dataset will be read from: ``root`` if given, else the registered default.

    A default that is relative (``"cifar100"``) is taken under :func:`data_home`. ``None`` for
    datasets that need no files.
    """
    info = dataset_info(name)
    if root is None:
        if info.default_root is None:
            return None
        root = info.default_root
        if not os.path.isabs(os.path.expanduser(root)):
            root = os.path.join(data_home(), root)
    return os.path.abspath(os.path.expanduser(root))


def root_error(info: DatasetInfo, root: str | None, problem: str) -> DatasetRootError:
    """A :class:`DatasetRootError` for ``info`` at ``root``, quoting its layout and source."""
    parts = [f"dataset {info.name!r}: {problem} (root {root!r})."]
    if info.layout:
        parts.append(f"Expected layout: {info.layout}.")
    if info.source:
        parts.append(f"Source: {info.source}.")
    return DatasetRootError(" ".join(parts))


def check_root(name: str, root: str | None = None) -> str | None:
    """Check, without loading anything, that dataset ``name`` can be read from ``root``.

    Returns the resolved root (``None`` for datasets that need no files). Raises
    :class:`DatasetRootError` naming the path, the expected layout and the source when the root or
    one of the dataset's ``required_paths`` is missing, and :class:`DatasetNotAvailableError` for
    datasets whose loader is not in this release. Cheap enough for a pre-flight over a whole grid.
    """
    info = dataset_info(name)
    resolved = resolve_root(name, root)
    if info.needs_files:
        if resolved is None:
            raise root_error(info, resolved, "no root given and the dataset has no default root")
        if not os.path.isdir(resolved):
            raise root_error(info, resolved, "the root directory does not exist")
        missing = missing_required_paths(info, resolved)
        if missing:
            raise root_error(info, resolved, f"missing {', '.join(missing)}")
    if not info.available:
        raise not_available_error(info)
    return resolved


def missing_required_paths(info: DatasetInfo, root: str) -> list[str]:
    """``info.required_paths`` missing under ``root``: empty when every one exists below one of
    ``info.root_prefixes``, else those missing below the prefix that holds the most of them."""
    best: list[str] | None = None
    for prefix in info.root_prefixes:
        missing = [
            os.path.join(prefix, path) if prefix else path
            for path in info.required_paths
            if not os.path.exists(os.path.join(root, prefix, path))
        ]
        if not missing:
            return []
        if best is None or len(missing) < len(best):
            best = missing
    return best or []


def not_available_error(info: DatasetInfo) -> DatasetNotAvailableError:
    """The error for a dataset registered for planning whose loader is not in this release."""
    return DatasetNotAvailableError(
        f"dataset {info.name!r}: the loader is not in this release yet (the dataset is registered so "
        f"that grids naming it can be planned). {info.notes}".strip()
    )


def build_dataset(
    name: str, root: str | None = None, split: str = "train", *, task: str | None = None, **kwargs: Any
) -> Dataset:
    """Build dataset ``name``'s ``split`` from ``root`` (default: the dataset's own default root).

    ``task`` defaults to the dataset's first task; other keyword arguments go to the builder
    (e.g. ``image_size``, ``transform``, and the dataset's own knobs).
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(info.splits)}")
    task = task or info.tasks[0]
    if task not in info.tasks:
        raise ValueError(f"dataset {name!r} does not serve task {task!r}; its tasks: {', '.join(info.tasks)}")
    resolved = check_root(name, root)
    return info.builder(resolved, split, task=task, **kwargs)
