"""Image classification tasks: multi-class (CIFAR-100, ImageNet) and multi-label (VinDr-CXR).

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022): Top-1/Top-5 accuracy for CIFAR-100 and ImageNet (Tables 1, 2, Fig. 4);
AUROC for the 14 VinDr-CXR findings (Fig. 5).

``"classification"``: cross-entropy; training reports ``top1``; evaluation reports ``loss``,
``top1`` and ``top5`` (percent; top-5 means top-min(5, classes)). ``"multilabel"``: targets are
(N, C) 0/1 vectors, binary cross-entropy on the logits; evaluation reports ``loss``, the mean
``auroc`` over classes that have both positives and negatives, and ``auroc_class<i>`` per class.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from sna_core.metrics.classification import multilabel_auroc, topk_correct
from sna_core.tasks.base import Task, distributed, reduce_sums


def _check_class_indices(targets: torch.Tensor, num_classes: int) -> None:
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"class index {int(targets.max()) if int(targets.max()) >= num_classes else int(targets.min())} "
            f"outside 0..{num_classes - 1} (dataset.num_classes = {num_classes})"
        )


class ClassificationTask(Task):
    """Multi-class image classification with cross-entropy."""

    name = "classification"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_class_indices(targets, outputs.shape[1])
        return F.cross_entropy(outputs, targets)

    def batch_counts(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"correct1": float(outputs.argmax(dim=1).eq(targets).sum())}

    def summarise_counts(self, counts: dict[str, float], num_images: float) -> dict[str, float]:
        return {"top1": 100.0 * counts.get("correct1", 0.0) / num_images}

    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device | str) -> dict[str, float]:
        """``loss`` (mean cross-entropy), ``top1``, ``top5`` (percent) and ``num_images``."""
        was_training = model.training
        model.eval()
        sums = {"loss_sum": 0.0, "num_images": 0.0, "correct1": 0.0, "correct5": 0.0}
        # no_grad rather than inference_mode: modules may keep state (e.g. a power-iteration
        # vector) that training later reuses, and inference tensors cannot enter autograd.
        with torch.no_grad():
            for inputs, targets in self._eval_batches(loader):
                inputs = inputs.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                outputs = model(inputs)
                _check_class_indices(targets, outputs.shape[1])
                correct = topk_correct(outputs, targets, (1, 5))
                sums["loss_sum"] += float(F.cross_entropy(outputs, targets, reduction="sum"))
                sums["num_images"] += targets.shape[0]
                sums["correct1"] += correct[1]
                sums["correct5"] += correct[5]
        model.train(was_training)
        sums = reduce_sums(sums, device)
        count = sums["num_images"]
        if count == 0:
            raise ValueError("the evaluation loader yielded no batch (empty dataset?)")
        return {
            "loss": sums["loss_sum"] / count,
            "top1": 100.0 * sums["correct1"] / count,
            "top5": 100.0 * sums["correct5"] / count,
            "num_images": count,
        }


class MultilabelClassificationTask(Task):
    """Multi-label image classification (one sigmoid per class) with binary cross-entropy."""

    name = "multilabel"

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.shape != outputs.shape:
            raise ValueError(f"multilabel targets must be (N, C) = {tuple(outputs.shape)}, got {tuple(targets.shape)}")
        return F.binary_cross_entropy_with_logits(outputs, targets.float())

    def batch_counts(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {}

    def summarise_counts(self, counts: dict[str, float], num_images: float) -> dict[str, float]:
        return {}

    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device | str) -> dict[str, float]:
        """``loss`` (mean BCE per label), ``auroc`` (mean), ``auroc_class<i>`` and ``num_images``."""
        was_training = model.training
        model.eval()
        scores, labels, loss_sum = [], [], 0.0
        with torch.no_grad():
            for inputs, targets in self._eval_batches(loader):
                outputs = model(inputs.to(device, non_blocking=True))
                targets = targets.to(device, non_blocking=True).float()
                loss_sum += float(self.loss(outputs, targets)) * targets.shape[0]
                scores.append(outputs.float().cpu())
                labels.append(targets.cpu())
        model.train(was_training)
        if not scores:
            raise ValueError("the evaluation loader yielded no batch (empty dataset?)")
        all_scores, all_labels = torch.cat(scores), torch.cat(labels)
        if distributed():  # AUROC is not a sum: gather every rank's predictions
            gathered: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (all_scores, all_labels))
            all_scores = torch.cat([pair[0] for pair in gathered if pair is not None])
            all_labels = torch.cat([pair[1] for pair in gathered if pair is not None])
        sums = reduce_sums({"loss_sum": loss_sum}, device)
        per_class, mean = multilabel_auroc(all_scores, all_labels)
        count = float(all_labels.shape[0])
        return {
            "loss": sums["loss_sum"] / count,
            "auroc": mean,
            **{f"auroc_class{index}": value for index, value in enumerate(per_class)},
            "num_images": count,
        }
