"""ResNet-18 / ResNet-50 (torchvision's architectures) with a CIFAR or ImageNet stem and attention.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §3.3 and Fig. 3 (ResNet with SNA before the residual stages and,
optionally, inside every residual block). Architecture: He et al., Deep residual learning for
image recognition (CVPR 2016), as implemented by ``torchvision.models.resnet`` (V1.5: the stride
of a Bottleneck sits on its 3×3 convolution).

Attention sites (see :mod:`sna_core.backbones.placement`):

- stem: ``maxpool`` becomes ``AttentionAfter(maxpool, attention)`` (with the CIFAR stem the
  max-pool is an ``nn.Identity``, so the attention follows conv-bn-relu);
- blocks: ``bn2`` (BasicBlock) / ``bn3`` (Bottleneck) becomes ``AttentionAfter(bn, attention)``,
  so the block's own ``forward`` applies it before ``out += identity``;
- convolution-replacing blocks (attention-augmented convolution) replace ``conv2``, the 3×3
  convolution of both block types, with the same channels and stride.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models import resnet as tv_resnet

from sna_core.attention import replaces_conv
from sna_core.backbones.placement import (
    attention_after,
    places_blocks,
    places_stem,
    replace_conv_with_attention,
    stem_conv,
)
from sna_core.backbones.registry import register_backbone


def _stem_conv(stem: str, in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = stem_conv(stem, in_channels, out_channels)
    nn.init.kaiming_normal_(
        conv.weight, mode="fan_out", nonlinearity="relu"
    )  # torchvision's ResNet init
    return conv


def _last_norm_name(block: nn.Module) -> str:
    return "bn3" if isinstance(block, tv_resnet.Bottleneck) else "bn2"


def place_resnet_attention(
    model: tv_resnet.ResNet,
    attention: str,
    placement: str,
    attention_kwargs: dict[str, Any],
    stages: tuple[int, ...],
) -> tv_resnet.ResNet:
    """Insert attention ``attention`` into a torchvision ResNet in place; returns ``model``."""
    if attention == "none" or placement == "none":
        return model
    if places_stem(placement):
        model.maxpool = attention_after(
            model.maxpool, attention, model.bn1.num_features, attention_kwargs, "stem"
        )
    if places_blocks(placement):
        conv_replacing = replaces_conv(attention)
        for stage in stages:
            for index, block in enumerate(getattr(model, f"layer{stage}")):
                site = f"layer{stage}.{index}"
                if conv_replacing:
                    block.conv2 = replace_conv_with_attention(
                        block.conv2, attention, attention_kwargs, site
                    )
                else:
                    norm_name = _last_norm_name(block)
                    norm = getattr(block, norm_name)
                    setattr(
                        block,
                        norm_name,
                        attention_after(
                            norm, attention, norm.num_features, attention_kwargs, site
                        ),
                    )
    return model


def _build_resnet(
    architecture: Callable[..., tv_resnet.ResNet],
    num_classes: int,
    *,
    stem: str,
    attention: str,
    placement: str,
    attention_kwargs: dict[str, Any],
    stages: tuple[int, ...],
    in_channels: int,
) -> tv_resnet.ResNet:
    model = architecture(weights=None, num_classes=num_classes)
    if stem == "cifar" or in_channels != 3:
        model.conv1 = _stem_conv(stem, in_channels, model.conv1.out_channels)
    if stem == "cifar":
        model.maxpool = nn.Identity()
    return place_resnet_attention(model, attention, placement, attention_kwargs, stages)


@register_backbone("resnet18")
def resnet18(num_classes: int, **kwargs: Any) -> tv_resnet.ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); 11,689,512 parameters at 1000 classes."""
    return _build_resnet(tv_resnet.resnet18, num_classes, **kwargs)


@register_backbone("resnet50")
def resnet50(num_classes: int, **kwargs: Any) -> tv_resnet.ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); 25,557,032 parameters at 1000 classes."""
    return _build_resnet(tv_resnet.resnet50, num_classes, **kwargs)
