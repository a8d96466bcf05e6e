"""Detection metrics: COCO AP (boxes and masks, via pycocotools) and VOC-style AP at one IoU.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022). Table 3 reports COCO's AP, AP50, AP75, APs, APm, APl for Faster/Mask R-CNN
on COCO2017 and VOC2012 (VOC converted to COCO format); Table 4 reports VinDr-CXR "AP (in %) at
IoU > 0.4" per finding and in total.

Input everywhere: the dataset's ``coco_ground_truth()`` (a :class:`pycocotools.coco.COCO` in the
returned images' pixel coordinates, category ids = the contiguous labels) and one *detection
entry per evaluated image*, ``{"image_id", "boxes" [N, 4] (x_min, y_min, x_max, y_max),
"scores" [N], "labels" [N]}`` plus ``"masks"`` [N, H, W] or [N, 1, H, W] for mask AP (Mask
R-CNN's per-pixel probabilities are cut at 0.5, then RLE-encoded). An image with no detection
still has an entry (empty tensors): only the images named by entries are evaluated, so a
partial pass (``limit_eval_batches``) is scored on what it saw.

Values are fractions in [0, 1], not percent. **-1 means undefined** (pycocotools' convention):
no ground truth in that area range (e.g. ``aps`` on images without small objects) or, for the
per-class AP, a class without ground-truth boxes in the evaluated images.

:func:`coco_evaluate` is COCOeval unchanged: IoU thresholds 0.50:0.05:0.95, 101-point
interpolated precision, at most 100 detections per image, crowd regions ignored.

:func:`average_precision_at_iou` is the PASCAL VOC 2010+ / Kaggle VinBigData metric, the one
Table 4 describes: per class, detections ranked by score; a detection is a true positive when
its best-overlapping ground-truth box of the same class in the same image has IoU **strictly
greater** than the threshold and was not matched before (else a false positive; a match on a
crowd box counts as neither); precision is made monotone and integrated over *every* recall
step (all-point interpolation, not VOC2007's 11 points nor COCO's 101). IoU of continuous
coordinates (no VOC "+1" pixel). The total is reported two ways:

- ``mean``: the mean of the per-class APs over classes with ground truth (mAP; Kaggle's
  VinBigData metric, and what the paper's text calls "the average AP");
- ``pooled``: one AP over all classes' detections ranked together (each still matched only to
  its own class), i.e. weighted by each class's number of boxes.

The paper does not say how its "Total" row is formed, and its own numbers fit neither the plain
mean of its 14 per-class values (ResNet-18 baseline: mean 52.70 vs Total 55.75) nor a mean
weighted by its test counts (57.69); we report ``mean`` as the total (``ap40``) and ``pooled``
beside it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

COCO_STATS = ("ap", "ap50", "ap75", "aps", "apm", "apl")  # COCOeval.stats[0:6], in this order
IOU_TYPES = ("bbox", "segm")
UNDEFINED = -1.0


def _array(value: Any, dtype: type) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _entry_arrays(entry: Mapping[str, Any], index: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    missing = [key for key in ("image_id", "boxes", "scores", "labels") if key not in entry]
    if missing:
        raise ValueError(f"detection entry {index} lacks {', '.join(missing)} (keys: {sorted(entry)})")
    boxes = _array(entry["boxes"], np.float64).reshape(-1, 4)
    scores = _array(entry["scores"], np.float64).reshape(-1)
    labels = _array(entry["labels"], np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"detection entry {index} (image {entry['image_id']}): boxes, scores and labels differ in "
            f"length ({len(boxes)}, {len(scores)}, {len(labels)})"
        )
    return int(entry["image_id"]), boxes, scores, labels


def _evaluated_image_ids(ground_truth: Any, detections: Sequence[Mapping[str, Any]]) -> list[int]:
    if not detections:
        raise ValueError("no detection entries: give one entry per evaluated image (empty tensors when it has no detection)")
    image_ids = sorted({int(entry["image_id"]) for entry in detections})
    unknown = [image_id for image_id in image_ids if image_id not in ground_truth.imgs]
    if unknown:
        raise ValueError(f"detections name image ids {unknown[:10]} that the ground truth does not have")
    return image_ids


def binary_masks(masks: Any, threshold: float = 0.5) -> np.ndarray:
    """[N, H, W] uint8 0/1 from [N, H, W] or [N, 1, H, W] masks (bool, 0/1 or probabilities)."""
    array = _array(masks, np.float32)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"masks must be [N, H, W] or [N, 1, H, W], got shape {array.shape}")
    return (array > threshold).astype(np.uint8) if array.dtype != np.uint8 else array


def encode_masks(masks: Any) -> list[dict[str, Any]]:
    """COCO run-length encodings of [N, H, W] (or [N, 1, H, W]) masks."""
    from pycocotools import mask as mask_utils

    binary = binary_masks(masks)
    if len(binary) == 0:
        return []
    return list(mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))))


def detection_entry(image_id: int, output: Mapping[str, Any], *, masks: bool = False) -> dict[str, Any]:
    """A compact, picklable entry from one image's detector output (torchvision's ``{"boxes",
    "scores", "labels"[, "masks"]}``): NumPy arrays on the CPU, and the masks already cut at 0.5
    and run-length encoded as ``"rles"`` (a pass over a validation set keeps no full-size mask)."""
    entry: dict[str, Any] = {
        "image_id": int(image_id),
        "boxes": _array(output["boxes"], np.float32).reshape(-1, 4),
        "scores": _array(output["scores"], np.float32).reshape(-1),
        "labels": _array(output["labels"], np.int64).reshape(-1),
    }
    if masks:
        entry["rles"] = encode_masks(output["masks"])
    return entry


def coco_results(detections: Sequence[Mapping[str, Any]], iou_type: str = "bbox") -> list[dict[str, Any]]:
    """COCO result annotations (``loadRes`` format) of per-image detection entries.

    ``bbox``: ``[x, y, width, height]`` boxes. ``segm``: RLE masks (an entry's ``"rles"``, else
    its ``"masks"`` encoded) and no box, so that pycocotools takes each result's area (which
    decides APs/APm/APl) from its mask.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; valid: {', '.join(IOU_TYPES)}")
    results: list[dict[str, Any]] = []
    for index, entry in enumerate(detections):
        image_id, boxes, scores, labels = _entry_arrays(entry, index)
        if iou_type == "bbox":
            for box, score, label in zip(boxes, scores, labels):
                x0, y0, x1, y1 = (float(v) for v in box)
                results.append({"image_id": image_id, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
            continue
        if "rles" in entry:
            rles = list(entry["rles"])
        elif "masks" in entry:
            rles = encode_masks(entry["masks"])
        else:
            raise ValueError(f"detection entry {index} (image {image_id}) has no 'masks' for segm evaluation")
        if len(rles) != len(scores):
            raise ValueError(f"detection entry {index} (image {image_id}): {len(rles)} masks for {len(scores)} detections")
        for rle, score, label in zip(rles, scores, labels):
            results.append({"image_id": image_id, "category_id": int(label), "segmentation": rle, "score": float(score)})
    return results


def _result_coco(ground_truth: Any, results: list[dict[str, Any]]) -> Any:
    from pycocotools.coco import COCO

    if results:
        return ground_truth.loadRes(results)
    # loadRes refuses an empty list; no detection at all is a valid (zero-AP) answer.
    empty = COCO()
    empty.dataset = {"images": list(ground_truth.dataset.get("images", [])),
                     "categories": list(ground_truth.dataset.get("categories", [])), "annotations": []}
    empty.createIndex()
    return empty


def _positive_annotation_ids(ground_truth: Any) -> Any:
    """``ground_truth``, or a copy with annotation ids 1..N when one is <= 0: COCOeval stores the
    matched ground-truth id per detection and reads id 0 as "unmatched", so a perfect detection
    of annotation 0 would score nothing (files converted by labelme number from 0)."""
    from pycocotools.coco import COCO

    if all(int(annotation_id) > 0 for annotation_id in ground_truth.anns):
        return ground_truth
    renumbered = COCO()
    renumbered.dataset = {
        **ground_truth.dataset,
        "annotations": [{**annotation, "id": index} for index, annotation in enumerate(ground_truth.dataset["annotations"], start=1)],
    }
    renumbered.createIndex()
    return renumbered


def coco_evaluate(
    ground_truth: Any, detections: Sequence[Mapping[str, Any]], iou_types: Iterable[str] = ("bbox",)
) -> dict[str, float]:
    """COCO AP of ``detections`` on the images they name: ``{iou_type}_{stat}`` for each iou type
    and each of :data:`COCO_STATS` (e.g. ``bbox_ap``, ``segm_ap50``); -1 where undefined."""
    from pycocotools.cocoeval import COCOeval

    image_ids = _evaluated_image_ids(ground_truth, detections)
    metrics: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        ground_truth = _positive_annotation_ids(ground_truth)
    for iou_type in iou_types:
        results = coco_results(detections, iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = COCOeval(ground_truth, _result_coco(ground_truth, results), iou_type)
            evaluator.params.imgIds = image_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        for name, value in zip(COCO_STATS, evaluator.stats[: len(COCO_STATS)]):
            metrics[f"{iou_type}_{name}"] = float(value)
    return metrics


# ------------------------------------------------------------------------------------------------
# VOC-style AP at one IoU threshold (VinDr-CXR, Table 4)


@dataclass(frozen=True)
class ThresholdAP:
    """AP at one IoU threshold: per class (label → AP, -1 without ground truth), their mean over
    classes with ground truth, and the pooled AP of all classes ranked together."""

    iou_threshold: float
    per_class: dict[int, float]
    mean: float
    pooled: float
    num_ground_truth: dict[int, int]


def box_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """[N, M] IoU of (x_min, y_min, x_max, y_max) boxes, continuous coordinates."""
    if len(boxes) == 0 or len(others) == 0:
        return np.zeros((len(boxes), len(others)))
    x0 = np.maximum(boxes[:, None, 0], others[None, :, 0])
    y0 = np.maximum(boxes[:, None, 1], others[None, :, 1])
    x1 = np.minimum(boxes[:, None, 2], others[None, :, 2])
    y1 = np.minimum(boxes[:, None, 3], others[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_other = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area[:, None] + area_other[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone (right-max) precision envelope at every recall step (VOC 2010+)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _ground_truth_boxes(ground_truth: Any, image_ids: list[int]) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """(image, class) → (boxes [K, 4] xyxy, crowd flags [K])."""
    grouped: dict[tuple[int, int], tuple[list[list[float]], list[bool]]] = {}
    for image_id in image_ids:
        for annotation in ground_truth.imgToAnns.get(image_id, []):
            x, y, w, h = annotation["bbox"]
            boxes, crowd = grouped.setdefault((image_id, int(annotation["category_id"])), ([], []))
            boxes.append([x, y, x + w, y + h])
            crowd.append(bool(annotation.get("iscrowd", 0)))
    return {key: (np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(crowd, dtype=bool)) for key, (boxes, crowd) in grouped.items()}


def _match(
    ranked: list[tuple[float, int, int, np.ndarray]],
    truth: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """True/false-positive flags of score-ranked (score, image, class, box) detections."""
    used = {key: np.zeros(len(flags), dtype=bool) for key, (_, flags) in truth.items()}
    tp = np.zeros(len(ranked))
    fp = np.zeros(len(ranked))
    for rank, (_, image_id, label, box) in enumerate(ranked):
        key = (image_id, label)
        if key not in truth:
            fp[rank] = 1
            continue
        boxes, crowd = truth[key]
        overlaps = box_iou(box[None, :], boxes)[0]
        best = int(np.argmax(overlaps))
        if overlaps[best] > iou_threshold:
            if crowd[best]:
                continue  # a detection of an ignored region: neither right nor wrong
            if not used[key][best]:
                used[key][best] = True
                tp[rank] = 1
            else:
                fp[rank] = 1  # a duplicate of an already matched box
        else:
            fp[rank] = 1
    return tp, fp


def _ap(tp: np.ndarray, fp: np.ndarray, positives: int) -> float:
    if positives == 0:
        return UNDEFINED
    tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
    recall = tp_cum / positives
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    return all_point_ap(recall, precision)


def average_precision_at_iou(
    ground_truth: Any,
    detections: Sequence[Mapping[str, Any]],
    iou_threshold: float = 0.4,
    *,
    labels: Iterable[int] | None = None,
) -> ThresholdAP:
    """VOC-style all-point AP at IoU > ``iou_threshold`` per class, their mean, and the pooled AP.

    ``labels``: the classes to report (default: every category of the ground truth).
    """
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold!r}")
    image_ids = _evaluated_image_ids(ground_truth, detections)
    truth = _ground_truth_boxes(ground_truth, image_ids)
    classes = sorted(int(c) for c in (labels if labels is not None else ground_truth.getCatIds()))
    positives = {label: 0 for label in classes}
    for (_, label), (_, crowd) in truth.items():
        if label in positives:
            positives[label] += int((~crowd).sum())
    ranked: list[tuple[float, int, int, np.ndarray]] = []
    for index, entry in enumerate(detections):
        image_id, boxes, scores, entry_labels = _entry_arrays(entry, index)
        ranked.extend((float(s), image_id, int(c), b) for b, s, c in zip(boxes, scores, entry_labels) if int(c) in positives)
    ranked.sort(key=lambda item: -item[0])  # stable: ties keep the input order
    per_class: dict[int, float] = {}
    for label in classes:
        mine = [item for item in ranked if item[2] == label]
        tp, fp = _match(mine, truth, iou_threshold)
        per_class[label] = _ap(tp, fp, positives[label])
    defined = [value for value in per_class.values() if value != UNDEFINED]
    tp, fp = _match(ranked, truth, iou_threshold)
    return ThresholdAP(
        iou_threshold=iou_threshold,
        per_class=per_class,
        mean=float(np.mean(defined)) if defined else UNDEFINED,
        pooled=_ap(tp, fp, sum(positives.values())),
        num_ground_truth=positives,
    )
