"""What the detection datasets (``coco2017``, ``voc2012``, ``vindr_cxr``) share: one item format,
resizing, the seeded flip, the batch collate and the COCO ground truth evaluation reads.

Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.1 and §4.3: Faster/Mask R-CNN on COCO2017 and on VOC2012 "converted to
the format of COCO2017, including generating mask labels", and Faster R-CNN on VinDr-CXR.

Item ``i`` is ``(image, target)`` (the detection contract, torchvision's detection format):

- ``image``: float32 ``[C, H, W]`` in [0, 1], not normalised (torchvision's
  ``GeneralizedRCNNTransform`` normalises and resizes);
- ``target``: ``boxes`` float32 ``[N, 4]`` (x_min, y_min, x_max, y_max in pixels of the returned
  image), ``labels`` int64 ``[N]`` in 1..num_classes (0 is the background), ``image_id`` int,
  ``area`` float32 ``[N]``, ``iscrowd`` int64 ``[N]`` and, for datasets built with
  ``masks=True``, ``masks`` uint8 ``[N, H, W]``. ``N`` may be 0 (boxes ``[0, 4]``).

Boxes with no width or height (after clipping to the image) are dropped everywhere: torchvision's
detectors refuse them. Crowd regions (``iscrowd=1``) are left out of the target unless
``include_crowd=True`` — torchvision's detectors would learn them as objects — but stay in
:meth:`DetectionDataset.coco_ground_truth`, where COCO evaluation ignores detections on them.

``image_size``: the shorter side is resized to it (boxes and masks scaled with it; ``None`` keeps
the original size). Masks are resized with nearest-neighbour sampling. On split ``"train"``
with ``train_transforms=True`` the image is flipped horizontally with probability 0.5; the coin is
drawn from ``(flip_seed, epoch, index)`` alone, so a run is reproducible whatever the loader
workers and the order (call :meth:`DetectionDataset.set_epoch` each epoch for fresh flips; loader
workers started with ``persistent_workers=True`` keep the epoch they were started with).
"""

from __future__ import annotations

import contextlib
import io
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from sna_core.data.registry import DatasetInfo, root_error

Target = dict[str, Any]


@dataclass
class Instance:
    """One annotated object, in the original image's pixels."""

    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max
    label: int  # 1..num_classes
    iscrowd: int = 0
    area: float | None = None  # None: the box's area
    segmentation: Any = None  # COCO polygons or RLE (COCO files); None where masks come from elsewhere


@dataclass
class ImageRecord:
    """One image and its objects, as read from the annotation files (no pixels read)."""

    image_id: int
    path: str
    width: int  # original size in pixels; 0 when only the image file knows it
    height: int
    instances: list[Instance] = field(default_factory=list)


def detection_collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """``(images, targets)`` as lists: detection images differ in size, so they are not stacked."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets


def shorter_side_size(height: int, width: int, image_size: int | None) -> tuple[int, int]:
    """``(height, width)`` with the shorter side resized to ``image_size`` (``None``: unchanged)."""
    if image_size is None:
        return height, width
    scale = image_size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def scale_boxes(boxes: torch.Tensor, scale_x: float, scale_y: float, width: int, height: int) -> torch.Tensor:
    """Boxes ``[N, 4]`` scaled per axis and clipped to a ``width × height`` image."""
    scaled = boxes * torch.tensor([scale_x, scale_y, scale_x, scale_y], dtype=boxes.dtype)
    scaled[:, 0::2] = scaled[:, 0::2].clamp(0, width)
    scaled[:, 1::2] = scaled[:, 1::2].clamp(0, height)
    return scaled


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``[C, H, W]`` image resized to ``size`` (bilinear, antialiased); unchanged if already so."""
    if tuple(image.shape[-2:]) == size:
        return image
    return TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 masks ``[N, H, W]`` resized to ``size`` (nearest neighbour, so they stay 0/1)."""
    if tuple(masks.shape[-2:]) == size:
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    return TF.resize(masks, list(size), interpolation=InterpolationMode.NEAREST_EXACT, antialias=False)


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirror an image and its target left-right: x ↦ W − x for boxes, masks mirrored."""
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def flip_coin(seed: int, epoch: int, index: int) -> bool:
    """The seeded p = 0.5 coin of item ``index`` in ``epoch``."""
    return bool(np.random.default_rng([seed, epoch, index]).random() < 0.5)


def masks_to_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """COCO RLEs (``counts`` as str, JSON-safe) of uint8 masks ``[N, H, W]``."""
    from pycocotools import mask as mask_utils

    array = np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8))
    rles = mask_utils.encode(array) if masks.shape[0] else []
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as a uint8 ``[H, W]`` mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons: one or more [x1, y1, x2, y2, ...]
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)  # uncompressed RLE (crowds)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise TypeError(f"unknown segmentation {type(segmentation).__name__}: expected polygons or an RLE dict")
    return mask_utils.decode(rle).astype(np.uint8)


def build_coco(dataset: dict[str, Any]):
    """A ``pycocotools.coco.COCO`` holding ``dataset`` (without pycocotools' progress prints)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_rgb(info: DatasetInfo, root: str, path: str) -> torch.Tensor:
    """A uint8 ``[3, H, W]`` image from a JPEG/PNG file (grey and CMYK files converted to RGB); a
    missing or broken file is a :class:`DatasetRootError` naming it."""
    try:
        with Image.open(path) as opened:
            pixels = np.asarray(opened.convert("RGB"))
    except FileNotFoundError:
        raise root_error(info, root, f"missing image {path}") from None
    except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise root_error(info, root, f"cannot decode image {path} ({error})") from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def check_files_exist(info: DatasetInfo, root: str, paths: Sequence[str]) -> None:
    """Raise :class:`DatasetRootError` naming the first missing files of ``paths``. One directory
    listing per folder instead of a stat per file: a missing image is reported when the dataset is
    built, not hours into training."""
    listed: dict[str, set[str]] = {}
    missing = []
    for path in paths:
        directory, name = os.path.split(path)
        if directory not in listed:
            listed[directory] = set(os.listdir(directory)) if os.path.isdir(directory) else set()
        if name not in listed[directory]:
            missing.append(os.path.relpath(path, root))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise root_error(info, root, f"{len(missing)} of {len(paths)} image files are missing: {shown}")


class DetectionDataset(Dataset, ABC):
    """A split of a detection dataset from its :class:`ImageRecord` list (see the module doc).

    Subclasses read the annotation files into ``records`` and provide :meth:`read_image` and,
    for ``masks=True``, :meth:`read_masks`.
    """

    def __init__(
        self,
        info: DatasetInfo,
        root: str,
        split: str,
        records: list[ImageRecord],
        class_names: Sequence[str],
        *,
        image_size: int | None,
        masks: bool,
        train_transforms: bool,
        flip_seed: int,
        include_crowd: bool,
    ) -> None:
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
        self.info, self.root, self.split = info, root, split
        self.records = records
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.image_size = image_size
        self.masks = bool(masks)
        self.flip = bool(train_transforms) and split == "train"
        self.flip_seed = int(flip_seed)
        self.include_crowd = bool(include_crowd)
        self.epoch = 0
        self._ground_truth = None

    # -- what subclasses provide --------------------------------------------------------------
    @abstractmethod
    def read_image(self, record: ImageRecord) -> torch.Tensor:
        """The original image: ``[C, H, W]``, uint8 or float in [0, 1]."""

    def read_masks(self, record: ImageRecord, height: int, width: int) -> torch.Tensor:
        """uint8 ``[N, H, W]`` masks of ``record.instances`` at the original size; by default from
        their COCO ``segmentation``."""
        masks = np.zeros((len(record.instances), height, width), dtype=np.uint8)
        for position, instance in enumerate(record.instances):
            if instance.segmentation is None:
                raise root_error(self.info, self.root, f"image {record.path}: an object has no segmentation (masks=True needs one)")
            try:
                masks[position] = segmentation_to_mask(instance.segmentation, height, width)
            except (ValueError, TypeError, KeyError) as error:
                raise root_error(self.info, self.root, f"image {record.path}: unreadable segmentation ({error})") from None
        return torch.from_numpy(masks)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The returned image's ``(height, width)`` for an original ``height × width`` one."""
        return shorter_side_size(height, width, self.image_size)

    def original_size(self, record: ImageRecord) -> tuple[int, int]:
        """``(height, width)`` of the original image without decoding it (annotation files)."""
        return record.height, record.width

    # -- the Dataset ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's flips (see the module doc)."""
        self.epoch = int(epoch)

    @property
    def image_ids(self) -> list[int]:
        return [record.image_id for record in self.records]

    def _annotations(self, index: int, *, with_crowd: bool, masks: torch.Tensor | None = None) -> dict[str, Any]:
        """Boxes, labels, crowd flags, areas and masks of image ``index`` at the output size."""
        record = self.records[index]
        height, width = self.original_size(record)
        out_height, out_width = self.output_size(height, width)
        scale_x, scale_y = out_width / width, out_height / height
        instances = record.instances
        boxes = torch.tensor([instance.box for instance in instances], dtype=torch.float32).reshape(-1, 4)
        boxes = scale_boxes(boxes, scale_x, scale_y, out_width, out_height)
        iscrowd = torch.tensor([instance.iscrowd for instance in instances], dtype=torch.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not with_crowd:
            keep &= iscrowd == 0
        areas = torch.tensor(
            [
                instance.area if instance.area is not None else (instance.box[2] - instance.box[0]) * (instance.box[3] - instance.box[1])
                for instance in instances
            ],
            dtype=torch.float32,
        ) * (scale_x * scale_y)
        result = {
            "boxes": boxes[keep],
            "labels": torch.tensor([instance.label for instance in instances], dtype=torch.int64)[keep],
            "iscrowd": iscrowd[keep],
            "area": areas[keep],
            "size": (out_height, out_width),
        }
        if masks is not None:
            kept = resize_masks(masks[keep], (out_height, out_width))
            result["masks"] = kept
            result["area"] = kept.flatten(1).sum(dim=1).to(torch.float32)
        return result

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} images")
        record = self.records[index]
        image = self.read_image(record)
        height, width = image.shape[-2:]
        expected = self.original_size(record)
        if (height, width) != expected:
            raise root_error(
                self.info, self.root,
                f"image {record.path} is {width}×{height} pixels but its annotation says {expected[1]}×{expected[0]}",
            )
        masks = self.read_masks(record, height, width) if self.masks else None
        annotations = self._annotations(index, with_crowd=self.include_crowd, masks=masks)
        image = resize_image(image, annotations["size"])
        image = image.to(torch.float32) / 255.0 if image.dtype == torch.uint8 else image.to(torch.float32)
        target: Target = {
            "boxes": annotations["boxes"],
            "labels": annotations["labels"],
            "image_id": record.image_id,
            "area": annotations["area"],
            "iscrowd": annotations["iscrowd"],
        }
        if masks is not None:
            target["masks"] = annotations["masks"]
        if self.flip and flip_coin(self.flip_seed, self.epoch, index):
            image, target = hflip(image, target)
        return image, target

    # -- evaluation -------------------------------------------------------------------------
    def coco_ground_truth(self):
        """The ground truth of exactly this split as a ``pycocotools.coco.COCO``.

        In the returned images' pixels (never flipped); image ids = ``target["image_id"]``;
        category ids = the contiguous labels 1..num_classes; crowd regions included with
        ``iscrowd=1``; ``segmentation`` (RLE of exactly the target's masks) when built with
        ``masks=True``. Built once (reads the masks when ``masks=True``), then cached.
        """
        if self._ground_truth is not None:
            return self._ground_truth
        images, annotations = [], []
        for index, record in enumerate(self.records):
            masks = None
            if self.masks:
                height, width = self.original_size(record)
                masks = self.read_masks(record, height, width)
            found = self._annotations(index, with_crowd=True, masks=masks)
            out_height, out_width = found["size"]
            images.append({"id": record.image_id, "width": out_width, "height": out_height, "file_name": os.path.basename(record.path)})
            rles = masks_to_rle(found["masks"]) if masks is not None else None
            for position, (box, label, crowd, area) in enumerate(
                zip(found["boxes"].tolist(), found["labels"].tolist(), found["iscrowd"].tolist(), found["area"].tolist())
            ):
                annotation = {
                    "id": len(annotations) + 1,
                    "image_id": record.image_id,
                    "category_id": int(label),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "area": float(area),
                    "iscrowd": int(crowd),
                }
                if rles is not None:
                    annotation["segmentation"] = rles[position]
                annotations.append(annotation)
        categories = [{"id": label, "name": name} for label, name in enumerate(self.class_names, start=1)]
        self._ground_truth = build_coco({"images": images, "annotations": annotations, "categories": categories})
        return self._ground_truth


def check_limit(limit: int | None) -> None:
    """``limit`` (the first N images, for tests and quick runs) must be None or a positive int."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")


__all__ = [
    "DetectionDataset",
    "ImageRecord",
    "Instance",
    "Target",
    "check_files_exist",
    "check_limit",
    "detection_collate",
    "flip_coin",
    "hflip",
    "masks_to_rle",
    "resize_image",
    "resize_masks",
    "scale_boxes",
    "segmentation_to_mask",
    "shorter_side_size",
]
