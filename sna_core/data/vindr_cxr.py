"""``vindr_cxr``: VinDr-CXR chest radiographs (Kaggle layout) for multi-label classification and
for detection of 14 findings.

Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022): VIN-CXR "localizes and classifies 14 types of thoracic abnormalities"
(§4.1); "for medical images, we resize each image as 224×224 and normalize them to 0–1 range";
AUROC per finding (Fig. 5) and Faster R-CNN AP at IoU > 0.4 (Table 4).

Layout (Kaggle "VinBigData Chest X-ray Abnormalities Detection"): ``ROOT/train.csv`` with columns
``image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max`` — one row per box and
radiologist, three radiologists per image; ``class_id`` 0..13 are the findings, 14 is
"No finding" with empty coordinates — and ``ROOT/train/<image_id>.dicom``.

- Pixels: the DICOM's modality LUT (rescale slope/intercept) and VOI LUT / window, if present,
  are applied; MONOCHROME1 images (bright = low values) are inverted; the result is min-max
  scaled to [0, 1] and resized with antialiasing to ``image_size × image_size`` (224; the paper's
  square resize: boxes are scaled per axis; ``square=False`` resizes the shorter side instead).
  No normalisation (mean 0, std 1). The grey channel is repeated to ``in_channels`` = 3 so
  ImageNet-style backbones and detectors run unchanged (``in_channels=1`` keeps one).
- Split: Kaggle's test labels are not public, so train.csv is split by image: an image is in
  ``"val"`` when the first 8 bytes of SHA-256(image_id), read as a fraction of 2⁶⁴, fall below
  ``val_fraction`` (0.2). This depends on the id alone: stable under any subset or order of rows.
  The paper does not state its split; its Table 4 counts (images per finding: 12,289 train /
  3,076 test in total, 20.0 %) fit a random 80/20 image split but no seed reproduces them; this
  split gives 12,111 / 3,254 (e.g. aortic enlargement 2,430 / 637 vs the paper's 2,433 / 634).
  ``limit`` takes the split's first images in image_id order.
- Class counts (:func:`class_counts`, Table 4's train/test columns): per split, the number of
  *images in which any radiologist marked the finding*; its "Total" row is the sum over the
  findings. Of the definitions tried on the real train.csv, only this one gives the paper's
  figures: summed over both splits it equals the paper's train + test for every one of the 14
  findings (e.g. aortic enlargement 3,067, pneumothorax 96; 15,365 in all). Images on which at
  least two radiologists agree (8,825 in all), boxes (36,096) and fused boxes (22,511) do not.
  The split itself differs (see above): 12,111 / 3,254 against 12,289 / 3,076, per finding at
  most 38 images (cardiomegaly 1,817 / 483 against 1,855 / 445; pneumothorax 69 / 27 against
  81 / 15). ``task="multilabel"`` adds "No finding" (images any radiologist called normal).
  The counts read ``ROOT/train.csv`` when it exists, else the identical Kaggle train.csv that
  torchxrayvision ships as ``data/vinbigdata-train.csv.gz`` (found without importing it).
- ``task="multilabel"``: target float32 ``[15]`` multi-hot — findings 0..13 in class_id order,
  then "No finding" — a label positive when ANY radiologist gave it (``no_finding=False``: the
  14 findings only).
- ``task="detection"``: labels 1..14 = class_id + 1 (items follow
  :mod:`sna_core.data.detection`; "No finding" images have no boxes). The three radiologists'
  boxes are fused per class (``box_fusion="cluster"``): boxes of the same finding are linked when
  their IoU exceeds ``fusion_iou`` (0.4, the paper's evaluation threshold); each connected group —
  boxes of one or several radiologists that overlap, directly or through a chain — becomes one box
  with the mean coordinates, and a box that overlaps no other is kept as it is, so every finding
  any radiologist boxed is kept. ``box_fusion="none"`` keeps every radiologist's box.
  ``image_id`` is the image's position (1-based) among the sorted image_ids of train.csv.
- No training augmentation by default (the paper lists none for medical images;
  ``train_transforms=True`` adds the seeded horizontal flip of the detection datasets).

A missing file, a csv without one of the columns, an unknown class or an unreadable DICOM raises
:class:`~sna_core.data.DatasetRootError` naming the file.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sna_core.data.detection import (
    DetectionDataset,
    ImageRecord,
    Instance,
    check_files_exist,
    check_limit,
    resize_image,
    shorter_side_size,
)
from sna_core.data.registry import (
    ClassCounts,
    DatasetInfo,
    data_home,
    dataset_info,
    register_dataset,
    root_error,
)

VINDR_FINDINGS = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
    "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
)
NO_FINDING = "No finding"
NO_FINDING_ID = len(VINDR_FINDINGS)  # 14
CLASS_NAMES = VINDR_FINDINGS + (NO_FINDING,)
CSV_COLUMNS = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
BOX_FUSIONS = ("cluster", "none")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Finding:
    """One row of train.csv: a radiologist's finding, with its box (None for "No finding")."""

    class_id: int
    rad_id: str
    box: tuple[float, float, float, float] | None


def _info() -> DatasetInfo:
    return dataset_info("vindr_cxr")


def read_train_csv(path: str, root: str) -> dict[str, list[Finding]]:
    """train.csv (or a gzipped copy, ``*.gz``) as ``{image_id: [Finding, ...]}`` (rows in file order)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns, rows = list(reader.fieldnames or []), list(reader)
    except FileNotFoundError:
        raise root_error(_info(), root, f"missing {os.path.relpath(path, root)}") from None
    except (UnicodeDecodeError, csv.Error, gzip.BadGzipFile, EOFError) as error:
        raise root_error(_info(), root, f"{path} is not a readable csv ({error})") from None
    missing = [column for column in CSV_COLUMNS if column not in columns]
    if missing:
        raise root_error(_info(), root, f"{path} lacks the column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'})")
    if not rows:
        raise root_error(_info(), root, f"{path} has no rows")
    findings: dict[str, list[Finding]] = {}
    for line, row in enumerate(rows, start=2):
        findings.setdefault(row["image_id"], []).append(_parse_row(row, path, line, root))
    return findings


def _parse_row(row: dict[str, str], path: str, line: int, root: str) -> Finding:
    def bad(problem: str) -> Exception:
        return root_error(_info(), root, f"{path} line {line}: {problem}")

    try:
        class_id = int(row["class_id"])
    except (TypeError, ValueError):
        raise bad(f"class_id {row['class_id']!r} is not an integer") from None
    if not 0 <= class_id <= NO_FINDING_ID:
        raise bad(f"class_id {class_id} outside 0..{NO_FINDING_ID}")
    if row["class_name"] != CLASS_NAMES[class_id]:
        raise bad(f"class_name {row['class_name']!r} does not match class_id {class_id} ({CLASS_NAMES[class_id]!r})")
    if class_id == NO_FINDING_ID:
        return Finding(class_id, row["rad_id"], None)
    try:
        box = tuple(float(row[key]) for key in ("x_min", "y_min", "x_max", "y_max"))
    except (TypeError, ValueError):
        raise bad(f"finding {row['class_name']!r} needs numeric x_min, y_min, x_max, y_max") from None
    if not np.all(np.isfinite(box)):
        raise bad(f"finding {row['class_name']!r} has an empty coordinate")
    return Finding(class_id, row["rad_id"], box)  # type: ignore[arg-type]


def split_of(image_id: str, val_fraction: float = 0.2) -> str:
    """``"val"`` when SHA-256(image_id)'s first 8 bytes, as a fraction of 2⁶⁴, are < ``val_fraction``."""
    fraction = int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "val" if fraction < val_fraction else "train"


def shipped_train_csv() -> str | None:
    """torchxrayvision's copy of the Kaggle train.csv (``data/vinbigdata-train.csv.gz``), if it is
    installed; located, not imported (it may be installed without its dependencies)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "data", "vinbigdata-train.csv.gz")
    return path if os.path.isfile(path) else None


def class_counts(root: str | None = None, *, task: str = "detection", val_fraction: float = 0.2,
                 limit: int | None = None, **_builder_kwargs: Any) -> ClassCounts:
    """Images per finding in each split (see the module doc): ``ROOT/train.csv`` when it exists,
    else torchxrayvision's shipped copy; the split and ``limit`` as the dataset builds them.
    Other builder kwargs do not change which images a split holds and are ignored."""
    if task not in _info().tasks:
        raise ValueError(f"dataset 'vindr_cxr' does not serve task {task!r}; its tasks: {', '.join(_info().tasks)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    check_limit(limit)
    local = os.path.join(root, "train.csv") if root else None
    if local and os.path.isfile(local):
        path, source = local, local
    elif (path := shipped_train_csv()) is not None:
        source = f"{path} (torchxrayvision's copy of the Kaggle train.csv; no {local or 'dataset root'} here)"
    else:
        raise root_error(_info(), root, "no train.csv to count the findings in (torchxrayvision, which ships a "
                                        "copy as data/vinbigdata-train.csv.gz, is not installed either)")
    counts = _counts_of_file(path, os.path.getmtime(path), val_fraction, limit, task == "multilabel")
    return ClassCounts(splits=counts, unit="images with the finding (any radiologist)", source=source)


@functools.lru_cache(maxsize=8)
def _counts_of_file(path: str, _mtime: float, val_fraction: float, limit: int | None,
                    no_finding: bool) -> dict[str, tuple[int, ...]]:
    findings = read_train_csv(path, os.path.dirname(path))
    classes = len(CLASS_NAMES) if no_finding else len(VINDR_FINDINGS)
    counts = {}
    for split in SPLITS:
        ids = [image_id for image_id in sorted(findings) if split_of(image_id, val_fraction) == split][:limit]
        per_class = [0] * classes
        for image_id in ids:
            for class_id in {row.class_id for row in findings[image_id]}:
                if class_id < classes:
                    per_class[class_id] += 1
        counts[split] = tuple(per_class)
    return counts


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``[N, 4]`` and ``[M, 4]`` (x_min, y_min, x_max, y_max)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _find(parent: list[int], i: int) -> int:
    """Union-find root of ``i`` (with path halving)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def fuse_boxes(boxes: np.ndarray, labels: np.ndarray, iou_threshold: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Fuse several readers' boxes: per label, the connected groups of boxes linked by
    IoU > ``iou_threshold`` become one box each, with the mean coordinates; an isolated box is
    kept unchanged. Output sorted by label, then by each group's first box in the input."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    fused_boxes, fused_labels = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        parent = list(range(len(members)))
        linked = box_iou(boxes[members], boxes[members]) > iou_threshold
        for i, j in zip(*np.nonzero(np.triu(linked, k=1))):
            parent[_find(parent, int(j))] = _find(parent, int(i))
        roots = [_find(parent, i) for i in range(len(members))]
        for root in dict.fromkeys(roots):  # first-seen order
            group = members[[i for i, r in enumerate(roots) if r == root]]
            fused_boxes.append(boxes[group].mean(axis=0))
            fused_labels.append(int(label))
    return np.array(fused_boxes, dtype=np.float64).reshape(-1, 4), np.array(fused_labels, dtype=np.int64)


def _dicom_module():
    try:
        import pydicom
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("reading VinDr-CXR needs pydicom: pip install pydicom") from None
    return pydicom


def _lut_functions():
    try:  # pydicom >= 3
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def dicom_size(path: str, root: str) -> tuple[int, int]:
    """``(rows, columns)`` from a DICOM header, without decoding the pixels."""
    pydicom = _dicom_module()
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        return int(header.Rows), int(header.Columns)
    except FileNotFoundError:
        raise root_error(_info(), root, f"missing {path}") from None
    except (pydicom.errors.InvalidDicomError, AttributeError, ValueError, OSError) as error:
        raise root_error(_info(), root, f"{path} is not a readable DICOM image ({type(error).__name__}: {error})") from None


def read_dicom(path: str, root: str) -> np.ndarray:
    """A float32 ``[H, W]`` image in [0, 1]: modality LUT, VOI LUT, MONOCHROME1 inverted, min-max."""
    pydicom = _dicom_module()
    apply_modality_lut, apply_voi_lut = _lut_functions()
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
        photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
        if pixels.ndim != 2 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise ValueError(f"expected one grey frame, got {photometric} pixels of shape {pixels.shape}")
        values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float64)
    except FileNotFoundError:
        raise root_error(_info(), root, f"missing {path}") from None
    except (pydicom.errors.InvalidDicomError, AttributeError, ValueError, TypeError, RuntimeError, NotImplementedError, OSError) as error:
        raise root_error(_info(), root, f"{path} is not a readable DICOM image ({type(error).__name__}: {error})") from None
    if photometric == "MONOCHROME1":
        values = values.max() - values
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return scaled.astype(np.float32)


class _VinDrSplit:
    """What both tasks read: the split's image ids, their rows and DICOM paths."""

    def __init__(self, root: str, split: str, *, val_fraction: float, limit: int | None, in_channels: int, image_size: int | None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
        check_limit(limit)
        findings = read_train_csv(os.path.join(root, "train.csv"), root)
        all_ids = sorted(findings)
        number = {image_id: position for position, image_id in enumerate(all_ids, start=1)}
        ids = [image_id for image_id in all_ids if split_of(image_id, val_fraction) == split]
        if limit is not None:
            ids = ids[:limit]
        self.image_ids = ids
        self.image_numbers = [number[image_id] for image_id in ids]
        self.findings = {image_id: findings[image_id] for image_id in ids}
        self.paths = [os.path.join(root, "train", f"{image_id}.dicom") for image_id in ids]
        if not os.path.isdir(os.path.join(root, "train")):
            raise root_error(_info(), root, "missing the train/ folder of DICOM images")
        check_files_exist(_info(), root, self.paths)


class VinDrCXRDetection(DetectionDataset):
    """VinDr-CXR findings as boxes (see the module doc)."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        *,
        image_size: int | None = 224,
        square: bool = True,
        masks: bool = False,
        limit: int | None = None,
        train_transforms: bool = False,
        flip_seed: int = 0,
        include_crowd: bool = False,
        in_channels: int = 3,
        val_fraction: float = 0.2,
        box_fusion: str = "cluster",
        fusion_iou: float = 0.4,
    ) -> None:
        if masks:
            raise ValueError("VinDr-CXR has boxes only: masks=True is not available")
        if box_fusion not in BOX_FUSIONS:
            raise ValueError(f"unknown box_fusion {box_fusion!r}; choices: {', '.join(BOX_FUSIONS)}")
        if not 0.0 <= fusion_iou < 1.0:
            raise ValueError(f"fusion_iou must be in [0, 1), got {fusion_iou!r}")
        data = _VinDrSplit(root, split, val_fraction=val_fraction, limit=limit, in_channels=in_channels, image_size=image_size)
        records = []
        for image_id, number, path in zip(data.image_ids, data.image_numbers, data.paths):
            rows = [row for row in data.findings[image_id] if row.box is not None]
            boxes = np.array([row.box for row in rows], dtype=np.float64).reshape(-1, 4)
            labels = np.array([row.class_id + 1 for row in rows], dtype=np.int64)
            if box_fusion == "cluster":
                boxes, labels = fuse_boxes(boxes, labels, fusion_iou)
            instances = [Instance(box=tuple(float(v) for v in box), label=int(label)) for box, label in zip(boxes, labels)]
            records.append(ImageRecord(number, path, 0, 0, instances))  # size: from the DICOM header
        self.vindr_ids = data.image_ids
        self.square = bool(square)
        self.in_channels = in_channels
        super().__init__(
            _info(), root, split, records, VINDR_FINDINGS,
            image_size=image_size, masks=False, train_transforms=train_transforms, flip_seed=flip_seed,
            include_crowd=include_crowd,
        )

    def original_size(self, record: ImageRecord) -> tuple[int, int]:
        if record.height == 0:
            record.height, record.width = dicom_size(record.path, self.root)
        return record.height, record.width

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.square and self.image_size is not None:
            return self.image_size, self.image_size
        return shorter_side_size(height, width, self.image_size)

    def read_image(self, record: ImageRecord) -> torch.Tensor:
        image = torch.from_numpy(read_dicom(record.path, self.root))
        record.height, record.width = image.shape
        return image[None].expand(self.in_channels, -1, -1)


class VinDrCXRMultilabel(Dataset):
    """VinDr-CXR as multi-label classification: (image ``[C, S, S]`` in [0, 1], multi-hot ``[15]``)."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        *,
        image_size: int = 224,
        limit: int | None = None,
        in_channels: int = 3,
        val_fraction: float = 0.2,
        no_finding: bool = True,
        transform: Any = None,
    ) -> None:
        if image_size is None:
            raise ValueError("image_size must be a positive int for classification (batches need one size)")
        data = _VinDrSplit(root, split, val_fraction=val_fraction, limit=limit, in_channels=in_channels, image_size=image_size)
        self.root, self.split, self.image_size, self.in_channels = root, split, image_size, in_channels
        self.class_names = CLASS_NAMES if no_finding else VINDR_FINDINGS
        self.classes = list(self.class_names)
        self.num_classes = len(self.class_names)
        self.vindr_ids, self.paths = data.image_ids, data.paths
        self.labels = np.zeros((len(data.image_ids), self.num_classes), dtype=np.float32)
        for position, image_id in enumerate(data.image_ids):
            for row in data.findings[image_id]:
                if row.class_id < self.num_classes:
                    self.labels[position, row.class_id] = 1.0
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(read_dicom(self.paths[index], self.root))[None]
        image = resize_image(image, (self.image_size, self.image_size)).clamp_(0.0, 1.0)
        image = image.expand(self.in_channels, -1, -1)
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.from_numpy(self.labels[index].copy())

    @property
    def targets(self) -> np.ndarray:
        return self.labels


def _build(root: str, split: str, *, task: str = "detection", **kwargs: Any) -> Dataset:
    if task == "multilabel":
        return VinDrCXRMultilabel(root, split, **kwargs)
    return VinDrCXRDetection(root, split, **kwargs)


INFO = register_dataset(
    DatasetInfo(
        name="vindr_cxr",
        tasks=("detection", "multilabel"),
        num_classes=len(VINDR_FINDINGS),
        image_size=224,
        in_channels=3,
        builder=_build,
        default_root=os.path.join(data_home(), "vindr_cxr"),
        layout=(
            "ROOT/train.csv (image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max; one row per "
            "box and radiologist) and ROOT/train/<image_id>.dicom"
        ),
        source=(
            "https://physionet.org/content/vindr-cxr/ (credentialed access) or Kaggle's "
            "'VinBigData Chest X-ray Abnormalities Detection' competition data"
        ),
        stem="imagenet",
        train_size=12000,
        required_paths=("train.csv", "train"),
        class_names=VINDR_FINDINGS,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        task_num_classes={"detection": len(VINDR_FINDINGS), "multilabel": len(CLASS_NAMES)},
        class_counts=class_counts,
        notes=(
            "14 findings (class_id 0..13) plus 'No finding' (14, no boxes): detection uses the 14 (radiologists' "
            "boxes fused per class, IoU > 0.4 groups averaged), multilabel has 15 outputs (no_finding=False: 14). "
            "Grey DICOMs (MONOCHROME1 inverted), resized to 224×224 and scaled to 0–1 as in the paper, grey "
            "repeated to 3 channels; deterministic 80/20 split by SHA-256 of image_id (Kaggle's test labels are "
            "not public). kwargs: image_size, square, limit, in_channels, val_fraction, no_finding (multilabel), "
            "box_fusion cluster|none, fusion_iou, train_transforms, flip_seed (detection)"
        ),
    )
)

__all__ = [
    "CLASS_NAMES",
    "INFO",
    "VINDR_FINDINGS",
    "VinDrCXRDetection",
    "VinDrCXRMultilabel",
    "box_iou",
    "class_counts",
    "fuse_boxes",
    "read_dicom",
    "read_train_csv",
    "shipped_train_csv",
    "split_of",
]
