"""Metrics of the paper's tasks (Combating spatial redundancy with spectral norm attention in
convolutional learners, Neurocomputing 2022): top-k accuracy and multi-label AUROC."""

from sna_core.metrics.classification import binary_auroc, multilabel_auroc, topk_accuracy, topk_correct

__all__ = ["binary_auroc", "multilabel_auroc", "topk_accuracy", "topk_correct"]
