"""Power iteration versus ``torch.linalg.svd`` for SNA's rank-one approximation.

Paper: J. Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022) §3.2: Algorithm 1 replaces the SVD by power iteration.

Usage: ``python -m benchmarks.power_iteration [--batch 64] [--size 56] [--repeats 30]
[--device cpu|cuda] [--input conv|lowrank] [--threads N]``. Prints ONE JSON object.

Both methods run through :func:`sna_core.attention.sna.low_rank_approximation` on the same
(B, size, size) float32 matrices, timed alternately in one process (the order flips every repeat)
so that load from other processes hits both alike; medians decide the target, minima and the host's
load average are reported beside them. Accuracy is measured
against a float64 SVD of the same matrices. Inputs:

``conv``
    What SNA sees after an ImageNet ResNet stem: smooth random images of side 4·size (low-frequency
    noise plus pixel noise) through a seeded 7×7/2 convolution with 64 filters (Kaiming init),
    batch-statistics normalisation, ReLU and 3×3/2 max-pooling, then the channel mean.
``lowrank``
    ``U diag(s) Vᵀ + noise`` with random orthonormal U, V, ``s_i = 2^-i`` for i < 8 (σ₂/σ₁ = 0.5)
    and i.i.d. Gaussian noise of standard deviation 1e-3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sna_core.attention.sna import DEFAULT_EPS, DEFAULT_MAX_ITER, low_rank_approximation

INPUTS = ("conv", "lowrank")
TARGET_SPEEDUP = 15.0
TARGET_SIGMA_RELATIVE_ERROR = 1e-4


def conv_feature_maps(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Channel means of a random ResNet stem's output: (batch, size, size) float32."""
    side = 4 * size
    coarse = torch.randn(batch, 3, max(side // 32, 2), max(side // 32, 2), generator=generator)
    images = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    images = images + 0.3 * torch.randn(batch, 3, side, side, generator=generator)
    weight = torch.randn(64, 3, 7, 7, generator=generator) * (2.0 / (64 * 7 * 7)) ** 0.5
    features = F.conv2d(images, weight, stride=2, padding=3)
    features = F.batch_norm(features, None, None, training=True)
    features = F.max_pool2d(features.relu(), kernel_size=3, stride=2, padding=1)
    return features.mean(dim=1)


def low_rank_plus_noise(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``U diag(2^-i, i < 8) Vᵀ`` plus N(0, 1e-3²) noise: (batch, size, size) float32."""
    rank = min(8, size)
    left = torch.linalg.qr(torch.randn(batch, size, rank, generator=generator, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(batch, size, rank, generator=generator, dtype=torch.float64)).Q
    spectrum = 2.0 ** -torch.arange(rank, dtype=torch.float64)
    matrices = left @ torch.diag_embed(spectrum.expand(batch, rank)) @ right.mT
    noise = 1e-3 * torch.randn(batch, size, size, generator=generator, dtype=torch.float64)
    return (matrices + noise).float()


def _timed(function: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run(batch: int, size: int, repeats: int, device: torch.device, input_kind: str, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    build = conv_feature_maps if input_kind == "conv" else low_rank_plus_noise
    matrices = build(batch, size, generator).to(device)

    def power() -> tuple[torch.Tensor, int]:
        return low_rank_approximation(matrices, 1, method="power")

    def svd() -> tuple[torch.Tensor, int]:
        return low_rank_approximation(matrices, 1, method="svd")

    power(), svd()  # warm-up: kernels, caches, the start-vector cache
    power_seconds, svd_seconds = [], []
    for repeat in range(repeats):
        pair = [(power, power_seconds), (svd, svd_seconds)]
        for function, seconds in pair if repeat % 2 == 0 else reversed(pair):
            seconds.append(_timed(function, device))

    approximation, iterations = power()
    svd_approximation, _ = svd()
    exact = matrices.double().cpu()
    left, singular_values, right_h = torch.linalg.svd(exact, full_matrices=False)
    sigma = singular_values[:, 0]
    exact_rank_one = sigma[:, None, None] * left[:, :, :1] @ right_h[:, :1, :]

    def errors(candidate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        candidate = candidate.double().cpu()
        sigma_error = (candidate.norm(dim=(1, 2)) - sigma).abs() / sigma  # ‖σ·u·vᵀ‖_F = σ
        reconstruction = (candidate - exact_rank_one).norm(dim=(1, 2)) / exact_rank_one.norm(dim=(1, 2))
        return sigma_error, reconstruction

    sigma_error, reconstruction_error = errors(approximation)
    svd_sigma_error, svd_reconstruction_error = errors(svd_approximation)
    power_ms = 1e3 * statistics.median(power_seconds)
    svd_ms = 1e3 * statistics.median(svd_seconds)
    speedup = svd_ms / power_ms
    return {
        "benchmark": "power_iteration",
        "input": input_kind,
        "shape": [batch, size, size],
        "dtype": str(matrices.dtype).removeprefix("torch."),
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "repeats": repeats,
        "seed": seed,
        "max_iter": DEFAULT_MAX_ITER,
        "eps": DEFAULT_EPS,
        "sigma2_over_sigma1_median": float((singular_values[:, 1] / sigma).median()),
        "power_ms_median": round(power_ms, 4),
        "svd_ms_median": round(svd_ms, 4),
        "speedup_svd_over_power": round(speedup, 2),
        # Minima are the least disturbed by other processes; the load shows how busy the host was.
        "power_ms_min": round(1e3 * min(power_seconds), 4),
        "svd_ms_min": round(1e3 * min(svd_seconds), 4),
        "speedup_of_minima": round(min(svd_seconds) / min(power_seconds), 2),
        "host_load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "host_cpus": os.cpu_count(),
        "iterations": iterations,
        "sigma_relative_error_max": float(sigma_error.max()),
        "sigma_relative_error_median": float(sigma_error.median()),
        "reconstruction_relative_error_max": float(reconstruction_error.max()),
        "svd_float32_sigma_relative_error_max": float(svd_sigma_error.max()),
        "svd_float32_reconstruction_relative_error_max": float(svd_reconstruction_error.max()),
        "target": {"speedup_min": TARGET_SPEEDUP, "sigma_relative_error_max": TARGET_SIGMA_RELATIVE_ERROR},
        "meets_target": bool(speedup >= TARGET_SPEEDUP and sigma_error.max() <= TARGET_SIGMA_RELATIVE_ERROR),
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=_positive_int, default=64)
    parser.add_argument("--size", type=_positive_int, default=56, help="feature-map side (H = W)")
    parser.add_argument("--repeats", type=_positive_int, default=30)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--input", choices=INPUTS, default="conv", dest="input_kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device 'cuda' requested but torch.cuda.is_available() is False; valid here: 'cpu'")
    result = run(args.batch, args.size, args.repeats, torch.device(args.device), args.input_kind, args.seed)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
