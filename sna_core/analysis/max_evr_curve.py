"""Fig. 1(e): the mean maximal explained-variance ratio of a set of images, against the set's size.

Paper: J. Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022), §1 and Fig. 1: "Column (e) counts the mean (y-axis) of
maximal explained variances on varying image numbers (x-axis)"; "the averages of maximal explained
variances of medical images on varying numbers are larger than natural images".

For a group of images (e.g. "natural", "medical") the maximal EVR of image i is
``EVR₁ = σ₁² / Σ_j σ_j²`` (its spectral norm's share of the energy; ``top1_energy`` in
:mod:`sna_core.analysis.redundancy`), and for N = 1 … len(group) the curve holds the mean and the
standard deviation of EVR₁ over the *first N* images.

Conventions, so that groups are compared like with like:

- Order: the group's images are taken in the order given (the demo's sets are sorted by name,
  :mod:`sna_core.analysis.images`). The value at N = len(group) does not depend on the order; the
  path to it does.
- Greyscale: a colour image is reduced to its BT.601 luminance before the SVD, as the rest of this
  package does (medical images are grey already).
- Size: every image is resized to ``size × size`` (default :data:`DEFAULT_EVR_SIZE` = 224, the
  input size of the in-network view) before the SVD — bilinear, antialiased, whole image, aspect
  ratio not kept (no crop, so no part of the image is chosen over another). EVR₁ depends on the
  matrix's dimensions: a larger matrix has more directions to spread energy over (on the demo's
  photos the mean EVR₁ at native size is 0.877, at 224² 0.894), and real sets mix sizes from
  64×64 to 1955×1841, so native sizes would compare matrices of different shape. Resizing is
  separable (``R_h A R_wᵀ``), so it never raises the rank: a rank-1 image keeps EVR₁ = 1.
  ``size=None`` keeps each image's native size.
- Intensities as loaded (:func:`sna_core.analysis.images.load_image`): EVR is invariant to
  scaling the image, not to an offset, because the SVD is uncentred as in Fig. 1 (a)–(d).
- Spread: the population standard deviation (``ddof=0``): 0 at N = 1 and for identical images.

Pure torch/numpy: the figure is drawn by ``orchestrator.figures.redundancy``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sna_core.analysis.redundancy import explained_variance_ratio, luminance

__all__ = [
    "DEFAULT_EVR_SIZE",
    "MaxEvrCurve",
    "max_evr_curve",
    "max_evr_curves",
    "max_explained_variance_ratio",
    "prepare_for_svd",
    "running_mean_std",
]

DEFAULT_EVR_SIZE = 224


def prepare_for_svd(image: Any, size: int | None = DEFAULT_EVR_SIZE) -> Tensor:
    """An (H, W) or (H, W, 3) image → its (size, size) float64 luminance (native size if None)."""
    if size is not None and size < 1:
        raise ValueError(f"size must be an integer >= 1 or None, got {size!r}")
    grey = luminance(image)  # float64; raises on shapes other than (H, W) / (H, W, 3)
    if grey.numel() == 0:
        raise ValueError(f"empty image of shape {tuple(grey.shape)}")
    if size is None or tuple(grey.shape) == (size, size):
        return grey
    return torch.nn.functional.interpolate(grey[None, None], size=(size, size), mode="bilinear",
                                           align_corners=False, antialias=True)[0, 0]


def max_explained_variance_ratio(image: Any, size: int | None = DEFAULT_EVR_SIZE) -> float:
    """EVR₁ = σ₁² / Σσ² of the prepared image (0 for an all-zero image, which has no energy)."""
    matrix = prepare_for_svd(image, size)
    if not torch.isfinite(matrix).all():
        raise ValueError("the image has NaN or infinite pixels")
    return float(explained_variance_ratio(torch.linalg.svdvals(matrix))[0])


def running_mean_std(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std of ``values[:N]`` for N = 1 … len(values).

    Sums of differences from the first value keep the variance exact for equal values (std 0)
    and free of the cancellation of ``E[x²] − E[x]²`` on values near 1.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty 1-D sequence, got shape {x.shape}")
    count = np.arange(1, x.size + 1, dtype=np.float64)
    shifted = x - x[0]
    mean_shift = np.cumsum(shifted) / count
    variance = np.maximum(np.cumsum(shifted**2) / count - mean_shift**2, 0.0)
    return x[0] + mean_shift, np.sqrt(variance)


@dataclass(frozen=True)
class MaxEvrCurve:
    """One group's Fig. 1(e) curve: EVR₁ per image (in order) and the running mean ± std."""

    group: str
    names: tuple[str, ...]
    max_evr: tuple[float, ...]
    size: int | None

    def __post_init__(self) -> None:
        if not self.max_evr or len(self.names) != len(self.max_evr):
            raise ValueError(f"group {self.group!r}: need one name per EVR value, and at least one")

    @property
    def count(self) -> int:
        return len(self.max_evr)

    @property
    def means(self) -> np.ndarray:
        return running_mean_std(self.max_evr)[0]

    @property
    def stds(self) -> np.ndarray:
        return running_mean_std(self.max_evr)[1]

    @property
    def final_mean(self) -> float:
        return float(self.means[-1])

    @property
    def final_std(self) -> float:
        return float(self.stds[-1])

    def to_dict(self) -> dict[str, Any]:
        means, stds = running_mean_std(self.max_evr)
        return {
            "group": self.group,
            "size": [self.size, self.size] if self.size else "native",
            "images": list(self.names),
            "max_evr": list(self.max_evr),
            "n": list(range(1, self.count + 1)),
            "mean": means.tolist(),
            "std": stds.tolist(),
        }


def max_evr_curve(group: str, images: Iterable[tuple[str, Any]], *,
                  size: int | None = DEFAULT_EVR_SIZE) -> MaxEvrCurve:
    """The curve of ``images`` ((name, pixels) pairs, consumed one at a time, so a generator that
    reads each file when asked keeps one image in memory). Raises ValueError naming the group and
    the image that cannot be measured, or the group if it is empty."""
    names: list[str] = []
    values: list[float] = []
    for name, pixels in images:
        try:
            values.append(max_explained_variance_ratio(pixels, size))
        except ValueError as error:
            raise ValueError(f"group {group!r}, image {name!r}: {error}") from error
        names.append(name)
    if not values:
        raise ValueError(f"group {group!r} has no images")
    return MaxEvrCurve(group, tuple(names), tuple(values), size)


def max_evr_curves(groups: Mapping[str, Iterable[tuple[str, Any]]], *,
                   size: int | None = DEFAULT_EVR_SIZE) -> dict[str, MaxEvrCurve]:
    """One curve per group, in the mapping's order."""
    return {group: max_evr_curve(group, images, size=size) for group, images in groups.items()}
