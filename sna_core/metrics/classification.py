"""Classification metrics: top-k accuracy (multi-class) and AUROC (multi-label).

Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022) reports Top-1/Top-5 accuracy in % for CIFAR-100 and ImageNet (Tables 1,
2, Fig. 4) and AUROC for VinDr-CXR classification (Fig. 5).

Accuracies are in percent (0–100), as in the paper's tables and in timm. ``k`` larger than the
number of classes is clipped to it (top-5 of a 3-class problem is top-3, i.e. 100 %). AUROC is the
exact Mann–Whitney statistic with ties counted one half, computed per class; a class without
positives or without negatives has no AUROC (NaN) and is left out of the mean.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many of the ``targets`` are among the ``k`` highest ``logits``, for each ``k`` in ``ks``.

    Counts (not rates), so that batches and ranks can be summed before dividing. ``logits`` is
    (N, C), ``targets`` (N,) class indices; ties are broken by :func:`torch.topk`.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be (N,) = ({logits.shape[0]},), got shape {tuple(targets.shape)}")
    num_classes = logits.shape[1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets must be class indices in 0..{num_classes - 1}, got values in "
            f"{int(targets.min())}..{int(targets.max())}"
        )
    bad = [k for k in ks if k < 1]
    if bad:
        raise ValueError(f"k must be >= 1, got {bad}")
    largest = min(max(ks), num_classes)
    ranked = logits.topk(largest, dim=1).indices  # (N, largest), best first
    hits = ranked.eq(targets[:, None])
    return {k: int(hits[:, : min(k, num_classes)].any(dim=1).sum()) for k in ks}


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": %, "top5": %, ...}`` for the ``ks`` asked (k clipped to the number of classes)."""
    if targets.numel() == 0:
        raise ValueError("top-k accuracy of an empty batch is undefined")
    counts = topk_correct(logits, targets, ks)
    return {f"top{k}": 100.0 * count / targets.numel() for k, count in counts.items()}


def binary_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact area under the ROC curve of one binary problem (NaN without both classes).

    The probability that a random positive scores above a random negative, ties counting one
    half: the Mann–Whitney U statistic over average ranks.
    """
    scores = scores.detach().double().flatten()
    positive = labels.detach().flatten().bool()
    if scores.shape != positive.shape:
        raise ValueError(f"scores and labels differ in size: {scores.numel()} vs {positive.numel()}")
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    sorted_scores, order = scores.sort()
    # Average rank (1-based) of each group of tied scores.
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = average_rank[inverse]
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def multilabel_auroc(scores: torch.Tensor, targets: torch.Tensor) -> tuple[list[float], float]:
    """Per-class AUROC of (N, C) ``scores`` against (N, C) 0/1 ``targets``, and their mean.

    Classes without both positives and negatives get NaN and are excluded from the mean; the mean
    is NaN when no class has an AUROC.
    """
    if scores.dim() != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"scores and targets must both be (N, C); got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    per_class = [binary_auroc(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    defined = [value for value in per_class if not math.isnan(value)]
    mean = sum(defined) / len(defined) if defined else float("nan")
    return per_class, mean
