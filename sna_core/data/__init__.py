"""Datasets: the paper's (CIFAR-100, ImageNet, COCO2017, VOC2012, VinDr-CXR), real offline ones
(Fashion-MNIST, scikit-learn digits) and the quickstart's generated set."""

from sna_core.data.registry import (
    DATASETS,
    DatasetInfo,
    DatasetRootError,
    build_dataset,
    dataset_info,
    list_datasets,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetRootError",
    "build_dataset",
    "dataset_info",
    "list_datasets",
    "register_dataset",
]
