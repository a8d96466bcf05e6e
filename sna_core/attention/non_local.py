"""Non-local block, embedded-Gaussian form: the SNA paper's "SA" baseline, registered as ``"sa"``.

X. Wang, R. Girshick, A. Gupta, K. He, "Non-local Neural Networks", CVPR 2018, eq. 1-3 and §3.3:
``z = W_z y + x`` with ``y_i = Σ_j softmax_j(θ(x_i)ᵀ φ(x_j)) g(x_j)``; ``θ, φ, g`` are 1×1
convolutions to ``C/2`` channels and ``W_z`` is a 1×1 convolution back to ``C`` followed by batch
norm whose scale is initialised to zero, so the block starts as the identity. The optional
sub-sampling trick (§3.3) max-pools ``φ`` and ``g`` by 2, cutting the pairwise cost by 4.

The non-local paper does not scale the logits. The SNA authors' code (SFSAttention) scales them by
``mid^-0.5`` and zero-initialises the output convolution instead of a batch norm:
``build_attention("sa", C, scale=True, output_norm=False)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sna_core.attention.registry import register_attention

__all__ = ["NonLocalBlock"]


@register_attention("sa")
class NonLocalBlock(nn.Module):
    """(B, C, H, W) → (B, C, H, W): residual global self-attention over all H·W positions.

    Args:
        channels: C.
        reduction: the embedding has ``max(1, C // reduction)`` channels (paper: C/2).
        sub_sample: max-pool φ and g by 2 (paper §3.3, optional; default off).
        scale: divide the logits by sqrt(mid) (paper: no; SNA code: yes).
        output_norm: batch norm after W_z with zero-initialised scale (paper: yes). When False,
            W_z itself is zero-initialised (SNA code). Either way the block starts as identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 2,
        sub_sample: bool = False,
        scale: bool = False,
        output_norm: bool = True,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"SA (non-local): channels must be >= 1, got {channels}")
        if reduction < 1:
            raise ValueError(f"SA (non-local): reduction must be >= 1, got {reduction}")
        self.channels = channels
        self.mid_channels = max(1, channels // reduction)
        self.sub_sample = sub_sample
        self.scale = scale
        self.theta = nn.Conv2d(channels, self.mid_channels, 1)
        self.phi = nn.Conv2d(channels, self.mid_channels, 1)
        self.g = nn.Conv2d(channels, self.mid_channels, 1)
        self.out_conv = nn.Conv2d(self.mid_channels, channels, 1)
        self.out_norm: nn.Module
        if output_norm:
            self.out_norm = nn.BatchNorm2d(channels)
            nn.init.zeros_(self.out_norm.weight)
        else:
            self.out_norm = nn.Identity()
            nn.init.zeros_(self.out_conv.weight)
            nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        key, value = self.phi(x), self.g(x)
        if self.sub_sample:  # after φ and g, as in the paper; ceil_mode keeps 1×1 maps valid
            key, value = F.max_pool2d(key, 2, ceil_mode=True), F.max_pool2d(value, 2, ceil_mode=True)
        # (B, 1, N, mid): one attention "head" over the flattened positions.
        q = self.theta(x).flatten(2).transpose(1, 2)[:, None]
        k = key.flatten(2).transpose(1, 2)[:, None]
        v = value.flatten(2).transpose(1, 2)[:, None]
        y = F.scaled_dot_product_attention(q, k, v, scale=None if self.scale else 1.0)
        y = y[:, 0].transpose(1, 2).reshape(b, self.mid_channels, h, w)
        return x + self.out_norm(self.out_conv(y))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, mid_channels={self.mid_channels}, "
            f"sub_sample={self.sub_sample}, scale={self.scale}"
        )
