"""Faster R-CNN (Ren et al., Faster R-CNN: towards real-time object detection with region proposal
networks, NeurIPS 2015) as torchvision implements it, on an sna_core backbone.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), Tables 3 (ResNet-50-FPN, COCO2017 and VOC2012) and 4 (ResNet-18 and
DenseNet-121, VinDr-CXR).

On an FPN backbone the detector keeps torchvision's defaults (one anchor size per pyramid level,
RoIAlign over levels 0–3). On a single feature map it gets the five sizes 32–512 × three aspect
ratios on that map and 7×7 RoIAlign on it.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from sna_core.detectors.registry import register_detector

ANCHOR_SIZES = (32, 64, 128, 256, 512)
ASPECT_RATIOS = (0.5, 1.0, 2.0)


def constructor_options(detector_class: type) -> frozenset[str]:
    """The keyword arguments a torchvision R-CNN takes: its own and those it forwards to its
    resize transform."""

    def named(function: Any, skip: tuple[str, ...]) -> set[str]:
        parameters = inspect.signature(function).parameters.values()
        return {p.name for p in parameters if p.kind is not p.VAR_KEYWORD and p.name not in skip}

    return frozenset(
        named(detector_class.__init__, ("self", "backbone", "num_classes"))
        | named(GeneralizedRCNNTransform.__init__, ("self", "min_size", "max_size", "image_mean", "image_std"))
    )


def single_map_defaults(backbone: nn.Module) -> dict[str, Any]:
    """Anchors and box RoI pooling for a backbone with one feature map; {} for an FPN."""
    names = list(getattr(backbone, "featmap_names", []))
    if len(names) != 1:
        return {}
    return {
        "rpn_anchor_generator": AnchorGenerator(sizes=(ANCHOR_SIZES,), aspect_ratios=(ASPECT_RATIOS,)),
        "box_roi_pool": MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2),
    }


@register_detector("faster_rcnn", options=constructor_options(FasterRCNN))
def faster_rcnn(backbone: nn.Module, num_classes: int, **kwargs: Any) -> FasterRCNN:
    """torchvision's ``FasterRCNN`` on ``backbone``; ``num_classes`` includes the background."""
    return FasterRCNN(backbone, num_classes=num_classes, **{**single_map_defaults(backbone), **kwargs})
