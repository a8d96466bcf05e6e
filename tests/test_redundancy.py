"""The redundancy analysis of Fig. 1 (Fang et al., Neurocomputing 2022, §1): spectra, energy ranks
and reconstructions on matrices of known rank, image reading (DICOM MONOCHROME1 inverted), the
feature maps at a backbone's SNA sites with the placement advice, and ``sna-orch
analyze-redundancy`` on a real scikit-image photo and the pydicom-data chest radiograph."""

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
from sna_core.analysis.images import load_image
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


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing.png"], "missing.png"),
    (["{tmp}/text.png"], "text.png"),
    (["{photo}", "--ranks", "0"], "--ranks"),
    (["{photo}", "--ranks", "1,x"], "--ranks"),
    (["{photo}", "--backbone", "resnet19"], "resnet19"),
    (["{photo}", "--checkpoint", "{tmp}/none.pt"], "none.pt"),
    ([], "IMAGE"),
])
def test_cli_errors_exit_2_and_write_nothing(args: list[str], message: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "text.png").write_text("not a picture")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((20, 24), 128, dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    filled = [a.format(tmp=tmp_path, photo=photo) for a in args]
    code, _, stderr = run_cli(capsys, *filled, "--out", str(out))
    assert code == 2
    assert message in stderr and stderr.startswith("sna-orch analyze-redundancy: error:")
    assert not out.exists()
