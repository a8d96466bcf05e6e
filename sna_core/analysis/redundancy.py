"""Spatial redundancy of a matrix, an image or a feature map, measured by its singular values.

Paper: J. Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022) 105-116, §1 and Fig. 1: the SVD of an image gives its
explained-variance ratios ``EVR_i = σ_i² / Σ_j σ_j²``; the rank-1 approximation (the spectral
norm's direction, what SNA keeps) already carries most of the information and rank 30 almost
recovers the image; a medical image needs fewer directions than a natural one.

Conventions:

- The matrix is decomposed as it is, *not* mean-centred: that is what Fig. 1 does and what SNA
  decomposes (the channel-pooled, post-ReLU feature map). Its first singular value therefore
  includes the image's mean level, and ``EVR_1`` is large even for busy images.
- ``rank_for(e)`` is the smallest k whose cumulative energy ``Σ_{i<=k} EVR_i`` reaches ``e``
  (0 for an all-zero matrix, which has no energy).
- The relative error of a rank-k reconstruction ``A_k = U_k Σ_k V_kᵀ`` is
  ``‖A − A_k‖_F / ‖A‖_F``: measured on the reconstruction when reconstructions are kept, else
  from the singular values by Eckart–Young, ``sqrt(Σ_{i>k} σ_i² / Σ σ_i²)`` (the same number;
  only ``svdvals`` is then needed). A rank above ``min(H, W)`` is clamped to it (error 0).
- Colour images: the statistics are computed on the luminance (ITU-R BT.601,
  ``Y = 0.299 R + 0.587 G + 0.114 B``, as PIL's ``"L"`` mode) *and* on each channel separately;
  colour reconstructions are the per-channel reconstructions stacked.
- Everything is computed in float64 with ``torch.linalg.svd`` (exact, not power iteration).

Pure torch/numpy: no plotting here (the figure lives in ``orchestrator.figures.redundancy``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEFAULT_RANKS",
    "ENERGY_LEVELS",
    "LUMINANCE_WEIGHTS",
    "ImageRedundancy",
    "MatrixRedundancy",
    "analyze_image",
    "analyze_matrix",
    "explained_variance_ratio",
    "luminance",
    "parse_ranks",
    "rank_for_energy",
]

# Fig. 1 shows rank-1 (b) and rank-30 (c) reconstructions.
DEFAULT_RANKS = (1, 30)
# The energy levels whose rank is reported.
ENERGY_LEVELS = (0.90, 0.99)
# ITU-R BT.601 luma, as PIL's convert("L").
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)
CHANNEL_NAMES = ("R", "G", "B")


def parse_ranks(text: str) -> tuple[int, ...]:
    """``"1,30"`` → ``(1, 30)``: positive integers, sorted, without repeats.

    Raises ValueError naming the offending value.
    """
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise ValueError(f"no ranks given in {text!r}; expected e.g. '1,30'")
    ranks = []
    for part in parts:
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"rank {part!r} in {text!r} is not an integer >= 1")
        ranks.append(int(part))
    return tuple(sorted(set(ranks)))


def _as_float64(matrix: Any) -> Tensor:
    tensor = torch.as_tensor(np.asarray(matrix) if not isinstance(matrix, Tensor) else matrix)
    return tensor.detach().to(device="cpu", dtype=torch.float64)


def explained_variance_ratio(singular_values: Tensor) -> Tensor:
    """``σ_i² / Σ σ_j²`` over the last dimension (zeros where there is no energy)."""
    energy = singular_values.to(torch.float64) ** 2
    total = energy.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, energy / total.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(energy))


def rank_for_energy(ratio: Tensor, level: float) -> int:
    """The smallest k with ``Σ_{i<=k} ratio_i >= level`` for a 1-D EVR curve (0 if it has no energy)."""
    if not 0.0 < level <= 1.0:
        raise ValueError(f"energy level must be in (0, 1], got {level!r}")
    cumulative = torch.cumsum(ratio.to(torch.float64), dim=0)
    if cumulative.numel() == 0 or cumulative[-1] <= 0:
        return 0
    # The relative tolerance absorbs float rounding in the sum (a rank-r matrix sums to 1 - 1e-16).
    reached = torch.nonzero(cumulative >= level * cumulative[-1] - 1e-12, as_tuple=False)
    return int(reached[0, 0]) + 1


@dataclass
class MatrixRedundancy:
    """The spectrum of one H×W matrix and its low-rank reconstructions.

    ``reconstructions`` holds ``U_k Σ_k V_kᵀ`` for each requested rank when asked for (float64,
    the matrix's shape); ``relative_errors`` always.
    """

    shape: tuple[int, int]
    singular_values: Tensor
    ranks: tuple[int, ...]
    relative_errors: dict[int, float]
    reconstructions: dict[int, Tensor] = field(default_factory=dict, repr=False)

    @property
    def explained_variance_ratio(self) -> Tensor:
        return explained_variance_ratio(self.singular_values)

    @property
    def cumulative_energy(self) -> Tensor:
        return torch.cumsum(self.explained_variance_ratio, dim=0)

    def rank_for(self, level: float) -> int:
        return rank_for_energy(self.explained_variance_ratio, level)

    @property
    def top1_energy(self) -> float:
        """``EVR_1``: the share of the energy in the spectral norm's direction (SNA's rank-1 map)."""
        ratio = self.explained_variance_ratio
        return float(ratio[0]) if ratio.numel() else 0.0

    def to_dict(self, *, spectrum: bool = True) -> dict[str, Any]:
        """JSON-ready summary; ``spectrum=False`` leaves out the per-singular-value lists."""
        record: dict[str, Any] = {
            "shape": list(self.shape),
            "top1_energy": self.top1_energy,
            **{f"rank_for_{round(level * 100)}": self.rank_for(level) for level in ENERGY_LEVELS},
            "relative_errors": {str(k): v for k, v in self.relative_errors.items()},
        }
        if spectrum:
            record["singular_values"] = self.singular_values.tolist()
            record["explained_variance_ratio"] = self.explained_variance_ratio.tolist()
        return record


def analyze_matrix(
    matrix: Any, ranks: Iterable[int] = DEFAULT_RANKS, *, keep_reconstructions: bool = False
) -> MatrixRedundancy:
    """Singular values, energy ratios and rank-k reconstruction errors of a 2-D ``matrix``."""
    tensor = _as_float64(matrix)
    if tensor.dim() != 2 or tensor.numel() == 0:
        raise ValueError(f"expected a non-empty 2-D matrix, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError("the matrix has NaN or infinite entries")
    rank_tuple = tuple(sorted({int(k) for k in ranks}))
    if any(k < 1 for k in rank_tuple):
        raise ValueError(f"ranks must be integers >= 1, got {rank_tuple}")
    errors: dict[int, float] = {}
    reconstructions: dict[int, Tensor] = {}
    if keep_reconstructions:
        u, s, vh = torch.linalg.svd(tensor, full_matrices=False)
        norm = torch.linalg.matrix_norm(tensor)
        for k in rank_tuple:
            kept = min(k, s.numel())
            reconstructions[k] = (u[:, :kept] * s[:kept]) @ vh[:kept]
            errors[k] = float(torch.linalg.matrix_norm(tensor - reconstructions[k]) / norm) if norm > 0 else 0.0
    else:  # singular values only (about 2× faster); the error by Eckart–Young
        s = torch.linalg.svdvals(tensor)
        energy = s**2
        total = float(energy.sum())
        for k in rank_tuple:
            errors[k] = math.sqrt(max(float(energy[k:].sum()), 0.0) / total) if total > 0 else 0.0
    return MatrixRedundancy(
        shape=(int(tensor.shape[0]), int(tensor.shape[1])),
        singular_values=s,
        ranks=rank_tuple,
        relative_errors=errors,
        reconstructions=reconstructions,
    )


def luminance(image: Any) -> Tensor:
    """The BT.601 luma of an (H, W, 3) image; an (H, W) image is returned as is (float64)."""
    tensor = _as_float64(image)
    if tensor.dim() == 2:
        return tensor
    if tensor.dim() != 3 or tensor.shape[-1] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {tuple(tensor.shape)}")
    return tensor @ torch.tensor(LUMINANCE_WEIGHTS, dtype=torch.float64)


@dataclass
class ImageRedundancy:
    """Redundancy of one image: on its luminance, and per channel for a colour image."""

    name: str
    luminance: MatrixRedundancy
    channels: dict[str, MatrixRedundancy]

    @property
    def is_colour(self) -> bool:
        return bool(self.channels)

    def colour_reconstruction(self, rank: int) -> Tensor | None:
        """The (H, W, 3) image rebuilt from each channel's rank-``rank`` approximation."""
        if not self.channels or any(rank not in m.reconstructions for m in self.channels.values()):
            return None
        return torch.stack([self.channels[c].reconstructions[rank] for c in CHANNEL_NAMES], dim=-1)

    def colour_relative_error(self, rank: int) -> float | None:
        """``‖X − X_k‖_F / ‖X‖_F`` over all three channels (each reconstructed at rank ``rank``)."""
        if not self.channels:
            return None
        residual = total = 0.0
        for matrix in self.channels.values():
            energy = float((matrix.singular_values**2).sum())
            residual += (matrix.relative_errors[rank] ** 2) * energy
            total += energy
        return (residual / total) ** 0.5 if total > 0 else 0.0

    def to_dict(self, *, spectrum: bool = True) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": self.name,
            "colour": self.is_colour,
            "analysed_on": "luminance (BT.601) and per channel" if self.is_colour else "grey values",
            **self.luminance.to_dict(spectrum=spectrum),
        }
        if self.channels:
            record["channels"] = {c: m.to_dict(spectrum=spectrum) for c, m in self.channels.items()}
            record["colour_relative_errors"] = {
                str(k): self.colour_relative_error(k) for k in self.luminance.ranks
            }
        return record


def analyze_image(
    image: Any,
    ranks: Sequence[int] = DEFAULT_RANKS,
    *,
    name: str = "image",
    keep_reconstructions: bool = True,
) -> ImageRedundancy:
    """Redundancy of an (H, W) grey or (H, W, 3) colour image (any intensity scale)."""
    tensor = _as_float64(image)
    if tensor.dim() == 3 and tensor.shape[-1] == 1:
        tensor = tensor[..., 0]
    if tensor.dim() == 2:
        return ImageRedundancy(name, analyze_matrix(tensor, ranks, keep_reconstructions=keep_reconstructions), {})
    grey = luminance(tensor)  # raises on shapes other than (H, W, 3)
    channels = {
        channel: analyze_matrix(tensor[..., index], ranks, keep_reconstructions=keep_reconstructions)
        for index, channel in enumerate(CHANNEL_NAMES)
    }
    return ImageRedundancy(name, analyze_matrix(grey, ranks, keep_reconstructions=keep_reconstructions), channels)
