"""Attention-augmented convolution (AA), registered as ``"aa"``.

I. Bello, B. Zoph, A. Vaswani, J. Shlens, Q. V. Le, "Attention Augmented Convolutional Networks",
ICCV 2019, eq. 1-5: ``AAConv(X) = Concat[Conv(X), MHA(X)]``. A k×k convolution produces
``Cout − dv`` channels; multi-head self-attention over all H·W positions (``Nh`` heads, ``dk`` key
and ``dv`` value channels, queries scaled by ``(dk/Nh)^-0.5``) produces ``dv`` channels, mixed by
a 1×1 output projection. Two-dimensional relative position logits add ``q_i·r^W_{x_j−x_i} +
q_i·r^H_{y_j−y_i}`` to each logit, with learned embeddings per offset shared by the heads.
Defaults are the paper's ImageNet settings: ``κ = dk/Cout = 0.2``, ``υ = dv/Cout = 0.1`` (κ = 2υ),
``Nh = 8``, relative positions on.

Unlike the other blocks, AA **replaces a convolution** (``replaces_conv = True``): placement code
swaps it for the 3×3 convolution of each residual block (``conv2`` of a BasicBlock or
Bottleneck, keeping its in/out channels and stride) and, for the "stem" placement, inserts an
in = out AA convolution after the stem. The registry factory :func:`attention_augmented` accepts
``aa(channels, **kw)`` (in = out = channels) as well as ``in_channels=, out_channels=, stride=``.

Implementation choices (documented, not in the paper):

* ``dk``, ``dv`` are rounded to the nearest multiple of the head count, at least one channel per
  head; ``dv`` never exceeds ``Cout``. For tiny layers the head count is reduced to
  ``max(1, Cout // 2)`` so that the attention part does not take over the output (only layers
  with ``Cout < 16`` are affected).
* For a strided convolution, attention runs on the input average-pooled to the output size.
* Relative embeddings cover offsets up to ``relative_extent − 1`` (default 56, the largest map
  of an ImageNet ResNet); longer offsets share the outermost embedding (clipping, as in Shaw et
  al. 2018), so any input size works and sizes up to the extent are exactly the paper's.
* Attention uses ``scaled_dot_product_attention``; the relative logits enter as its additive mask.

The SNA authors' code (SFSAttention, taken from a third-party re-implementation) uses
``dk=40, dv=4, Nh=1, relative=False`` in every convolution:
``build_attention("aa", C, dk=40, dv=4, num_heads=1, relative=False)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sna_core.attention.registry import register_attention

__all__ = ["AttentionAugmentedConv2d", "attention_augmented"]


def _round_to_heads(fraction: float, channels: int, heads: int) -> int:
    """``fraction · channels`` rounded half-up to a multiple of ``heads``, at least ``heads``."""
    return heads * max(1, math.floor(fraction * channels / heads + 0.5))


class AttentionAugmentedConv2d(nn.Module):
    """(B, Cin, H, W) → (B, Cout, ⌈H/stride⌉, ⌈W/stride⌉): convolution ⊕ relative self-attention.

    Args:
        in_channels, out_channels, kernel_size, stride: as for the ``nn.Conv2d`` it replaces
            (odd kernel, padding ``kernel_size // 2``).
        dk, dv: key and value channels; None derives them from ``key_fraction · Cout`` and
            ``value_fraction · Cout``. Explicit values must be multiples of the head count.
        num_heads: Nh (paper: 8); reduced for ``Cout < 16`` (see the module docstring).
        relative: add 2-D relative position logits (paper: True).
        key_fraction, value_fraction: κ = 0.2 and υ = 0.1 (paper).
        relative_extent: offsets ``−(extent−1) … extent−1`` get their own embedding.
        bias: bias of the convolution part (False: it feeds a batch norm, like the conv it replaces).
    """

    replaces_conv = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        dk: int | None = None,
        dv: int | None = None,
        num_heads: int = 8,
        relative: bool = True,
        key_fraction: float = 0.2,
        value_fraction: float = 0.1,
        relative_extent: int = 56,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("stride", stride),
            ("num_heads", num_heads),
            ("relative_extent", relative_extent),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"AA: {name} must be an integer >= 1, got {value!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            # Odd kernels with padding k//2 give the ⌈H/stride⌉ output the attention part matches.
            raise ValueError(f"AA: kernel_size must be an odd integer >= 1, got {kernel_size}")
        for name, fraction in (("key_fraction", key_fraction), ("value_fraction", value_fraction)):
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"AA: {name} must be in (0, 1], got {fraction}")

        heads = min(num_heads, max(1, out_channels // 2))
        if dk is None:
            dk = _round_to_heads(key_fraction, out_channels, heads)
        if dv is None:
            dv = min(_round_to_heads(value_fraction, out_channels, heads), heads * (out_channels // heads))
        for name, value in (("dk", dk), ("dv", dv)):
            if value < 1 or value % heads:
                raise ValueError(
                    f"AA: {name} must be a positive multiple of the {heads} attention heads, got {value}"
                )
        if dv > out_channels:
            raise ValueError(f"AA: dv must be <= out_channels ({out_channels}), got {dv}")

        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.dk, self.dv, self.num_heads = dk, dv, heads
        self.relative, self.relative_extent = relative, relative_extent
        self.conv = (
            nn.Conv2d(in_channels, out_channels - dv, kernel_size, stride, kernel_size // 2, bias=bias)
            if out_channels > dv
            else None  # υ = 1: fully attentional
        )
        self.qkv = nn.Conv2d(in_channels, 2 * dk + dv, 1)
        self.attn_out = nn.Conv2d(dv, dv, 1)
        self.key_rel_h: nn.Parameter | None = None
        self.key_rel_w: nn.Parameter | None = None
        if relative:
            dkh = dk // heads
            self.key_rel_h = nn.Parameter(torch.randn(2 * relative_extent - 1, dkh) * dkh**-0.5)
            self.key_rel_w = nn.Parameter(torch.randn(2 * relative_extent - 1, dkh) * dkh**-0.5)

    def _relative_embeddings(self, table: torch.Tensor, length: int) -> torch.Tensor:
        """(length, length, dkh): the embedding of offset ``j − i`` for query ``i``, key ``j``."""
        positions = torch.arange(length, device=table.device)
        offsets = (positions[None, :] - positions[:, None]).clamp(
            -(self.relative_extent - 1), self.relative_extent - 1
        )
        return table[offsets + self.relative_extent - 1]

    def _relative_logits(self, q: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, Nh, HW, HW) relative position logits for queries q of shape (B, Nh, HW, dkh)."""
        assert self.key_rel_h is not None and self.key_rel_w is not None
        b, nh, _, dkh = q.shape
        q = q.reshape(b, nh, height, width, dkh)
        # One small einsum per axis; the (H·W)² sum is a broadcast, never a loop over pixels.
        logits_w = torch.einsum("bnhwd,wvd->bnhwv", q, self._relative_embeddings(self.key_rel_w, width))
        logits_h = torch.einsum("bnhwd,hud->bnhwu", q, self._relative_embeddings(self.key_rel_h, height))
        logits = logits_h[..., :, None] + logits_w[..., None, :]  # (B, Nh, H, W, H', W')
        return logits.reshape(b, nh, height * width, height * width)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        pad = self.kernel_size // 2
        return (
            (height + 2 * pad - self.kernel_size) // self.stride + 1,
            (width + 2 * pad - self.kernel_size) // self.stride + 1,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"AA: expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        b = x.shape[0]
        height, width = self.output_size(x.shape[2], x.shape[3])
        attn_in = x if self.stride == 1 else F.adaptive_avg_pool2d(x, (height, width))
        nh, dk, dv = self.num_heads, self.dk, self.dv
        q, k, v = self.qkv(attn_in).flatten(2).split([dk, dk, dv], dim=1)
        # (B, Nh, HW, d/Nh) per head; queries carry the (dk/Nh)^-0.5 scale so that the relative
        # logits, computed from them, are scaled like the content logits (paper eq. 3).
        q = q.reshape(b, nh, dk // nh, -1).transpose(2, 3) * (dk // nh) ** -0.5
        k = k.reshape(b, nh, dk // nh, -1).transpose(2, 3)
        v = v.reshape(b, nh, dv // nh, -1).transpose(2, 3)
        bias = self._relative_logits(q, height, width) if self.relative else None
        heads_out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        attn = self.attn_out(heads_out.transpose(2, 3).reshape(b, dv, height, width))
        if self.conv is None:
            return attn
        return torch.cat([self.conv(x), attn], dim=1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, dk={self.dk}, dv={self.dv}, num_heads={self.num_heads}, "
            f"relative={self.relative}"
        )


@register_attention("aa")
def attention_augmented(
    channels: int | None = None,
    *,
    in_channels: int | None = None,
    out_channels: int | None = None,
    stride: int = 1,
    **kwargs: Any,
) -> AttentionAugmentedConv2d:
    """Registry factory: ``aa(C)`` is an in = out = C, stride-1 AA convolution; ``channels`` fills
    whichever of ``in_channels`` / ``out_channels`` is not given. Other keywords go to
    :class:`AttentionAugmentedConv2d`."""
    in_channels = in_channels if in_channels is not None else channels
    out_channels = out_channels if out_channels is not None else channels
    if in_channels is None or out_channels is None:
        raise ValueError(
            f"AA: give channels or in_channels and out_channels "
            f"(got channels={channels}, in_channels={in_channels}, out_channels={out_channels})"
        )
    return AttentionAugmentedConv2d(in_channels, out_channels, stride=stride, **kwargs)


attention_augmented.replaces_conv = True  # type: ignore[attr-defined]
