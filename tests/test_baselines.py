"""The baseline attention blocks the SNA paper compares against: SE, ECA, SA (non-local), AA, CBAM."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sna_core.attention import build_attention, get_attention, replaces_conv
from sna_core.attention.attention_augmented import (
    AttentionAugmentedConv2d,
    attention_augmented,
)
from sna_core.attention.cbam import CBAM
from sna_core.attention.eca import EfficientChannelAttention, eca_kernel_size
from sna_core.attention.non_local import NonLocalBlock
from sna_core.attention.se import SqueezeExcitation

BLOCKS = ["se", "eca", "sa", "aa", "cbam"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- every block -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("channels, size", [(4, (1, 1)), (16, (7, 5)), (64, (8, 8))])
def test_shape_forward_backward(name: str, channels: int, size: tuple[int, int]) -> None:
    block = build_attention(name, channels)
    x = torch.randn(2, channels, *size, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for param_name, param in block.named_parameters():
        assert param.grad is not None, f"{name}.{param_name} got no gradient"


@pytest.mark.parametrize("name", BLOCKS)
def test_largest_feature_map_56(name: str) -> None:
    # ImageNet ResNet after the stem: 56×56 = 3136 positions (forward only; AA is quadratic, so
    # two heads keep its (heads, 3136, 3136) logits small; the head count has its own tests).
    block = build_attention(name, 16, **({"num_heads": 2} if name == "aa" else {})).eval()
    x = torch.randn(1, 16, 56, 56)
    with torch.no_grad():
        assert block(x).shape == x.shape


@pytest.mark.parametrize(
    "name, kwargs, fragment",
    [
        ("se", {"reduction": 0}, "reduction must be >= 1, got 0"),
        ("eca", {"kernel_size": 4}, "kernel_size must be an odd integer >= 1, got 4"),
        ("sa", {"reduction": -1}, "reduction must be >= 1, got -1"),
        ("cbam", {"spatial_kernel_size": 6}, "spatial_kernel_size must be an odd integer >= 1, got 6"),
        ("aa", {"kernel_size": 2}, "kernel_size must be an odd integer >= 1, got 2"),
        ("aa", {"dk": 12}, "dk must be a positive multiple of the 8 attention heads, got 12"),
        ("aa", {"dv": 72, "num_heads": 1}, "dv must be <= out_channels (64), got 72"),
        ("aa", {"stride": 0}, "stride must be an integer >= 1, got 0"),
        ("aa", {"value_fraction": 1.5}, "value_fraction must be in (0, 1], got 1.5"),
    ],
)
def test_bad_hyper_parameters_name_the_value(name: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        build_attention(name, 64, **kwargs)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("name", BLOCKS)
def test_bad_channel_count_names_the_value(name: str) -> None:
    with pytest.raises(ValueError, match=r"channels must be (an integer )?>= 1, got 0"):
        build_attention(name, 0)


@pytest.mark.parametrize(
    "cls, defaults",
    [
        (SqueezeExcitation, {"reduction": 16, "bias": True}),
        (EfficientChannelAttention, {"kernel_size": None, "gamma": 2.0, "b": 1.0}),
        (NonLocalBlock, {"reduction": 2, "sub_sample": False, "scale": False, "output_norm": True}),
        (
            AttentionAugmentedConv2d,
            {"kernel_size": 3, "stride": 1, "dk": None, "dv": None, "num_heads": 8, "relative": True,
             "key_fraction": 0.2, "value_fraction": 0.1},
        ),
        (CBAM, {"reduction": 16, "spatial_kernel_size": 7, "spatial_norm": False}),
    ],
)
def test_defaults_are_those_of_the_blocks_papers(cls: type, defaults: dict) -> None:
    parameters = inspect.signature(cls).parameters
    assert {key: parameters[key].default for key in defaults} == defaults


# --- SE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels, kwargs, expected",
    [
        (64, {}, 2 * 64 * 4 + 4 + 64),  # C/r = 4 hidden units, biases on both layers
        (64, {"bias": False}, 2 * 64 * 4),  # SNA authors' code
        (256, {"reduction": 4}, 2 * 256 * 64 + 64 + 256),
        (8, {}, 2 * 8 * 1 + 1 + 8),  # C < r still keeps one hidden unit
    ],
)
def test_se_parameter_count(channels: int, kwargs: dict, expected: int) -> None:
    assert n_params(build_attention("se", channels, **kwargs)) == expected


def test_se_matches_its_equation() -> None:
    block = SqueezeExcitation(32, reduction=8)
    x = torch.randn(3, 32, 5, 4)
    z = x.mean(dim=(2, 3))
    hidden = F.relu(F.linear(z, block.fc1.weight, block.fc1.bias))
    s = torch.sigmoid(F.linear(hidden, block.fc2.weight, block.fc2.bias))
    torch.testing.assert_close(block(x), x * s[:, :, None, None])


# --- ECA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, k", [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7), (1, 1)])
def test_eca_adaptive_kernel_size(channels: int, k: int) -> None:
    assert eca_kernel_size(channels) == k
    block = build_attention("eca", channels)
    assert block.kernel_size == k
    assert n_params(block) == k  # one 1-D convolution, no bias


@pytest.mark.parametrize("channels", [64, 512])
def test_eca_fixed_kernel_of_the_sna_code(channels: int) -> None:
    block = build_attention("eca", channels, kernel_size=3)
    assert block.kernel_size == 3 and n_params(block) == 3


def test_eca_is_a_local_convolution_across_channels() -> None:
    # Changing one channel's content moves only the gates of its k neighbours.
    block = EfficientChannelAttention(32, kernel_size=3)
    x = torch.rand(1, 32, 4, 4)
    bumped = x.clone()
    bumped[:, 10] += 1.0
    gate_change = (block(bumped) / bumped - block(x) / x).abs().amax(dim=(0, 2, 3))
    assert set(torch.nonzero(gate_change > 1e-6).flatten().tolist()) <= {9, 10, 11}


# --- SA (non-local) ----------------------------------------------------------------------------


def test_sa_parameter_count() -> None:
    c, mid = 64, 32
    expected = 3 * (c * mid + mid) + (mid * c + c) + 2 * c  # θ, φ, g; W_z; BN scale and shift
    assert n_params(build_attention("sa", c)) == expected
    assert n_params(build_attention("sa", c, output_norm=False)) == expected - 2 * c


@pytest.mark.parametrize("kwargs", [{}, {"output_norm": False, "scale": True}, {"sub_sample": True}])
@pytest.mark.parametrize("train", [True, False])
def test_sa_starts_as_identity(kwargs: dict, train: bool) -> None:
    block = build_attention("sa", 16, **kwargs).train(train)
    x = torch.randn(2, 16, 7, 6)
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("scale, sub_sample", [(False, False), (True, False), (False, True)])
def test_sa_matches_embedded_gaussian_equation(scale: bool, sub_sample: bool) -> None:
    block = NonLocalBlock(8, scale=scale, sub_sample=sub_sample).eval()
    nn.init.normal_(block.out_norm.weight)  # leave the identity start to see the attention path
    x = torch.randn(2, 8, 5, 6)
    theta, phi, g = block.theta(x), block.phi(x), block.g(x)
    if sub_sample:
        phi, g = F.max_pool2d(phi, 2, ceil_mode=True), F.max_pool2d(g, 2, ceil_mode=True)
    logits = theta.flatten(2).transpose(1, 2) @ phi.flatten(2)  # (B, N, N')
    if scale:
        logits = logits / math.sqrt(block.mid_channels)
    y = (logits.softmax(-1) @ g.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(2, 4, 5, 6)
    torch.testing.assert_close(block(x), x + block.out_norm(block.out_conv(y)))


# --- AA ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "in_channels, out_channels, stride, size, expected_size",
    [
        (64, 64, 1, (8, 8), (8, 8)),
        (64, 128, 2, (8, 8), (4, 4)),
        (32, 64, 2, (7, 5), (4, 3)),
        (16, 32, 2, (1, 1), (1, 1)),
        (8, 8, 1, (1, 1), (1, 1)),
        (4, 4, 2, (2, 3), (1, 2)),
    ],
)
def test_aa_output_channels_and_stride(
    in_channels: int, out_channels: int, stride: int, size: tuple[int, int], expected_size: tuple[int, int]
) -> None:
    conv = build_attention("aa", in_channels, out_channels=out_channels, stride=stride)
    x = torch.randn(2, in_channels, *size, requires_grad=True)
    y = conv(x)
    assert y.shape == (2, out_channels, *expected_size)
    # Same spatial output as the convolution it replaces.
    reference = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
    assert y.shape == reference(x).shape
    y.sum().backward()
    assert x.grad is not None


def test_aa_registry_factory_forms() -> None:
    assert replaces_conv("aa") and AttentionAugmentedConv2d.replaces_conv
    assert get_attention("aa") is attention_augmented
    same = build_attention("aa", 64)
    assert (same.in_channels, same.out_channels, same.stride) == (64, 64, 1)
    placed = get_attention("aa")(in_channels=64, out_channels=128, stride=2)
    assert (placed.in_channels, placed.out_channels, placed.stride) == (64, 128, 2)
    widened = build_attention("aa", 128, in_channels=64)  # channels fills the missing side
    assert (widened.in_channels, widened.out_channels) == (64, 128)
    with pytest.raises(ValueError, match=r"give channels or in_channels and out_channels"):
        attention_augmented(in_channels=64)


def aa_parameter_formula(
    cin: int, cout: int, k: int, dk: int, dv: int, heads: int, relative: bool, extent: int = 56
) -> int:
    conv = cin * (cout - dv) * k * k
    qkv = cin * (2 * dk + dv) + 2 * dk + dv
    projection = dv * dv + dv
    embeddings = 2 * (2 * extent - 1) * (dk // heads) if relative else 0
    return conv + qkv + projection + embeddings


@pytest.mark.parametrize(
    "cin, cout, kwargs, dk, dv, heads",
    [
        (64, 64, {}, 16, 8, 8),  # κ·64 = 12.8 → 16, υ·64 = 6.4 → 8 (multiples of Nh = 8)
        (128, 256, {"stride": 2}, 48, 24, 8),  # 51.2 → 48, 25.6 → 24
        (512, 512, {}, 104, 48, 8),
        (64, 64, {"dk": 40, "dv": 4, "num_heads": 1, "relative": False}, 40, 4, 1),  # SNA code
        (8, 8, {}, 4, 4, 4),  # tiny layer: Nh reduced to Cout // 2
        (1, 1, {}, 1, 1, 1),  # Cout = 1: fully attentional, no convolution part
    ],
)
def test_aa_dimensions_and_parameter_count(
    cin: int, cout: int, kwargs: dict, dk: int, dv: int, heads: int
) -> None:
    conv = build_attention("aa", cin, out_channels=cout, **kwargs)
    assert (conv.dk, conv.dv, conv.num_heads) == (dk, dv, heads)
    relative = kwargs.get("relative", True)
    assert n_params(conv) == aa_parameter_formula(cin, cout, 3, dk, dv, heads, relative)
    assert (conv.conv is None) == (dv == cout)


def naive_relative_logits(
    conv: AttentionAugmentedConv2d, q: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """The paper's definition, pair by pair: l[i, j] = q_i·r^H[y_j − y_i] + q_i·r^W[x_j − x_i]."""
    b, nh, n, _ = q.shape
    extent = conv.relative_extent
    logits = torch.zeros(b, nh, n, n)
    for i in range(n):
        for j in range(n):
            dy = max(-(extent - 1), min(extent - 1, j // width - i // width))
            dx = max(-(extent - 1), min(extent - 1, j % width - i % width))
            r_h, r_w = conv.key_rel_h[dy + extent - 1], conv.key_rel_w[dx + extent - 1]
            logits[:, :, i, j] = q[:, :, i] @ r_h + q[:, :, i] @ r_w
    return logits


@pytest.mark.parametrize("height, width, extent", [(3, 4, 56), (5, 2, 3)])  # the second clips offsets
def test_aa_relative_logits_match_their_definition(height: int, width: int, extent: int) -> None:
    conv = AttentionAugmentedConv2d(8, 16, num_heads=2, dk=4, dv=4, relative_extent=extent)
    q = torch.randn(2, 2, height * width, 2)
    expected = naive_relative_logits(conv, q, height, width)
    torch.testing.assert_close(conv._relative_logits(q, height, width), expected)


def test_aa_matches_its_equation_with_relative_logits() -> None:
    conv = AttentionAugmentedConv2d(6, 12, num_heads=2, dk=4, dv=4)
    x = torch.randn(2, 6, 3, 4)
    q, k, v = conv.qkv(x).flatten(2).split([4, 4, 4], dim=1)
    heads = []
    for h in range(2):  # eq. 1 and 3, head by head
        qh, kh, vh = (t[:, 2 * h : 2 * h + 2].transpose(1, 2) for t in (q, k, v))
        qh = qh / math.sqrt(2)
        logits = qh @ kh.transpose(1, 2) + naive_relative_logits(conv, qh[:, None], 3, 4)[:, 0]
        heads.append(logits.softmax(-1) @ vh)
    attention = conv.attn_out(torch.cat(heads, dim=2).transpose(1, 2).reshape(2, 4, 3, 4))
    torch.testing.assert_close(conv(x), torch.cat([conv.conv(x), attention], dim=1))


def test_aa_relative_logits_on_and_off() -> None:
    with_relative = AttentionAugmentedConv2d(16, 16, num_heads=2)
    without = AttentionAugmentedConv2d(16, 16, num_heads=2, relative=False)
    assert {"key_rel_h", "key_rel_w"} <= dict(with_relative.named_parameters()).keys()
    assert not {"key_rel_h", "key_rel_w"} & dict(without.named_parameters()).keys()
    missing, unexpected = without.load_state_dict(with_relative.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"key_rel_h", "key_rel_w"}
    x = torch.randn(2, 16, 5, 5)
    assert not torch.allclose(with_relative(x), without(x))
    with torch.no_grad():
        with_relative.key_rel_h.zero_()
        with_relative.key_rel_w.zero_()
    torch.testing.assert_close(with_relative(x), without(x))


def test_aa_beyond_relative_extent_clips_offsets() -> None:
    conv = AttentionAugmentedConv2d(8, 8, num_heads=2, relative_extent=4)
    assert conv(torch.randn(1, 8, 9, 11)).shape == (1, 8, 9, 11)


def test_aa_rejects_wrong_input_channels() -> None:
    conv = build_attention("aa", 16)
    with pytest.raises(ValueError, match=r"expected input \(B, 16, H, W\), got \(1, 8, 4, 4\)"):
        conv(torch.randn(1, 8, 4, 4))


# --- CBAM --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, (2 * 64 * 4 + 4 + 64) + (2 * 7 * 7 + 1)),  # shared MLP; 7×7 conv with bias
        ({"spatial_norm": True}, (2 * 64 * 4 + 4 + 64) + (2 * 7 * 7 + 2)),  # release: conv + BN
        ({"spatial_kernel_size": 3}, (2 * 64 * 4 + 4 + 64) + (2 * 3 * 3 + 1)),
    ],
)
def test_cbam_parameter_count(kwargs: dict, expected: int) -> None:
    assert n_params(build_attention("cbam", 64, **kwargs)) == expected


def test_cbam_applies_channel_then_spatial_attention() -> None:
    block = CBAM(32).eval()
    x = torch.randn(2, 32, 6, 5)
    mlp = block.channel_gate.mlp
    channel = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))[:, :, None, None]
    refined = x * channel
    pooled = torch.cat([refined.mean(1, keepdim=True), refined.amax(1, keepdim=True)], dim=1)
    spatial = torch.sigmoid(block.spatial_gate.conv(pooled))
    torch.testing.assert_close(block(x), refined * spatial)


@pytest.mark.parametrize("size", [(1, 1), (3, 9), (32, 32)])
def test_cbam_shapes(size: tuple[int, int]) -> None:
    x = torch.randn(2, 24, *size)
    assert build_attention("cbam", 24, spatial_norm=True)(x).shape == x.shape
