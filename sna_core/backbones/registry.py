"""The backbone registry: string names → factories building a classifier with attention placed.

A backbone factory has the signature of :func:`build_backbone` minus ``name``::

    factory(num_classes, *, stem, attention, placement, attention_kwargs, stages, in_channels)
        -> nn.Module

and receives arguments already validated by :func:`build_backbone`. Third-party backbones
arrive through the entry-point group ``sna_core.backbones``.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §3.3 and Fig. 3.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from sna_core._registry import Registry
from sna_core.attention import get_attention
from sna_core.backbones.placement import STEMS, validate_placement, validate_stages

BackboneFactory = Callable[..., nn.Module]


def _check_factory(name: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(
            f"backbone plugin {name!r} is a {type(obj).__name__}, not a callable factory"
        )


BACKBONES: Registry[BackboneFactory] = Registry(
    "backbone", entry_point_group="sna_core.backbones", validate=_check_factory
)


def register_backbone(
    name: str, *, override: bool = False
) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering a backbone factory as ``name``."""
    return BACKBONES.register(name, override=override)


def list_backbones() -> list[str]:
    """Sorted names of every available backbone, plugins included."""
    return BACKBONES.names()


def build_backbone(
    name: str,
    num_classes: int,
    *,
    stem: str = "imagenet",
    attention: str = "none",
    placement: str = "stem",
    attention_kwargs: Mapping[str, Any] | None = None,
    stages: Iterable[int] | None = None,
    in_channels: int = 3,
) -> nn.Module:
    """Build backbone ``name`` (randomly initialised) with attention ``attention`` at ``placement``.

    Args:
        name: a name from :func:`list_backbones` ("resnet18", "resnet50", "densenet121").
        num_classes: outputs of the classifier head.
        stem: "imagenet" (7×7 stride-2 conv + 3×3 max-pool) or "cifar" (3×3 stride-1 conv, no
            max-pool) for 32×32 inputs.
        attention: a name from :func:`sna_core.attention.list_attention`.
        placement: "none", "stem" (once, before the first stage: the paper's default),
            "blocks" (inside every residual block / on every dense layer's new features) or
            "stem+blocks".
        attention_kwargs: passed unchanged to every attention block built (e.g. ``rank_k``).
        stages: with a "blocks" placement, the stages (1-4) that get block attention; default all.
        in_channels: image channels (1 for radiographs).

    Attention "none" or placement "none" gives the unmodified torchvision architecture (same
    module names and state-dict keys, so torchvision weights load).
    """
    factory = BACKBONES.get(name)
    if (
        not isinstance(num_classes, int)
        or isinstance(num_classes, bool)
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if (
        not isinstance(in_channels, int)
        or isinstance(in_channels, bool)
        or in_channels < 1
    ):
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
    get_attention(attention)  # unknown names fail here, with the list of known blocks
    validate_placement(placement)
    stage_tuple = validate_stages(stages, placement)
    return factory(
        num_classes,
        stem=stem,
        attention=attention,
        placement=placement,
        attention_kwargs=dict(attention_kwargs or {}),
        stages=stage_tuple,
        in_channels=in_channels,
    )
