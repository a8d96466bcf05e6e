"""The quantities the paper's tables and figures print, and which logged metric gives each.

Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional learners"
(Neurocomputing 511, 2022): Tables 1–2 (#.Param., FLOPs, inference speed, Top-1/Top-5 in %),
Table 3 (COCO AP family in %: box AP, and mask AP for Mask R-CNN), Table 4 (AP at IoU > 0.4 per
class, in %), Fig. 4 (Top-1/Top-5 vs rank-k), Fig. 5 (AUROC per class, in %).

Metric names are the ones :mod:`orchestrator.trainable` logs: the summary ``params``, ``flops``
(2 per multiply-add at the trained input size), ``throughput_img_s``, ``best_<train.metric>``
and ``final_<name>`` for every evaluation metric of the last epoch. ``at="final"`` reads the
last epoch (``final_<name>``, else the run's latest ``<name>``); ``at="best"`` reads
``best_<name>`` where the run logged it (only for its selection metric ``train.metric``: the
authors' code kept the best test-set checkpoint) and the last epoch otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AP_FAMILY", "AT_CHOICES", "MASK_AP_FAMILY", "QUANTITIES", "Quantity", "evaluation_metric",
           "per_class_metrics"]

AT_CHOICES = ("final", "best")


@dataclass(frozen=True)
class Quantity:
    """One row or axis of a table/figure: a label, the metric(s) that give it, how to print it."""

    name: str  # the evaluation metric's name, or a summary metric's
    label: str
    digits: int = 2
    scale: float = 1.0  # displayed = logged × scale (fractions → %, counts → M, FLOPs → G)
    better: str | None = None  # "max" / "min": the best value is marked; None: not marked
    summary: bool = False  # a summary metric (params, FLOPs, throughput): the same at any epoch
    deterministic: bool = False  # the same for every seed (a count): no "(k/n)" shortfall shown

    def candidates(self, at: str = "final") -> tuple[str, ...]:
        """The metric names to read, in order of preference (see the module docstring)."""
        if self.summary:
            return (self.name,)
        if at == "best":
            return (f"best_{self.name}", f"final_{self.name}", self.name)
        if at != "final":
            raise ValueError(f"at must be one of {AT_CHOICES}, got {at!r}")
        return (f"final_{self.name}", self.name)

    def format(self, value: float) -> str:
        return f"{value * self.scale:.{self.digits}f}"


QUANTITIES: dict[str, Quantity] = {quantity.name: quantity for quantity in (
    Quantity("params", "#Param. (M)", digits=2, scale=1e-6, summary=True, deterministic=True),
    Quantity("flops", "FLOPs (G)", digits=3, scale=1e-9, summary=True, deterministic=True),
    Quantity("throughput_img_s", "Throughput (img/s)", digits=0, better="max", summary=True),
    Quantity("top1", "Top-1 (%)", better="max"),
    Quantity("top5", "Top-5 (%)", better="max"),
    Quantity("auroc", "AUROC (%)", scale=100.0, better="max"),
    Quantity("loss", "Loss", digits=3, better="min"),
)}

# Table 3's columns: (label, metric names the detection task may log, first match wins). COCO
# APs from pycocotools are fractions; shown in % like the paper.
AP_FAMILY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AP", ("bbox_ap", "ap")),
    ("AP50", ("bbox_ap50", "ap50")),
    ("AP75", ("bbox_ap75", "ap75")),
    ("APs", ("bbox_aps", "aps", "bbox_ap_small", "ap_small")),
    ("APm", ("bbox_apm", "apm", "bbox_ap_medium", "ap_medium")),
    ("APl", ("bbox_apl", "apl", "bbox_ap_large", "ap_large")),
)
# Mask R-CNN's mask AP (pycocotools' "segm" evaluation), the same statistics over mask IoU.
MASK_AP_FAMILY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mask AP", ("segm_ap",)),
    ("mask AP50", ("segm_ap50",)),
    ("mask AP75", ("segm_ap75",)),
    ("mask APs", ("segm_aps", "segm_ap_small")),
    ("mask APm", ("segm_apm", "segm_ap_medium")),
    ("mask APl", ("segm_apl", "segm_ap_large")),
)
AP_SCALE = 100.0

# Table 4 (AP at IoU > 0.4) and Fig. 5 (AUROC): the total/mean metric and its per-class siblings
# ``<name>_class<i>``.
PER_CLASS_TOTALS = ("ap40", "auroc")
_CLASS_SUFFIX = re.compile(r"^(?:final_|best_)?(?P<base>[a-z0-9]+)_class(?P<index>\d+)$")


def per_class_metrics(metric_names: Iterable[str], base: str) -> list[int]:
    """The class indices ``i`` for which ``<base>_class<i>`` (or its final_/best_ form) was logged."""
    found = {int(match["index"]) for name in metric_names
             if (match := _CLASS_SUFFIX.match(name)) and match["base"] == base}
    return sorted(found)


def evaluation_metric(name: str, digits: int = 2, scale: float = 1.0, better: str | None = "max") -> Quantity:
    """A quantity for an evaluation metric with no entry in :data:`QUANTITIES` (e.g. ``ap40``)."""
    return QUANTITIES.get(name) or Quantity(name, name, digits=digits, scale=scale, better=better)
