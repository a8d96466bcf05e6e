"""Backbones (ResNet-18/50, DenseNet-121) with attention placed as in the SNA paper.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §3.3 and Fig. 3.

    >>> from sna_core.backbones import build_backbone
    >>> model = build_backbone("resnet18", 100, stem="cifar", attention="sna", placement="stem")
"""

# Importing a backbone's module registers it.
from sna_core.backbones import densenet, resnet  # noqa: F401
from sna_core.backbones.placement import (
    ALL_STAGES,
    PLACEMENTS,
    STEMS,
    AttentionAfter,
    attention_leaf_types,
    attention_sites,
)
from sna_core.backbones.registry import (
    BACKBONES,
    build_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "ALL_STAGES",
    "BACKBONES",
    "PLACEMENTS",
    "STEMS",
    "AttentionAfter",
    "attention_leaf_types",
    "attention_sites",
    "build_backbone",
    "list_backbones",
    "register_backbone",
]
