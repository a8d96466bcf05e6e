"""``fashion_mnist``: Zalando's 70,000 real 28×28 grey clothing images, read from the idx files.

Real, offline data (Debian's ``dataset-fashion-mnist`` ships it) for runs that need more than the
quickstart's data; not one of the paper's datasets (Combating spatial redundancy with spectral
norm attention in convolutional learners, Neurocomputing 2022), but the same image side as its
CIFAR-100 after padding.

The idx format: big-endian int32 header — magic 2051 (images: count, rows, cols; pixels from byte
16) or 2049 (labels: count; labels from byte 8) — then unsigned bytes. Images are zero-padded from
28×28 to 32×32 (resized instead when ``image_size`` is not 32) and, by default, repeated to
3 channels so the paper's backbones run unchanged; ``in_channels=1`` keeps one channel.
Split ``"val"`` reads the official 10,000-image test set (``t10k``).
"""

from __future__ import annotations

import gzip
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sna_core.data.registry import (
    DatasetInfo,
    dataset_info,
    register_dataset,
    root_error,
)
from sna_core.data.transforms import Transform, resolve_transform

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Pixel statistics of the 60k training images after zero-padding to 32×32.
MEAN = (0.2190,) * 3
STD = (0.3318,) * 3


def _read_gzip(path: str) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise root_error(dataset_info("fashion_mnist"), os.path.dirname(path), f"missing {os.path.basename(path)}") from None
    except (OSError, EOFError) as error:
        raise root_error(dataset_info("fashion_mnist"), os.path.dirname(path), f"{path} is not a readable gzip file ({error})") from None


def read_idx_images(path: str) -> np.ndarray:
    """A (N, rows, cols) uint8 array from a gzipped idx3 image file."""
    data = _read_gzip(path)
    header = np.frombuffer(data[:16], dtype=">i4") if len(data) >= 16 else np.array([])
    if len(header) != 4 or header[0] != IMAGES_MAGIC:
        raise _malformed(path, f"expected an idx3 image file (magic {IMAGES_MAGIC}), header {header.tolist()}")
    count, rows, cols = (int(v) for v in header[1:])
    if len(data) - 16 != count * rows * cols:
        raise _malformed(path, f"header says {count}×{rows}×{cols} pixels but {len(data) - 16} bytes follow")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def read_idx_labels(path: str) -> np.ndarray:
    """A (N,) uint8 array from a gzipped idx1 label file."""
    data = _read_gzip(path)
    header = np.frombuffer(data[:8], dtype=">i4") if len(data) >= 8 else np.array([])
    if len(header) != 2 or header[0] != LABELS_MAGIC:
        raise _malformed(path, f"expected an idx1 label file (magic {LABELS_MAGIC}), header {header.tolist()}")
    if len(data) - 8 != int(header[1]):
        raise _malformed(path, f"header says {int(header[1])} labels but {len(data) - 8} bytes follow")
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def _malformed(path: str, problem: str):
    return root_error(dataset_info("fashion_mnist"), os.path.dirname(path), f"malformed {os.path.basename(path)}: {problem}")


class FashionMNIST(Dataset):
    """One split of Fashion-MNIST, as (C, S, S) tensors (C = ``in_channels``, S = ``image_size``)."""

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        split: str = "train",
        *,
        image_size: int = 32,
        in_channels: int = 3,
        transform: str | Transform | None = None,
    ) -> None:
        if split not in FILES:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(FILES)}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {image_size!r}")
        image_file, label_file = (os.path.join(root, name) for name in FILES[split])
        self.images = read_idx_images(image_file)
        self.labels = read_idx_labels(label_file)
        if len(self.images) != len(self.labels):
            raise _malformed(image_file, f"{len(self.images)} images but {len(self.labels)} labels in {label_file}")
        if len(self.labels) and int(self.labels.max()) >= len(CLASSES):
            raise _malformed(label_file, f"label {int(self.labels.max())} outside 0..{len(CLASSES) - 1}")
        self.root, self.split = root, split
        self.image_size, self.in_channels = image_size, in_channels
        self.num_classes = len(CLASSES)
        self.classes = list(CLASSES)
        self.transform = resolve_transform(
            transform, default_preset="cifar", train=split == "train", image_size=image_size,
            mean=MEAN[:in_channels], std=STD[:in_channels],
        )

    def __len__(self) -> int:
        return len(self.labels)

    def _to_size(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if self.image_size >= height and self.image_size >= width and (self.image_size - height) % 2 == 0:
            pad_y, pad_x = (self.image_size - height) // 2, (self.image_size - width) // 2
            return F.pad(image, (pad_x, pad_x, pad_y, pad_y))
        return F.interpolate(image[None].float(), size=(self.image_size,) * 2, mode="bilinear", antialias=True)[0].round().clamp(0, 255).to(torch.uint8)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self._to_size(torch.from_numpy(self.images[index].copy())[None])
        return self.transform(image.expand(self.in_channels, -1, -1)), int(self.labels[index])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()


def _build(root: str, split: str, *, task: str = "classification", **kwargs: Any) -> FashionMNIST:
    return FashionMNIST(root, split, **kwargs)


INFO = register_dataset(
    DatasetInfo(
        name="fashion_mnist",
        tasks=("classification",),
        num_classes=len(CLASSES),
        image_size=32,
        in_channels=3,
        builder=_build,
        default_root=DEFAULT_ROOT,
        layout=(
            "ROOT/train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz (gzipped idx files)"
        ),
        source="Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or github.com/zalandoresearch/fashion-mnist",
        stem="cifar",
        train_size=60000,
        required_paths=FILES["train"] + FILES["val"],
        class_names=CLASSES,
        mean=MEAN,
        std=STD,
        notes="28×28 zero-padded to 32×32; 3 channels by default (kwargs: in_channels=1 for one), image_size, transform",
    )
)
