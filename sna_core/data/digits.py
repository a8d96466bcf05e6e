"""``digits``: scikit-learn's 1,797 real 8×8 handwritten digits, upsampled for CNN backbones.

Real, offline data (it ships inside scikit-learn) for the quickstart next to the generated
``redundant_shapes``; not one of the paper's datasets (Combating spatial redundancy with spectral
norm attention in convolutional learners, Neurocomputing 2022, uses CIFAR-100 for small images).

Images are scaled from 0..16 to [0, 1], upsampled bilinearly to ``image_size`` (32 by default)
and repeated to 3 channels. The train/val split is stratified and fixed by ``seed``: for every
class, a seeded permutation of its images gives ``round(val_fraction · n_class)`` to val.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sna_core.data.registry import DatasetInfo, register_dataset
from sna_core.data.transforms import Transform, resolve_transform

MEAN = (0.21, 0.21, 0.21)
STD = (0.33, 0.33, 0.33)
SPLITS = ("train", "val")


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) index arrays with ``val_fraction`` of every class in val."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = round(val_fraction * len(members))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


class Digits(Dataset):
    """One split of the scikit-learn digits, as float (C, S, S) tensors in [0, 1] before transform."""

    def __init__(
        self,
        split: str = "train",
        *,
        image_size: int = 32,
        in_channels: int = 3,
        val_fraction: float = 0.2,
        seed: int = 0,
        transform: str | Transform | None = None,
    ) -> None:
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {image_size!r}")
        bunch = load_digits()
        labels = bunch.target.astype(np.int64)
        train_index, val_index = stratified_split(labels, val_fraction, seed)
        index = train_index if split == "train" else val_index
        pixels = torch.from_numpy(bunch.images[index].astype(np.float32) / 16.0).unsqueeze(1)
        self.images = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0, 1)
        self.labels = labels[index]
        self.indices = index  # positions in load_digits(), to check the split
        self.in_channels = in_channels
        self.num_classes = 10
        self.classes = [str(digit) for digit in range(10)]
        self.transform = resolve_transform(
            transform, default_preset="shift", train=split == "train", image_size=image_size,
            mean=MEAN[:in_channels], std=STD[:in_channels],
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].expand(self.in_channels, -1, -1)
        return self.transform(image), int(self.labels[index])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()


def _build(root: str | None, split: str, *, task: str = "classification", **kwargs: Any) -> Digits:
    return Digits(split, **kwargs)


INFO = register_dataset(
    DatasetInfo(
        name="digits",
        tasks=("classification",),
        num_classes=10,
        image_size=32,
        in_channels=3,
        builder=_build,
        default_root=None,
        layout="embedded in scikit-learn (sklearn.datasets.load_digits); no files",
        source="scikit-learn (UCI optical recognition of handwritten digits, test set)",
        stem="cifar",
        train_size=1438,
        needs_files=False,
        class_names=tuple(str(digit) for digit in range(10)),
        mean=MEAN,
        std=STD,
        notes="kwargs: image_size, in_channels (1 or 3), val_fraction (default 0.2), seed, transform",
    )
)
