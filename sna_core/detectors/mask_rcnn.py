"""Mask R-CNN (He et al., Mask R-CNN, ICCV 2017) as torchvision implements it, on an sna_core
backbone.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), Table 3: ResNet-50-FPN on COCO2017 and on VOC2012 converted to COCO format
with instance masks. Trains on ``target["masks"]`` (the datasets are built with ``masks=True``).
On a single feature map the mask branch pools 14×14 from that map.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.ops import MultiScaleRoIAlign

from sna_core.detectors.faster_rcnn import constructor_options, single_map_defaults
from sna_core.detectors.registry import register_detector


@register_detector("mask_rcnn", masks=True, options=constructor_options(MaskRCNN))
def mask_rcnn(backbone: nn.Module, num_classes: int, **kwargs: Any) -> MaskRCNN:
    """torchvision's ``MaskRCNN`` on ``backbone``; ``num_classes`` includes the background."""
    defaults = single_map_defaults(backbone)
    if defaults:
        defaults["mask_roi_pool"] = MultiScaleRoIAlign(featmap_names=list(backbone.featmap_names), output_size=14, sampling_ratio=2)
    return MaskRCNN(backbone, num_classes=num_classes, **{**defaults, **kwargs})
