"""Attention blocks for CNNs: SNA (the paper's) and the baselines it is compared against."""

from sna_core.attention.registry import (
    ATTENTION,
    broken_attention,
    build_attention,
    get_attention,
    list_attention,
    register_attention,
    reload_attention_plugins,
    replaces_conv,
)

# Importing a block's module registers it.
from sna_core.attention import sna, se, eca, non_local, attention_augmented, cbam  # noqa: E402,F401

__all__ = [
    "ATTENTION",
    "broken_attention",
    "build_attention",
    "get_attention",
    "list_attention",
    "register_attention",
    "reload_attention_plugins",
    "replaces_conv",
]
