"""Detection metrics (sna_core.metrics.detection) on constructed data whose answer is known by hand:
COCO AP through pycocotools (boxes and masks) and the VOC-style all-point AP at IoU > 0.4 of the
paper's Table 4."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sna_core.metrics import (
    all_point_ap,
    average_precision_at_iou,
    box_iou,
    coco_evaluate,
    encode_masks,
)

IMAGE_SIZE = (200, 300)  # (H, W)


def ground_truth(boxes_by_image: dict[int, list[tuple[int, list[float]]]], *, crowd: set[tuple[int, int]] = frozenset(),
                 categories: tuple[int, ...] = (1, 2), masks: bool = False) -> COCO:
    """A COCO ground truth: image id → [(label, [x0, y0, x1, y1])]; ``crowd`` holds (image, index)."""
    height, width = IMAGE_SIZE
    annotations = []
    for image_id, objects in boxes_by_image.items():
        for index, (label, (x0, y0, x1, y1)) in enumerate(objects):
            annotation = {
                "id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                "iscrowd": int((image_id, index) in crowd),
            }
            if masks:
                annotation["segmentation"] = encode_masks(box_masks([[x0, y0, x1, y1]]))[0]
                annotation["segmentation"]["counts"] = annotation["segmentation"]["counts"].decode("ascii")
            annotations.append(annotation)
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "height": height, "width": width, "file_name": f"{i}.jpg"} for i in boxes_by_image],
        "categories": [{"id": c, "name": f"class{c}"} for c in categories],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def box_masks(boxes: list[list[float]]) -> torch.Tensor:
    """[N, 1, H, W] float masks filling each box (as Mask R-CNN's probability maps)."""
    masks = torch.zeros(len(boxes), 1, *IMAGE_SIZE)
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        masks[index, 0, int(y0):int(y1), int(x0):int(x1)] = 0.9
    return masks


def entry(image_id: int, detections: list[tuple[int, float, list[float]]], *, masks: bool = False) -> dict:
    """A per-image detection entry from [(label, score, box)]."""
    boxes = [box for _, _, box in detections]
    result = {
        "image_id": image_id,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor([score for _, score, _ in detections]),
        "labels": torch.tensor([label for label, _, _ in detections], dtype=torch.int64),
    }
    if masks:
        result["masks"] = box_masks(boxes)
    return result


# Boxes of every COCO area range: small (< 32²), medium, large (> 96²).
SMALL, MEDIUM, LARGE = [10, 10, 30, 30], [50, 50, 100, 100], [120, 20, 280, 180]
PERFECT_TRUTH = {1: [(1, SMALL), (2, MEDIUM)], 2: [(1, LARGE)]}


def perfect_entries(masks: bool = False) -> list[dict]:
    return [entry(image_id, [(label, 0.9, box) for label, box in objects], masks=masks) for image_id, objects in PERFECT_TRUTH.items()]


def test_perfect_detections_score_one_everywhere() -> None:
    metrics = coco_evaluate(ground_truth(PERFECT_TRUTH, masks=True), perfect_entries(masks=True), ("bbox", "segm"))
    assert set(metrics) == {f"{kind}_{stat}" for kind in ("bbox", "segm") for stat in ("ap", "ap50", "ap75", "aps", "apm", "apl")}
    assert all(value == pytest.approx(1.0) for value in metrics.values()), metrics
    voc = average_precision_at_iou(ground_truth(PERFECT_TRUTH), perfect_entries())
    assert voc.per_class == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    assert voc.mean == pytest.approx(1.0) and voc.pooled == pytest.approx(1.0)
    assert voc.num_ground_truth == {1: 2, 2: 1}


def test_one_of_two_missed() -> None:
    # VOC all-point: recall 0.5 at precision 1 → 0.5. COCO's 101 recall points: 0.00..0.50 → 51/101.
    truth = ground_truth({1: [(1, MEDIUM), (1, LARGE)]}, categories=(1,))
    detections = [entry(1, [(1, 0.8, MEDIUM)])]
    assert average_precision_at_iou(truth, detections).per_class[1] == pytest.approx(0.5)
    assert coco_evaluate(truth, detections)["bbox_ap"] == pytest.approx(51 / 101)


def test_a_false_positive_ranked_between_two_hits() -> None:
    # Ranked TP (0.9), FP (0.8), TP (0.7) over 2 boxes: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # All-point: 1/2 · 1 + 1/2 · 2/3 = 5/6 (VOC2007's 11 points would give 0.848); COCO: (51 + 50 · 2/3) / 101.
    truth = ground_truth({1: [(1, MEDIUM), (1, LARGE)]}, categories=(1,))
    detections = [entry(1, [(1, 0.9, MEDIUM), (1, 0.8, SMALL), (1, 0.7, LARGE)])]
    assert average_precision_at_iou(truth, detections).per_class[1] == pytest.approx(5 / 6)
    assert coco_evaluate(truth, detections)["bbox_ap50"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_iou_045_counts_at_04_but_not_at_05() -> None:
    truth = ground_truth({1: [(1, [0, 0, 100, 100])]}, categories=(1,))
    detections = [entry(1, [(1, 0.9, [0, 0, 100, 45])])]  # IoU = 4500 / 10000 = 0.45
    assert box_iou(np.array([[0, 0, 100, 45.0]]), np.array([[0, 0, 100, 100.0]]))[0, 0] == pytest.approx(0.45)
    assert average_precision_at_iou(truth, detections, 0.4).per_class[1] == pytest.approx(1.0)
    assert average_precision_at_iou(truth, detections, 0.5).per_class[1] == 0.0
    assert coco_evaluate(truth, detections)["bbox_ap50"] == 0.0


def test_threshold_is_strict() -> None:
    # IoU exactly 0.4 is not "IoU > 0.4" (the paper's words, Kaggle's VinBigData rule).
    truth = ground_truth({1: [(1, [0, 0, 100, 100])]}, categories=(1,))
    detections = [entry(1, [(1, 0.9, [0, 0, 100, 40])])]
    assert average_precision_at_iou(truth, detections, 0.4).per_class[1] == 0.0


def test_duplicates_and_wrong_classes_are_false_positives() -> None:
    truth = ground_truth({1: [(1, MEDIUM)]}, categories=(1, 2))
    detections = [entry(1, [(1, 0.9, MEDIUM), (1, 0.8, MEDIUM), (2, 0.95, MEDIUM)])]
    result = average_precision_at_iou(truth, detections)
    assert result.per_class[1] == pytest.approx(1.0)  # the duplicate ranks below the hit
    assert result.per_class[2] == -1.0  # no ground truth of class 2: undefined, not 0
    assert result.mean == pytest.approx(1.0)  # undefined classes are left out of the mean
    # Pooled: class 2's FP (0.95) first, then the hit, then the duplicate: 1/2 at recall 1.
    assert result.pooled == pytest.approx(0.5)


def test_mean_over_classes_versus_pooled() -> None:
    # Class 1: 3 boxes all found; class 2: 1 box missed. Mean of (1, 0) = 0.5; pooled recall 3/4 at precision 1.
    truth = ground_truth({1: [(1, SMALL), (1, MEDIUM), (1, LARGE), (2, [200, 150, 260, 190])]})
    detections = [entry(1, [(1, 0.9, SMALL), (1, 0.8, MEDIUM), (1, 0.7, LARGE)])]
    result = average_precision_at_iou(truth, detections)
    assert result.per_class == {1: pytest.approx(1.0), 2: 0.0}
    assert result.mean == pytest.approx(0.5) and result.pooled == pytest.approx(0.75)


def test_annotation_id_zero_still_matches() -> None:
    # COCOeval reads a matched ground-truth id of 0 as "no match"; labelme's converter numbers from 0.
    truth = ground_truth({0: [(1, MEDIUM), (1, LARGE)]}, categories=(1,))
    truth.dataset["annotations"] = [{**annotation, "id": annotation["id"] - 1} for annotation in truth.dataset["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
    assert 0 in truth.anns
    metrics = coco_evaluate(truth, [entry(0, [(1, 0.9, MEDIUM), (1, 0.8, LARGE)])])
    assert metrics["bbox_ap"] == pytest.approx(1.0)
    assert 0 in truth.anns  # the caller's ground truth is left as it was


def test_crowd_regions_are_ignored() -> None:
    truth = ground_truth({1: [(1, MEDIUM), (1, LARGE)]}, crowd={(1, 1)}, categories=(1,))
    detections = [entry(1, [(1, 0.9, LARGE), (1, 0.8, MEDIUM)])]  # the first hits the crowd box
    result = average_precision_at_iou(truth, detections)
    assert result.num_ground_truth == {1: 1}
    assert result.per_class[1] == pytest.approx(1.0)
    assert coco_evaluate(truth, detections)["bbox_ap"] == pytest.approx(1.0)


def test_no_detection_scores_zero_and_only_named_images_count() -> None:
    truth = ground_truth(PERFECT_TRUTH)
    empty = [entry(image_id, []) for image_id in PERFECT_TRUTH]
    metrics = coco_evaluate(truth, empty)
    assert metrics["bbox_ap"] == 0.0 and metrics["bbox_ap50"] == 0.0
    assert average_precision_at_iou(truth, empty).mean == 0.0
    # Only image 2 was evaluated (a partial pass): its one box found → 1; class 2 has no box there.
    only_two = [entry(2, [(1, 0.9, LARGE)])]
    assert coco_evaluate(truth, only_two)["bbox_ap"] == pytest.approx(1.0)
    assert coco_evaluate(truth, only_two)["bbox_aps"] == -1.0  # no small object in image 2: undefined
    assert average_precision_at_iou(truth, only_two).per_class == {1: pytest.approx(1.0), 2: -1.0}


def test_mask_ap_sees_mask_quality() -> None:
    truth = ground_truth({1: [(1, LARGE)]}, categories=(1,), masks=True)
    good = entry(1, [(1, 0.9, LARGE)], masks=True)
    half = dict(good, masks=good["masks"].clone())
    half["masks"][:, :, :, 200:] = 0.1  # the right half of the 160-px-wide box is cut: mask IoU 0.5
    assert coco_evaluate(truth, [good], ("segm",))["segm_ap"] == pytest.approx(1.0)
    cut = coco_evaluate(truth, [half], ("bbox", "segm"))
    assert cut["bbox_ap"] == pytest.approx(1.0)  # the box is still perfect
    assert cut["segm_ap50"] == pytest.approx(1.0) and cut["segm_ap75"] == 0.0


def test_encode_masks_round_trips() -> None:
    masks = box_masks([SMALL, LARGE])
    rles = encode_masks(masks)
    decoded = mask_utils.decode(rles)  # [H, W, N]
    assert decoded.shape == (*IMAGE_SIZE, 2)
    assert np.array_equal(decoded.transpose(2, 0, 1), (masks[:, 0] > 0.5).numpy().astype(np.uint8))
    assert encode_masks(torch.zeros(0, 1, *IMAGE_SIZE)) == []


def test_all_point_ap_integrates_the_precision_envelope() -> None:
    # Precision dips then recovers: the envelope takes the later, higher value.
    assert all_point_ap(np.array([0.25, 0.25, 0.5, 1.0]), np.array([1.0, 0.5, 0.6, 0.4])) == pytest.approx(0.25 + 0.25 * 0.6 + 0.5 * 0.4)


@pytest.mark.parametrize(
    ("detections", "message"),
    [
        ([], "no detection entries"),
        ([entry(7, [])], r"image ids \[7\]"),
        ([{"image_id": 1, "boxes": torch.zeros(1, 4)}], "lacks scores, labels"),
        ([{"image_id": 1, "boxes": torch.zeros(2, 4), "scores": torch.ones(1), "labels": torch.ones(2)}], "differ in length"),
    ],
)
def test_bad_input_is_named(detections: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        coco_evaluate(ground_truth(PERFECT_TRUTH), detections)


def test_segm_needs_masks() -> None:
    with pytest.raises(ValueError, match="no 'masks'"):
        coco_evaluate(ground_truth(PERFECT_TRUTH, masks=True), perfect_entries(), ("segm",))
