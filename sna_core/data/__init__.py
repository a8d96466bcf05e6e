"""Datasets: the paper's (CIFAR-100, ImageNet, COCO2017, VOC2012, VinDr-CXR), real offline ones
(Fashion-MNIST, scikit-learn digits) and the quickstart's generated set (``redundant_shapes``).

Detection datasets (``coco2017``, ``voc2012``, ``vindr_cxr`` with ``task="detection"``) return
``(image, target)`` items in torchvision's detection format; batch them with
:func:`detection_collate` and evaluate against their ``coco_ground_truth()`` (see
:mod:`sna_core.data.detection`).

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.1.
"""

# Importing a dataset's module registers it.
from sna_core.data import (  # noqa: F401
    cifar,
    coco,
    digits,
    fashion_mnist,
    imagenet,
    synthetic,
    vindr_cxr,
    voc,
)
from sna_core.data.detection import DetectionDataset, detection_collate
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
    "DetectionDataset",
    "build_dataset",
    "build_transform",
    "check_root",
    "data_home",
    "dataset_info",
    "detection_collate",
    "list_datasets",
    "register_dataset",
    "resolve_root",
]
