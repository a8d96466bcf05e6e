"""``voc2012``: PASCAL VOC 2012 as COCO-format instances: boxes from the XML annotations and,
with ``masks=True``, instance masks from the SegmentationObject PNGs.

Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.1: "We convert the data format of VOC2012 to the format of COCO2017,
including generating mask labels, so we can perform experiments on VOC2012 using Mask R-CNN",
evaluated on the validation set (Table 3).

Layout: ``VOCdevkit/VOC2012/{JPEGImages,Annotations,ImageSets/Main,ImageSets/Segmentation,
SegmentationObject,SegmentationClass}``. ``ROOT`` may be the folder holding ``VOCdevkit/``,
``VOCdevkit/`` itself, or ``VOC2012/`` itself. Items follow :mod:`sna_core.data.detection`.

- Image lists: ``ImageSets/Main/{train,val}.txt`` (5,717 / 5,823 images) for boxes;
  ``ImageSets/Segmentation/{train,val}.txt`` (1,464 / 1,449) when ``masks=True``, because only
  those images have a SegmentationObject PNG — every image of a masks=True split has masks, and a
  listed image without its PNG is an error naming the file. ``limit`` takes the first listed ids.
- Classes: the 20 VOC names in their usual (alphabetical) order, labels 1..20.
- Boxes: ``bndbox`` holds 1-based inclusive pixel indices; as Detectron2 (the paper's framework)
  does, ``xmin`` and ``ymin`` are shifted by −1 so a box (1, W) covers the whole image (0, W).
- ``difficult`` objects are ordinary instances by default (Detectron2 trains on them and a plain
  VOC→COCO conversion keeps them); ``difficult_as_crowd=True`` marks them ``iscrowd=1`` instead —
  ignored by COCO evaluation (as VOC's own evaluation ignores them) and left out of training.
- Masks: a SegmentationObject PNG is an indexed (palette) image whose value k = 1, 2, … marks the
  pixels of the k-th ``<object>`` of the XML, in file order (VOC's convention); 0 is background
  and 255 the void/border band, which belongs to no instance. An object whose index never appears
  gets an empty mask (area 0); an index beyond the XML's object count is an error naming the PNG.
  With masks, ``area`` is the mask's pixel count.
- ``image_id``: the file id without its underscore as an int (``2008_000123`` → 2008000123), as
  common VOC→COCO converters do; if some id of the split is not of that form, the position in
  the image list (1-based) for all.
"""

from __future__ import annotations

import os
from typing import Any
from xml.etree import ElementTree

import numpy as np
import torch
from PIL import Image

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

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
SPLITS = ("train", "val")
YEAR_FOLDER = "VOC2012"
ROOT_PREFIXES = (f"VOCdevkit/{YEAR_FOLDER}", YEAR_FOLDER, "")
VOID = 255


def find_year_folder(root: str) -> str:
    """The ``VOC2012`` folder for a root that is its parent's parent, its parent or itself."""
    for prefix in ROOT_PREFIXES:
        candidate = os.path.join(root, prefix) if prefix else root
        if os.path.isdir(os.path.join(candidate, "JPEGImages")) and os.path.isdir(os.path.join(candidate, "Annotations")):
            return os.path.normpath(candidate)
    raise root_error(dataset_info("voc2012"), root, "no VOCdevkit/VOC2012, VOC2012 or JPEGImages+Annotations folder found")


def read_image_list(path: str, root: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.split()[0] for line in handle if line.strip()]
    except FileNotFoundError:
        raise root_error(dataset_info("voc2012"), root, f"missing the image list {path}") from None


def _text(element: ElementTree.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def parse_annotation(path: str, root: str) -> tuple[int, int, list[tuple[str, tuple[float, float, float, float], bool]]]:
    """``(width, height, [(class name, (xmin, ymin, xmax, ymax) as written, difficult), ...])``
    of one VOC XML file, objects in file order."""
    info = dataset_info("voc2012")
    try:
        tree = ElementTree.parse(path)
    except FileNotFoundError:
        raise root_error(info, root, f"missing annotation {path}") from None
    except ElementTree.ParseError as error:
        raise root_error(info, root, f"{path} is not valid XML ({error})") from None
    node = tree.getroot()
    try:
        width, height = int(float(_text(node.find("size/width")))), int(float(_text(node.find("size/height"))))
    except ValueError:
        raise root_error(info, root, f"{path}: <size> needs numeric <width> and <height>") from None
    objects = []
    for position, obj in enumerate(node.findall("object")):
        name = _text(obj.find("name"))
        try:
            box = tuple(float(_text(obj.find(f"bndbox/{key}"))) for key in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise root_error(info, root, f"{path}: object {position} ({name!r}) has no numeric bndbox xmin/ymin/xmax/ymax") from None
        difficult = _text(obj.find("difficult")) not in ("", "0")
        objects.append((name, box, difficult))
    return width, height, objects


def image_ids_as_ints(ids: list[str]) -> list[int]:
    """``2008_000123`` → 2008000123 for every id, or 1..N when some id is not digits and underscores."""
    compact = [image_id.replace("_", "") for image_id in ids]
    if all(value.isdigit() for value in compact) and len(set(compact)) == len(compact):
        return [int(value) for value in compact]
    return list(range(1, len(ids) + 1))


class VOCDetection(DetectionDataset):
    """One split of VOC 2012 detection / instance segmentation (see the module doc)."""

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
        difficult_as_crowd: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        check_limit(limit)
        info = dataset_info("voc2012")
        self.year_folder = find_year_folder(root)
        image_set = "Segmentation" if masks else "Main"
        ids = read_image_list(os.path.join(self.year_folder, "ImageSets", image_set, f"{split}.txt"), root)
        if limit is not None:
            ids = ids[:limit]
        label_of = {name: label for label, name in enumerate(VOC_CLASSES, start=1)}
        records = []
        for file_id, image_id in zip(ids, image_ids_as_ints(ids)):
            xml_path = os.path.join(self.year_folder, "Annotations", f"{file_id}.xml")
            width, height, objects = parse_annotation(xml_path, root)
            instances = []
            for name, (xmin, ymin, xmax, ymax), difficult in objects:
                if name not in label_of:
                    raise root_error(info, root, f"{xml_path}: unknown class {name!r}; VOC classes: {', '.join(VOC_CLASSES)}")
                instances.append(
                    Instance(box=(xmin - 1.0, ymin - 1.0, xmax, ymax), label=label_of[name], iscrowd=int(difficult and difficult_as_crowd))
                )
            records.append(
                ImageRecord(image_id, os.path.join(self.year_folder, "JPEGImages", f"{file_id}.jpg"), width, height, instances)
            )
        self.file_ids = ids
        check_files_exist(info, root, [record.path for record in records])
        super().__init__(
            info, root, split, records, VOC_CLASSES,
            image_size=image_size, masks=masks, train_transforms=train_transforms, flip_seed=flip_seed,
            include_crowd=include_crowd,
        )

    def read_image(self, record: ImageRecord) -> torch.Tensor:
        return read_rgb(self.info, self.root, record.path)

    def object_png(self, record: ImageRecord) -> str:
        file_id = os.path.splitext(os.path.basename(record.path))[0]
        return os.path.join(self.year_folder, "SegmentationObject", f"{file_id}.png")

    def read_masks(self, record: ImageRecord, height: int, width: int) -> torch.Tensor:
        """One mask per XML object from the SegmentationObject PNG (index k ↔ k-th object)."""
        path = self.object_png(record)
        try:
            with Image.open(path) as png:
                mode, indices = png.mode, np.asarray(png)
        except FileNotFoundError:
            raise root_error(self.info, self.root, f"missing {path} (masks=True reads ImageSets/Segmentation images' SegmentationObject PNGs)") from None
        except OSError as error:
            raise root_error(self.info, self.root, f"cannot read {path} ({error})") from None
        if mode not in ("P", "L"):
            raise root_error(self.info, self.root, f"{path} is a {mode} image, expected an indexed (palette) PNG")
        if indices.shape != (height, width):
            raise root_error(self.info, self.root, f"{path} is {indices.shape[1]}×{indices.shape[0]} pixels, its image {width}×{height}")
        count = len(record.instances)
        used = np.unique(indices)
        beyond = [int(v) for v in used if v != 0 and v != VOID and v > count]
        if beyond:
            raise root_error(
                self.info, self.root,
                f"{path} has instance indices {beyond} but its XML lists {count} objects (index k marks the k-th <object>)",
            )
        masks = indices[None, :, :] == np.arange(1, count + 1, dtype=indices.dtype)[:, None, None]
        return torch.from_numpy(masks.astype(np.uint8))


def _build(root: str, split: str, *, task: str = "detection", **kwargs: Any) -> VOCDetection:
    return VOCDetection(root, split, **kwargs)


INFO = register_dataset(
    DatasetInfo(
        name="voc2012",
        tasks=("detection",),
        num_classes=len(VOC_CLASSES),
        image_size=224,
        in_channels=3,
        builder=_build,
        default_root=os.path.join(data_home(), "voc2012"),
        layout=(
            "ROOT/VOCdevkit/VOC2012/{JPEGImages,Annotations,ImageSets/Main,ImageSets/Segmentation,"
            "SegmentationObject,SegmentationClass} (ROOT may also be VOCdevkit/ or VOC2012/ itself)"
        ),
        source="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar)",
        stem="imagenet",
        train_size=5717,
        required_paths=("JPEGImages", "Annotations", "ImageSets"),
        root_prefixes=ROOT_PREFIXES,
        class_names=VOC_CLASSES,
        notes=(
            "20 classes (+ background), converted to COCO format with instance masks from SegmentationObject "
            "(masks=True reads the ImageSets/Segmentation lists: 1,464 train / 1,449 val images; boxes alone "
            "ImageSets/Main: 5,717 / 5,823); the paper evaluates on val. kwargs: image_size (short side; None = "
            "original), masks, limit, train_transforms (flip), flip_seed, include_crowd, difficult_as_crowd"
        ),
    )
)

__all__ = ["INFO", "VOC_CLASSES", "VOCDetection", "find_year_folder", "parse_annotation"]
