"""Metrics of the paper's tasks (Combating spatial redundancy with spectral norm attention in
convolutional learners, Neurocomputing 2022): top-k accuracy, multi-label AUROC, and detection AP
(COCO's via pycocotools; VOC-style at IoU > 0.4 for VinDr-CXR)."""

from sna_core.metrics.classification import (
    binary_auroc,
    multilabel_auroc,
    topk_accuracy,
    topk_correct,
)
from sna_core.metrics.detection import (
    COCO_STATS,
    ThresholdAP,
    all_point_ap,
    average_precision_at_iou,
    box_iou,
    coco_evaluate,
    coco_results,
    detection_entry,
    encode_masks,
)

__all__ = [
    "COCO_STATS",
    "ThresholdAP",
    "all_point_ap",
    "average_precision_at_iou",
    "binary_auroc",
    "box_iou",
    "coco_evaluate",
    "coco_results",
    "detection_entry",
    "encode_masks",
    "multilabel_auroc",
    "topk_accuracy",
    "topk_correct",
]
