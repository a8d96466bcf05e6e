"""The paper's figures regenerated from the groups (matplotlib, Agg; PNG and SVG).

Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional learners"
(Neurocomputing 511, 2022):

- Fig. 4 (:func:`rank_k_figures`): Top-1/Top-5 against SNA's rank k (1, 2, 4, 8, 16), one line per
  backbone, the backbone without attention as a dashed line with its ± std band;
- Fig. 5 (:func:`auroc_figures`): AUROC per class for each method (multi-label VinDr-CXR);
- accuracy against inference throughput per method (:func:`tradeoff_figures`), the trade-off
  the paper argues in Tables 1–2.

Error bars are the seeds' standard deviation (ddof = 1). A point whose runs failed or never ran
is drawn as an ``x`` on the axis labelled ``failed``/``missing`` (never as 0). Figures use
:class:`matplotlib.figure.Figure` directly (no pyplot state), so reports can be built anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from orchestrator.report.aggregate import Group, attention_sort_key, label
from orchestrator.report.context import ReportContext, Skipped
from orchestrator.report.output import atomic_write
from orchestrator.report.quantities import QUANTITIES, Quantity, per_class_metrics

__all__ = ["FORMATS", "FigureFile", "all_figures", "auroc_figures", "rank_k_figures", "tradeoff_figures"]

FORMATS = ("png", "svg")
_MAIN_METRIC = {"classification": "top1", "multilabel": "auroc"}
_COLORS = {"none": "#4d4d4d", "se": "#1f77b4", "eca": "#2ca02c", "sa": "#9467bd", "aa": "#ff7f0e",
           "cbam": "#8c564b", "sna": "#d62728"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@dataclass
class FigureFile:
    id: str
    title: str
    caption: str
    files: dict[str, Path] = field(default_factory=dict)  # format → path

    @property
    def png(self) -> Path:
        return self.files["png"]


def _color(attention: str, index: int) -> str:
    return _COLORS.get(attention, f"C{index % 10}")


def _save(figure: Figure, directory: Path, stem: str) -> dict[str, Path]:
    files = {}
    for fmt in FORMATS:
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        files[fmt] = atomic_write(directory / f"{stem}.{fmt}",
                                  lambda handle, fmt=fmt, metadata=metadata: figure.savefig(
                                      handle, format=fmt, dpi=110, bbox_inches="tight", metadata=metadata))
    return files


def _by(groups: Sequence[Group], *axes: str) -> dict[tuple, list[Group]]:
    out: dict[tuple, list[Group]] = {}
    for group in groups:
        out.setdefault(tuple(group.axes[axis] for axis in axes), []).append(group)
    return out


def _mark_unavailable(axis, x: float, state: str, color: str) -> None:
    """An ``x`` on the bottom of the axes with the reason (``failed``/``missing``/…)."""
    transform = axis.get_xaxis_transform()
    axis.plot([x], [0.02], marker="x", color=color, transform=transform, clip_on=False, linestyle="none")
    axis.annotate(state, (x, 0.04), xycoords=transform, fontsize=7, color=color, ha="center", va="bottom")


def rank_k_figures(groups: Sequence[Group], context: ReportContext, directory: Path) -> list[FigureFile] | Skipped:
    """Fig. 4: per dataset/placement/recipe with SNA at two or more ranks."""
    sna = [g for g in groups if g.axes["attention"] == "sna" and g.axes["task"] == "classification"]
    written: list[FigureFile] = []
    for key, members in _by(sna, "dataset", "stem", "placement", "recipe").items():
        ranks = sorted({g.axes["rank_k"] for g in members if g.axes["rank_k"] is not None})
        if len(ranks) < 2:
            continue
        dataset, _stem, placement, _recipe = key
        metrics = [QUANTITIES["top1"], QUANTITIES["top5"]]
        figure = Figure(figsize=(4.2 * len(metrics), 3.4))
        axes = figure.subplots(1, len(metrics), squeeze=False)[0]
        for axis, quantity in zip(axes, metrics, strict=True):
            names = quantity.candidates(context.at)
            for index, ((backbone,), of_backbone) in enumerate(_by(members, "backbone").items()):
                color, marker = f"C{index}", _MARKERS[index % len(_MARKERS)]
                points = sorted((g for g in of_backbone if g.axes["rank_k"] is not None),
                                key=lambda g: g.axes["rank_k"])
                xs, ys, errors = [], [], []
                for group in points:
                    stat = group.stat(names)
                    if stat.n:
                        xs.append(group.axes["rank_k"])
                        ys.append(stat.mean)
                        errors.append(stat.std or 0.0)
                    else:
                        _mark_unavailable(axis, group.axes["rank_k"], group.state(names), color)
                axis.errorbar(xs, ys, yerr=errors, color=color, marker=marker, capsize=3, label=f"{label(backbone)} + SNA")
                baseline = next((g for g in groups if g.axes["attention"] == "none"
                                 and (g.axes["dataset"], g.axes["stem"], g.axes["placement"], g.axes["recipe"],
                                      g.axes["backbone"]) == (*key, backbone)), None)
                if baseline is not None and (stat := baseline.stat(names)).n:
                    axis.axhline(stat.mean, color=color, linestyle="--", linewidth=1, label=f"{label(backbone)}")
                    if stat.std:
                        axis.axhspan(stat.mean - stat.std, stat.mean + stat.std, color=color, alpha=0.12)
            axis.set_xscale("log", base=2)
            axis.set_xticks(ranks, [str(k) for k in ranks])
            axis.set_xlabel("rank k")
            axis.set_ylabel(quantity.label)
            axis.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        recipe_label = members[0].recipe_label
        title = f"Fig. 4: SNA rank-k on {dataset} (placement {placement}" + (f", {recipe_label}" if recipe_label else "") + ")"
        figure.suptitle(title, fontsize=10)
        stem_name = "fig4-rank-k-" + "-".join(part for part in (dataset, placement, recipe_label) if part)
        written.append(FigureFile(stem_name, title,
                                  f"Top-1/Top-5 (%) at the {context.at} epoch against k; mean ± std over seeds; dashed: "
                                  "the backbone without attention (band: ± std).", _save(figure, directory, stem_name)))
    if not written:
        return Skipped("Fig. 4", "the grid has no classification cells with SNA at two or more rank_k values")
    return written


def auroc_figures(groups: Sequence[Group], context: ReportContext, directory: Path) -> list[FigureFile] | Skipped:
    """Fig. 5: per-class AUROC of each method, per multi-label dataset and backbone."""
    chosen = [g for g in groups if g.axes["task"] == "multilabel"]
    written: list[FigureFile] = []
    for key, members in _by(chosen, "dataset", "stem", "recipe", "backbone").items():
        dataset, _stem, _recipe, backbone = key
        logged = {name for g in members for run in g.runs for name in run.metrics}
        indices = per_class_metrics(logged, "auroc")
        if not indices:
            continue
        names = context.class_names(members[0].dataset_name, max(indices) + 1)
        methods = sorted(members, key=lambda g: (attention_sort_key(g.axes["attention"]), g.axes["rank_k"] or 0,
                                                 g.axes["placement"]))
        placements = {g.axes["placement"] for g in methods}
        figure = Figure(figsize=(max(6.0, 0.55 * len(indices) * max(1, len(methods)) / 2 + 2), 4.0))
        axis = figure.subplots()
        width = 0.8 / max(1, len(methods))
        for offset, group in enumerate(methods):
            method = group.method(with_placement=len(placements) > 1)
            xs, ys, errors = [], [], []
            for position, index in enumerate(indices):
                stat = group.stat(Quantity(f"auroc_class{index}", "").candidates(context.at))
                if stat.n:
                    xs.append(position + (offset - (len(methods) - 1) / 2) * width)
                    ys.append(100.0 * stat.mean)
                    errors.append(100.0 * (stat.std or 0.0))
            color = _color(group.axes["attention"], offset)
            state = group.state(("auroc",) + tuple(f"final_auroc_class{i}" for i in indices))
            legend = method if xs else f"{method} ({state if state != 'value' else 'no per-class values'})"
            axis.bar(xs, ys, width=width, yerr=errors, color=color, label=legend, capsize=1.5, error_kw={"linewidth": 0.6})
        axis.set_xticks(range(len(indices)), [names[i] for i in indices], rotation=60, ha="right", fontsize=7)
        axis.set_ylabel("AUROC (%)")
        # Like the paper's Fig. 5, zoom on the drawn range (bars start at the bottom edge).
        lows = [patch.get_height() for patch in axis.patches]
        bottom = max(0.0, 10 * math.floor((min(lows) - 5) / 10)) if lows else 0.0
        axis.set_ylim(bottom, 100)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=7, ncols=min(4, len(methods)))
        title = f"Fig. 5: per-class AUROC on {dataset} with {label(backbone)}"
        figure.suptitle(title, fontsize=10)
        stem_name = "fig5-auroc-" + "-".join(part for part in (dataset, backbone, members[0].recipe_label) if part)
        written.append(FigureFile(stem_name, title, f"AUROC (%) per class at the {context.at} epoch, mean ± std "
                                                    "over seeds; methods without values are named in the legend.",
                                  _save(figure, directory, stem_name)))
    if not written:
        return Skipped("Fig. 5", "the grid has no multi-label cells with per-class AUROC (auroc_class<i>) logged")
    return written


def tradeoff_figures(groups: Sequence[Group], context: ReportContext, directory: Path) -> list[FigureFile] | Skipped:
    """Accuracy (or AUROC) against inference throughput, one point per group."""
    chosen = [g for g in groups if g.axes["task"] in _MAIN_METRIC]
    written: list[FigureFile] = []
    throughput = QUANTITIES["throughput_img_s"]
    for (dataset, task, recipe), members in _by(chosen, "dataset", "task", "recipe").items():
        metric = QUANTITIES[_MAIN_METRIC[task]]
        names = metric.candidates(context.at)
        plotted = [g for g in members if g.stat(names).n and g.stat(throughput.name).n]
        if not plotted:
            continue
        absent = [g for g in members if g not in plotted]
        figure = Figure(figsize=(6.0, 4.2))
        axis = figure.subplots()
        backbones = list(dict.fromkeys(g.axes["backbone"] for g in members))
        placements = {g.axes["placement"] for g in members}
        ranks = {g.axes["rank_k"] for g in members if g.axes["rank_k"] is not None}
        seen: set[str] = set()
        for group in sorted(plotted, key=lambda g: attention_sort_key(g.axes["attention"])):
            accuracy, speed = group.stat(names), group.stat(throughput.name)
            attention = group.axes["attention"]
            marker = _MARKERS[backbones.index(group.axes["backbone"]) % len(_MARKERS)]
            legend = label(attention) if attention not in seen else None
            seen.add(attention)
            axis.errorbar([speed.mean], [accuracy.mean * metric.scale], xerr=[speed.std or 0.0],
                          yerr=[(accuracy.std or 0.0) * metric.scale], marker=marker, color=_color(attention, len(seen)),
                          capsize=2, linestyle="none", label=legend)
            tag = label(group.axes["backbone"]) + (f" {group.axes['placement']}" if len(placements) > 1 else "") + (
                f" k={group.axes['rank_k']}" if len(ranks) > 1 and group.axes["rank_k"] is not None else "") + (
                f" ({accuracy.n}/{len(group.runs)} seeds)" if accuracy.n < len(group.runs) else "")
            axis.annotate(tag, (speed.mean, accuracy.mean * metric.scale), fontsize=6, xytext=(3, 3),
                          textcoords="offset points")
        axis.set_xlabel(throughput.label)
        axis.set_ylabel(metric.label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, title="marker: " + ", ".join(
            f"{_MARKERS[i % len(_MARKERS)]} {label(b)}" for i, b in enumerate(backbones)), title_fontsize=6)
        recipe_label = members[0].recipe_label
        title = f"{metric.label.split(' (')[0]} vs throughput on {dataset}" + (f" ({recipe_label})" if recipe_label else "")
        figure.suptitle(title, fontsize=10)
        stem_name = "tradeoff-" + "-".join(part for part in (dataset, recipe_label) if part)
        caption = (f"{metric.label} at the {context.at} epoch against inference throughput, mean ± std over seeds.")
        if absent:
            caption += " Not shown (no finished value): " + ", ".join(
                f"{g.method(with_rank=True)} {label(g.axes['backbone'])} {g.axes['placement']} "
                f"({g.state(names) if g.state(names) != 'value' else 'no throughput'})" for g in absent) + "."
        written.append(FigureFile(stem_name, title, caption, _save(figure, directory, stem_name)))
    if not written:
        return Skipped("Accuracy vs throughput", "no classification/multi-label group has both a finished "
                                                 "accuracy and a throughput")
    return written


def all_figures(groups: Sequence[Group], context: ReportContext, directory: Path) -> tuple[list[FigureFile], list[Skipped]]:
    figures: list[FigureFile] = []
    skipped: list[Skipped] = []
    for build in (rank_k_figures, auroc_figures, tradeoff_figures):
        result = build(groups, context, directory)
        if isinstance(result, Skipped):
            skipped.append(result)
        else:
            figures.extend(result)
    return figures, skipped
