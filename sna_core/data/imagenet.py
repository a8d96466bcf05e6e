"""``imagenet``: ILSVRC-2012 classification from an ImageFolder tree, with the paper's pre-processing.

Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.1 and Table 2 (ResNet-50): natural images "are randomly cropped to
224×224 ... with random horizontal flipping and normalization". Evaluation uses the usual
resize-256 / center-crop-224.

Layout: ``ROOT/train/<wnid>/*.JPEG`` and ``ROOT/val/<wnid>/*.JPEG``. The official validation
archive is flat (``val/ILSVRC2012_val_*.JPEG``); it must first be sorted into wnid folders (e.g.
with the widely used ``valprep.sh``). Class indices follow the sorted wnids of ``train/`` (so
train and val agree even when val lacks a class); without ``train/``, those of the split itself.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from sna_core.data.registry import (
    DatasetInfo,
    data_home,
    dataset_info,
    register_dataset,
    root_error,
)
from sna_core.data.transforms import Transform, resolve_transform

SPLITS = ("train", "val")


def _class_folders(directory: str) -> list[str]:
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


def _load_rgb(path: str) -> Image.Image:
    with open(path, "rb") as handle:
        return Image.open(handle).convert("RGB")


class ImageNet(Dataset):
    """One split of an ImageFolder-layout ImageNet; samples are (transformed image, class index)."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        *,
        image_size: int = 224,
        transform: str | Transform | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        info = dataset_info("imagenet")
        directory = os.path.join(root, split)
        if not os.path.isdir(directory):
            raise root_error(info, root, f"missing the {split}/ folder")
        wnids = _class_folders(directory)
        if not wnids:
            flat = any(name.lower().endswith(IMG_EXTENSIONS) for name in os.listdir(directory))
            hint = " (images lie directly in it: sort them into <wnid>/ folders first)" if flat else ""
            raise root_error(info, root, f"{directory} has no class folders{hint}")
        train_directory = os.path.join(root, "train")
        classes = _class_folders(train_directory) if os.path.isdir(train_directory) else wnids
        unknown = sorted(set(wnids) - set(classes))
        if unknown:
            raise root_error(info, root, f"{split}/ has classes that train/ lacks: {', '.join(unknown[:5])}")
        self.classes = classes
        self.class_to_idx = {wnid: index for index, wnid in enumerate(classes)}
        self.samples = make_dataset(
            directory, {wnid: self.class_to_idx[wnid] for wnid in wnids}, extensions=IMG_EXTENSIONS, allow_empty=True
        )
        if not self.samples:
            raise root_error(info, root, f"no images ({', '.join(IMG_EXTENSIONS)}) under {directory}/<wnid>/")
        self.num_classes = len(classes)
        self.transform = resolve_transform(
            transform, default_preset="imagenet", train=split == "train", image_size=image_size,
            mean=info.mean, std=info.std,
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(_load_rgb(path)), label

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


def _build(root: str, split: str, *, task: str = "classification", **kwargs: Any) -> ImageNet:
    return ImageNet(root, split, **kwargs)


INFO = register_dataset(
    DatasetInfo(
        name="imagenet",
        tasks=("classification",),
        num_classes=1000,
        image_size=224,
        in_channels=3,
        builder=_build,
        default_root=os.path.join(data_home(), "imagenet"),
        layout="ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (ImageFolder; val sorted into wnid folders)",
        source="https://image-net.org (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar; sort val with valprep.sh)",
        stem="imagenet",
        train_size=1281167,
        required_paths=("train", "val"),
        notes="train: random-resized-crop + flip; val: resize 256, center crop 224; kwargs: image_size, transform",
    )
)
