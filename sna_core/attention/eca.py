"""Efficient Channel Attention (ECA), registered as ``"eca"``.

Q. Wang, B. Wu, P. Zhu, P. Li, W. Zuo, Q. Hu, "ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks", CVPR 2020, eq. 9-12: the channel gate is
``σ(C1D_k(GAP(x)))``, a 1-D convolution without bias across the pooled channel descriptor, whose
kernel size adapts to the channel count, ``k = ψ(C) = |log2(C)/γ + b/γ|_odd`` with ``γ = 2``,
``b = 1``. ``|t|_odd`` is computed as in the ECA authors' release: truncate ``t``, then step up to
the next odd number if even (C = 64, 128, 256, 512 → k = 3, 5, 5, 5).

The SNA authors' code (SFSAttention) uses ``k = 3`` for every layer:
``build_attention("eca", C, kernel_size=3)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sna_core.attention.registry import register_attention

__all__ = ["EfficientChannelAttention", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The ECA paper's adaptive kernel size ``|log2(C)/γ + b/γ|_odd`` (always odd, >= 1)."""
    if channels < 1:
        raise ValueError(f"ECA: channels must be >= 1, got {channels}")
    if gamma <= 0:
        raise ValueError(f"ECA: gamma must be > 0, got {gamma}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 == 1 else t + 1


@register_attention("eca")
class EfficientChannelAttention(nn.Module):
    """(B, C, H, W) → (B, C, H, W): channel gate from a k-tap 1-D convolution over pooled channels.

    Args:
        channels: C.
        kernel_size: a fixed odd k; None (default) adapts k to C as in the ECA paper.
        gamma, b: the paper's mapping parameters γ = 2, b = 1 (used when kernel_size is None).
    """

    def __init__(
        self, channels: int, *, kernel_size: int | None = None, gamma: float = 2.0, b: float = 1.0
    ) -> None:
        super().__init__()
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, b)
        elif channels < 1:
            raise ValueError(f"ECA: channels must be >= 1, got {channels}")
        elif kernel_size < 1 or kernel_size % 2 == 0:
            # An even kernel would shift the gate by half a channel.
            raise ValueError(f"ECA: kernel_size must be an odd integer >= 1, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x).flatten(1)[:, None, :]  # (B, 1, C): channels as a 1-D sequence
        w = self.gate(self.conv(y))
        return x * w[:, 0, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
