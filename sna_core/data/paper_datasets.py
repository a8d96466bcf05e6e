"""COCO2017, VOC2012 and VinDr-CXR: registered for planning; their loaders come in a later release.

Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.1 and §4.3: Faster/Mask R-CNN on COCO2017 and VOC2012 (VOC converted
to COCO format with masks, evaluated on its validation set), and VinDr-CXR, which "localizes and
classifies 14 types of thoracic abnormalities" (images resized to 224×224 and scaled to 0–1).

Each entry carries what a planner needs (tasks, classes, image size, default root, layout,
source) so that grids naming them expand, estimate and check their roots. Building one checks the
root first (:class:`DatasetRootError` naming the path, layout and source) and then raises
:class:`DatasetNotAvailableError`: the loaders arrive with the detection issue.
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from sna_core.data.registry import DatasetInfo, check_root, data_home, dataset_info, not_available_error, register_dataset

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VINDR_FINDINGS = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
    "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
)


def _planning_only(name: str):
    def build(root: str | None, split: str, *, task: str = "detection", **kwargs: Any) -> Dataset:
        check_root(name, root)  # a missing root is reported first, as for every dataset
        raise not_available_error(dataset_info(name))

    build.__name__ = f"build_{name}"
    build.__doc__ = f"Check {name}'s root, then refuse: its loader is not in this release."
    return build


COCO2017 = register_dataset(
    DatasetInfo(
        name="coco2017",
        tasks=("detection",),
        num_classes=80,
        image_size=224,
        in_channels=3,
        builder=_planning_only("coco2017"),
        default_root=os.path.join(data_home(), "coco2017"),
        layout=(
            "ROOT/train2017/*.jpg, ROOT/val2017/*.jpg, ROOT/annotations/instances_train2017.json, "
            "ROOT/annotations/instances_val2017.json"
        ),
        source="https://cocodataset.org/#download (2017 Train/Val images, 2017 Train/Val annotations)",
        stem="imagenet",
        train_size=118287,
        required_paths=("train2017", "val2017", "annotations/instances_train2017.json", "annotations/instances_val2017.json"),
        class_names=COCO_CLASSES,
        available=False,
        notes=(
            "80 categories with non-contiguous ids 1..90 (torchvision detectors use num_classes=91: "
            "background 0 + ids up to 90); the paper trains Faster/Mask R-CNN R50-FPN in Detectron2, "
            "whose default input is short side 800 (image_size 224 is the paper's crop for natural images). "
            "The loader comes with the detection issue."
        ),
    )
)

VOC2012 = register_dataset(
    DatasetInfo(
        name="voc2012",
        tasks=("detection",),
        num_classes=20,
        image_size=224,
        in_channels=3,
        builder=_planning_only("voc2012"),
        default_root=os.path.join(data_home(), "voc2012"),
        layout=(
            "ROOT/VOCdevkit/VOC2012/{JPEGImages,Annotations,ImageSets/Main,ImageSets/Segmentation,"
            "SegmentationObject,SegmentationClass}"
        ),
        source="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar)",
        stem="imagenet",
        train_size=5717,
        required_paths=("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/Annotations", "VOCdevkit/VOC2012/ImageSets/Main"),
        class_names=VOC_CLASSES,
        available=False,
        notes=(
            "20 classes (+ background); the paper converts VOC to COCO format with masks for Mask R-CNN and "
            "evaluates on the val split (5,823 images; instance masks exist for 2,913 trainval images). "
            "The loader comes with the detection issue."
        ),
    )
)

VINDR_CXR = register_dataset(
    DatasetInfo(
        name="vindr_cxr",
        tasks=("detection", "multilabel"),
        num_classes=len(VINDR_FINDINGS),
        image_size=224,
        in_channels=1,
        builder=_planning_only("vindr_cxr"),
        default_root=os.path.join(data_home(), "vindr_cxr"),
        layout=(
            "ROOT/train.csv (image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max; one row per "
            "box and radiologist) and ROOT/train/<image_id>.dicom"
        ),
        source=(
            "https://physionet.org/content/vindr-cxr/ (credentialed access) or Kaggle's "
            "'VinBigData Chest X-ray Abnormalities Detection' competition data"
        ),
        stem="imagenet",
        train_size=15000,
        required_paths=("train.csv", "train"),
        class_names=VINDR_FINDINGS,
        mean=(0.0,),
        std=(1.0,),
        available=False,
        notes=(
            "14 findings (class_id 0..13) plus 'No finding' (class_id 14, empty boxes): detection uses the 14; "
            "multilabel classification may add 'No finding' as a 15th label. Grey DICOMs mixing MONOCHROME1 "
            "(invert) and MONOCHROME2; the paper resizes to 224×224 and scales to 0–1 (mean 0, std 1 here). "
            "The loader comes with the detection issue."
        ),
    )
)
