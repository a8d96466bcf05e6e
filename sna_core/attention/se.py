"""Squeeze-and-Excitation (SE) channel attention, registered as ``"se"``.

J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018 (TPAMI 2020), eq. 2-4:
``s = σ(W2 δ(W1 z))`` with ``z`` the global average pool of ``x``, ``W1 ∈ R^{C/r × C}``,
``W2 ∈ R^{C × C/r}``, reduction ratio ``r = 16``; the output is ``x · s`` per channel.

The SE paper omits the biases "to simplify notation"; its released models use fully connected
layers with biases, which is the default here. The SNA authors' code (SFSAttention) uses
``C // 16`` hidden units without biases: ``build_attention("se", C, bias=False)``.
"""

from __future__ import annotations

import torch
from torch import nn

from sna_core.attention.registry import register_attention

__all__ = ["SqueezeExcitation"]


@register_attention("se")
class SqueezeExcitation(nn.Module):
    """(B, C, H, W) → (B, C, H, W): rescale each channel by a gate computed from global context.

    Args:
        channels: C, the number of input (and output) channels.
        reduction: r; the bottleneck has ``max(1, C // r)`` units (SE paper: 16).
        bias: biases in both fully connected layers (SE paper's models: True; SNA code: False).
    """

    def __init__(self, channels: int, *, reduction: int = 16, bias: bool = True) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"SE: channels must be >= 1, got {channels}")
        if reduction < 1:
            raise ValueError(f"SE: reduction must be >= 1, got {reduction}")
        self.channels = channels
        self.reduction = reduction
        self.hidden_channels = max(1, channels // reduction)  # at least one unit for tiny C
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels, self.hidden_channels, bias=bias)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(self.hidden_channels, channels, bias=bias)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.squeeze(x).flatten(1)
        s = self.gate(self.fc2(self.relu(self.fc1(z))))
        return x * s[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden_channels}"
