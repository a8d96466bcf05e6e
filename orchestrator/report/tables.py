"""The paper's tables regenerated from the groups, rendered as Markdown, LaTeX and HTML.

Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional learners"
(Neurocomputing 511, 2022):

- Tables 1/2 (:func:`classification_tables`): methods as columns (grouped by backbone), rows
  #Param., FLOPs, throughput, Top-1, Top-5 (AUROC for multi-label). Complexity twice: in correct
  units (parameters in M; FLOPs = 2 per multiply-add at the trained input size, in G) and in the
  paper's units (its "#.Param." string, see :func:`sna_core.profiling.paper_param_count`; its
  torchstat "FLOPs" at 3×244×244, :func:`sna_core.profiling.paper_flops`).
- The rank-k ablation (Fig. 4's numbers) and the placement ablation (§4.3.2) as tables of the same
  layout (:func:`ablation_tables`).
- Table 3 (:func:`detection_table`): the COCO AP family per detector (rows) and dataset (columns):
  box AP for every detector and, when the grid has Mask R-CNN, its mask AP beside it (n/a for
  Faster R-CNN).
- Table 4 and Fig. 5's numbers (:func:`per_class_tables`): one row per class with its train/test
  counts, then the total (AP at IoU > 0.4) or mean (AUROC). The counts come from the dataset
  registry (``DatasetInfo.class_counts``; VinDr-CXR: images per finding in each split of the
  trial's root, else of the train.csv torchxrayvision ships), the source named in the notes.

Every number is mean ± std (ddof = 1) over the seeds' finished runs; ``(k/n)`` when only k of the
group's n runs finished. A cell whose runs all failed reads ``failed``, still running
``running``, never run ``missing``, and a metric that finished runs did not log ``—``; none is
ever printed as 0. Bold marks the best mean of a row within a column group, italic/underline the
second (as the paper's bold and underline).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.report.aggregate import Group, attention_sort_key, label
from orchestrator.report.context import ReportContext, Skipped
from orchestrator.report.quantities import (
    AP_FAMILY,
    AP_SCALE,
    MASK_AP_FAMILY,
    QUANTITIES,
    Quantity,
    per_class_metrics,
)

if TYPE_CHECKING:
    from sna_core.data.registry import ClassCounts

__all__ = [
    "PER_CLASS_DATASETS",
    "STATE_TEXT",
    "PaperTable",
    "TableCell",
    "ablation_tables",
    "all_tables",
    "classification_tables",
    "detection_table",
    "html_document",
    "is_per_class_detection",
    "per_class_tables",
    "to_html",
    "to_latex",
    "to_markdown",
]

STATE_TEXT = {"na": "—", "failed": "failed", "running": "running", "missing": "missing"}
# Detection datasets reported per class at IoU > 0.4 (Table 4) rather than with the COCO AP family.
PER_CLASS_DATASETS = ("vindr_cxr",)
_PAPER_TABLE = {"cifar100": "Table 1", "imagenet": "Table 2"}
_MAIN_METRICS = {"classification": ("top1", "top5"), "multilabel": ("auroc",)}


@dataclass(frozen=True)
class TableCell:
    text: str
    state: str = "value"  # value | na | failed | running | missing | label
    value: float | None = None  # the mean, for marking the best
    mark: str | None = None  # "best" | "second"
    links: tuple[tuple[str, str], ...] = ()  # (seed label, MLflow run URL)
    title: str = ""  # hover text: per-seed statuses and values


@dataclass
class PaperTable:
    id: str
    title: str
    caption: str
    corner: str  # the header of the row-label column
    columns: list[str]
    groups: list[tuple[str, int]] = field(default_factory=list)  # column-group labels and spans
    rows: list[tuple[str, list[TableCell]]] = field(default_factory=list)
    sections: dict[int, str] = field(default_factory=dict)  # row index → a section header before it
    notes: list[str] = field(default_factory=list)
    better: dict[int, str] = field(default_factory=dict)  # row index → "max"/"min" (row-wise marks)


# ---------------------------------------------------------------------------------------------
# Cells


def _run_links(group: Group, context: ReportContext) -> tuple[tuple[str, str], ...]:
    links = []
    for run in group.runs:
        url = context.run_url(run.run_id)
        if url:
            links.append((f"s{run.seed}" if run.seed is not None else run.key[:6], url))
    return tuple(links)


def _seed_title(group: Group, candidates: Sequence[str], quantity: Quantity | None) -> str:
    parts = []
    for run in group.runs:
        value = run.value(candidates) if run.state == "finished" and candidates else None
        shown = quantity.format(value) if (value is not None and quantity) else run.state
        parts.append(f"seed {run.seed}: {shown}")
    return "; ".join(parts)


def _shortfall(group: Group, names: Sequence[str]) -> str:
    """"; 1 failed, 1 missing": why some of the group's runs give no value."""
    reasons: dict[str, int] = {}
    for run in group.runs:
        if run.state != "finished":
            reasons[run.state] = reasons.get(run.state, 0) + 1
        elif run.value(names) is None:
            reasons["without value"] = reasons.get("without value", 0) + 1
    return ("; " + ", ".join(f"{n} {reason}" for reason, n in reasons.items())) if reasons else ""


def stat_cell(group: Group, quantity: Quantity, context: ReportContext, *,
              candidates: Sequence[str] | None = None, with_links: bool = True) -> TableCell:
    """mean ± std of ``quantity`` over the group's finished runs, or the reason there is none;
    ``with_links``: the seeds' MLflow run links under the value."""
    names = tuple(candidates) if candidates is not None else quantity.candidates(context.at)
    links = _run_links(group, context) if with_links else ()
    title = _seed_title(group, names, quantity)
    state = group.state(names)
    if state != "value":
        return TableCell(STATE_TEXT[state], state, links=links, title=title)
    stat = group.stat(names)
    text = quantity.format(stat.mean)
    if stat.std is not None and not (quantity.deterministic and stat.std == 0):
        text += f" ± {stat.std * quantity.scale:.{quantity.digits}f}"
    if stat.n < len(group.runs) and not quantity.deterministic:
        text += f" ({stat.n}/{len(group.runs)}{_shortfall(group, names)})"
    return TableCell(text, "value", value=stat.mean * quantity.scale, links=links, title=title)


def _paper_params_cell(group: Group) -> TableCell:
    from sna_core.profiling import paper_param_count

    state = group.state(("params",))
    if state != "value":
        return TableCell(STATE_TEXT[state], state)
    counts = {int(value) for value in group.stat("params").values}
    text = " / ".join(paper_param_count(count) for count in sorted(counts))
    return TableCell(text, "value", title=", ".join(f"{count:,}" for count in sorted(counts)) + " parameters")


def _paper_flops_cell(group: Group, context: ReportContext) -> TableCell:
    value = context.paper_flops.get(group.id)
    if value is None:
        return TableCell(STATE_TEXT["na"], "na", title="not computed (see the report's notes)")
    return TableCell(f"{value:.2f}", "value", title="torchstat Total Flops at 3×244×244, ÷1000³")


def _mark(cells: list[TableCell], better: str | None, spans: Sequence[int]) -> list[TableCell]:
    """Bold the best and underline the second distinct value within each column group."""
    if better is None:
        return cells
    marked = list(cells)
    start = 0
    for span in spans:
        scored = [(index, cell.value) for index in range(start, start + span)
                  if (cell := cells[index]).state == "value" and cell.value is not None]
        distinct = sorted({round(value, 9) for _, value in scored}, reverse=(better == "max"))
        if len(scored) >= 2 and len(distinct) >= 2:
            for index, value in scored:
                rank = distinct.index(round(value, 9))
                if rank < 2:
                    marked[index] = _with_mark(cells[index], "best" if rank == 0 else "second")
        start += span
    return marked


def _with_mark(cell: TableCell, mark: str) -> TableCell:
    return TableCell(cell.text, cell.state, cell.value, mark, cell.links, cell.title)


def _add_row(table: PaperTable, label_text: str, cells: list[TableCell], better: str | None) -> None:
    spans = [span for _, span in table.groups] or [len(cells)]
    table.rows.append((label_text, _mark(cells, better, spans)))


def _slug(*parts: object) -> str:
    text = "_".join(str(part) for part in parts if part not in (None, ""))
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _seed_note(groups: Sequence[Group]) -> str:
    sizes = sorted({len(group.runs) for group in groups})
    counted = f"n = {sizes[0]} seeds per cell" if len(sizes) == 1 else f"n = {', '.join(map(str, sizes))} seeds"
    return (f"mean ± std (ddof = 1) over seeds, {counted}; (k/n): only k runs finished. "
            "Bold: best of the row within its column group; italic (underlined in HTML/LaTeX): second.")


def _states_note() -> str:
    return ("failed: every run failed; running: still running; missing: never run; —: finished runs did "
            "not log it (or logged it as undefined, -1); n/a: not applicable. Never 0.")


# ---------------------------------------------------------------------------------------------
# Tables 1/2 and the ablations


def _complexity_rows(table: PaperTable, columns: Sequence[Group], context: ReportContext) -> None:
    params, flops, throughput = QUANTITIES["params"], QUANTITIES["flops"], QUANTITIES["throughput_img_s"]
    # Run links go on the accuracy rows only (below): one set per column is enough.
    _add_row(table, "#Param. (M)", [stat_cell(g, params, context, with_links=False) for g in columns], None)
    _add_row(table, "#Param. (paper units)", [_paper_params_cell(g) for g in columns], None)
    _add_row(table, "FLOPs (G)", [stat_cell(g, flops, context, with_links=False) for g in columns], None)
    _add_row(table, "FLOPs (paper units, G)", [_paper_flops_cell(g, context) for g in columns], None)
    _add_row(table, throughput.label, [stat_cell(g, throughput, context, with_links=False) for g in columns],
             throughput.better)


def _metric_rows(table: PaperTable, columns: Sequence[Group], task: str, context: ReportContext) -> None:
    for name in _MAIN_METRICS.get(task, ("top1",)):
        quantity = QUANTITIES[name]
        _add_row(table, quantity.label, [stat_cell(g, quantity, context) for g in columns], quantity.better)


def _complexity_notes(columns: Sequence[Group], context: ReportContext) -> list[str]:
    sizes = sorted({size for group in columns if (size := group.image_size()) is not None})
    at = "the trained input size" + (f" ({', '.join(f'{s}×{s}' for s in sizes)})" if sizes else "")
    notes = [
        (f"#Param. (M): parameter count / 10⁶. FLOPs (G): 2 per multiply-add at {at}, one image, "
        "SNA's power iteration and attention products included (torch FlopCounterMode)."),
        ("Paper units: #Param. is the authors' count_bytes string (÷1024 repeatedly, integer.remainder; "
        "11,220,132 → 10.71), FLOPs is torchstat's Total Flops at 3×244×244 in G (convolutions as "
        "multiply-adds, matrix products not counted), as in the paper's Tables 1–2; counted from the "
         "architecture, so also shown for cells without a finished run."),
        ("Throughput: inference images/s measured at the end of each trial on its own worker "
        "(hardware-dependent; compare within one sweep only)."),
    ]
    if not any(group.id in context.paper_flops for group in columns):
        notes.append("FLOPs (paper units) were not computed for this report (—).")
    return notes


def _dataset_title(group: Group) -> str:
    """``CIFAR-100``, or ``VinDr-CXR (vindr_cxr_det)`` when the grid aliases the registry name."""
    name, axis = label(group.dataset_name), group.axes["dataset"]
    return name if axis in (group.dataset_name, name) else f"{name} ({axis})"


def _key(group: Group, *axes: str) -> tuple:
    return tuple(group.axes[axis] for axis in axes)


def _by(groups: Sequence[Group], *axes: str) -> dict[tuple, list[Group]]:
    out: dict[tuple, list[Group]] = {}
    for group in groups:
        out.setdefault(_key(group, *axes), []).append(group)
    return out


def _lowest_rank(groups: Sequence[Group]) -> int | None:
    ranks = [group.axes["rank_k"] for group in groups if group.axes["rank_k"] is not None]
    return min(ranks) if ranks else None


def classification_tables(groups: Sequence[Group], context: ReportContext) -> list[PaperTable] | Skipped:
    """Tables 1/2: per dataset, placement and recipe, one column per (backbone, method)."""
    chosen = [group for group in groups if group.axes["task"] in _MAIN_METRICS]
    if not chosen:
        return Skipped("Tables 1/2", "the grid has no classification or multi-label cells")
    tables: list[PaperTable] = []
    partition_axes = ("dataset", "task", "stem", "placement", "recipe")
    for (dataset, task, stem, placement, _recipe), members in _by(chosen, *partition_axes).items():
        columns: list[Group] = []
        spans: list[tuple[str, int]] = []
        for (backbone,), of_backbone in _by(members, "backbone").items():
            lowest = _lowest_rank(of_backbone)  # SNA rank-1 here; other ranks go to the rank-k table
            kept = [g for g in of_backbone if g.axes["rank_k"] in (None, lowest)]
            kept.sort(key=lambda g: attention_sort_key(g.axes["attention"]))
            columns += kept
            spans.append((label(backbone), len(kept)))
        if len({g.axes["attention"] for g in columns}) < 2:
            continue  # one method only (e.g. SNA's placement ablation): the ablation tables show it
        paper = _PAPER_TABLE.get(members[0].dataset_name, "Table 1/2 layout")
        recipe_label = members[0].recipe_label
        title = (f"{paper}: {_dataset_title(members[0])}, {task}, stem {stem}, "
                 f"attention placement {placement}" + (f", recipe {recipe_label}" if recipe_label else ""))
        table = PaperTable(
            id=_slug("table", "classification", dataset, placement, recipe_label),
            title=title,
            caption=(f"Comparison of attention methods on {dataset} in terms of parameters, FLOPs, inference "
                     f"throughput and {', '.join(QUANTITIES[m].label for m in _MAIN_METRICS[task])} "
                     f"(metrics at the {context.at} epoch)."),
            corner="Metrics",
            columns=[g.method() for g in columns],
            groups=spans,
        )
        _complexity_rows(table, columns, context)
        _metric_rows(table, columns, task, context)
        table.notes = [_seed_note(columns), *_complexity_notes(columns, context), _states_note()]
        tables.append(table)
    if not tables:
        return Skipped("Tables 1/2", "no dataset/placement of the grid compares two or more attention methods")
    return tables


def ablation_tables(groups: Sequence[Group], context: ReportContext) -> list[PaperTable | Skipped] | Skipped:
    """SNA's rank-k ablation (Fig. 4's numbers) and placement ablation, as column tables (with a
    :class:`Skipped` line for the one the grid does not cover)."""
    sna = [g for g in groups if g.axes["attention"] == "sna" and g.axes["task"] in _MAIN_METRICS]
    tables: list[PaperTable] = []
    reasons = []
    # rank-k: per (dataset, task, stem, placement, recipe), columns = backbone × k (+ "none").
    for key, members in _by(sna, "dataset", "task", "stem", "placement", "recipe").items():
        if len({g.axes["rank_k"] for g in members}) < 2:
            continue
        dataset, task, _stem, placement, _recipe = key
        columns: list[Group] = []
        spans: list[tuple[str, int]] = []
        for (backbone,), of_backbone in _by(members, "backbone").items():
            baseline = [g for g in groups if g.axes["attention"] == "none" and _key(g, "dataset", "task", "stem",
                        "placement", "recipe", "backbone") == (*key, backbone)]
            kept = baseline + sorted(of_backbone, key=lambda g: g.axes["rank_k"])
            columns += kept
            spans.append((label(backbone), len(kept)))
        recipe_label = members[0].recipe_label
        table = PaperTable(
            id=_slug("table", "rank-k", dataset, placement, recipe_label),
            title=f"Fig. 4 data: SNA rank-k on {dataset}, placement {placement}"
                  + (f", recipe {recipe_label}" if recipe_label else ""),
            caption=f"SNA with the rank-k approximation (k = {sorted({g.axes['rank_k'] for g in members})}) "
                    f"against the backbone alone (metrics at the {context.at} epoch).",
            corner="Metrics",
            columns=[g.method(with_rank=True) for g in columns],
            groups=spans,
        )
        _complexity_rows(table, columns, context)
        _metric_rows(table, columns, task, context)
        table.notes = [_seed_note(columns), *_complexity_notes(columns, context), _states_note()]
        tables.append(table)
    if not tables:
        reasons.append("no SNA cells with two or more rank_k values (rank-k table)")
    # placement: per (dataset, task, stem, recipe), columns = backbone × placement of SNA (lowest k).
    placement_tables = 0
    for key, members in _by(sna, "dataset", "task", "stem", "recipe").items():
        lowest = _lowest_rank(members)
        members = [g for g in members if g.axes["rank_k"] == lowest]
        if len({g.axes["placement"] for g in members}) < 2:
            continue
        dataset, task, _stem, _recipe = key
        columns, spans = [], []
        for (backbone,), of_backbone in _by(members, "backbone").items():
            columns += of_backbone
            spans.append((label(backbone), len(of_backbone)))
        recipe_label = members[0].recipe_label
        table = PaperTable(
            id=_slug("table", "placement", dataset, recipe_label),
            title=f"Placement ablation: SNA on {dataset}" + (f", recipe {recipe_label}" if recipe_label else ""),
            caption="SNA before the first stage (stem), inside every residual/dense block (blocks), or both "
                    f"(§4.3.2; metrics at the {context.at} epoch).",
            corner="Metrics",
            columns=[g.axes["placement"] for g in columns],
            groups=spans,
        )
        _complexity_rows(table, columns, context)
        _metric_rows(table, columns, task, context)
        table.notes = [_seed_note(columns), *_complexity_notes(columns, context), _states_note()]
        tables.append(table)
        placement_tables += 1
    if not placement_tables:
        reasons.append("no SNA cells at two or more placements (placement table)")
    if not tables:
        return Skipped("Ablation tables", "; ".join(reasons))
    return [*tables, *(Skipped("Ablation table", reason) for reason in reasons)]


# ---------------------------------------------------------------------------------------------
# Table 3


def _logged(groups: Sequence[Group]) -> set[str]:
    return {name for group in groups for run in group.runs for name in run.metrics}


def _logged_any(logged: set[str], names: Sequence[str]) -> str | None:
    """The first of ``names`` logged (as is, or as final_/best_), else None."""
    return next((name for name in names if {name, f"final_{name}", f"best_{name}"} & logged), None)


def is_per_class_detection(groups: Sequence[Group]) -> bool:
    """Whether one detection dataset's groups go to Table 4 (AP at IoU > 0.4 per class) rather
    than Table 3: a dataset the paper reports so (:data:`PER_CLASS_DATASETS`), or one whose runs
    logged per-class ``ap40`` but no COCO box AP. (Every detection run logs ``ap40_class<i>``, so
    that alone does not make a dataset per-class.)"""
    logged = _logged(groups)
    if groups[0].dataset_name in PER_CLASS_DATASETS:
        return True
    return bool(per_class_metrics(logged, "ap40")) and _logged_any(logged, AP_FAMILY[0][1]) is None


@dataclass(frozen=True)
class _APColumn:
    label: str
    quantity: Quantity
    masks: bool  # a mask AP column: not applicable to detectors without masks


def _uses_masks(group: Group) -> bool:
    """Whether the group's detector predicts masks (the detector registry's word; for a detector
    it does not know, whether a run logged mask AP)."""
    try:
        from sna_core.detectors import detector_uses_masks

        return detector_uses_masks(str(group.axes["detector"]))
    except (KeyError, ValueError, LookupError):
        return any(name.startswith(("segm_", "final_segm_", "best_segm_")) for name in _logged([group]))


def _ap_columns(members: Sequence[Group]) -> list[_APColumn]:
    """The box AP family, then the mask AP family when a group's detector predicts masks (Mask
    R-CNN); all six statistics each, as the paper's COCO columns (undefined ones read —)."""
    logged = _logged(members)
    families = [(AP_FAMILY, False)] + ([(MASK_AP_FAMILY, True)] if any(map(_uses_masks, members)) else [])
    return [_APColumn(column_label, Quantity(_logged_any(logged, names) or names[0], column_label,
                                             scale=AP_SCALE, better="max"), masks)
            for family, masks in families for column_label, names in family]


def _ap_cell(group: Group | None, column: _APColumn, context: ReportContext) -> TableCell:
    if group is None:
        return TableCell("not in grid", "na")
    if column.masks and not _uses_masks(group):
        return TableCell("n/a", "na", title=f"{label(group.axes['detector'])} predicts no masks")
    return stat_cell(group, column.quantity, context)


def detection_table(groups: Sequence[Group], context: ReportContext) -> PaperTable | Skipped:
    """Table 3: rows = (backbone, detector) blocks of methods; columns = datasets × (box AP family,
    then mask AP family when the grid has Mask R-CNN)."""
    detection = [g for g in groups if g.axes["task"] == "detection"]
    by_dataset = {key[0]: members for key, members in _by(detection, "dataset").items()
                  if not is_per_class_detection(members)}
    if not by_dataset:
        return Skipped("Table 3", "the grid has no COCO-style detection cells (COCO2017/VOC2012 AP family)")
    column_sets = {dataset: _ap_columns(members) for dataset, members in by_dataset.items()}
    chosen = [g for members in by_dataset.values() for g in members]
    with_masks = any(column.masks for columns in column_sets.values() for column in columns)
    table = PaperTable(
        id="table-3-detection",
        title="Table 3: detection, AP family per detector and dataset",
        caption=("Box AP" + (" and Mask R-CNN's mask AP" if with_masks else "")
                 + " (in %) at IoU 0.50:0.95, 0.50 and 0.75 and for small/medium/large objects (COCO "
                 f"evaluation; metrics at the {context.at} epoch)."),
        corner="Backbone · detector / method",
        columns=[column.label for dataset in by_dataset for column in column_sets[dataset]],
        groups=[(_dataset_title(by_dataset[dataset][0]), len(column_sets[dataset])) for dataset in by_dataset],
    )
    row_axes = ("backbone", "detector", "stem", "placement", "recipe")
    for block_key, members in _by(chosen, *row_axes).items():
        backbone, detector, _stem, placement, _recipe = block_key
        methods = sorted({(g.axes["attention"], g.axes["rank_k"]) for g in members},
                         key=lambda m: (attention_sort_key(m[0]), m[1] or 0))
        table.sections[len(table.rows)] = (f"{label(backbone)} · {label(detector)} (placement {placement}"
                                           + (f", {members[0].recipe_label}" if members[0].recipe_label else "")
                                           + ")")
        block_rows: list[list[TableCell]] = []
        for method in methods:
            cells: list[TableCell] = []
            for dataset in by_dataset:
                match = next((g for g in members if g.axes["dataset"] == dataset
                              and (g.axes["attention"], g.axes["rank_k"]) == method), None)
                cells += [_ap_cell(match, column, context) for column in column_sets[dataset]]
            block_rows.append(cells)
        # Marks per column within the block (the paper marks the best method per detector).
        for column in range(len(table.columns)):
            column_cells = [row[column] for row in block_rows]
            for index, cell in enumerate(_mark(column_cells, "max", [len(column_cells)])):
                block_rows[index][column] = cell
        for (attention, rank_k), cells in zip(methods, block_rows, strict=True):
            name = label(attention) + (f" k={rank_k}" if rank_k not in (None, 1) else "")
            table.rows.append(("+ " + name if attention != "none" else "none", cells))
    table.notes = [_seed_note(chosen), "AP values from pycocotools are fractions; shown ×100 (%)."]
    if with_masks:
        table.notes.append("AP…: box AP (bounding-box IoU) for every detector; mask AP…: Mask R-CNN's mask AP "
                           "(mask IoU), n/a for detectors without masks. The paper's Table 3 prints one AP "
                           "family per detector and does not say whether Mask R-CNN's is box or mask AP.")
    table.notes.append(_states_note())
    return table


# ---------------------------------------------------------------------------------------------
# Table 4 and Fig. 5's numbers


def _counts_cell(counts: ClassCounts | Skipped, split: str, index: int | None) -> TableCell:
    """One class's count in ``split`` (``index`` None: the sum over classes), or — with the reason."""
    if isinstance(counts, Skipped):
        return TableCell("—", "na", title=counts.reason)
    values = counts.splits.get(split)
    if values is None:
        return TableCell("—", "na", title=f"no {split!r} split in the counts of {counts.source}")
    if index is None:
        return TableCell(f"{sum(values):,}", "label", title=counts.unit)
    if index >= len(values):
        return TableCell("—", "na", title=f"not counted ({len(values)} classes counted)")
    return TableCell(f"{values[index]:,}", "label", title=counts.unit)


def _counts_note(counts: ClassCounts | Skipped, test_split: str) -> str:
    if isinstance(counts, Skipped):
        return f"train/test counts unknown (—): {counts.reason}."
    shown = "" if test_split == "test" else f" (test = the dataset's {test_split!r} split)"
    return (f"train/test: {counts.unit} per split{shown}, counted from {counts.source} "
            "(DatasetInfo.class_counts); Total: their sum over the classes.")


def per_class_tables(groups: Sequence[Group], context: ReportContext) -> list[PaperTable] | Skipped:
    """Table 4 (detection: AP at IoU > 0.4 per class) and the per-class AUROC of Fig. 5
    (multi-label): rows = classes then the total/mean; columns = train/test counts, then
    backbone × method."""
    tables: list[PaperTable] = []
    specs: list[tuple[str, str, Callable[[Group], bool], str]] = [
        ("detection", "ap40", lambda g: g.axes["task"] == "detection", "Table 4"),
        ("multilabel", "auroc", lambda g: g.axes["task"] == "multilabel", "Fig. 5 data"),
    ]
    for task, base, select, paper in specs:
        chosen = [g for g in groups if select(g)]
        if task == "detection":
            chosen = [g for members in _by(chosen, "dataset").values() if is_per_class_detection(members)
                      for g in members]
        for (dataset, stem, _recipe), members in _by(chosen, "dataset", "stem", "recipe").items():
            logged = _logged(members)
            counts = context.class_counts(members[0].dataset_name, task,
                                          (members[0].config or {}).get("dataset"))
            # Every class the runs or the counts know, so a class no run could score (no ground
            # truth in the test split: AP undefined) still has its row, as in the paper.
            sizes = [index + 1 for index in per_class_metrics(logged, base)]
            sizes += [] if isinstance(counts, Skipped) else [len(values) for values in counts.splits.values()]
            indices = list(range(max(sizes) if sizes else len(context.class_names(members[0].dataset_name, None))))
            names = context.class_names(members[0].dataset_name, len(indices))
            columns: list[Group] = []
            spans: list[tuple[str, int]] = []
            for (backbone, detector), of_backbone in _by(members, "backbone", "detector").items():
                of_backbone = sorted(of_backbone, key=lambda g: (attention_sort_key(g.axes["attention"]),
                                                                 g.axes["rank_k"] or 0, g.axes["placement"]))
                columns += of_backbone
                spans.append((label(backbone) + (f" · {label(detector)}" if detector else ""), len(of_backbone)))
            placements = {g.axes["placement"] for g in columns}
            scale = 100.0
            table = PaperTable(
                id=_slug("table", "per-class", base, dataset, members[0].recipe_label),
                title=f"{paper}: {_dataset_title(members[0])}, per-class "
                      + ("AP at IoU > 0.4" if base == "ap40" else "AUROC")
                      + (f", recipe {members[0].recipe_label}" if members[0].recipe_label else ""),
                caption=("AP (in %) at IoU > 0.4 per class" if base == "ap40" else "AUROC (in %) per class")
                        + f"; train/test: counts per class from the dataset registry (metrics at the {context.at} epoch).",
                corner="Class",
                columns=["train", "test"] + [g.method(with_placement=len(placements) > 1) for g in columns],
                groups=[("counts", 2), *spans],
            )
            test_split = "val" if not isinstance(counts, Skipped) and "test" not in counts.splits else "test"
            for index in indices:
                quantity = Quantity(f"{base}_class{index}", names[index], scale=scale, better="max")
                cells = [_counts_cell(counts, "train", index), _counts_cell(counts, test_split, index)]
                cells += [stat_cell(g, quantity, context) for g in columns]
                _add_row(table, names[index], cells, "max")
            total = Quantity(base, "Total" if base == "ap40" else "Mean", scale=scale, better="max")
            cells = [_counts_cell(counts, "train", None), _counts_cell(counts, test_split, None)]
            cells += [stat_cell(g, total, context) for g in columns]
            _add_row(table, total.label, cells, "max")
            table.notes = [_seed_note(columns), "Values logged as fractions are shown ×100 (%).",
                           _counts_note(counts, test_split), _states_note()]
            tables.append(table)
    if not tables:
        return Skipped("Table 4 / Fig. 5 data", "the grid has no VinDr-CXR-style per-class detection or "
                                                "multi-label cells")
    return tables


def all_tables(groups: Sequence[Group], context: ReportContext) -> tuple[list[PaperTable], list[Skipped]]:
    """Every table the grid covers, and a line for each one it does not."""
    tables: list[PaperTable] = []
    skipped: list[Skipped] = []
    for built in (classification_tables(groups, context), ablation_tables(groups, context),
                  detection_table(groups, context), per_class_tables(groups, context)):
        for item in built if isinstance(built, list) else [built]:
            (skipped if isinstance(item, Skipped) else tables).append(item)
    return tables, skipped


# ---------------------------------------------------------------------------------------------
# Renderers


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_cell(cell: TableCell) -> str:
    text = _md_escape(cell.text)
    if cell.mark == "best":
        return f"**{text}**"
    if cell.mark == "second":
        return f"*{text}*"
    return text


def to_markdown(table: PaperTable) -> str:
    grouped = [f"{group} · " for group, span in table.groups for _ in range(span)] or [""] * len(table.columns)
    header = [table.corner] + [f"{prefix}{column}" for prefix, column in zip(grouped, table.columns, strict=True)]
    lines = [f"### {table.title}", "", table.caption, "",
             "| " + " | ".join(_md_escape(text) for text in header) + " |",
             "|" + "---|" + "---:|" * len(table.columns)]
    for index, (row_label, cells) in enumerate(table.rows):
        if index in table.sections:
            lines.append(f"| **{_md_escape(table.sections[index])}** |" + " |" * len(table.columns))
        lines.append("| " + " | ".join([_md_escape(row_label)] + [_md_cell(cell) for cell in cells]) + " |")
    lines.append("")
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_TEXT = {"±": r"$\pm$", "—": "--", "–": "--", "−": "$-$", "×": r"$\times$", "·": r"$\cdot$", "÷": r"$\div$",
               "→": r"$\rightarrow$", "≥": r"$\geq$", "≤": r"$\leq$", ">": r"$>$", "<": r"$<$", "⁶": r"$^6$",
               "³": r"$^3$", "²": r"$^2$", "“": "``", "”": "''", "’": "'", "§": r"\S{}"}


def _latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(char, char) for char in text)
    for char, replacement in _LATEX_TEXT.items():
        out = out.replace(char, replacement)
    return out


def _latex_cell(cell: TableCell) -> str:
    text = _latex_escape(cell.text)
    if cell.mark == "best":
        return rf"\textbf{{{text}}}"
    if cell.mark == "second":
        return rf"\underline{{{text}}}"
    return text


def to_latex(table: PaperTable) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    width = len(table.columns) + 1
    lines = [r"\begin{table}[t]", r"\centering", (rf"\caption{{{_latex_escape(table.title)}. "
             rf"{_latex_escape(table.caption)}}}"), rf"\label{{tab:{table.id}}}",
             r"\begin{tabular}{l" + "r" * len(table.columns) + "}", r"\toprule"]
    if table.groups:
        heads, rules, start = [""], [], 2
        for group, span in table.groups:
            heads.append(rf"\multicolumn{{{span}}}{{c}}{{{_latex_escape(group)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        lines += [" & ".join(heads) + r" \\", " ".join(rules)]
    lines.append(" & ".join(_latex_escape(text) for text in [table.corner, *table.columns]) + r" \\")
    lines.append(r"\midrule")
    for index, (row_label, cells) in enumerate(table.rows):
        if index in table.sections:
            if index:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\emph{{{_latex_escape(table.sections[index])}}}}} \\")
        lines.append(" & ".join([_latex_escape(row_label)] + [_latex_cell(cell) for cell in cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\footnotesize " + " ".join(_latex_escape(note) for note in table.notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _html_cell(cell: TableCell) -> str:
    text = html.escape(cell.text)
    if cell.mark == "best":
        text = f"<strong>{text}</strong>"
    elif cell.mark == "second":
        text = f"<u>{text}</u>"
    links = ""
    if cell.links:
        links = '<span class="runs">' + " ".join(
            f'<a href="{html.escape(url)}" title="MLflow run">{html.escape(name)}</a>' for name, url in cell.links
        ) + "</span>"
    title = f' title="{html.escape(cell.title)}"' if cell.title else ""
    return f'<td class="state-{cell.state}"{title}>{text}{links}</td>'


def to_html(table: PaperTable) -> str:
    """A ``<table>`` fragment (classes ``paper-table``, ``state-<state>``) with its notes."""
    out = [f'<section class="paper-table-section" id="{html.escape(table.id)}">',
           f"<h3>{html.escape(table.title)}</h3>",
           f'<table class="paper-table" data-table="{html.escape(table.id)}">',
           f"<caption>{html.escape(table.caption)}</caption>", "<thead>"]
    if table.groups:
        out.append("<tr><th></th>" + "".join(f'<th colspan="{span}" class="group">{html.escape(group)}</th>'
                                             for group, span in table.groups) + "</tr>")
    out.append(f'<tr><th scope="col">{html.escape(table.corner)}</th>'
               + "".join(f'<th scope="col">{html.escape(column)}</th>' for column in table.columns) + "</tr>")
    out.append("</thead><tbody>")
    for index, (row_label, cells) in enumerate(table.rows):
        if index in table.sections:
            out.append(f'<tr class="section"><th colspan="{len(table.columns) + 1}">'
                       f"{html.escape(table.sections[index])}</th></tr>")
        out.append(f'<tr><th scope="row">{html.escape(row_label)}</th>' + "".join(map(_html_cell, cells)) + "</tr>")
    out.append("</tbody></table>")
    if table.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{html.escape(note)}</li>" for note in table.notes) + "</ul>")
    out.append("</section>")
    return "\n".join(out) + "\n"


def html_document(title: str, body: str, style: str) -> str:
    """A standalone page (inline CSS only: opens from disk with no server and no network)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{style}</style></head>\n"
            f"<body>\n{body}</body></html>\n")
