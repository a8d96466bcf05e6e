"""Detectors (sna_core.detectors): the registry, parity with torchvision's R50-FPN detectors, the
attention running inside the detector's backbone, the single-map and DenseNet variants, and
Faster R-CNN on a VinDr-CXR-like sample (the real chest radiograph shipped by pydicom-data)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models.detection import fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

from sna_core._registry import RegistryError
from sna_core.backbones import attention_sites, build_backbone
from sna_core.detectors import (
    build_detection_backbone,
    build_detector,
    copy_matching_weights,
    detector_uses_masks,
    list_detectors,
)

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

TINY = {"min_size": 64, "max_size": 64}  # a forward in well under a second on one CPU thread
# Fewer proposals and sampled RoIs: at small sizes the box head (12544 → 1024 per RoI) dominates.
FEW_ROIS = {"rpn_post_nms_top_n_train": 100, "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 64}


def test_registry_names_and_errors() -> None:
    assert list_detectors() == ["faster_rcnn", "mask_rcnn"]
    assert detector_uses_masks("mask_rcnn") and not detector_uses_masks("faster_rcnn")
    with pytest.raises(RegistryError, match="unknown detector 'faster_rcn'. Did you mean 'faster_rcnn'.*Known: faster_rcnn, mask_rcnn"):
        build_detector("faster_rcn", "resnet50", 20)
    with pytest.raises(RegistryError, match="unknown detection backbone 'vgg16'.*Known: densenet121, resnet18, resnet50"):
        build_detector("faster_rcnn", "vgg16", 20)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1 .*background excluded.*got 0"):
        build_detector("faster_rcnn", "resnet18", 0)
    with pytest.raises(ValueError, match="in_channels=1: give image_mean"):
        build_detector("faster_rcnn", "resnet18", 3, in_channels=1)
    # torchvision's resize transform would swallow a misspelt option silently.
    with pytest.raises(ValueError, match="'faster_rcnn' takes no option 'min_sizes'. Did you mean 'min_size'"):
        build_detector("faster_rcnn", "resnet18", 3, min_sizes=64)
    with pytest.raises(ValueError, match="'mask_rcnn' takes no option 'mask_rol_pool'. Did you mean 'mask_roi_pool'"):
        build_detector("mask_rcnn", "resnet18", 3, mask_rol_pool=None)


@pytest.mark.parametrize(
    ("name", "reference"), [("faster_rcnn", fasterrcnn_resnet50_fpn), ("mask_rcnn", maskrcnn_resnet50_fpn)]
)
def test_without_attention_it_is_torchvisions_r50_fpn_detector(name, reference) -> None:
    """Same modules, names and shapes as torchvision's from-scratch R50-FPN detector: a
    num_classes without background becomes num_classes + 1 outputs."""
    ours = build_detector(name, "resnet50", 20).state_dict()
    theirs = reference(weights=None, weights_backbone=None, num_classes=21).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[key].shape == theirs[key].shape for key in theirs)
    assert ours["roi_heads.box_predictor.cls_score.weight"].shape[0] == 21
    assert ours["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 4 * 21


def count_attention_calls(model: torch.nn.Module) -> dict[str, int]:
    """Site name → forward calls, via hooks on every attention module placed in the backbone."""
    calls: dict[str, int] = {}
    for module in attention_sites(model).values():
        site = module.attention_site
        calls[site] = 0
        module.register_forward_hook(lambda *_, site=site: calls.__setitem__(site, calls[site] + 1))
    return calls


@pytest.mark.parametrize(
    ("backbone", "fpn", "sites"),
    [
        ("resnet50", True, 1 + 3 + 4 + 6 + 3),  # stem + every bottleneck
        ("resnet18", False, 1 + 2 + 2 + 2 + 2),
        ("densenet121", True, 1 + 6 + 12 + 24 + 16),  # stem + every dense layer
    ],
)
def test_attention_runs_inside_the_detector_backbone(backbone: str, fpn: bool, sites: int) -> None:
    torch.manual_seed(0)
    model = build_detector("faster_rcnn", backbone, 3, attention="sna", placement="stem+blocks", fpn=fpn, **TINY)
    calls = count_attention_calls(model)
    assert len(calls) == sites
    assert not any(name.endswith((".fc", "norm5")) for name, _ in model.named_modules())  # classifier head dropped
    images = [torch.rand(3, 64, 64)]
    model.eval()
    with torch.no_grad():
        model(images)
    assert set(calls.values()) == {1}, calls  # each block once per image batch, in the detector's own forward
    model.train()
    model(images, [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]]), "labels": torch.tensor([2])}])
    assert set(calls.values()) == {2}


@pytest.mark.parametrize(("backbone", "channels"), [("resnet18", 512), ("densenet121", 1024)])
def test_feature_layouts(backbone: str, channels: int) -> None:
    single = build_detection_backbone(backbone, fpn=False)
    pyramid = build_detection_backbone(backbone, fpn=True)
    assert (single.out_channels, single.featmap_names) == (channels, ["0"])
    assert (pyramid.out_channels, pyramid.featmap_names) == (256, ["0", "1", "2", "3"])
    with torch.no_grad():
        single_maps = single.eval()(torch.rand(1, 3, 64, 64))
        pyramid_maps = pyramid.eval()(torch.rand(1, 3, 64, 64))
    assert {name: tuple(t.shape) for name, t in single_maps.items()} == {"0": (1, channels, 2, 2)}  # stride 32
    assert [tuple(t.shape[-2:]) for t in pyramid_maps.values()] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    # Single map: five anchor sizes × three ratios on it; FPN: one size per level.
    assert build_detector("faster_rcnn", backbone, 3, fpn=False).rpn.anchor_generator.num_anchors_per_location() == [15]
    mask = build_detector("mask_rcnn", backbone, 3, fpn=False)
    assert mask.roi_heads.mask_roi_pool.featmap_names == ["0"]
    assert mask.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4


def test_imagenet_weights_load_through_the_attention_wrappers() -> None:
    torch.manual_seed(1)
    reference = tv_resnet18(weights=None).state_dict()
    model = build_backbone("resnet18", 1000, attention="se", placement="stem+blocks")
    untouched = copy_matching_weights(model, reference)
    assert torch.equal(model.layer1[0].bn2.module.weight, reference["layer1.0.bn2.weight"])
    assert torch.equal(model.conv1.weight, reference["conv1.weight"])
    assert untouched and all(".attention." in key for key in untouched)


def real_radiograph(size: int) -> torch.Tensor:
    """The real PA chest radiograph of pydicom-data, MONOCHROME1 inverted, scaled to 0–1, grey
    repeated on 3 channels and resized to ``size`` × ``size`` (as the VinDr-CXR detection contract)."""
    pydicom_data = pytest.importorskip("pydicom.data", reason="pydicom / pydicom-data not installed (pip install pydicom pydicom-data)")
    dataset = pytest.importorskip("pydicom").dcmread(pydicom_data.get_testdata_file("RG1_UNCR.dcm"))
    pixels = torch.from_numpy(dataset.pixel_array.astype("float32"))
    if dataset.PhotometricInterpretation == "MONOCHROME1":
        pixels = pixels.max() - pixels
    pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min())
    grey = F.interpolate(pixels[None, None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return grey.expand(3, -1, -1).contiguous()


@pytest.mark.parametrize("backbone", ["resnet18", "densenet121"])
def test_faster_rcnn_on_a_vindr_like_sample(backbone: str) -> None:
    """Table 4's detector: 14 findings, SNA at the stem and in the blocks, one image with two
    findings and one 'No finding' image (no box), a train step and an inference."""
    torch.manual_seed(0)
    size = 96
    model = build_detector(
        "faster_rcnn", backbone, 14, attention="sna", placement="stem+blocks",
        min_size=size, max_size=size, image_mean=[0.0] * 3, image_std=[1.0] * 3, **FEW_ROIS,
    )
    image = real_radiograph(size)
    images = [image, image.flip(-1)]
    targets = [
        {"boxes": torch.tensor([[20.0, 30.0, 70.0, 80.0], [10.0, 10.0, 30.0, 25.0]]), "labels": torch.tensor([3, 11])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # No finding
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert math.isfinite(float(total.detach()))
    total.backward()
    stem_weight = next(model.backbone.body.parameters())  # the first convolution
    assert stem_weight.grad is not None and stem_weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for output in outputs:
        assert output["boxes"].shape[1] == 4 and output["boxes"].shape[0] == output["scores"].shape[0]
        assert output["labels"].numel() == 0 or (1 <= int(output["labels"].min()) and int(output["labels"].max()) <= 14)
