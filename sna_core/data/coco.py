"""``coco2017``: COCO 2017 instances (boxes, optional masks) from the official json + jpg layout.

Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.3 and Table 3: Faster R-CNN and Mask R-CNN (ResNet-50-FPN) on
COCO2017, AP/AP50/AP75 on val2017.

Layout: ``ROOT/annotations/instances_{train,val}2017.json`` and ``ROOT/{train,val}2017/<file_name>``
(split ``"val"`` reads val2017). Items follow :mod:`sna_core.data.detection`.

- Categories: sorted by id and numbered 1..K (COCO's 80 ids run 1..90 with gaps); the map is
  ``category_id_to_label`` / ``label_to_category_id`` (to write results with COCO's own ids).
  A category with id 0 is skipped: COCO ids start at 1, and converters such as labelme2coco write
  a ``_background_`` category there. ``num_classes`` is K as read (80 for COCO 2017).
- Images: in the json's order (``limit`` takes the first ones); images without objects are kept.
  ``image_id`` is COCO's id.
- Boxes: ``bbox`` [x, y, w, h] → (x, y, x + w, y + h), clipped to the image; boxes without width
  or height are dropped. ``area`` is the annotation's (the segment's area), scaled with the image.
- Crowd annotations (``iscrowd=1``, RLE segments) stay in :meth:`coco_ground_truth` and are left
  out of the training target unless ``include_crowd=True``.
- ``masks=True``: masks rasterised from the polygons / RLE with pycocotools.

A missing json, bad json or a json without the COCO keys raises
:class:`~sna_core.data.DatasetRootError` naming the file.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from sna_core.data.detection import (
    DetectionDataset,
    ImageRecord,
    Instance,
    check_files_exist,
    check_limit,
    read_rgb,
)
from sna_core.data.registry import (
    DatasetInfo,
    data_home,
    dataset_info,
    register_dataset,
    root_error,
)

SPLIT_FOLDERS = {"train": "train2017", "val": "val2017"}
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)


def annotation_path(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{SPLIT_FOLDERS[split]}.json")


def load_instances_json(path: str, root: str) -> dict[str, Any]:
    """The parsed instances json, checked for the keys the loader reads."""
    info = dataset_info("coco2017")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise root_error(info, root, f"missing {os.path.relpath(path, root)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise root_error(info, root, f"{path} is not valid json ({error})") from None
    if not isinstance(data, dict):
        raise root_error(info, root, f"{path} holds a json {type(data).__name__}, expected an object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise root_error(info, root, f"{path} has no list {key!r} (keys: {', '.join(sorted(data)) or 'none'})")
    return data


def _require(entry: dict[str, Any], keys: tuple[str, ...], what: str, path: str, root: str) -> None:
    missing = [key for key in keys if key not in entry]
    if missing:
        raise root_error(dataset_info("coco2017"), root, f"{path}: {what} {entry.get('id', '?')} lacks {', '.join(missing)}")


class COCODetection(DetectionDataset):
    """One split of COCO 2017 instances (see the module doc)."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        *,
        image_size: int | None = None,
        masks: bool = False,
        limit: int | None = None,
        train_transforms: bool = True,
        flip_seed: int = 0,
        include_crowd: bool = False,
    ) -> None:
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLIT_FOLDERS)}")
        check_limit(limit)
        path = annotation_path(root, split)
        data = load_instances_json(path, root)
        info = dataset_info("coco2017")
        folder = os.path.join(root, SPLIT_FOLDERS[split])
        try:
            categories, records = self._parse(data, path, root, limit, folder, keep_segmentation=masks)
        except (TypeError, ValueError, AttributeError) as error:
            raise root_error(info, root, f"{path}: malformed entry ({type(error).__name__}: {error})") from None
        if not os.path.isdir(folder):
            raise root_error(info, root, f"missing the image folder {SPLIT_FOLDERS[split]}/")
        check_files_exist(info, root, [record.path for record in records.values()])
        super().__init__(
            info, root, split, list(records.values()), tuple(str(c["name"]) for c in categories),
            image_size=image_size, masks=masks, train_transforms=train_transforms, flip_seed=flip_seed,
            include_crowd=include_crowd,
        )

    def _parse(
        self, data: dict[str, Any], path: str, root: str, limit: int | None, folder: str, *, keep_segmentation: bool
    ) -> tuple[list[dict[str, Any]], dict[int, ImageRecord]]:
        """Categories (sorted by id, id 0 skipped) and the image records with their objects
        (segmentations only when masks are wanted: COCO train's polygons take a few hundred MB)."""
        info = dataset_info("coco2017")
        for category in data["categories"]:
            _require(category, ("id", "name"), "category", path, root)
        categories = sorted((c for c in data["categories"] if int(c["id"]) != 0), key=lambda c: int(c["id"]))
        self.category_id_to_label = {int(c["id"]): label for label, c in enumerate(categories, start=1)}
        self.label_to_category_id = {label: category_id for category_id, label in self.category_id_to_label.items()}

        images = data["images"][:limit] if limit is not None else data["images"]
        records: dict[int, ImageRecord] = {}
        for image in images:
            _require(image, ("id", "file_name", "width", "height"), "image", path, root)
            records[int(image["id"])] = ImageRecord(
                image_id=int(image["id"]),
                path=os.path.join(folder, image["file_name"]),
                width=int(image["width"]),
                height=int(image["height"]),
            )
        for annotation in data["annotations"]:
            _require(annotation, ("image_id", "category_id", "bbox"), "annotation", path, root)
            record = records.get(int(annotation["image_id"]))
            if record is None:
                continue  # an image beyond ``limit`` (or not in the images list)
            label = self.category_id_to_label.get(int(annotation["category_id"]))
            if label is None:
                raise root_error(
                    info, root,
                    f"{path}: annotation {annotation.get('id', '?')} has category_id {annotation['category_id']}, "
                    f"not among the categories ({', '.join(map(str, self.category_id_to_label))})",
                )
            x, y, w, h = (float(v) for v in annotation["bbox"])
            record.instances.append(
                Instance(
                    box=(x, y, x + w, y + h),
                    label=label,
                    iscrowd=int(annotation.get("iscrowd", 0)),
                    area=float(annotation["area"]) if "area" in annotation else None,
                    segmentation=annotation.get("segmentation") if keep_segmentation else None,
                )
            )
        return categories, records

    def read_image(self, record: ImageRecord) -> torch.Tensor:
        return read_rgb(self.info, self.root, record.path)


def _build(root: str, split: str, *, task: str = "detection", **kwargs: Any) -> COCODetection:
    return COCODetection(root, split, **kwargs)


INFO = register_dataset(
    DatasetInfo(
        name="coco2017",
        tasks=("detection",),
        num_classes=80,
        image_size=224,
        in_channels=3,
        builder=_build,
        default_root=os.path.join(data_home(), "coco2017"),
        layout=(
            "ROOT/train2017/*.jpg, ROOT/val2017/*.jpg, ROOT/annotations/instances_train2017.json, "
            "ROOT/annotations/instances_val2017.json"
        ),
        source="https://cocodataset.org/#download (2017 Train/Val images, 2017 Train/Val annotations)",
        stem="imagenet",
        train_size=118287,
        required_paths=("train2017", "val2017", "annotations/instances_train2017.json", "annotations/instances_val2017.json"),
        class_names=COCO_CLASSES,
        notes=(
            "80 categories, ids 1..90 with gaps, numbered 1..80 (model num_classes 80 + background); crowd regions "
            "kept for evaluation, left out of training targets; the paper trains Faster/Mask R-CNN R50-FPN in "
            "Detectron2 (default input: short side 800; image_size 224 is the paper's crop for natural images). "
            "kwargs: image_size (short side; None = original), masks, limit, train_transforms (flip), flip_seed, include_crowd"
        ),
    )
)

__all__ = ["COCO_CLASSES", "INFO", "COCODetection"]
