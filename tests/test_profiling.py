"""Complexity profiling in correct units and in the SNA paper's table units (Tables 1 and 2)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from sna_core.attention import list_attention
from sna_core.backbones import build_backbone
from sna_core.profiling import (
    complexity_report,
    count_flops,
    count_params,
    measure_throughput,
    paper_flops,
    paper_param_count,
    torchstat_flops,
)

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_count_flops_torchvision_resnet50_at_224():
    model = build_backbone("resnet50", 1000, attention="none")
    assert count_flops(model, (3, 224, 224)) == 8_178_368_512
    assert count_flops(torchvision.models.resnet50(), (1, 3, 224, 224)) == 8_178_368_512


def test_count_flops_resnet18_imagenet_stem_at_32():
    model = build_backbone("resnet18", 100, stem="imagenet")
    assert count_flops(model, (3, 32, 32)) == 74_125_312


def test_count_flops_scales_with_batch_and_restores_training_mode():
    model = build_backbone("resnet18", 10).train()
    assert count_flops(model, (2, 3, 32, 32)) == 2 * count_flops(model, (3, 32, 32))
    assert model.training and all(m.training for m in model.modules())


def test_count_flops_counts_matrix_products():
    """FlopCounterMode counts 2 per multiply-add, matmuls included: a 4×5 @ 5×6 product is 240."""

    class MatrixProduct(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :20].reshape(-1, 4, 5) @ torch.ones(5, 6)

    assert count_flops(MatrixProduct(), (1, 4, 5)) == 2 * 4 * 5 * 6


@pytest.mark.parametrize(
    "count, printed",
    [
        (11_220_132, "10.71"),  # CIFAR ResNet-18, Table 1
        (25_557_032, "24.38"),  # ResNet-50, Table 2
        (
            7_048_676,
            "6.739",
        ),  # CIFAR DenseNet-121 (notes' figure; Table 1 rounds to 6.74)
        (
            11_689_512,
            "11.15",
        ),  # 11 rem 151: the decimals are a remainder, not a fraction
        (1024**2 + 5, "1.000"),
        (500, "500.0"),
    ],
)
def test_paper_param_count(count, printed):
    assert paper_param_count(count) == printed


def test_paper_param_count_rejects_negative_counts():
    with pytest.raises(ValueError, match="-1"):
        paper_param_count(-1)


@pytest.mark.parametrize(
    "backbone, stem, num_classes, total, printed",
    [
        ("resnet18", "cifar", 100, 32_640_058_368, 32.64),  # Table 1
        ("resnet50", "imagenet", 1000, 5_187_418_880, 5.19),  # Table 2
        ("densenet121", "cifar", 100, 52_453_419_648, 52.45),  # Table 1
    ],
)
def test_paper_flops_reproduce_the_tables(backbone, stem, num_classes, total, printed):
    model = build_backbone(backbone, num_classes, stem=stem)
    assert torchstat_flops(model) == total
    assert paper_flops(model) == printed


def test_torchstat_counts_a_reused_module_once():
    """torchstat keeps a module's last call only: ResNet's one ``relu`` object per block."""
    relu = nn.ReLU()
    model = nn.Sequential(
        nn.Conv2d(1, 2, 1, bias=False), relu, nn.Conv2d(2, 4, 1, bias=False), relu
    )
    # conv 1·2·16 + conv 2·4·16 + last relu 4·16 (the first relu call, 2·16, is overwritten)
    assert torchstat_flops(model, (1, 4, 4)) == 32 + 128 + 64


@pytest.mark.skipif(
    "sna" not in list_attention(), reason="the SNA block is not registered"
)
def test_sna_adds_flops_but_no_parameters():
    vanilla = build_backbone("resnet18", 100, stem="cifar")
    sna = build_backbone(
        "resnet18", 100, stem="cifar", attention="sna", placement="stem"
    )
    assert count_params(sna) == count_params(vanilla) == 11_220_132
    assert count_flops(sna, (3, 32, 32)) > count_flops(vanilla, (3, 32, 32))


def test_complexity_report_has_both_units():
    model = build_backbone("resnet18", 100, stem="cifar")
    report = complexity_report(model, (3, 32, 32))
    assert report["params"] == 11_220_132 and report["paper_params"] == "10.71"
    assert report["flops"] == 2 * report["macs"] and report["gflops"] == pytest.approx(
        1.1109376
    )
    assert report["paper_flops_g"] == 32.64 and report["paper_flops_input"] == [
        3,
        244,
        244,
    ]
    assert report["input_shape"] == [1, 3, 32, 32]


def test_count_params_trainable_only():
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    assert count_params(model) == 8 and count_params(model, trainable_only=True) == 6


def test_measure_throughput_is_positive_and_keeps_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    rate = measure_throughput(model, (3, 16, 16), batch_size=4, warmup=1, iters=3)
    assert rate > 0 and model.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_measure_throughput_on_cuda():
    model = nn.Conv2d(3, 4, 3)
    assert (
        measure_throughput(
            model, (3, 16, 16), batch_size=4, warmup=1, iters=3, device="cuda"
        )
        > 0
    )


@pytest.mark.parametrize("shape", [(3, 32), (1, 1, 3, 32, 32)])
def test_bad_input_shapes_are_named(shape):
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        count_flops(nn.Identity(), shape)


def test_measure_throughput_rejects_bad_counts():
    with pytest.raises(ValueError, match="iters"):
        measure_throughput(nn.Identity(), (3, 8, 8), batch_size=1, iters=0)
