"""Object detection: Faster / Mask R-CNN on an attention backbone, scored with COCO AP and AP40.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.3: Table 3 (COCO2017, VOC2012: AP, AP50, AP75, APs, APm, APl with
Faster and Mask R-CNN on ResNet-50-FPN) and Table 4 (VinDr-CXR: AP at IoU > 0.4 per finding and
in total, Faster R-CNN on ResNet-18 and DenseNet-121).

The model is :func:`sna_core.detectors.build_detector` (``model.detector`` on ``model.backbone``
with the attention placed; ``dataset.num_classes`` object classes, the background added inside;
``model.detector_kwargs`` passed on, winning over what follows). Its resize step keeps the
dataset's size: ``min_size`` = ``dataset.image_size`` (the datasets
already resize the shorter side to it) and ``max_size`` = image_size · 1333/800 (torchvision's
ratio); it normalises with the dataset's mean/std (ImageNet's for COCO/VOC; none for VinDr-CXR,
whose images the paper only scales to 0–1). Datasets are built with ``masks=True`` for detectors
that train on masks; batches are lists (``sna_core.data.detection.detection_collate``).

Training: the loss is the sum of the detector's loss dict (RPN objectness and box regression,
RoI classification and box regression, and the mask loss for Mask R-CNN); ``train_one_epoch``
also reports each term's mean per image (``loss_classifier``, ``loss_box_reg``, ...).

Evaluation (``evaluate``), on the images the loader yields, against the dataset's
``coco_ground_truth()``; fractions in [0, 1], -1 where undefined (pycocotools' convention, e.g.
``bbox_aps`` without small objects; a class without ground truth):

- ``bbox_ap``, ``bbox_ap50``, ``bbox_ap75``, ``bbox_aps``, ``bbox_apm``, ``bbox_apl`` (COCOeval);
- ``segm_ap`` ... ``segm_apl`` for detectors that predict masks;
- ``ap40`` (VOC all-point AP at IoU > 0.4, mean over classes with ground truth: Table 4's total),
  ``ap40_pooled`` and ``ap40_class<i>`` (``i`` indexes ``class_names``: label ``i + 1``);
- ``num_images``.

The default ``train.metric`` is ``bbox_ap`` (``ap40`` for VinDr-CXR), mode ``max``. Under
torch.distributed every rank evaluates its shard; the detections are gathered, so every rank
returns the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from sna_core.metrics.detection import (
    average_precision_at_iou,
    coco_evaluate,
    detection_entry,
)
from sna_core.tasks.base import Task, distributed

# torchvision's GeneralizedRCNNTransform defaults (800, 1333): the longest side may reach this
# multiple of the shortest before the image is shrunk further.
MAX_SIZE_RATIO = 1333 / 800
AP40_IOU = 0.4


def resize_kwargs(image_size: int) -> dict[str, int]:
    """``min_size`` / ``max_size`` of the detector's resize step for images whose shorter side the
    dataset already resized to ``image_size`` (so the detector does not resize them again)."""
    return {"min_size": image_size, "max_size": max(image_size, round(image_size * MAX_SIZE_RATIO))}


def _to_device(target: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    return {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value for key, value in target.items()}


class DetectionTask(Task):
    """Object detection with a torchvision R-CNN (the loss is the detector's own)."""

    name = "detection"
    persistent_workers = False  # the datasets draw each epoch's flips in set_epoch

    @property
    def detector(self) -> str:
        return self.config["model"]["detector"]

    @property
    def predicts_masks(self) -> bool:
        from sna_core.detectors import detector_uses_masks

        return detector_uses_masks(self.detector)

    @property
    def in_channels(self) -> int:
        # Detection datasets return 3 channels (grey radiographs repeated), whatever the classifier uses.
        return int(self.config["dataset"]["kwargs"].get("in_channels", 3))

    def _normalisation(self) -> dict[str, list[float]]:
        channels = self.in_channels
        mean, std = list(self.info.mean), list(self.info.std)
        if len(mean) == 1:  # one value for grey data: the same on every repeated channel
            mean, std = mean * channels, std * channels
        return {"image_mean": mean, "image_std": std}

    # -- building ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        # Lazily: torchvision's detection models are only needed here.
        from sna_core.detectors import build_detector

        model, size = self.config["model"], self.config["dataset"]["image_size"]
        options = {**resize_kwargs(size), **self._normalisation(), **model["detector_kwargs"]}
        return build_detector(
            model["detector"],
            model["backbone"],
            self.config["dataset"]["num_classes"],
            attention=model["attention"],
            placement=model["placement"],
            attention_kwargs=model["attention_kwargs"],
            stages=model["stages"],
            stem=model["stem"],
            in_channels=self.in_channels,
            **options,
        )

    def dataset_kwargs(self) -> dict[str, Any]:
        kwargs = super().dataset_kwargs()
        if self.predicts_masks:
            kwargs.setdefault("masks", True)
        return kwargs

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        from sna_core.data.detection import detection_collate

        return detection_collate

    # -- training ---------------------------------------------------------------------------
    def training_forward(
        self, model: nn.Module, inputs: Any, targets: Any, device: torch.device | str
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], int]:
        images = [image.to(device, non_blocking=True) for image in inputs]
        targets = [_to_device(target, device) for target in targets]
        return model(images, targets), targets, len(images)

    def loss(self, outputs: dict[str, torch.Tensor], targets: Any) -> torch.Tensor:
        if not isinstance(outputs, dict) or not outputs:
            raise TypeError(f"a detector in training mode returns a dict of losses, got {type(outputs).__name__}")
        return torch.stack(list(outputs.values())).sum()

    def batch_counts(self, outputs: dict[str, torch.Tensor], targets: Any) -> dict[str, float]:
        batch = len(targets)
        return {f"{name}_sum": float(value) * batch for name, value in outputs.items()}

    def summarise_counts(self, counts: dict[str, float], num_images: float) -> dict[str, float]:
        return {name.removesuffix("_sum"): value / num_images for name, value in counts.items()}

    # -- evaluation -------------------------------------------------------------------------
    @staticmethod
    def _ground_truth(dataset: Any) -> Any:
        build = getattr(dataset, "coco_ground_truth", None)
        if not callable(build):
            raise TypeError(f"the evaluation dataset ({type(dataset).__name__}) has no coco_ground_truth(): detection needs it")
        return build()  # the detection datasets build it once and cache it

    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device | str) -> dict[str, float]:
        """COCO box (and mask) AP, AP at IoU > 0.4 per class and in total, and ``num_images``."""
        masks = self.predicts_masks
        was_training = model.training
        model.eval()
        entries: list[dict[str, Any]] = []
        with torch.no_grad():
            for images, targets in self._eval_batches(loader):
                outputs = model([image.to(device, non_blocking=True) for image in images])
                entries.extend(detection_entry(target["image_id"], output, masks=masks) for output, target in zip(outputs, targets))
        model.train(was_training)
        if distributed():  # AP is not a sum: gather every rank's detections
            gathered: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, entries)
            entries = [entry for part in gathered if part is not None for entry in part]
        if not entries:
            raise ValueError("the evaluation loader yielded no batch (empty dataset?)")
        truth = self._ground_truth(loader.dataset)
        metrics = coco_evaluate(truth, entries, ("bbox", "segm") if masks else ("bbox",))
        labels = range(1, self.config["dataset"]["num_classes"] + 1)
        threshold = average_precision_at_iou(truth, entries, AP40_IOU, labels=labels)
        metrics["ap40"], metrics["ap40_pooled"] = threshold.mean, threshold.pooled
        metrics.update({f"ap40_class{label - 1}": value for label, value in threshold.per_class.items()})
        metrics["num_images"] = float(len(entries))
        return metrics
