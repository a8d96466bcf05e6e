"""Detectors (Faster R-CNN, Mask R-CNN) on sna_core backbones with attention placed.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.3, Tables 3 and 4.

    >>> from sna_core.detectors import build_detector
    >>> model = build_detector("faster_rcnn", "resnet50", 20, attention="sna", placement="stem")
"""

# Importing a detector's module registers it.
from sna_core.detectors import faster_rcnn, mask_rcnn  # noqa: F401
from sna_core.detectors.backbone import (
    FEATURE_SPECS,
    build_detection_backbone,
    copy_matching_weights,
)
from sna_core.detectors.registry import (
    DETECTORS,
    build_detector,
    detector_uses_masks,
    list_detectors,
    register_detector,
)

__all__ = [
    "DETECTORS",
    "FEATURE_SPECS",
    "build_detection_backbone",
    "build_detector",
    "copy_matching_weights",
    "detector_uses_masks",
    "list_detectors",
    "register_detector",
]
