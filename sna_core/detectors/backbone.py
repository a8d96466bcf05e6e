"""Detection backbones: an sna_core classifier backbone (attention already placed) turned into the
feature extractor a torchvision R-CNN consumes.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.3: Faster/Mask R-CNN on ResNet-50 with FPN (COCO2017, VOC2012) and
Faster R-CNN on ResNet-18 and DenseNet-121 (VinDr-CXR). FPN: Lin et al., Feature pyramid
networks for object detection (CVPR 2017), as torchvision builds it.

The backbone comes from :func:`sna_core.backbones.build_backbone`, which inserts attention by
*replacing* modules the architecture already calls; torchvision's ``IntermediateLayerGetter``
walks the trunk's children in order, so the stem attention (after the max-pool) and the block
attention run inside the detector's forward. The classifier head (pooling, ``fc`` / DenseNet's
``norm5``) is left out: the getter stops at the last stage it returns.

Two feature layouts (``fpn``):

- ``fpn=True`` (default, the paper's R50-FPN): the outputs of the four stages (strides 4, 8, 16,
  32) feed a 256-channel FPN plus a max-pooled fifth level, with torchvision's default anchors
  (one size per level, 32–512) and RoI pooling over levels ``0``–``3``.
- ``fpn=False``: the last stage's map alone (stride 32), as the authors' detection code did
  (torchvision ``FasterRCNN`` on a single ResNet-18 map); the detector then gets five anchor
  sizes on that one level.

Stages per backbone (:data:`FEATURE_SPECS`): ResNet ``layer1``–``layer4``; DenseNet-121 the
outputs of ``denseblock1``–``denseblock4`` (256, 512, 1024, 1024 channels: the concatenated
features of each block, before the transition that halves them), so DenseNet-121 gets an FPN over
its four dense blocks, or with ``fpn=False`` the last dense block's map.

Normalisation stays the backbone's own ``BatchNorm2d`` in training mode: the paper trains
detectors from scratch. (torchvision freezes BatchNorm only when it loads ImageNet weights.)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from sna_core._registry import Registry
from sna_core.backbones import build_backbone

FPN_CHANNELS = 256
FPN_FEATURE_MAPS = ("0", "1", "2", "3")  # the levels RoI pooling reads (torchvision's default)
SINGLE_FEATURE_MAPS = ("0",)
# The ImageNet weights torchvision's own detectors start from.
PRETRAINED_WEIGHTS = "IMAGENET1K_V1"


@dataclass(frozen=True)
class FeatureSpec:
    """Where a backbone's four stages are: the module to walk, its children that end each stage
    (strides 4, 8, 16, 32), and their output channels."""

    trunk: Callable[[nn.Module], nn.Module]
    stages: tuple[str, str, str, str]
    channels: Callable[[nn.Module], tuple[int, ...]]


def _resnet_channels(model: nn.Module) -> tuple[int, ...]:
    return tuple(64 * 2**index * type(getattr(model, f"layer{index + 1}")[-1]).expansion for index in range(4))


def _densenet_channels(model: nn.Module) -> tuple[int, ...]:
    features = model.features
    # A dense block's output is the input of the transition after it (or of norm5 for the last).
    return tuple(getattr(features, f"transition{index}").norm.num_features for index in (1, 2, 3)) + (features.norm5.num_features,)


_RESNET = FeatureSpec(lambda model: model, ("layer1", "layer2", "layer3", "layer4"), _resnet_channels)
_DENSENET = FeatureSpec(lambda model: model.features, ("denseblock1", "denseblock2", "denseblock3", "denseblock4"), _densenet_channels)

FEATURE_SPECS: Registry[FeatureSpec] = Registry("detection backbone")
FEATURE_SPECS.add("resnet18", _RESNET)
FEATURE_SPECS.add("resnet50", _RESNET)
FEATURE_SPECS.add("densenet121", _DENSENET)


class SingleFeatureMap(nn.Module):
    """The last stage's feature map as the one level ``"0"`` (``fpn=False``)."""

    def __init__(self, trunk: nn.Module, last_stage: str, channels: int) -> None:
        super().__init__()
        self.body = IntermediateLayerGetter(trunk, return_layers={last_stage: SINGLE_FEATURE_MAPS[0]})
        self.out_channels = channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.body(images)


def copy_matching_weights(model: nn.Module, reference: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy ``reference`` (a plain torchvision state dict) into ``model`` where names and shapes
    match, reading through the ``.module`` level that attention insertion adds
    (``layer1.0.bn2.module.weight`` ← ``layer1.0.bn2.weight``). Returns the keys of ``model``
    left as initialised (attention parameters, convolutions an attention block replaced)."""
    state = model.state_dict()
    untouched = []
    for key, value in state.items():
        source = reference.get(key.replace(".module.", "."))
        if source is None or source.shape != value.shape:
            untouched.append(key)
            continue
        state[key] = source.clone()
    model.load_state_dict(state)
    return untouched


def _load_pretrained(model: nn.Module, backbone: str) -> None:
    from torchvision.models import get_model

    try:
        reference = get_model(backbone, weights=PRETRAINED_WEIGHTS)
    except Exception as error:  # offline, or an architecture without those weights
        raise RuntimeError(
            f"pretrained_backbone=True: could not get torchvision's {backbone} {PRETRAINED_WEIGHTS} weights "
            f"({type(error).__name__}: {error}); they download once into $TORCH_HOME (default ~/.cache/torch)"
        ) from error
    copy_matching_weights(model, reference.state_dict())


def build_detection_backbone(
    name: str,
    *,
    attention: str = "none",
    placement: str = "stem",
    attention_kwargs: Mapping[str, Any] | None = None,
    stages: Iterable[int] | None = None,
    stem: str = "imagenet",
    in_channels: int = 3,
    fpn: bool = True,
    pretrained: bool = False,
) -> nn.Module:
    """The R-CNN backbone of sna_core backbone ``name`` with attention placed.

    Returns a module mapping images [B, C, H, W] to an ordered dict of feature maps, with the
    attributes torchvision's detectors read: ``out_channels`` and ``featmap_names`` (the levels
    RoI pooling uses).
    """
    spec = FEATURE_SPECS.get(name)
    # 1000 outputs: torchvision's classifier shape, so ImageNet weights load whole; the head is dropped.
    model = build_backbone(
        name, 1000, stem=stem, attention=attention, placement=placement,
        attention_kwargs=attention_kwargs, stages=stages, in_channels=in_channels,
    )
    if pretrained:
        _load_pretrained(model, name)
    trunk, channels = spec.trunk(model), spec.channels(model)
    extractor: nn.Module
    if fpn:
        extractor = BackboneWithFPN(
            trunk,
            return_layers={stage: level for stage, level in zip(spec.stages, FPN_FEATURE_MAPS)},
            in_channels_list=list(channels),
            out_channels=FPN_CHANNELS,
            extra_blocks=LastLevelMaxPool(),
        )
        extractor.featmap_names = list(FPN_FEATURE_MAPS)
    else:
        extractor = SingleFeatureMap(trunk, spec.stages[-1], channels[-1])
        extractor.featmap_names = list(SINGLE_FEATURE_MAPS)
    return extractor
