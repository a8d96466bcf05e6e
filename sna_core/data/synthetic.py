"""``redundant_shapes``: a generated image-classification set with controllable spatial redundancy.

The quickstart's data: embedded (no download, no files), deterministic, and shaped after the
premise of Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022, §1/§3): natural feature maps are dominated by a low-rank, redundant
component, and the informative part is small. Each image is one of ten small shapes (the label)
at a random position and scale on a background that mixes a smooth rank-1 pattern with i.i.d.
noise::

    background = redundancy · (colour ⊗ u vᵀ) + (1 − redundancy) · noise

``redundancy`` in [0, 1] therefore moves the background from pure noise (no spatial redundancy)
to a pure rank-1 image (maximal redundancy); :func:`top_singular_share` measures the effect
(σ₁²/Σσ² of the channel-averaged image, the matrix SNA factorises).

Image ``i`` of a split is generated from a generator seeded by ``(seed, split, i)`` alone, so any
image can be produced in any order, in any worker, and is identical across runs and machines.
Labels are balanced: image ``i`` has label ``i mod num_classes``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sna_core.data.registry import DatasetInfo, register_dataset
from sna_core.data.transforms import Transform, resolve_transform

SHAPES = (
    "square",
    "disc",
    "ring",
    "frame",
    "triangle",
    "plus",
    "cross",
    "horizontal_stripes",
    "vertical_stripes",
    "checkerboard",
)
SPLIT_IDS = {"train": 0, "val": 1}
# Pixel statistics at the default redundancy 0.8 (500 images).
MEAN = (0.326, 0.326, 0.326)
STD = (0.234, 0.234, 0.234)


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """A ``side × side`` boolean mask of ``shape`` drawn on coordinates in [-1, 1]²."""
    coords = (np.arange(side) + 0.5) / side * 2 - 1
    y, x = np.meshgrid(coords, coords, indexing="ij")
    radius = np.hypot(x, y)
    band = np.floor((coords + 1) * side / 2 / max(2, side // 5)).astype(int) % 2 == 0  # stripes >= 2 px wide
    if shape == "square":
        return (np.abs(x) <= 0.85) & (np.abs(y) <= 0.85)
    if shape == "disc":
        return radius <= 0.95
    if shape == "ring":
        return (radius <= 1.0) & (radius >= 0.55)
    if shape == "frame":
        return np.maximum(np.abs(x), np.abs(y)) >= 0.55
    if shape == "triangle":
        return (y >= -0.9) & (np.abs(x) <= (y + 0.9) / 1.8)
    if shape == "plus":
        return (np.abs(x) <= 0.3) | (np.abs(y) <= 0.3)
    if shape == "cross":
        return np.abs(np.abs(x) - np.abs(y)) <= 0.35
    if shape == "horizontal_stripes":
        return np.broadcast_to(band[:, None], (side, side)).copy()
    if shape == "vertical_stripes":
        return np.broadcast_to(band[None, :], (side, side)).copy()
    if shape == "checkerboard":
        return band[:, None] ^ band[None, :]
    raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")


def _smooth_profile(rng: np.random.Generator, length: int) -> np.ndarray:
    """A positive, slowly varying 1-D profile in [0.15, 1]: one factor of the rank-1 background."""
    frequency = rng.uniform(0.3, 1.2)
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * np.arange(length) / length + phase)
    return 0.15 + 0.85 * wave


def generate_image(
    index: int, *, split: str = "train", seed: int = 0, image_size: int = 32, redundancy: float = 0.8,
    num_classes: int = 10,
) -> tuple[torch.Tensor, int]:
    """Image ``index`` of ``split``: a float (3, S, S) tensor in [0, 1] and its label."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    label = index % num_classes
    size = image_size
    colour = rng.uniform(0.4, 1.0, size=(3, 1, 1))
    rank_one = colour * np.outer(_smooth_profile(rng, size), _smooth_profile(rng, size))[None]
    # Binary grey noise: full-rank, and its energy is not averaged away by the channel mean.
    noise = np.broadcast_to(rng.random((1, size, size)) < 0.5, (3, size, size)).astype(np.float64)
    image = redundancy * rank_one + (1.0 - redundancy) * noise

    side = int(rng.integers(round(0.3 * size), round(0.45 * size) + 1))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    mask = _shape_mask(SHAPES[label], side)
    patch = image[:, top : top + side, left : left + side]
    # Contrast with the local background so the shape is visible whatever the background.
    intensity = 0.85 if patch.mean() < 0.5 else 0.15
    shape_colour = np.clip(intensity + rng.uniform(-0.1, 0.1, size=(3, 1, 1)), 0.0, 1.0)
    patch[:, mask] = np.broadcast_to(shape_colour, (3, side, side))[:, mask]
    return torch.from_numpy(image.astype(np.float32)), label


def top_singular_share(image: torch.Tensor) -> float:
    """σ₁² / Σσ² of the channel-averaged image (the H×W matrix SNA factorises): 1 for a rank-1
    image, about 1/min(H, W) for white noise."""
    matrix = image.float().mean(dim=0) if image.dim() == 3 else image.float()
    singular_values = torch.linalg.svdvals(matrix)
    energy = singular_values.square()
    return float(energy[0] / energy.sum())


class RedundantShapes(Dataset):
    """The generated set; images are produced on access (about 1 ms each at 32², transform included)."""

    def __init__(
        self,
        split: str = "train",
        *,
        train_size: int = 2000,
        val_size: int = 500,
        image_size: int = 32,
        redundancy: float = 0.8,
        num_classes: int = 10,
        seed: int = 0,
        transform: str | Transform | None = None,
    ) -> None:
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLIT_IDS)}")
        if not 0.0 <= redundancy <= 1.0:
            raise ValueError(f"redundancy must be in [0, 1], got {redundancy!r}")
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in 2..{len(SHAPES)} (one shape per class), got {num_classes!r}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {image_size!r}")
        for name, size in (("train_size", train_size), ("val_size", val_size)):
            if size < 1:
                raise ValueError(f"{name} must be >= 1, got {size!r}")
        self.split = split
        self.length = train_size if split == "train" else val_size
        self.image_size = image_size
        self.redundancy = float(redundancy)
        self.num_classes = num_classes
        self.classes = list(SHAPES[:num_classes])
        self.seed = seed
        self.transform = resolve_transform(
            transform, default_preset="none", train=split == "train", image_size=image_size, mean=MEAN, std=STD
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        image, label = generate_image(
            index, split=self.split, seed=self.seed, image_size=self.image_size,
            redundancy=self.redundancy, num_classes=self.num_classes,
        )
        return self.transform(image), label

    @property
    def targets(self) -> list[int]:
        return [index % self.num_classes for index in range(self.length)]


def _build(root: str | None, split: str, *, task: str = "classification", **kwargs: Any) -> RedundantShapes:
    return RedundantShapes(split, **kwargs)


INFO = register_dataset(
    DatasetInfo(
        name="redundant_shapes",
        tasks=("classification",),
        num_classes=len(SHAPES),
        image_size=32,
        in_channels=3,
        builder=_build,
        default_root=None,
        layout="generated in memory; no files",
        source="sna_core.data.synthetic (procedural, seeded)",
        stem="cifar",
        train_size=2000,
        needs_files=False,
        class_names=SHAPES,
        mean=MEAN,
        std=STD,
        notes="kwargs: train_size, val_size, image_size, redundancy (0..1), num_classes (2..10), seed, transform",
    )
)

__all__ = ["INFO", "SHAPES", "RedundantShapes", "generate_image", "top_singular_share"]
