"""The dataset registry: names the experiment files use, with what a planner needs to know.

Every entry carries a :class:`DatasetInfo` (task, classes, image size, expected on-disk layout and
where the data comes from) so that a grid can be planned and validated before any loader runs
or any file is read. ``build_dataset(name, root, split, **kwargs)`` builds the torch Dataset.
Third-party datasets arrive through the entry-point group ``sna_core.datasets`` (an entry point
naming a :class:`DatasetInfo`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch.utils.data import Dataset

from sna_core._registry import Registry

TASKS = ("classification", "multilabel", "detection")


class DatasetRootError(FileNotFoundError):
    """A dataset root is missing or malformed. The message names the path, the expected layout and
    where the data comes from."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    tasks: tuple[str, ...]  # tasks this dataset can serve, the first is the default
    num_classes: int
    image_size: int  # the training crop / resize side, in pixels
    in_channels: int
    builder: Callable[..., Dataset] = field(repr=False)  # builder(root, split, task=..., **kwargs)
    default_root: str | None = None  # None: needs no files (embedded or generated data)
    layout: str = ""  # the expected on-disk layout, quoted in errors
    source: str = ""  # where to get the data, quoted in errors
    stem: str = "imagenet"  # the backbone stem that suits the image size ("cifar" for small images)
    train_size: int | None = None  # images per training epoch, for compute estimates
    splits: tuple[str, ...] = ("train", "val")
    needs_files: bool = True  # False for embedded or generated data (no root to check)


DATASETS: Registry[DatasetInfo] = Registry("dataset", entry_point_group="sna_core.datasets")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    DATASETS.add(info.name, info)
    return info


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def build_dataset(name: str, root: str | None = None, split: str = "train", **kwargs: Any) -> Dataset:
    """Build dataset ``name``'s ``split`` from ``root`` (default: the dataset's own default root)."""
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(info.splits)}")
    return info.builder(root if root is not None else info.default_root, split, **kwargs)
