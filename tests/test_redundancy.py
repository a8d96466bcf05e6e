"""The redundancy analysis of Fig. 1 (Fang et al., Neurocomputing 2022, §1): spectra, energy ranks
and reconstructions on matrices of known rank, image reading (DICOM MONOCHROME1 inverted, CT in
Hounsfield units from air), column (e)'s mean maximal EVR over growing image sets (constructed
images of known spectrum, and the real demo sets), the feature maps at a backbone's SNA sites
with the placement advice, and ``sna-orch analyze-redundancy`` on a real scikit-image photo, the
pydicom-data chest radiograph and user-given image groups."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.cli import main as cli_main
from sna_core.analysis import (
    analyze_image,
    analyze_matrix,
    parse_ranks,
    rank_for_energy,
)
from sna_core.analysis.feature_maps import (
    REDUNDANT_RANK_FRACTION,
    SiteRedundancy,
    analyze_feature_maps,
    build_network,
    channel_spectrum,
    placement_advice,
    preprocess,
)
from sna_core.analysis.images import (
    DEMO_MEDICAL_SET,
    DEMO_NATURAL_SET,
    demo_groups,
    load_image,
)
from sna_core.analysis.max_evr_curve import (
    max_evr_curve,
    max_explained_variance_ratio,
    prepare_for_svd,
    running_mean_std,
)
from sna_core.attention.sna import low_rank_approximation
from sna_core.backbones import build_backbone

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def known_rank_matrix(height: int, width: int, singular_values: list[float], seed: int = 0) -> torch.Tensor:
    """``U diag(s) Vᵀ`` (float64) with orthonormal U, V: its singular values are exactly ``s``."""
    generator = torch.Generator().manual_seed(seed)
    r = len(singular_values)
    left = torch.linalg.qr(torch.randn(height, r, generator=generator, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(width, r, generator=generator, dtype=torch.float64)).Q
    return left @ torch.diag(torch.tensor(singular_values, dtype=torch.float64)) @ right.T


def skimage_photo(name: str) -> Path:
    """The file of a photo that scikit-image ships (read by path, as a user's file would be)."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the natural photos")
    path = Path(skimage_data.__file__).parent / f"{name}.png"
    if not path.is_file():
        pytest.skip(f"scikit-image has no {path.name}")
    return path


def chest_radiograph() -> str:
    pydicom_data = pytest.importorskip("pydicom.data", reason="pydicom reads the DICOM")
    path = pydicom_data.get_testdata_file("RG1_UNCR.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data (the RG1_UNCR.dcm chest radiograph) is not installed")
    return path


# --- numbers on matrices of known rank ---------------------------------------------------------


@pytest.mark.parametrize("height, width", [(40, 30), (25, 60)])
def test_known_spectrum_against_hand_computation(height: int, width: int) -> None:
    # σ = 4, 3, 2, 1: energies 16, 9, 4, 1 of 30; cumulative 16/30, 25/30, 29/30, 1.
    matrix = known_rank_matrix(height, width, [4.0, 3.0, 2.0, 1.0])
    result = analyze_matrix(matrix, ranks=(1, 2, 4, 30), keep_reconstructions=True)
    assert result.shape == (height, width)
    assert result.singular_values.numel() == min(height, width)
    assert torch.allclose(result.singular_values[:4], torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64), atol=1e-12)
    assert float(result.singular_values[4:].abs().max()) < 1e-12
    hand = torch.tensor([16, 9, 4, 1], dtype=torch.float64) / 30
    assert torch.allclose(result.explained_variance_ratio[:4], hand, atol=1e-12)
    assert result.top1_energy == pytest.approx(16 / 30, abs=1e-12)
    assert result.rank_for(0.90) == 3  # 25/30 = 0.833 < 0.90 <= 29/30
    assert result.rank_for(0.99) == 4  # 29/30 = 0.967 < 0.99
    # Eckart–Young: the rank-k error is sqrt of the energy left out.
    assert result.relative_errors[1] == pytest.approx(math.sqrt(14 / 30), abs=1e-12)
    assert result.relative_errors[2] == pytest.approx(math.sqrt(5 / 30), abs=1e-12)
    assert result.relative_errors[4] < 1e-12  # exact at the matrix's rank
    assert result.relative_errors[30] < 1e-12  # a rank beyond the rank (or min(H, W)) is exact too
    assert torch.allclose(result.reconstructions[4], matrix, atol=1e-12)
    record = result.to_dict()
    assert record["rank_for_90"] == 3 and record["rank_for_99"] == 4
    assert set(record["relative_errors"]) == {"1", "2", "4", "30"}


@pytest.mark.parametrize("rank", [1, 3, 7, 20])
def test_rank_for_99_is_the_rank_of_a_rank_r_matrix(rank: int) -> None:
    # Equal singular values: each direction holds 1/r of the energy, so r - 1 directions hold
    # (r - 1)/r < 0.99 and the 99 % rank is exactly r.
    result = analyze_matrix(known_rank_matrix(32, 48, [2.5] * rank, seed=rank), ranks=(rank,), keep_reconstructions=True)
    assert result.rank_for(0.99) == rank
    assert result.relative_errors[rank] < 1e-12
    if rank > 1:
        assert analyze_matrix(known_rank_matrix(32, 48, [2.5] * rank, seed=rank), ranks=(rank - 1,)).relative_errors[rank - 1] > 0.1


def test_measured_errors_equal_eckart_young() -> None:
    matrix = torch.randn(33, 21, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    measured = analyze_matrix(matrix, ranks=(1, 5, 21), keep_reconstructions=True).relative_errors
    from_spectrum = analyze_matrix(matrix, ranks=(1, 5, 21)).relative_errors
    assert measured.keys() == from_spectrum.keys()
    for k in measured:
        assert measured[k] == pytest.approx(from_spectrum[k], abs=1e-12)
    assert measured[1] > measured[5] > 0.1 and measured[21] < 1e-12


def test_rank1_reconstruction_is_snas_low_rank_approximation() -> None:
    matrix = known_rank_matrix(20, 14, [5.0, 2.0, 1.0, 0.5])
    ours = analyze_matrix(matrix, ranks=(1,), keep_reconstructions=True).reconstructions[1]
    sna, _ = low_rank_approximation(matrix.unsqueeze(0), 1, method="svd")
    assert torch.allclose(ours, sna[0], atol=1e-10)


def test_zero_matrix_has_no_energy_and_no_nan() -> None:
    result = analyze_matrix(torch.zeros(6, 9), ranks=(1, 30))
    assert result.rank_for(0.99) == 0 and result.top1_energy == 0.0
    assert result.relative_errors == {1: 0.0, 30: 0.0}
    assert not torch.isnan(result.explained_variance_ratio).any()


def test_rank_for_energy_on_a_hand_curve() -> None:
    curve = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    assert [rank_for_energy(curve, level) for level in (0.5, 0.8, 0.9, 0.95, 0.99)] == [1, 2, 3, 3, 4]


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN"),
    (torch.ones(5), "2-D"),
    (torch.ones(0, 3), "2-D"),
])
def test_bad_matrix_is_refused(bad: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze_matrix(bad)


@pytest.mark.parametrize("text, expected", [("1,30", (1, 30)), ("30, 1,1", (1, 30)), ("8", (8,))])
def test_parse_ranks(text: str, expected: tuple[int, ...]) -> None:
    assert parse_ranks(text) == expected


@pytest.mark.parametrize("text", ["", "0", "a", "1,-2", "1.5", "1,,3"])
def test_parse_ranks_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="rank"):
        parse_ranks(text)


def test_colour_image_luminance_and_channels() -> None:
    base = known_rank_matrix(24, 18, [3.0, 1.0]).abs()  # non-negative, rank <= 24
    image = torch.stack([base, 0.5 * base, 0.25 * base], dim=-1)  # every channel ∝ base
    result = analyze_image(image, ranks=(1, 30))
    assert result.is_colour and set(result.channels) == {"R", "G", "B"}
    luma = 0.299 + 0.587 * 0.5 + 0.114 * 0.25
    assert torch.allclose(result.luminance.singular_values, luma * analyze_matrix(base).singular_values, atol=1e-12)
    # Channels are multiples of one matrix: each channel's (and the whole image's) errors equal base's.
    expected = analyze_matrix(base, ranks=(1,)).relative_errors[1]
    assert result.colour_relative_error(1) == pytest.approx(expected, abs=1e-12)
    assert result.colour_reconstruction(30).shape == (24, 18, 3)
    assert result.to_dict()["analysed_on"].startswith("luminance")


# --- Fig. 1(e): mean maximal EVR over the first N images -----------------------------------------


def rank1_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A non-negative rank-1 image ``u vᵀ`` (EVR₁ = 1 exactly)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(height, generator=generator, dtype=torch.float64) + 0.1
    v = torch.rand(width, generator=generator, dtype=torch.float64) + 0.1
    return torch.outer(u, v)


@pytest.mark.parametrize("size", [None, 16, 224])
@pytest.mark.parametrize("shape", [(40, 30), (30, 40, 3)])
def test_rank1_image_has_max_evr_one_at_any_size(shape: tuple[int, ...], size: int | None) -> None:
    # Resizing is separable (R_h A R_wᵀ), so it keeps a rank-1 image rank 1; a colour image whose
    # channels are multiples of one rank-1 matrix has a rank-1 luminance.
    base = rank1_image(*shape[:2])
    image = base if len(shape) == 2 else torch.stack([base, 0.5 * base, 0.2 * base], dim=-1)
    assert max_explained_variance_ratio(image, size) == pytest.approx(1.0, abs=1e-12)
    assert tuple(prepare_for_svd(image, size).shape) == ((size, size) if size else shape[:2])


def test_colour_image_is_measured_on_its_luminance() -> None:
    rgb = torch.rand(20, 24, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grey = rgb @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    assert max_explained_variance_ratio(rgb, 32) == pytest.approx(max_explained_variance_ratio(grey, 32), abs=1e-12)
    assert max_explained_variance_ratio(rgb, None) != pytest.approx(max_explained_variance_ratio(rgb[..., 2], None), abs=1e-3)


def test_identical_images_give_a_flat_curve_with_zero_spread() -> None:
    image = torch.rand(33, 27, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    curve = max_evr_curve("same", [(f"copy{i}", image) for i in range(6)], size=24)
    expected = max_explained_variance_ratio(image, 24)
    assert 0.5 < expected < 1.0  # a random non-negative image: large EVR₁ (its mean level), not 1
    assert curve.count == 6 and curve.names == tuple(f"copy{i}" for i in range(6))
    np.testing.assert_array_equal(curve.means, np.full(6, expected))
    np.testing.assert_array_equal(curve.stds, np.zeros(6))


def test_known_mixture_against_hand_computation() -> None:
    # Singular values (1), (3, 1), (1, 1): EVR₁ = 1, 9/10, 1/2; at native size, in this order.
    images = [("rank1", known_rank_matrix(12, 10, [2.0], seed=1)),
              ("ninety", known_rank_matrix(12, 10, [3.0, 1.0], seed=2)),
              ("half", known_rank_matrix(12, 10, [1.0, 1.0], seed=3))]
    curve = max_evr_curve("mixture", images, size=None)
    np.testing.assert_allclose(curve.max_evr, [1.0, 0.9, 0.5], atol=1e-12)
    np.testing.assert_allclose(curve.means, [1.0, 0.95, 0.8], atol=1e-12)
    np.testing.assert_allclose(curve.stds, [0.0, 0.05, math.sqrt((0.2**2 + 0.1**2 + 0.3**2) / 3)], atol=1e-12)
    record = curve.to_dict()
    assert record["n"] == [1, 2, 3] and record["images"] == ["rank1", "ninety", "half"] and record["size"] == "native"
    assert curve.final_mean == pytest.approx(0.8, abs=1e-12)


@pytest.mark.parametrize("count", [1, 2, 7, 50])
def test_running_mean_std_equals_numpy_on_every_prefix(count: int) -> None:
    values = np.random.default_rng(count).uniform(0.6, 1.0, size=count)
    means, stds = running_mean_std(values)
    for n in range(1, count + 1):
        assert means[n - 1] == pytest.approx(values[:n].mean(), abs=1e-12)
        assert stds[n - 1] == pytest.approx(values[:n].std(ddof=0), abs=1e-12)


@pytest.mark.parametrize("images, size, message", [
    ([], 224, "group 'g' has no images"),
    ([("nan_image", torch.full((8, 8), float("nan")))], 8, "group 'g', image 'nan_image'.*NaN"),
    ([("flat", torch.ones(4))], 8, "group 'g', image 'flat'.*shape"),
    ([("ok", torch.ones(8, 8))], 0, "size must be"),
])
def test_max_evr_curve_refuses_bad_input(images: list, size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        max_evr_curve("g", images, size=size)


def test_demo_sets_on_real_images() -> None:
    """Fig. 1(e) on every real photo scikit-image ships and every real CT/MR/CR/NM image of
    pydicom and pydicom-data, at 224² luminance. Measured here: natural 0.894 ± 0.128 (15),
    medical 0.852 ± 0.088 (11) — the paper's claim (medical > natural) is NOT reproduced on
    the pooled set; it holds for the two radiographs (EVR₁ ≈ 0.98), the paper's kind of medical
    image, while the CT and MR slices (dark background around the body) sit lower."""
    pytest.importorskip("skimage.data", reason="the natural set comes from scikit-image")
    chest_radiograph()
    groups = demo_groups()
    assert [s.name for s in groups["natural"]] == list(DEMO_NATURAL_SET)
    assert [s.name for s in groups["medical"]] == [name.removesuffix(".dcm") for name in DEMO_MEDICAL_SET]
    assert [s.name.casefold() for s in groups["medical"]] == sorted(s.name.casefold() for s in groups["medical"])
    loaded = {kind: [source.load() for source in sources] for kind, sources in groups.items()}
    assert {image.info["modality"] for image in loaded["medical"]} == {"CR", "CT", "MR", "NM"}
    curves = {kind: max_evr_curve(kind, [(image.name, image.pixels) for image in images])
              for kind, images in loaded.items()}
    natural, medical = curves["natural"], curves["medical"]
    assert (natural.count, medical.count) == (15, 11)
    assert all(0.3 < value < 1.0 for curve in curves.values() for value in curve.max_evr)
    assert natural.final_mean > medical.final_mean  # the measured relation: opposite to the paper's
    assert natural.final_mean == pytest.approx(0.894, abs=0.01) and medical.final_mean == pytest.approx(0.852, abs=0.01)
    radiographs = [value for name, value in zip(medical.names, medical.max_evr) if name.startswith("RG")]
    assert len(radiographs) == 2 and min(radiographs) > 0.97 > natural.final_mean


# --- reading images ------------------------------------------------------------------------------


def test_dicom_monochrome1_is_inverted() -> None:
    import pydicom

    path = chest_radiograph()
    dataset = pydicom.dcmread(path)
    assert dataset.PhotometricInterpretation == "MONOCHROME1"
    full_scale = 2**int(dataset.BitsStored) - 1
    loaded = load_image(path)
    assert loaded.pixels.shape == dataset.pixel_array.shape == (1955, 1841)
    assert loaded.info["inverted"] is True
    raw = dataset.pixel_array.astype(np.float64)
    np.testing.assert_allclose(loaded.pixels[::97, ::89], (full_scale - raw[::97, ::89]) / full_scale)


def test_ct_is_read_in_hounsfield_units_from_air(tmp_path: Path) -> None:
    """The same CT slice stored with intercept −1024 (as shipped) and with intercept 0 (HU stored
    directly, as other CT files do) loads to the same image, air (−1024 HU) at 0."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm", download=False)
    dataset = pydicom.dcmread(path)
    assert float(dataset.RescaleIntercept) == -1024.0 and dataset.PixelRepresentation == 1
    stored = dataset.pixel_array.astype(np.int32)
    dataset.PixelData = (stored - 1024).astype("<i2").tobytes()
    dataset.RescaleIntercept = 0
    dataset.save_as(tmp_path / "hu_stored.dcm")
    shipped, rewritten = load_image(path), load_image(tmp_path / "hu_stored.dcm")
    assert shipped.info["modality"] == "CT" and shipped.info["zero_level_hu"] == -1024.0
    np.testing.assert_allclose(rewritten.pixels, shipped.pixels, atol=1e-15)
    np.testing.assert_allclose(shipped.pixels, np.clip(stored / (2**16 - 1), 0, 1), atol=1e-15)


def test_palette_colour_dicom_is_read_as_rgb() -> None:
    pydicom_data = pytest.importorskip("pydicom.data", reason="pydicom reads the DICOM")
    path = pydicom_data.get_testdata_file("OBXXXX1A.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data (the OBXXXX1A.dcm ultrasound) is not installed")
    loaded = load_image(path)
    assert loaded.pixels.shape == (600, 800, 3) and loaded.info["photometric"] == "PALETTE COLOR"
    assert 0.0 <= loaded.pixels.min() and loaded.pixels.max() <= 1.0
    assert not np.array_equal(loaded.pixels[..., 0], loaded.pixels[..., 2])  # the LUT was applied


def test_png_alpha_is_dropped_and_scaled(tmp_path: Path) -> None:
    rgba = np.zeros((5, 7, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    assert loaded.pixels.shape == (5, 7, 3) and loaded.pixels[..., 0].min() == 1.0 and loaded.pixels[..., 1:].max() == 0.0


def test_unreadable_image_names_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not_an_image.png"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


# --- the in-network view -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 6, 6, generator=generator), size=(48, 40), mode="bilinear")
    return torch.stack([preprocess(image.permute(1, 2, 0).numpy(), 64) for image in smooth])


@pytest.mark.parametrize("placement, sites", [
    ("stem", ["stem"]),
    ("blocks", [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]),
    ("stem+blocks", ["stem"] + [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]),
])
def test_statistics_at_every_placement_point(placement: str, sites: list[str], small_batch: torch.Tensor) -> None:
    network = build_network("resnet18", placement)
    assert list(network.sites) == sites and network.weights.startswith("untrained")
    results = analyze_feature_maps(network.model, small_batch, network.sites, ranks=(1, 30))
    assert [r.site for r in results] == sites
    sides = {"stem": 16, "layer1": 16, "layer2": 8, "layer3": 4, "layer4": 2}  # 64² input
    for result in results:
        assert result.height == result.width == sides[result.stage]
        assert result.channel_evr.numel() == result.height
        assert float(result.channel_evr.sum()) == pytest.approx(1.0, abs=1e-9)
        assert 1 <= result.rank_for(0.90) <= result.rank_for(0.99) <= result.height
        assert 0 < result.normalised_rank_99 <= 1
        record = result.to_dict()
        assert {"channel_rank_for_90", "channel_rank_for_99", "pooled_top1_energy", "pooled_rank_for_99"} <= set(record)
        assert len(record["per_image"]) == 2


def test_site_maps_are_what_the_attention_receives(small_batch: torch.Tensor) -> None:
    """Recomputed by hand: the stem's max-pool output and layer1.0's bn2 output (before the
    residual addition, which the block does in place after the BN)."""
    network = build_network("resnet18", "stem+blocks", seed=3)
    model = network.model
    results = {r.site: r for r in analyze_feature_maps(model, small_batch[:1], network.sites)}
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(small_batch[:1]))))
        block = model.layer1[0]
        bn2 = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(stem)))))
    assert torch.allclose(results["stem"].channel_evr, channel_spectrum(stem[0])[0], atol=1e-10)
    assert torch.allclose(results["layer1.0"].channel_evr, channel_spectrum(bn2[0])[0], atol=1e-10)


def test_sna_network_and_checkpoint(tmp_path: Path, small_batch: torch.Tensor) -> None:
    trained = build_backbone("resnet18", 7, stem="cifar", attention="sna", placement="blocks")
    path = tmp_path / "trial_state.pt"
    torch.save({"model": trained.state_dict(), "epoch": 3}, path)  # an sna-orch trial checkpoint
    network = build_network("resnet18", "blocks", attention="sna", checkpoint=str(path))
    assert network.weights == str(path) and network.stem == "cifar"
    assert network.model.fc.out_features == 7
    assert torch.equal(network.model.conv1.weight, trained.conv1.weight)
    results = analyze_feature_maps(network.model, small_batch[:1], network.sites)
    assert results[0].height == 64  # CIFAR stem: no down-sampling before layer1
    with pytest.raises(ValueError, match=r"trial_state.pt.*\.module\."):
        build_network("resnet18", "blocks", attention="none", checkpoint=str(path))


def _site(site: str, rank99: int, side: int) -> SiteRedundancy:
    curve = torch.zeros(side, dtype=torch.float64)
    curve[:rank99] = 1.0 / rank99  # 99 % is reached exactly at rank99
    return SiteRedundancy(site, 8, side, side, curve, 0.0, curve.clone(), {1: 0.5})


@pytest.mark.parametrize("sites, verdict", [
    ([("stem", 4, 32), ("layer1.0", 20, 32), ("layer4.0", 4, 4)], "SNA at the stem (the block"),
    ([("stem", 4, 32), ("layer1.0", 6, 32), ("layer1.1", 2, 32)], "SNA at the stem, and in the blocks of layer1"),
    ([("stem", 20, 32), ("layer2.0", 3, 16)], "SNA in the blocks of layer2"),
    ([("stem", 20, 32), ("layer2.0", 12, 16)], "little spatial redundancy"),
    ([("stem", 8, 32)], "SNA at the stem"),
])
def test_placement_advice_rule(sites: list[tuple[str, int, int]], verdict: str) -> None:
    advice = placement_advice([_site(*s) for s in sites])
    assert advice.startswith(f"advice: {verdict}")
    assert f"<= {REDUNDANT_RANK_FRACTION:g}" in advice and "stem ρ=" in advice


# --- the command -------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(["analyze-redundancy", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_on_a_photo_and_the_radiograph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo, dicom = skimage_photo("astronaut"), chest_radiograph()
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, str(photo), dicom, "--out", str(out), "--json", "--image-size", "64")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["ranks"] == [1, 30]
    astronaut, radiograph = report["images"]
    for image in report["images"]:
        assert {"singular_values", "explained_variance_ratio", "rank_for_90", "rank_for_99", "relative_errors", "top1_energy"} <= set(image)
        assert sum(image["explained_variance_ratio"]) == pytest.approx(1.0, abs=1e-9)
        assert set(image["relative_errors"]) == {"1", "30"}
        assert image["relative_errors"]["30"] < image["relative_errors"]["1"] < 1
    # The luminance spectrum against an independent numpy SVD of the same photo.
    rgb = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float64) / 255
    expected = np.linalg.svd(rgb @ np.array([0.299, 0.587, 0.114]), compute_uv=False)
    np.testing.assert_allclose(astronaut["singular_values"][:10], expected[:10], rtol=1e-9)
    assert astronaut["colour"] and set(astronaut["channels"]) == {"R", "G", "B"}
    assert radiograph["shape"] == [1955, 1841] and radiograph["file_info"]["inverted"] is True
    # Fig. 1's claim on these two real images: the radiograph needs fewer directions.
    assert radiograph["rank_for_99"] < astronaut["rank_for_99"]
    (view,) = report["network"]["views"]
    assert report["network"]["weights"].startswith("untrained")
    assert [s["site"] for s in view["sites"]][:2] == ["stem", "layer1.0"] and view["advice"].startswith("advice: ")
    expected_files = {f"{stem}.{fmt}" for stem in ("astronaut_redundancy", "RG1_UNCR_redundancy", "fig1_redundancy",
                                                   "network_redundancy") for fmt in ("png", "svg")} | {"redundancy.json"}
    assert set(os.listdir(out)) == expected_files  # no temporary files left
    assert (out / "fig1_redundancy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "astronaut_redundancy.svg").read_bytes()[:2000]
    assert json.loads((out / "redundancy.json").read_text())["images"][1]["rank_for_99"] == radiograph["rank_for_99"]
    assert "astronaut" in stderr and "advice:" in stderr  # the table goes to stderr with --json


def test_cli_demo_table(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("skimage.data", reason="the demo's natural images come from scikit-image")
    chest_radiograph()
    code, stdout, stderr = run_cli(capsys, "--demo", "--no-network", "--ranks", "1")
    assert code == 0, stderr
    for name in ("astronaut", "camera", "coffee", "chelsea", "RG1_UNCR"):
        assert name in stdout
    assert "natural" in stdout and "medical" in stdout and "err@1" in stdout and "err@30" not in stdout
    assert "rank for 99% of the energy: natural" in stdout
    # Column (e): one line per demo group, and the check of the paper's claim on these images.
    assert "Fig. 1(e) natural: mean max EVR 0.89" in stdout and "over 15 images (luminance, 224×224)" in stdout
    assert "Fig. 1(e) medical: mean max EVR 0.85" in stdout and "over 11 images" in stdout
    assert "paper's claim (medical mean max EVR > natural): does NOT hold here" in stdout


def write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def test_cli_with_groups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two groups on files: exactly rank-1 8-bit images (EVR₁ = 1) and noise images (a directory),
    checked against an independent numpy SVD at native size."""
    u, v = np.arange(1, 16), np.arange(1, 18)  # u_i v_j <= 255: exact in 8 bits, exactly rank 1
    flat = [write_png(tmp_path / f"flat{i}.png", np.outer(u + i, v)[: 15 - i]) for i in range(2)]
    noisy_dir = tmp_path / "noisy"
    noisy_dir.mkdir()
    rng = np.random.default_rng(0)
    noisy = [write_png(noisy_dir / f"n{i}.png", rng.integers(0, 256, size=(20 + i, 30))) for i in range(3)]
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "--group", f"flat={flat[0]}", "--group", f"flat={flat[1]}",
                                   "--group", f"noisy={noisy_dir}", "--evr-size", "0", "--out", str(out), "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["images"] == [] and "network" not in report  # groups only: no (a)–(d) rows
    groups = report["max_evr"]["groups"]
    assert list(groups) == ["flat", "noisy"]
    assert groups["flat"]["images"] == ["flat0", "flat1"] and groups["flat"]["size"] == "native"
    np.testing.assert_allclose(groups["flat"]["mean"], [1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(groups["flat"]["std"], [0.0, 0.0], atol=1e-7)
    expected = []
    for path in noisy:
        sigma = np.linalg.svd(np.asarray(Image.open(path), dtype=np.float64) / 255, compute_uv=False)
        expected.append(sigma[0] ** 2 / np.sum(sigma**2))
    assert groups["noisy"]["images"] == ["n0", "n1", "n2"] and groups["noisy"]["n"] == [1, 2, 3]
    np.testing.assert_allclose(groups["noisy"]["max_evr"], expected, rtol=1e-10)
    np.testing.assert_allclose(groups["noisy"]["mean"], [np.mean(expected[:n]) for n in (1, 2, 3)], rtol=1e-10)
    np.testing.assert_allclose(groups["noisy"]["std"], [np.std(expected[:n]) for n in (1, 2, 3)], atol=1e-12)
    assert "Fig. 1(e) flat: mean max EVR 1.000 ± 0.000 (sd) over 2 images (luminance, native size)" in stderr
    assert f"Fig. 1(e) noisy: mean max EVR {np.mean(expected):.3f} ± {np.std(expected):.3f}" in stderr
    assert "paper's claim" not in stderr  # only for groups named natural and medical
    assert set(os.listdir(out)) == {"fig1e_max_evr.png", "fig1e_max_evr.svg", "redundancy.json"}
    assert (out / "fig1e_max_evr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"noisy" in (out / "fig1e_max_evr.svg").read_bytes()  # the legend names the groups
    assert json.loads((out / "redundancy.json").read_text())["max_evr"]["groups"]["noisy"]["max_evr"] == groups["noisy"]["max_evr"]


def test_cli_group_name_taken_by_the_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("skimage.data", reason="--demo's natural set comes from scikit-image")
    chest_radiograph()
    photo = write_png(tmp_path / "photo.png", np.full((16, 16), 99))
    code, _, stderr = run_cli(capsys, "--demo", "--group", f"medical={photo}", "--out", str(tmp_path / "out"))
    assert code == 2 and "--group medical: the name is taken by --demo's group" in stderr
    assert not (tmp_path / "out").exists()


def test_cli_default_evr_size_is_the_library_default() -> None:
    from orchestrator.commands import analyze_redundancy
    from sna_core.analysis.max_evr_curve import DEFAULT_EVR_SIZE

    assert analyze_redundancy.DEFAULT_EVR_SIZE == DEFAULT_EVR_SIZE  # duplicated to keep --help fast


def test_cli_image_rows_with_column_e(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = write_png(tmp_path / "photo.png", np.random.default_rng(1).integers(0, 256, size=(40, 36)))
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, str(photo), "--group", f"natural={photo},{photo}", "--group",
                                   f"medical={photo}", "--no-network", "--ranks", "1", "--out", str(out))
    assert code == 0, stderr
    assert "photo" in stdout and "err@1" in stdout
    assert "Fig. 1(e) natural: mean max EVR" in stdout and "over 2 images (luminance, 224×224)" in stdout
    assert "does NOT hold here" in stdout  # the same image in both groups: equal means, not ">"
    assert {"fig1_redundancy.png", "fig1_redundancy.svg", "fig1e_max_evr.svg", "photo_redundancy.png"} <= set(os.listdir(out))
    assert b"(e) mean max. EVR" in (out / "fig1_redundancy.svg").read_bytes()
    assert b"(e) mean max. EVR" not in (out / "photo_redundancy.svg").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing.png"], "missing.png"),
    (["{tmp}/text.png"], "text.png"),
    (["{photo}", "--ranks", "0"], "--ranks"),
    (["{photo}", "--ranks", "1,x"], "--ranks"),
    (["{photo}", "--backbone", "resnet19"], "resnet19"),
    (["{photo}", "--checkpoint", "{tmp}/none.pt"], "none.pt"),
    ([], "IMAGE"),
    (["--group", "no_equals_sign.png"], "NAME=PATH"),
    (["--group", "=x.png"], "NAME=PATH"),
    (["--group", "g="], "no PATH"),
    (["--group", "g={tmp}/missing.png"], "missing.png"),
    (["--group", "g={photo},{tmp}/text.png"], "text.png"),
    (["--group", "g={tmp}/empty"], "has no files"),
    (["{photo}", "--group", "g={photo}", "--evr-size", "3"], "--evr-size"),
])
def test_cli_errors_exit_2_and_write_nothing(args: list[str], message: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "empty").mkdir()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((20, 24), 128, dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    filled = [a.format(tmp=tmp_path, photo=photo) for a in args]
    code, _, stderr = run_cli(capsys, *filled, "--out", str(out))
    assert code == 2
    assert message in stderr and stderr.startswith("sna-orch analyze-redundancy: error:")
    assert not out.exists()
