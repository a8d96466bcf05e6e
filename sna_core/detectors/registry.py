"""The detector registry: string names → factories building a torchvision R-CNN on a backbone.

A detector factory has the signature::

    factory(backbone, num_classes, **detector_kwargs) -> nn.Module

where ``backbone`` comes from :func:`sna_core.detectors.backbone.build_detection_backbone` (it
carries ``out_channels`` and ``featmap_names``) and ``num_classes`` already counts the
background. Third-party detectors arrive through the entry-point group ``sna_core.detectors``.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.3: Faster R-CNN (Ren et al., NeurIPS 2015) and Mask R-CNN (He et al.,
ICCV 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from sna_core._registry import Registry, closest
from sna_core.detectors.backbone import build_detection_backbone

DetectorFactory = Callable[..., nn.Module]
# build_detector's own keyword arguments beside the factory's (settable in a trial config's
# model.detector_kwargs too).
BUILD_OPTIONS = ("fpn", "pretrained_backbone")


def _check_factory(name: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"detector plugin {name!r} is a {type(obj).__name__}, not a callable factory")


DETECTORS: Registry[DetectorFactory] = Registry("detector", entry_point_group="sna_core.detectors", validate=_check_factory)
# Detectors whose targets need instance masks (the datasets are then built with masks=True).
MASK_DETECTORS: set[str] = set()
# The keyword arguments each built-in factory accepts (checked before building: torchvision's
# resize transform silently swallows unknown ones). Plugins without a declaration are not checked.
DETECTOR_OPTIONS: dict[str, frozenset[str]] = {}


def register_detector(
    name: str, *, override: bool = False, masks: bool = False, options: Iterable[str] | None = None
) -> Callable[[DetectorFactory], DetectorFactory]:
    """Decorator registering a detector factory as ``name``; ``masks=True`` when it trains on
    masks; ``options``: the keyword arguments it accepts (None: not checked)."""

    def decorator(factory: DetectorFactory) -> DetectorFactory:
        DETECTORS.add(name, factory, override=override)
        if masks:
            MASK_DETECTORS.add(name)
        if options is not None:
            DETECTOR_OPTIONS[name] = frozenset(options)
        return factory

    return decorator


def check_detector_options(name: str, options: Iterable[str]) -> None:
    """Raise ValueError naming the options detector ``name`` does not take (with the closest one)."""
    known = DETECTOR_OPTIONS.get(name)
    if known is None:
        return
    valid = sorted(known | set(BUILD_OPTIONS))
    for option in options:
        if option not in valid:
            hint = closest(option, valid)
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(f"detector {name!r} takes no option {option!r}.{suggestion} Options: {', '.join(valid)}")


def list_detectors() -> list[str]:
    """Sorted names of every available detector, plugins included."""
    return DETECTORS.names()


def detector_uses_masks(name: str) -> bool:
    DETECTORS.get(name)  # unknown names fail here, with the list of known detectors
    return name in MASK_DETECTORS


def build_detector(
    name: str,
    backbone: str,
    num_classes: int,
    *,
    attention: str = "none",
    placement: str = "stem",
    attention_kwargs: Mapping[str, Any] | None = None,
    stages: Iterable[int] | None = None,
    fpn: bool = True,
    pretrained_backbone: bool = False,
    stem: str = "imagenet",
    in_channels: int = 3,
    **detector_kwargs: Any,
) -> nn.Module:
    """Detector ``name`` on sna_core backbone ``backbone`` with attention ``attention`` at ``placement``.

    Args:
        name: a name from :func:`list_detectors` ("faster_rcnn", "mask_rcnn").
        backbone: "resnet18", "resnet50" or "densenet121" (see
            :data:`sna_core.detectors.backbone.FEATURE_SPECS`).
        num_classes: object classes WITHOUT the background (80 for COCO, 20 for VOC, 14 for
            VinDr-CXR); the detector predicts ``num_classes + 1`` (label 0 = background).
        attention, placement, attention_kwargs, stages, stem, in_channels: as for
            :func:`sna_core.backbones.build_backbone`.
        fpn: a feature pyramid over the four stages (True, the paper's R50-FPN) or the last
            stage's map alone (False, the authors' detection code).
        pretrained_backbone: load torchvision's ImageNet weights into the backbone (False: from
            scratch, as the paper trains).
        detector_kwargs: passed to torchvision's ``FasterRCNN`` / ``MaskRCNN`` (``min_size``,
            ``max_size``, ``image_mean``, ``box_detections_per_img``, ...).
    """
    factory = DETECTORS.get(name)
    check_detector_options(name, detector_kwargs)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1 (object classes, background excluded), got {num_classes!r}")
    if in_channels != 3:
        for key in ("image_mean", "image_std"):
            if key not in detector_kwargs:
                raise ValueError(f"in_channels={in_channels}: give {key} with {in_channels} values (the defaults are ImageNet's 3)")
    features = build_detection_backbone(
        backbone, attention=attention, placement=placement, attention_kwargs=attention_kwargs, stages=stages,
        stem=stem, in_channels=in_channels, fpn=fpn, pretrained=pretrained_backbone,
    )
    return factory(features, num_classes + 1, **detector_kwargs)
