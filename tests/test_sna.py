"""Tests for the SNA block and its low-rank approximation (Fang et al., Neurocomputing 2022, §3)."""

from __future__ import annotations

import pytest
import torch

from sna_core.attention import build_attention, get_attention, list_attention
from sna_core.attention.sna import (
    COMBINE_MODES,
    METHODS,
    POOL_MODES,
    SCOPES,
    SpectralNormAttention,
    low_rank_approximation,
)

SHAPES = [(8, 8), (12, 7), (7, 12)]  # square and both non-square orientations


def gapped_matrices(batch: int, height: int, width: int, k: int, seed: int = 0) -> torch.Tensor:
    """``U diag(s) Vᵀ`` in float64 with a clear gap after the k-th singular value (ratio 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    n = min(height, width)
    left = torch.linalg.qr(torch.randn(batch, height, n, generator=generator, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(batch, width, n, generator=generator, dtype=torch.float64)).Q
    head = [1.0 - 0.1 * i for i in range(k)]
    tail = [0.1 * head[-1] * 0.8**i for i in range(n - k)]
    spectrum = torch.tensor(head + tail, dtype=torch.float64)
    return left @ torch.diag_embed(spectrum.expand(batch, n)) @ right.mT


def truncated_svd(m: torch.Tensor, k: int) -> torch.Tensor:
    left, singular_values, right_h = torch.linalg.svd(m.double(), full_matrices=False)
    return left[..., :k] @ torch.diag_embed(singular_values[..., :k]) @ right_h[..., :k, :]


def relative_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    difference = (candidate.double() - reference).norm(dim=(-2, -1))
    return float((difference / reference.norm(dim=(-2, -1))).max())


def feature_maps_with_pooled(pooled: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """(B, C, H, W) maps whose channel mean and channel max both equal ``pooled`` (B, H, W)."""
    return pooled.unsqueeze(1).expand(-1, channels, -1, -1).clone()


# --- low_rank_approximation ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("height, width", SHAPES)
@pytest.mark.parametrize("method", METHODS)
def test_rank_k_matches_truncated_svd(method: str, height: int, width: int, k: int, dtype: torch.dtype) -> None:
    m = gapped_matrices(3, height, width, k)
    approximation, iterations = low_rank_approximation(m.to(dtype), k, method=method)
    assert approximation.shape == m.shape and approximation.dtype == dtype
    assert isinstance(iterations, int)
    assert relative_error(approximation, truncated_svd(m, k)) <= 1e-4


@pytest.mark.parametrize("height, width", SHAPES)
def test_rank_one_sigma_matches_svd(height: int, width: int) -> None:
    m = gapped_matrices(4, height, width, 1, seed=1).float()
    approximation, _ = low_rank_approximation(m, 1)
    sigma = torch.linalg.svdvals(m.double())[:, 0]
    sigma_estimate = approximation.double().norm(dim=(1, 2))  # ‖σ·u·vᵀ‖_F = σ
    assert float(((sigma_estimate - sigma).abs() / sigma).max()) <= 1e-4


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("height, width", SHAPES)
def test_exactly_rank_k_input_converges_within_three_iterations(height: int, width: int, k: int) -> None:
    generator = torch.Generator().manual_seed(2)
    m = torch.randn(5, height, k, generator=generator) @ torch.randn(5, k, width, generator=generator)
    approximation, iterations = low_rank_approximation(m, k)
    assert 1 <= iterations <= 3
    assert relative_error(approximation, m.double()) <= 1e-4


def test_non_negative_rank_one_map_converges_within_three_iterations() -> None:
    generator = torch.Generator().manual_seed(3)
    m = torch.rand(8, 14, 1, generator=generator) * torch.rand(8, 1, 9, generator=generator)
    _, iterations = low_rank_approximation(m, 1)
    assert iterations <= 3


def test_full_rank_k_reproduces_the_matrix() -> None:
    m = torch.randn(2, 6, 5, dtype=torch.float64)
    approximation, iterations = low_rank_approximation(m, 5)
    assert iterations <= 2
    torch.testing.assert_close(approximation, m)


def test_small_gap_stops_at_max_iter() -> None:
    generator = torch.Generator().manual_seed(4)
    left = torch.linalg.qr(torch.randn(2, 10, 10, generator=generator, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(2, 10, 10, generator=generator, dtype=torch.float64)).Q
    spectrum = torch.tensor([1.0, 0.999] + [0.1] * 8, dtype=torch.float64)
    m = left @ torch.diag_embed(spectrum.expand(2, 10)) @ right.mT
    _, iterations = low_rank_approximation(m, 1, max_iter=5, eps=1e-12)
    assert iterations == 5


@pytest.mark.parametrize("k", [1, 3])
def test_zero_matrices_give_zero_without_nan(k: int) -> None:
    m = torch.zeros(3, 5, 7)
    m[1] = torch.randn(5, 7)  # a batch mate with signal must not disturb the zero matrices
    approximation, iterations = low_rank_approximation(m, k)
    assert torch.isfinite(approximation).all()
    assert torch.equal(approximation[0], torch.zeros(5, 7)) and torch.equal(approximation[2], torch.zeros(5, 7))
    assert iterations < 100
    _, zero_iterations = low_rank_approximation(torch.zeros(2, 4, 4), k)
    assert zero_iterations == 1


def test_matrices_converge_independently_of_batch_mates() -> None:
    generator = torch.Generator().manual_seed(5)
    left = torch.linalg.qr(torch.randn(1, 9, 9, generator=generator, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(1, 9, 9, generator=generator, dtype=torch.float64)).Q
    spectrum = torch.tensor([1.0, 0.95] + [0.1] * 7, dtype=torch.float64)
    slow = left @ torch.diag_embed(spectrum.expand(1, 9)) @ right.mT
    fast = torch.randn(1, 9, 1, generator=generator, dtype=torch.float64) @ torch.rand(
        1, 1, 9, generator=generator, dtype=torch.float64
    )
    alone, fast_iterations = low_rank_approximation(fast, 1)
    together, batch_iterations = low_rank_approximation(torch.cat([fast, slow]), 1)
    assert batch_iterations > fast_iterations + 5  # the batch kept iterating for the slow matrix
    torch.testing.assert_close(together[:1], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k must be an integer >= 1, got 0"),
        ({"k": 5}, "k=5"),
        ({"k": 2, "method": "eig"}, "'eig'"),
        ({"k": 1, "max_iter": 0}, "max_iter"),
        ({"k": 1, "eps": 0.0}, "eps"),
    ],
)
def test_low_rank_approximation_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        low_rank_approximation(torch.randn(2, 4, 6), **kwargs)


def test_low_rank_approximation_rejects_non_batched_input() -> None:
    with pytest.raises(ValueError, match=r"\(4, 6\)"):
        low_rank_approximation(torch.randn(4, 6), 1)


# --- the block -------------------------------------------------------------------------------


def test_registered_as_sna_with_zero_parameters() -> None:
    assert "sna" in list_attention()
    assert get_attention("sna") is SpectralNormAttention
    block = build_attention("sna", 64, rank_k=2)
    assert isinstance(block, SpectralNormAttention) and block.rank_k == 2
    assert sum(p.numel() for p in block.parameters()) == 0
    assert list(block.buffers()) == []


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("pool", POOL_MODES)
@pytest.mark.parametrize("combine", COMBINE_MODES)
def test_every_option_runs(combine: str, pool: str, scope: str, method: str) -> None:
    block = SpectralNormAttention(8, combine=combine, pool=pool, scope=scope, method=method, rank_k=2)
    x = torch.randn(3, 8, 6, 5).relu()
    y = block(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x)


@pytest.mark.parametrize("height, width", SHAPES)
def test_scaled_mul_is_x_times_n_softmax(height: int, width: int) -> None:
    block = SpectralNormAttention()
    x = torch.randn(2, 4, height, width)
    weights = block.attention_map(x)
    assert weights.shape == (2, 1, height, width)
    torch.testing.assert_close(weights.sum(dim=(1, 2, 3)), torch.ones(2))
    pooled_approximation, _ = low_rank_approximation(x.mean(dim=1), 1)
    expected = pooled_approximation.reshape(2, -1).softmax(-1).view(2, 1, height, width)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(block(x), x * expected * (height * width))
    torch.testing.assert_close(SpectralNormAttention(combine="mul")(x), x * expected)
    torch.testing.assert_close(SpectralNormAttention(combine="add")(x), x + expected)


@pytest.mark.parametrize("combine", COMBINE_MODES)
@pytest.mark.parametrize("scope", SCOPES)
def test_zero_maps_are_finite(combine: str, scope: str) -> None:
    x = torch.zeros(2, 4, 5, 6)
    y = SpectralNormAttention(combine=combine, scope=scope)(x)
    assert torch.isfinite(y).all()
    if combine != "add":
        assert torch.equal(y, x)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("height, width", SHAPES)
def test_batch_of_one(scope: str, height: int, width: int) -> None:
    block = SpectralNormAttention(scope=scope)
    x = torch.randn(1, 3, height, width)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_image_scope_is_independent_of_batch_mates() -> None:
    block = SpectralNormAttention().eval()
    x = torch.randn(4, 6, 9, 7)
    batched = block(x)
    alone = block(x[:1])
    torch.testing.assert_close(batched[:1], alone, rtol=1e-6, atol=1e-6)


def test_batch_scope_depends_on_batch_mates() -> None:
    block = SpectralNormAttention(scope="batch").eval()
    x = torch.randn(4, 6, 9, 7).relu()
    batched = block(x)
    alone = block(x[:1])
    assert (batched[:1] - alone).abs().max() > 1e-3


def test_eval_forward_is_bitwise_deterministic() -> None:
    x = torch.randn(4, 5, 10, 8)
    first = SpectralNormAttention(rank_k=2).eval()(x)
    second = SpectralNormAttention(rank_k=2).eval()(x)
    assert torch.equal(first, second)


@pytest.mark.parametrize("combine", COMBINE_MODES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rank_k", [1, 2])
def test_gradients_reach_the_input_through_the_map(combine: str, method: str, rank_k: int) -> None:
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, 3, 6, 5, generator=generator, dtype=torch.float64)
    block = SpectralNormAttention(combine=combine, method=method, rank_k=rank_k)
    (block(x) * probe).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Without the map's gradient the result differs: gradients flow through the attention path.
    x_detached_map = x.detach().clone().requires_grad_(True)
    weights = block.attention_map(x_detached_map).detach()
    if combine == "scaled_mul":
        weights = weights * 30
    y = x_detached_map + weights if combine == "add" else x_detached_map * weights
    (y * probe).sum().backward()
    assert (x.grad - x_detached_map.grad).abs().max() > 1e-8


@pytest.mark.parametrize("rank_k", [1, 2])
def test_power_and_svd_agree_on_outputs_and_gradients(rank_k: int) -> None:
    pooled = gapped_matrices(3, 8, 6, rank_k, seed=7).float() * 4.0
    x = feature_maps_with_pooled(pooled).requires_grad_(True)
    outputs, gradients = [], []
    for method in METHODS:
        x.grad = None
        y = SpectralNormAttention(method=method, rank_k=rank_k)(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outputs.append(y.detach())
        gradients.append(x.grad.clone())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-4, atol=1e-4)


def test_low_precision_input_keeps_its_dtype() -> None:
    x = torch.randn(2, 4, 7, 7).relu()
    y = SpectralNormAttention()(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = SpectralNormAttention()(x)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z.float(), SpectralNormAttention()(x), rtol=2e-2, atol=2e-2)


def test_iteration_statistics() -> None:
    block = SpectralNormAttention()
    assert block.iteration_stats() == {"mean": 0.0, "max": 0, "calls": 0, "last": 0}
    rank_one = torch.rand(2, 3, 6, 1) * torch.rand(2, 1, 1, 6)
    block(rank_one)
    first = block.last_iterations
    assert isinstance(first, int) and 1 <= first <= 3
    block(torch.randn(2, 3, 6, 6))
    stats = block.iteration_stats()
    assert stats["calls"] == 2 and stats["last"] == block.last_iterations
    assert stats["max"] == max(first, block.last_iterations)
    assert stats["mean"] == pytest.approx((first + block.last_iterations) / 2)
    block.reset_iteration_stats()
    assert block.iteration_stats()["calls"] == 0
    svd_block = SpectralNormAttention(method="svd")
    svd_block(rank_one)
    assert svd_block.last_iterations == 0


@pytest.mark.parametrize(
    "option, value",
    [("combine", "multiply"), ("pool", "min"), ("scope", "channel"), ("method", "eig")],
)
def test_unknown_options_name_the_value_and_the_valid_ones(option: str, value: str) -> None:
    valid = {"combine": COMBINE_MODES, "pool": POOL_MODES, "scope": SCOPES, "method": METHODS}[option]
    with pytest.raises(ValueError, match=repr(value)) as error:
        SpectralNormAttention(**{option: value})
    assert all(repr(choice) in str(error.value) for choice in valid)


@pytest.mark.parametrize("rank_k", [0, -1, 1.5, True])
def test_bad_rank_rejected_at_construction(rank_k: object) -> None:
    with pytest.raises(ValueError, match=f"rank_k.*{rank_k!r}"):
        SpectralNormAttention(rank_k=rank_k)


@pytest.mark.parametrize("max_iter, eps", [(0, 1e-6), (10, 0.0), (10, 1.0)])
def test_bad_iteration_limits_rejected_at_construction(max_iter: int, eps: float) -> None:
    with pytest.raises(ValueError, match="max_iter|eps"):
        SpectralNormAttention(max_iter=max_iter, eps=eps)


@pytest.mark.parametrize("height, width", [(4, 6), (6, 4)])
def test_rank_above_min_side_rejected_at_forward(height: int, width: int) -> None:
    block = SpectralNormAttention(rank_k=5)
    with pytest.raises(ValueError, match=rf"rank_k=5 .*min\(H, W\)=4 .*{height}×{width}"):
        block(torch.randn(2, 3, height, width))


def test_rank_above_batch_size_rejected_for_batch_scope() -> None:
    block = SpectralNormAttention(rank_k=3, scope="batch")
    with pytest.raises(ValueError, match=r"rank_k=3 .*B=2"):
        block(torch.randn(2, 3, 4, 4))


def test_rejects_non_4d_input() -> None:
    with pytest.raises(ValueError, match=r"\(3, 4, 4\)"):
        SpectralNormAttention()(torch.randn(3, 4, 4))


# --- benchmarks/power_iteration.py -------------------------------------------------------------


@pytest.mark.parametrize("input_kind", ["conv", "lowrank"])
def test_power_iteration_benchmark_prints_one_json_object(input_kind: str, capsys: pytest.CaptureFixture) -> None:
    import json

    from benchmarks.power_iteration import main

    result = main(["--batch", "4", "--size", "8", "--repeats", "2", "--input", input_kind])
    printed = json.loads(capsys.readouterr().out)
    assert printed == result
    assert printed["shape"] == [4, 8, 8] and printed["device"] == "cpu"
    assert printed["torch_threads"] == torch.get_num_threads()
    assert printed["iterations"] >= 1 and printed["power_ms_median"] > 0 and printed["svd_ms_median"] > 0
    assert isinstance(printed["speedup_svd_over_power"], float) and isinstance(printed["meets_target"], bool)
    assert printed["sigma_relative_error_max"] <= 1e-4
