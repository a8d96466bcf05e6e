"""DenseNet-121 (torchvision's architecture) with a CIFAR or ImageNet stem and attention.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §3.3 and Fig. 3 (DenseNet with SNA before the dense blocks and,
optionally, inside them). Architecture: Huang et al., Densely connected convolutional networks
(CVPR 2017), as implemented by ``torchvision.models.densenet``.

Attention sites (see :mod:`sna_core.backbones.placement`):

- stem: ``features.pool0`` becomes ``AttentionAfter(pool0, attention)`` (with the CIFAR stem
  ``pool0`` is an ``nn.Identity``, so the attention follows conv-bn-relu);
- blocks: each dense layer's ``conv2`` (the 3×3 producing its ``growth_rate`` new channels)
  becomes ``AttentionAfter(conv2, attention)``: attention acts on the new features only, before
  they are concatenated to the running feature stack;
- convolution-replacing blocks replace that ``conv2`` itself (same channels, stride 1).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models import densenet as tv_densenet

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
    nn.init.kaiming_normal_(conv.weight)  # torchvision's DenseNet init
    return conv


def place_densenet_attention(
    model: tv_densenet.DenseNet,
    attention: str,
    placement: str,
    attention_kwargs: dict[str, Any],
    stages: tuple[int, ...],
) -> tv_densenet.DenseNet:
    """Insert attention ``attention`` into a torchvision DenseNet in place; returns ``model``."""
    if attention == "none" or placement == "none":
        return model
    features = model.features
    if places_stem(placement):
        features.pool0 = attention_after(
            features.pool0,
            attention,
            features.norm0.num_features,
            attention_kwargs,
            "stem",
        )
    if places_blocks(placement):
        conv_replacing = replaces_conv(attention)
        for stage in stages:
            block = getattr(features, f"denseblock{stage}")
            for layer_name, layer in block.named_children():
                site = f"denseblock{stage}.{layer_name}"
                if conv_replacing:
                    layer.conv2 = replace_conv_with_attention(
                        layer.conv2, attention, attention_kwargs, site
                    )
                else:
                    layer.conv2 = attention_after(
                        layer.conv2,
                        attention,
                        layer.conv2.out_channels,
                        attention_kwargs,
                        site,
                    )
    return model


@register_backbone("densenet121")
def densenet121(
    num_classes: int,
    *,
    stem: str,
    attention: str,
    placement: str,
    attention_kwargs: dict[str, Any],
    stages: tuple[int, ...],
    in_channels: int,
) -> tv_densenet.DenseNet:
    """DenseNet-121 (growth 32, blocks [6, 12, 24, 16]); 7,978,856 parameters at 1000 classes."""
    model = tv_densenet.densenet121(weights=None, num_classes=num_classes)
    features = model.features
    if stem == "cifar" or in_channels != 3:
        features.conv0 = _stem_conv(stem, in_channels, features.conv0.out_channels)
    if stem == "cifar":
        features.pool0 = nn.Identity()
    return place_densenet_attention(
        model, attention, placement, attention_kwargs, stages
    )
