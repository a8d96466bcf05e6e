"""Convolutional Block Attention Module (CBAM), registered as ``"cbam"``.

S. Woo, J. Park, J.-Y. Lee, I. S. Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
eq. 1-3: channel attention ``M_c = σ(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` with a shared
one-hidden-layer MLP of ``C/r`` units (``r = 16``), then spatial attention
``M_s = σ(f^{7×7}([AvgPool_c(F'); MaxPool_c(F')]))`` over the channel-wise mean and max, applied
sequentially (channel first, the paper's best arrangement).

The CBAM authors' release follows the 7×7 convolution with batch norm and drops its bias:
``build_attention("cbam", C, spatial_norm=True)``.
"""

from __future__ import annotations

import torch
from torch import nn

from sna_core.attention.registry import register_attention

__all__ = ["CBAM", "ChannelGate", "SpatialGate"]


class ChannelGate(nn.Module):
    """CBAM's channel attention: a shared MLP over the average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)  # at least one unit for tiny C
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(logits)[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM's spatial attention: a k×k convolution over the channel-wise mean and max maps."""

    def __init__(self, kernel_size: int = 7, norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=not norm)
        self.norm = nn.BatchNorm2d(1) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.norm(self.conv(pooled)))


@register_attention("cbam")
class CBAM(nn.Module):
    """(B, C, H, W) → (B, C, H, W): channel attention, then spatial attention.

    Args:
        channels: C.
        reduction: r, the MLP has ``max(1, C // r)`` hidden units (paper: 16).
        spatial_kernel_size: odd k of the spatial convolution (paper: 7).
        spatial_norm: batch norm after the spatial convolution, without its bias (CBAM release:
            True; the paper's equations: False, the default).
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        spatial_kernel_size: int = 7,
        spatial_norm: bool = False,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"CBAM: channels must be >= 1, got {channels}")
        if reduction < 1:
            raise ValueError(f"CBAM: reduction must be >= 1, got {reduction}")
        if spatial_kernel_size < 1 or spatial_kernel_size % 2 == 0:
            # An even kernel would shift the spatial map by half a pixel and change its size.
            raise ValueError(
                f"CBAM: spatial_kernel_size must be an odd integer >= 1, got {spatial_kernel_size}"
            )
        self.channels = channels
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate(spatial_kernel_size, spatial_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_gate(self.channel_gate(x))
