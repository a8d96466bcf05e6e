"""Backbones with attention placement (paper §3.3, Fig. 3): build, run, parity, errors, extractors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.feature_extraction import create_feature_extractor

from sna_core._registry import RegistryError
from sna_core.attention import ATTENTION, list_attention, replaces_conv
from sna_core.backbones import (
    PLACEMENTS,
    attention_leaf_types,
    attention_sites,
    build_backbone,
    list_backbones,
)

BACKBONE_NAMES = ("resnet18", "resnet50", "densenet121")
BLOCKS_PER_STAGE = {
    "resnet18": (2, 2, 2, 2),
    "resnet50": (3, 4, 6, 3),
    "densenet121": (6, 12, 24, 16),
}
# The smallest inputs that still leave a spatial map at the last stage (1×1 and 2×2).
IMAGE_SIZE = {"imagenet": 32, "cifar": 16}
REAL_ATTENTION = [name for name in list_attention() if name != "none"]


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def expected_sites(
    backbone: str, placement: str, stages: tuple[int, ...] = (1, 2, 3, 4)
) -> int:
    stem = 1 if placement in ("stem", "stem+blocks") else 0
    blocks = (
        sum(BLOCKS_PER_STAGE[backbone][s - 1] for s in stages)
        if "blocks" in placement
        else 0
    )
    return stem + blocks


class ChannelCheckingAttention(nn.Module):
    """A test block: a learnable per-channel scale that asserts it sees ``channels`` channels."""

    def __init__(self, channels: int, **kwargs) -> None:
        super().__init__()
        self.channels, self.kwargs = channels, kwargs
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels, (x.shape, self.channels)
        return x * self.scale.view(1, -1, 1, 1)


class ConvStandIn(nn.Conv2d):
    """A test convolution-replacing block with the registry's contract for such blocks."""

    replaces_conv = True

    def __init__(
        self,
        channels: int,
        *,
        in_channels: int,
        out_channels: int,
        stride: int,
        **kwargs,
    ) -> None:
        super().__init__(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=False
        )
        self.channels, self.kwargs = channels, kwargs


@pytest.fixture
def test_blocks(monkeypatch):
    """Register the two test blocks for one test only (the registry is restored afterwards)."""
    list_attention()  # load plugins first so that restoring the dict cannot drop them
    monkeypatch.setitem(ATTENTION._entries, "test_scale", ChannelCheckingAttention)
    monkeypatch.setitem(ATTENTION._entries, "test_conv", ConvStandIn)
    return "test_scale", "test_conv"


def forward_backward(model: nn.Module, stem: str, num_classes: int) -> None:
    size = IMAGE_SIZE[stem]
    model.train()
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, f"no gradient reached {name}"
            assert torch.isfinite(parameter.grad).all(), (
                f"non-finite gradient in {name}"
            )


def test_list_backbones_has_the_papers_three():
    assert set(BACKBONE_NAMES) <= set(list_backbones())


@pytest.mark.parametrize(
    "backbone, stem, num_classes, params",
    [
        ("resnet18", "imagenet", 1000, 11_689_512),
        ("resnet50", "imagenet", 1000, 25_557_032),
        ("densenet121", "imagenet", 1000, 7_978_856),
        ("resnet18", "cifar", 100, 11_220_132),
        ("densenet121", "cifar", 100, 7_048_676),
    ],
)
def test_parameter_parity_with_torchvision(backbone, stem, num_classes, params):
    model = build_backbone(backbone, num_classes, stem=stem)
    assert sum(p.numel() for p in model.parameters()) == params


def test_vanilla_keeps_torchvision_state_dict_keys():
    model = build_backbone("resnet18", 1000, attention="none", placement="stem+blocks")
    assert list(model.state_dict()) == list(tv_resnet18().state_dict())


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_cifar_and_imagenet_stems(stem):
    resnet = build_backbone("resnet18", 10, stem=stem)
    densenet = build_backbone("densenet121", 10, stem=stem)
    if stem == "cifar":
        for conv in (resnet.conv1, densenet.features.conv0):
            assert (conv.kernel_size, conv.stride, conv.padding) == (
                (3, 3),
                (1, 1),
                (1, 1),
            )
        assert isinstance(resnet.maxpool, nn.Identity) and isinstance(
            densenet.features.pool0, nn.Identity
        )
    else:
        assert resnet.conv1.kernel_size == (7, 7) and isinstance(
            resnet.maxpool, nn.MaxPool2d
        )
        assert isinstance(densenet.features.pool0, nn.MaxPool2d)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_in_channels(backbone):
    model = build_backbone(backbone, 3, in_channels=1, stem="cifar")
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 3)


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_vanilla_forward_backward(backbone, stem):
    model = build_backbone(
        backbone, 7, stem=stem, attention="none", placement="stem+blocks"
    )
    assert attention_sites(model) == {}
    forward_backward(model, stem, 7)


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
@pytest.mark.parametrize("placement", [p for p in PLACEMENTS if p != "none"])
@pytest.mark.parametrize("attention", REAL_ATTENTION)
def test_every_attention_placement_backbone_stem_trains(
    attention, placement, backbone, stem
):
    model = build_backbone(
        backbone, 5, stem=stem, attention=attention, placement=placement
    )
    assert len(attention_sites(model)) == expected_sites(backbone, placement)
    forward_backward(model, stem, 5)


@pytest.mark.parametrize("attention", REAL_ATTENTION)
def test_placement_none_is_vanilla(attention):
    model = build_backbone(
        "resnet18", 100, stem="cifar", attention=attention, placement="none"
    )
    assert attention_sites(model) == {}
    assert sum(p.numel() for p in model.parameters()) == 11_220_132


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
@pytest.mark.parametrize("placement", ["stem", "blocks", "stem+blocks"])
def test_attention_sees_the_right_channels(test_blocks, backbone, placement):
    scale, _ = test_blocks
    model = build_backbone(
        backbone, 4, stem="cifar", attention=scale, placement=placement
    )
    sites = attention_sites(model)
    assert len(sites) == expected_sites(backbone, placement)
    if (
        "blocks" in placement and backbone == "densenet121"
    ):  # the new growth-rate features only
        assert {
            m.channels for site, m in sites.items() if m.attention_site != "stem"
        } == {32}
    if (
        "blocks" in placement and backbone == "resnet50"
    ):  # after bn3: the expanded width
        assert sites["layer4.2.bn3.attention"].channels == 2048
    forward_backward(model, "cifar", 4)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_stage_selection(test_blocks, backbone):
    scale, _ = test_blocks
    model = build_backbone(
        backbone, 4, stem="cifar", attention=scale, placement="blocks", stages=[4, 2]
    )
    sites = {m.attention_site for m in attention_sites(model).values()}
    stage_prefix = "layer" if backbone.startswith("resnet") else "denseblock"
    assert {site.split(".")[0] for site in sites} == {
        f"{stage_prefix}2",
        f"{stage_prefix}4",
    }
    assert len(sites) == expected_sites(backbone, "blocks", (2, 4))


def test_attention_kwargs_pass_through_unchanged(test_blocks):
    scale, conv = test_blocks
    kwargs = {"rank_k": 2, "iterations": 3, "custom": ("kept", 1)}
    for attention in (scale, conv):
        model = build_backbone(
            "resnet18",
            4,
            attention=attention,
            placement="stem+blocks",
            attention_kwargs=kwargs,
        )
        assert [m.kwargs for m in attention_sites(model).values()] == [kwargs] * 9


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_conv_replacing_attention_takes_the_3x3_conv(test_blocks, backbone):
    _, conv = test_blocks
    assert replaces_conv(conv)
    model = build_backbone(
        backbone, 4, stem="imagenet", attention=conv, placement="stem+blocks"
    )
    sites = attention_sites(model)
    assert len(sites) == expected_sites(backbone, "stem+blocks")
    stem_block = next(m for m in sites.values() if m.attention_site == "stem")
    assert (stem_block.in_channels, stem_block.out_channels, stem_block.stride) == (
        64,
        64,
        (1, 1),
    )
    if backbone == "resnet18":
        assert isinstance(model.layer2[0].conv2, ConvStandIn) and model.layer2[
            0
        ].conv2.stride == (1, 1)
    if backbone == "resnet50":  # V1.5: the Bottleneck's stride is on its 3×3 conv
        block = model.layer2[0].conv2
        assert isinstance(block, ConvStandIn) and (
            block.in_channels,
            block.out_channels,
            block.stride,
        ) == (128, 128, (2, 2))
    if backbone == "densenet121":
        block = model.features.denseblock3.denselayer5.conv2
        assert isinstance(block, ConvStandIn) and (
            block.in_channels,
            block.out_channels,
        ) == (128, 32)
    forward_backward(model, "imagenet", 4)


def count_calls(model: nn.Module) -> list[str]:
    calls: list[str] = []
    for module in attention_sites(model).values():
        module.register_forward_hook(lambda m, i, o: calls.append(m.attention_site))
    return calls


@pytest.mark.parametrize("attention", ["test_scale", "test_conv", *REAL_ATTENTION])
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_feature_extractors_run_the_attention(test_blocks, attention, backbone):
    model = build_backbone(
        backbone, 4, stem="imagenet", attention=attention, placement="stem+blocks"
    ).eval()
    expected = expected_sites(backbone, "stem+blocks")
    calls = count_calls(model)
    images = torch.randn(1, 3, 32, 32)
    if backbone == "densenet121":
        getter, node = (
            IntermediateLayerGetter(model.features, {"denseblock4": "out"}),
            "features.denseblock4",
        )
    else:
        getter, node = IntermediateLayerGetter(model, {"layer4": "out"}), "layer4"
    with torch.no_grad():
        getter(images)
        assert len(calls) == expected
        calls.clear()
        extractor = create_feature_extractor(
            model,
            {node: "out"},
            tracer_kwargs={"leaf_modules": attention_leaf_types(model)},
        )
        extractor(images)
    assert len(calls) == expected


def test_fpn_backbone_runs_the_attention(test_blocks):
    scale, _ = test_blocks
    model = build_backbone("resnet18", 4, attention=scale, placement="stem+blocks")
    calls = count_calls(model)
    fpn = BackboneWithFPN(
        model,
        {"layer1": "0", "layer4": "1"},
        in_channels_list=[64, 512],
        out_channels=16,
    )
    with torch.no_grad():
        features = fpn(torch.randn(1, 3, 64, 64))
    assert list(features) == ["0", "1", "pool"]
    assert len(calls) == 9


@pytest.mark.parametrize(
    "kwargs, message_parts",
    [
        ({"name": "resnet19"}, ["'resnet19'", "resnet18", "resnet50", "densenet121"]),
        ({"placement": "stme"}, ["'stme'", "none", "stem", "blocks", "stem+blocks"]),
        ({"placement": "blocks", "stages": (0, 5)}, ["(0, 5)", "1, 2, 3, 4"]),
        ({"placement": "blocks", "stages": ()}, ["()", "1, 2, 3, 4"]),
        ({"placement": "blocks", "stages": (2, 2)}, ["(2, 2)", "without repeats"]),
        ({"placement": "blocks", "stages": 2}, ["stages 2", "1, 2, 3, 4"]),
        ({"placement": "blocks", "stages": ("1",)}, ["('1',)", "1, 2, 3, 4"]),
        ({"placement": "stem", "stages": (1,)}, ["(1,)", "'stem'", "blocks"]),
        ({"stem": "cifr"}, ["'cifr'", "imagenet", "cifar"]),
        ({"attention": "snaa"}, ["'snaa'", "none"]),
        ({"num_classes": 0}, ["num_classes", "0"]),
        ({"in_channels": 0}, ["in_channels", "0"]),
    ],
)
def test_bad_arguments_name_the_value_and_the_valid_ones(kwargs, message_parts):
    arguments = {"name": "resnet18", "num_classes": 10, **kwargs}
    with pytest.raises((ValueError, RegistryError)) as raised:
        build_backbone(arguments.pop("name"), arguments.pop("num_classes"), **arguments)
    for part in message_parts:
        assert part in str(raised.value)
