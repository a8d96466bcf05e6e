"""The attention registry: every block a backbone can place, built-in or plugin.

An attention factory takes ``channels`` (the feature map's C) and keyword arguments and returns an
``nn.Module`` mapping (B, C, H, W) → (B, C, H, W). Factories whose module *replaces* a
convolution instead of following one (attention-augmented convolution) carry the class attribute
``replaces_conv = True`` and accept ``in_channels, out_channels, stride`` keywords; placement code
asks :func:`replaces_conv`.

Third-party blocks arrive through the entry-point group ``sna_core.attention``; a plugin that
fails to import (or is not callable) is listed by :func:`broken_attention` and reported by name
when asked for, without hiding the other blocks.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from sna_core._registry import Registry


def _check_factory(name: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"attention plugin {name!r} is {obj!r}, not a class or factory")


ATTENTION: Registry[Callable[..., nn.Module]] = Registry(
    "attention", entry_point_group="sna_core.attention", validate=_check_factory
)


def register_attention(name: str, *, override: bool = False):
    """Decorator: register a class or factory ``f(channels, **kwargs) -> nn.Module`` as ``name``."""
    return ATTENTION.register(name, override=override)


def build_attention(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build the attention block ``name`` for a ``channels``-channel feature map."""
    return ATTENTION.build(name, channels, **kwargs)


def list_attention() -> list[str]:
    """Sorted names of every available attention block, plugins included (``"none"`` too)."""
    return ATTENTION.names()


def broken_attention() -> dict[str, str]:
    """Attention plugins that failed to load: name → reason (exception and entry point)."""
    return ATTENTION.broken()


def reload_attention_plugins() -> None:
    """Read the ``sna_core.attention`` entry points again (after installing or removing a plugin)."""
    ATTENTION.reload_plugins()


def get_attention(name: str) -> Callable[..., nn.Module]:
    """The registered factory itself (to read attributes such as ``replaces_conv``)."""
    return ATTENTION.get(name)


def replaces_conv(name: str) -> bool:
    """True when the block stands in for a convolution rather than following one."""
    return bool(getattr(ATTENTION.get(name), "replaces_conv", False))


@register_attention("none")
class NoAttention(nn.Identity):
    """The vanilla backbone: no attention. Accepts and ignores keyword arguments."""

    def __init__(self, channels: int = 0, **kwargs: Any) -> None:
        super().__init__()
