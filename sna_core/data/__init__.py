"""Datasets: the paper's (CIFAR-100, ImageNet, COCO2017, VOC2012, VinDr-CXR), real offline ones
(Fashion-MNIST, scikit-learn digits) and the quickstart's generated set (``redundant_shapes``).

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.1.
"""

# Importing a dataset's module registers it.
from sna_core.data import cifar, digits, fashion_mnist, imagenet, paper_datasets, synthetic  # noqa: F401
from sna_core.data.registry import (
    DATASETS,
    DatasetInfo,
    DatasetNotAvailableError,
    DatasetRootError,
    build_dataset,
    check_root,
    data_home,
    dataset_info,
    list_datasets,
    register_dataset,
    resolve_root,
)
from sna_core.data.transforms import build_transform

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotAvailableError",
    "DatasetRootError",
    "build_dataset",
    "build_transform",
    "check_root",
    "data_home",
    "dataset_info",
    "list_datasets",
    "register_dataset",
    "resolve_root",
]
