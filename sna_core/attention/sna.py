"""Spectral norm attention (SNA).

Paper: J. Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022) 105-116 (§3, Algorithm 1, Fig. 2).

The block has no parameters. For a feature map ``x`` of shape (B, C, H, W):

1. channel-wise pooling gives one H×W matrix ``M`` per image (``pool="avg"``: the paper's GAP);
2. the top singular triplet of ``M`` is found by power iteration on the Gram matrix of the
   smaller side (``MᵀM`` when W <= H, else ``MMᵀ``), stopping when ``|cos(v, v_prev)| > 1 - eps``
   for every matrix of the batch, or after ``max_iter`` products;
3. the rank-one approximation ``M̂ = σ·u·vᵀ`` (rank ``k`` with ``rank_k=k``, the Fig. 4 ablation)
   goes through a softmax over all H·W positions;
4. the softmax map reweights ``x``, broadcast over channels.

Choices the paper leaves open, and the options that reproduce the authors' public code
(``fjssharpsword/SFSAttention``; see ``/work/shared/notes/paper-vs-code.md``):

``combine``
    A softmax over N = H·W positions averages 1/N (1/3136 at 56×56), so the paper's literal
    "element-wise product" (``"mul"``) shrinks features about N-fold and would wreck the
    BatchNorm statistics downstream; the authors' code instead *adds* the map (``"add"``), which
    barely changes ``x``. The default ``"scaled_mul"`` multiplies by ``N·softmax``: the map then
    averages exactly 1, features keep their scale, and positions on the spectral-norm direction
    are amplified while redundant ones are damped, which is what §3.1 describes.
``pool``
    ``"avg"`` (paper, GAP over channels) or ``"max"`` (the code's ``torch.max`` over channels).
``scope``
    ``"image"`` (paper: one H×W matrix per image) or ``"batch"`` (the code: ONE power iteration
    over the B×(H·W) matrix of the whole batch, so every image gets the same spatial pattern ``v``
    scaled per image). With ``"batch"`` an image's output depends on its batch mates, at test time
    too; evaluation results then depend on the batch size and order.
``method``
    ``"power"`` (Algorithm 1, batched) or ``"svd"`` (exact ``torch.linalg.svd``, the reference).

Power iteration details. Every matrix of the batch iterates together with batched matmuls (no
Python loop over images); a matrix that has converged is frozen, so an image's result under
``scope="image"`` does not depend on how slowly its batch mates converge. The convergence test is
``sin²θ < eps·(2 - eps)``, which is ``|cos θ| > 1 - eps`` computed from the residual
``v - v_prev·(v_prevᵀv)`` so that it stays accurate in float32; it costs one host sync per
iteration. The start vector is fixed (ones plus a small golden-ratio perturbation, so that no
structured singular vector is exactly orthogonal to it): outputs are reproducible and, for the
non-negative maps that follow a ReLU, whose top singular vectors are non-negative, the ones vector
starts close to the answer. Defaults ``max_iter=100``, ``eps=1e-6``: when the test passes, the
last step turned ``v`` by less than ``sqrt(2·eps) ≈ 1.4e-3`` rad, and because the relative error
of σ is second order in the angle (the Gram iteration squares the singular-value ratio), σ is
then within about ``1e-6 / (1 - (σ₂/σ₁)²)`` of the exact value: within 1e-4 unless σ₂/σ₁ > 0.995.
``rank_k > 1`` uses subspace (block) power iteration with QR re-orthonormalisation; its test sums
``sin²`` over the principal angles between successive subspaces, ignoring directions whose
eigenvalue is below the float rounding level of the Gram matrix (they carry no signal, and
iterating on them only chases noise). All-zero maps keep the start vector and count as converged:
no NaN, and the softmax of a zero map is uniform.

Gradients (the paper is silent). As ``torch.nn.utils.parametrizations.spectral_norm`` does, the
iteration runs under ``torch.no_grad()`` to convergence and only the final, cheap step is
differentiated: ``M̂ = (M·V)·Vᵀ`` with the converged basis ``V`` held constant. Its backward is one
small matmul, gradients reach ``x`` through both the map and the product, and ``method="svd"``
uses the same convention (no unstable SVD backward with its 1/(σᵢ² - σⱼ²) terms), so both methods
give the same gradients at convergence.

Matrices are decomposed in at least float32 (half inputs are upcast, autocast is suspended), and
the map is cast back to the input's dtype.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

from sna_core.attention.registry import register_attention

__all__ = [
    "COMBINE_MODES",
    "METHODS",
    "POOL_MODES",
    "SCOPES",
    "SpectralNormAttention",
    "low_rank_approximation",
]

COMBINE_MODES = ("scaled_mul", "mul", "add")
POOL_MODES = ("avg", "max")
SCOPES = ("image", "batch")
METHODS = ("power", "svd")

DEFAULT_MAX_ITER = 100
DEFAULT_EPS = 1e-6

_GOLDEN_RATIO = (1.0 + math.sqrt(5.0)) / 2.0


def _check_choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {option} {value!r}; valid: {', '.join(map(repr, choices))}")


def _check_rank(rank_k: Any, name: str = "rank_k") -> None:
    if isinstance(rank_k, bool) or not isinstance(rank_k, int) or rank_k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {rank_k!r}")


def _check_iteration_limits(max_iter: Any, eps: Any) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be a number in (0, 1), got {eps!r}")


@functools.lru_cache(maxsize=64)
def _start_basis(n: int, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A fixed orthonormal (n, k) start basis: ones, then low-frequency cosines, each perturbed."""
    position = torch.arange(n, dtype=torch.float64)
    columns = []
    for j in range(k):
        # A golden-ratio sequence is deterministic and equidistributed: it keeps a structured
        # singular vector (e.g. a zero-mean or alternating one) from being orthogonal to the start.
        perturbation = 2.0 * torch.frac((position + 1.0) * _GOLDEN_RATIO + j * math.sqrt(2.0)) - 1.0
        smooth = torch.cos(math.pi * (position + 0.5) * j / n)
        columns.append(smooth + 0.5 * perturbation)
    start = torch.stack(columns, dim=1)
    # Householder QR returns an orthonormal Q even if ``start`` were rank-deficient.
    basis = start / start.norm() if k == 1 else torch.linalg.qr(start).Q
    return basis.to(device=device, dtype=dtype)


def _counting_flops() -> bool:
    """True inside ``torch.utils.flop_counter.FlopCounterMode``, which counts matmuls but not the
    multiply-sum below: profiling then takes the matmul path, so SNA's products are counted."""
    return any(type(mode).__name__ in ("_FlopCounterMode", "FlopCounterMode") for mode in _get_current_dispatch_mode_stack())


def _times_basis(matrix: Tensor, basis: Tensor) -> Tensor:
    """``matrix @ basis`` for (B, r, n) @ (B, n, k)."""
    if basis.shape[-1] == 1 and matrix.device.type == "cpu" and not _counting_flops():
        # CPU bmm with one column makes one BLAS call per matrix; a broadcast multiply-sum over
        # the batch is about 4× faster at SNA's sizes (B = 64, n = 56).
        return (matrix * basis.mT).sum(dim=-1, keepdim=True)
    return matrix @ basis


def _power_subspace(tall: Tensor, k: int, max_iter: int, eps: float) -> tuple[Tensor, int]:
    """Top-k eigenvector basis (B, n, k) of the Gram matrix ``tallᵀ·tall`` of a (B, rows, n)
    batch, i.e. its top-k right singular vectors; iterations used.

    For k = 1 the Gram matrix is applied as ``tallᵀ(tall·v)`` (two matrix-vector products per
    iteration) instead of being formed: forming it costs rows·n² multiply-adds per matrix, more
    than the few iterations SNA needs. Block iteration (k > 1) forms it once.
    """
    batch, _, n = tall.shape
    if k == 1:
        def apply_gram(basis: Tensor) -> Tensor:
            return _times_basis(tall.mT, _times_basis(tall, basis))
    else:
        gram = tall.mT @ tall

        def apply_gram(basis: Tensor) -> Tensor:
            return gram @ basis
    finfo = torch.finfo(tall.dtype)
    # Directions whose eigenvalue is below the Gram matrix's own rounding error are noise.
    noise_floor = n * finfo.eps
    max_sin2 = eps * (2.0 - eps)  # sin²θ < eps(2 - eps)  <=>  |cos θ| > 1 - eps
    basis = _start_basis(n, k, tall.dtype, tall.device).expand(batch, n, k)
    active = torch.ones(batch, 1, 1, dtype=torch.bool, device=tall.device)
    for iteration in range(1, max_iter + 1):
        product = apply_gram(basis)
        if k == 1:
            size = product.norm(dim=1, keepdim=True)  # (B, 1, 1)
            significant = size > finfo.tiny
            candidate = torch.where(significant, product / size.clamp_min(finfo.tiny), basis)
            residual = candidate - basis * (basis * candidate).sum(dim=1, keepdim=True)
            sin2 = residual.square().sum(dim=1, keepdim=True)
        else:
            candidate, triangle = torch.linalg.qr(product)
            size = triangle.diagonal(dim1=-2, dim2=-1).abs().unsqueeze(1)  # (B, 1, k)
            largest = size.amax(dim=-1, keepdim=True)
            significant = size > (noise_floor * largest).clamp_min(finfo.tiny)
            degenerate = ~significant.any(dim=-1, keepdim=True)  # all-zero matrix: keep the start
            candidate = torch.where(degenerate, basis, candidate)
            residual = candidate - basis @ (basis.mT @ candidate)
            column_sin2 = residual.square().sum(dim=1, keepdim=True)
            sin2 = torch.where(significant, column_sin2, 0.0).sum(dim=-1, keepdim=True)
        basis = torch.where(active, candidate, basis)  # converged matrices stay frozen
        active = active & (sin2 > max_sin2)
        if not bool(active.any()):  # the one host sync per iteration
            return basis, iteration
    return basis, max_iter


def _autocast_suspended(device_type: str) -> contextlib.AbstractContextManager:
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def low_rank_approximation(
    m: Tensor,
    k: int = 1,
    method: str = "power",
    max_iter: int = DEFAULT_MAX_ITER,
    eps: float = DEFAULT_EPS,
) -> tuple[Tensor, int]:
    """Best rank-``k`` approximation of each matrix of a (B, H, W) batch.

    Returns ``(approximation, iterations)``: the (B, H, W) approximation ``U_k Σ_k V_kᵀ`` (for
    ``k = 1`` the paper's ``σ·u·vᵀ``; its Frobenius norm is σ) in ``m``'s dtype, and the number of
    Gram-matrix products the power iteration needed for the slowest matrix (0 for ``"svd"``).
    Differentiable in ``m`` with the basis held constant (see the module docstring).
    """
    if m.dim() != 3:
        raise ValueError(f"expected a (B, H, W) batch of matrices, got shape {tuple(m.shape)}")
    _check_rank(k, "k")
    _check_choice("method", method, METHODS)
    _check_iteration_limits(max_iter, eps)
    height, width = m.shape[-2:]
    if k > min(height, width):
        raise ValueError(f"k={k} exceeds min(H, W)={min(height, width)} for {height}×{width} matrices")

    with _autocast_suspended(m.device.type):
        work = m if m.dtype in (torch.float32, torch.float64) else m.float()
        # Orient so that the basis lives on the smaller side: its Gram matrix is the small one.
        transposed = width > height
        tall = work.mT if transposed else work  # (B, rows, n) with n = min(H, W)
        with torch.no_grad():
            detached = tall.detach()
            if method == "svd":
                basis = torch.linalg.svd(detached, full_matrices=False).Vh[:, :k].mT
                iterations = 0
            else:
                basis, iterations = _power_subspace(detached, k, max_iter, eps)
        left = _times_basis(tall, basis)  # the one differentiable step: M̂ = (M·V)·Vᵀ
        approximation = left * basis.mT if k == 1 else left @ basis.mT
        if transposed:
            approximation = approximation.mT
    return approximation.to(m.dtype), iterations


@register_attention("sna")
class SpectralNormAttention(nn.Module):
    """Spectral norm attention: reweights positions by a softmax of the pooled map's rank-k part.

    Args:
        channels: accepted for the attention-factory signature; unused (the block has no
            parameters).
        rank_k: rank of the approximation (the paper uses 1; Fig. 4 ablates 1–16). Must be at
            most min(H, W) (``scope="image"``) or min(B, H·W) (``scope="batch"``), checked at the
            first forward.
        combine: ``"scaled_mul"`` (x·N·softmax, default), ``"mul"`` (x·softmax, literal paper) or
            ``"add"`` (x + softmax, the authors' code).
        pool: ``"avg"`` (paper) or ``"max"`` (the authors' code) over channels.
        scope: ``"image"`` (paper) or ``"batch"`` (the authors' code; batch-dependent output).
        method: ``"power"`` (Algorithm 1) or ``"svd"`` (exact reference).
        max_iter: cap on power-iteration steps per forward.
        eps: convergence tolerance on ``1 - |cos(v, v_prev)|``.

    After each forward ``last_iterations`` holds the iterations used; :meth:`iteration_stats`
    accumulates them (host-side integers, no device syncs) until :meth:`reset_iteration_stats`.
    """

    def __init__(
        self,
        channels: int = 0,
        *,
        rank_k: int = 1,
        combine: str = "scaled_mul",
        pool: str = "avg",
        scope: str = "image",
        method: str = "power",
        max_iter: int = DEFAULT_MAX_ITER,
        eps: float = DEFAULT_EPS,
    ) -> None:
        super().__init__()
        _check_rank(rank_k)
        _check_choice("combine", combine, COMBINE_MODES)
        _check_choice("pool", pool, POOL_MODES)
        _check_choice("scope", scope, SCOPES)
        _check_choice("method", method, METHODS)
        _check_iteration_limits(max_iter, eps)
        self.channels = channels
        self.rank_k = rank_k
        self.combine = combine
        self.pool = pool
        self.scope = scope
        self.method = method
        self.max_iter = max_iter
        self.eps = float(eps)
        self.last_iterations = 0
        self.reset_iteration_stats()

    def extra_repr(self) -> str:
        return (
            f"rank_k={self.rank_k}, combine={self.combine!r}, pool={self.pool!r}, "
            f"scope={self.scope!r}, method={self.method!r}, max_iter={self.max_iter}, eps={self.eps:g}"
        )

    def reset_iteration_stats(self) -> None:
        """Forget the iteration counts accumulated so far (e.g. at the start of an epoch)."""
        self._iterations_total = 0
        self._iterations_max = 0
        self._calls = 0

    def iteration_stats(self) -> dict[str, float | int]:
        """Power-iteration counts since the last reset: mean, max, calls and the last forward's."""
        mean = self._iterations_total / self._calls if self._calls else 0.0
        return {"mean": mean, "max": self._iterations_max, "calls": self._calls, "last": self.last_iterations}

    def attention_map(self, x: Tensor) -> Tensor:
        """The (B, 1, H, W) softmax weights for ``x``, in at least float32; each image's sum to 1."""
        if x.dim() != 4:
            raise ValueError(f"SpectralNormAttention expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        batch, _, height, width = x.shape
        if self.scope == "image" and self.rank_k > min(height, width):
            raise ValueError(
                f"rank_k={self.rank_k} exceeds min(H, W)={min(height, width)} for a {height}×{width} feature map"
            )
        if self.scope == "batch" and self.rank_k > min(batch, height * width):
            raise ValueError(
                f"rank_k={self.rank_k} exceeds min(B, H·W)={min(batch, height * width)} for scope='batch' "
                f"with B={batch} and a {height}×{width} feature map"
            )
        pooled = x.mean(dim=1) if self.pool == "avg" else x.amax(dim=1)
        if pooled.dtype not in (torch.float32, torch.float64):
            # Softmax over N = H·W positions in half precision loses the small weights.
            pooled = pooled.float()
        matrices = pooled if self.scope == "image" else pooled.reshape(1, batch, height * width)
        approximation, iterations = low_rank_approximation(
            matrices, self.rank_k, method=self.method, max_iter=self.max_iter, eps=self.eps
        )
        self._record(iterations)
        return approximation.reshape(batch, height * width).softmax(dim=-1).view(batch, 1, height, width)

    def forward(self, x: Tensor) -> Tensor:
        weights = self.attention_map(x)
        if self.combine == "scaled_mul":
            weights = weights * (x.shape[-2] * x.shape[-1])
        weights = weights.to(x.dtype)
        return x + weights if self.combine == "add" else x * weights

    def _record(self, iterations: int) -> None:
        self.last_iterations = iterations
        self._iterations_total += iterations
        self._iterations_max = max(self._iterations_max, iterations)
        self._calls += 1
