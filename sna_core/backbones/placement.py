"""Where attention goes in a backbone, and how it is inserted so that every tool still runs it.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §3.3 and Fig. 3: SNA once after the stem's max-pool, before the first
residual / dense block; optionally inside every block as well.

Placements:

- ``"none"``: no attention (the vanilla backbone).
- ``"stem"``: one block after the stem (ImageNet stem: after the max-pool; CIFAR stem, which has
  no max-pool: after conv-bn-relu).
- ``"blocks"``: in every residual block after the last BatchNorm, before the addition (the SE/ECA
  slot), and on each dense layer's new growth-rate features. ``stages`` restricts this to some of
  the four stages (ResNet ``layer1..4``, DenseNet ``denseblock1..4``).
- ``"stem+blocks"``: both.

Insertion is by *replacing* a module the architecture's ``forward`` already calls with
:class:`AttentionAfter` (an ``nn.Sequential`` of that module then the attention). A block merely
attached as a new attribute would be skipped by ``forward``, by torchvision's
``IntermediateLayerGetter`` (which walks ``named_children`` in order) and by FPN backbones.

Blocks that replace a convolution (:func:`sna_core.attention.replaces_conv`, e.g. attention-
augmented convolution) are built as ``build_attention(name, in_channels, in_channels=...,
out_channels=..., stride=..., **attention_kwargs)`` and take the place of the block's 3×3
convolution; at the stem an in = out, stride-1 one follows the stem.

Every attention module inserted carries the attribute ``attention_site`` (e.g. ``"stem"``,
``"layer2.1"``); :func:`attention_sites` lists them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from sna_core.attention import build_attention, replaces_conv

STEMS = ("imagenet", "cifar")
PLACEMENTS = ("none", "stem", "blocks", "stem+blocks")
ALL_STAGES = (1, 2, 3, 4)
SITE_ATTRIBUTE = "attention_site"


def validate_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise ValueError(
            f"unknown placement {placement!r}; valid placements: {', '.join(PLACEMENTS)}"
        )


def validate_stages(stages: Iterable[int] | None, placement: str) -> tuple[int, ...]:
    """The sorted stages that get block attention; all four when ``stages`` is None."""
    if stages is None:
        return ALL_STAGES if places_blocks(placement) else ()
    if not places_blocks(placement):
        raise ValueError(
            f"stages={stages!r} only applies to placements with blocks ('blocks', 'stem+blocks'), "
            f"not {placement!r}"
        )
    chosen = (
        tuple(stages)
        if isinstance(stages, (list, tuple, set, frozenset, range))
        else None
    )
    if (
        not chosen
        or any(isinstance(s, bool) or s not in ALL_STAGES for s in chosen)
        or len(set(chosen)) != len(chosen)
    ):
        raise ValueError(
            f"invalid stages {stages!r}: give a non-empty subset, without repeats, of "
            f"{', '.join(map(str, ALL_STAGES))}"
        )
    return tuple(sorted(chosen))


def places_stem(placement: str) -> bool:
    return placement in ("stem", "stem+blocks")


def places_blocks(placement: str) -> bool:
    return placement in ("blocks", "stem+blocks")


class AttentionAfter(nn.Sequential):
    """``module`` followed by ``attention``, as one module that ``forward`` already calls."""

    def __init__(self, module: nn.Module, attention: nn.Module) -> None:
        super().__init__(OrderedDict([("module", module), ("attention", attention)]))


def _tag(module: nn.Module, site: str) -> nn.Module:
    setattr(module, SITE_ATTRIBUTE, site)
    return module


def attention_after(
    module: nn.Module,
    name: str,
    channels: int,
    attention_kwargs: Mapping[str, Any],
    site: str,
) -> AttentionAfter:
    """``module`` followed by attention ``name`` over its ``channels``-channel output."""
    if replaces_conv(name):
        # A convolution-replacing block at a non-conv site acts as an in = out, stride-1 conv.
        attention = build_conv_attention(
            name, channels, channels, 1, attention_kwargs, site
        )
    else:
        attention = _tag(build_attention(name, channels, **attention_kwargs), site)
    return AttentionAfter(module, attention)


def build_conv_attention(
    name: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    attention_kwargs: Mapping[str, Any],
    site: str,
) -> nn.Module:
    """A convolution-replacing attention block with a convolution's channel and stride contract."""
    module = build_attention(
        name,
        in_channels,
        in_channels=in_channels,
        out_channels=out_channels,
        stride=stride,
        **attention_kwargs,
    )
    return _tag(module, site)


def replace_conv_with_attention(
    conv: nn.Conv2d, name: str, attention_kwargs: Mapping[str, Any], site: str
) -> nn.Module:
    """The attention block standing in for 3×3 ``conv`` (same channels and stride)."""
    stride = conv.stride[0] if isinstance(conv.stride, tuple) else conv.stride
    return build_conv_attention(
        name, conv.in_channels, conv.out_channels, stride, attention_kwargs, site
    )


def attention_sites(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified module name → attention module, for every block the placement inserted."""
    return {
        qualified: module
        for qualified, module in model.named_modules()
        if hasattr(module, SITE_ATTRIBUTE)
    }


def attention_leaf_types(model: nn.Module) -> list[type[nn.Module]]:
    """The classes of ``model``'s attention blocks, for ``create_feature_extractor``'s
    ``tracer_kwargs={"leaf_modules": ...}``: FX then calls them as modules (their forward hooks
    fire, and data-dependent loops such as SNA's power iteration need no tracing)."""
    return sorted(
        {type(module) for module in attention_sites(model).values()},
        key=lambda t: t.__qualname__,
    )


def stem_conv(stem: str, in_channels: int, out_channels: int) -> nn.Conv2d:
    """The first convolution: 3×3 stride 1 for the CIFAR stem, 7×7 stride 2 for ImageNet's.
    Left uninitialised: each architecture applies torchvision's own init."""
    if stem == "cifar":
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    return nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False)
