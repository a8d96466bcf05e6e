"""``sna-orch report`` on a finished small sweep in a real MLflow sqlite store (tmp_path).

The runs are written through orchestrator.tracking's own API (SweepTracker / TrialLogger: what the
runner and the Train worker call) with known metric values, so every aggregated number can be
checked against a hand computation. The grid: redundant_shapes × ResNet-18 × {none, SE, ECA, SA,
SNA k=1, SNA k=2} × 3 seeds, where SE has one finished, one failed and one never-run seed, every
ECA run failed and SA never ran.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from report_fixtures import column, log_trial, open_trial_runs, write_report_experiment

from orchestrator.cli import main as cli_main
from orchestrator.config import load_experiment
from orchestrator.plan import expand
from orchestrator.report import build_report
from orchestrator.report.aggregate import Group, RunRecord, Stat
from orchestrator.report.context import ReportContext, Skipped, registry_class_counts
from orchestrator.report.figures import auroc_figures
from orchestrator.report.tables import (
    detection_table,
    per_class_tables,
    to_html,
    to_latex,
    to_markdown,
)
from orchestrator.tracking import trial_runs
from sna_core.data.registry import ClassCounts
from sna_core.data.vindr_cxr import shipped_train_csv, split_of

SEED_OFFSETS = (0.0, 1.5, -0.7)  # top-1 = base + offset[seed]
BASE_TOP1 = {("none", None): 50.0, ("se", None): 52.0, ("eca", None): 53.0, ("sa", None): 54.0,
             ("sna", 1): 56.0, ("sna", 2): 57.0}
PARAMS = {"none": 11_181_642, "se": 11_268_234, "eca": 11_181_650, "sa": 11_443_530, "sna": 11_181_642}
NEVER_RUN = {("se", 2)} | {("sa", seed) for seed in range(3)}
FAILS = {("se", 1)} | {("eca", seed) for seed in range(3)}


def top1(attention: str, rank_k: int | None, seed: int) -> float:
    return BASE_TOP1[(attention, rank_k)] + SEED_OFFSETS[seed]


def throughput(attention: str, seed: int) -> float:
    return 1000.0 - (30.0 if attention == "sna" else 0.0) + 10.0 * seed


def write_experiment(directory: Path, name: str = "report-test") -> Path:
    return write_report_experiment(
        directory, name,
        matrix={"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "stem": ["imagenet"],
                "attention": ["none", "se", "eca", "sa", "sna"], "rank_k": [1, 2], "seed": [0, 1, 2]},
        train={"epochs": 2, "batch_size": 8, "metric": "top1", "mode": "max"})


def populate(path: Path) -> dict[str, str]:
    """Write the sweep's runs as the runner and the Train workers would; returns key → run id."""
    experiment, cells, run_ids = open_trial_runs(path, lambda cell: (cell.attention, cell.seed) not in NEVER_RUN)
    for key, run_id in run_ids.items():
        cell = next(cell for cell in cells if cell.key == key)
        value = top1(cell.attention, cell.rank_k, cell.seed)
        # Epoch 0 is the best epoch (value + 2), epoch 1 the final one (value).
        best = {"top1": value + 2.0, "top5": value + 20.0}
        if (cell.attention, cell.seed) in FAILS:
            log_trial(experiment.tracking_uri, run_id, [best], status="FAILED",
                      reason="FloatingPointError: the loss is nan")
            continue
        summary = {"params": PARAMS[cell.attention], "flops": 5.0e8 * (1.002 if cell.attention == "sna" else 1.0),
                   "throughput_img_s": throughput(cell.attention, cell.seed), "best_top1": value + 2.0,
                   "final_top1": value, "final_top5": value + 25.0}
        log_trial(experiment.tracking_uri, run_id, [best, {"top1": value, "top5": value + 25.0}], summary)
    return run_ids


@dataclass
class Sweep:
    path: Path
    run_ids: dict[str, str]
    report_dir: Path
    report: object


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    directory = tmp_path_factory.mktemp("sweep")
    path = write_experiment(directory)
    run_ids = populate(path)
    out = directory / "report"
    report = build_report(load_experiment(path, environ={}), out, log=lambda line: None)
    return Sweep(path, run_ids, out, report)


# --------------------------------------------------------------------------------------------
# results.parquet and aggregate.parquet


def test_results_parquet_has_one_row_per_planned_cell_and_every_run(sweep: Sweep) -> None:
    experiment = load_experiment(sweep.path, environ={})
    table = pq.read_table(sweep.report_dir / "results.parquet")
    assert table.num_rows == len(expand(experiment)) == 18
    rows = table.to_pylist()
    runs = trial_runs(experiment.tracking_uri, experiment.name)
    assert {row["run_id"] for row in rows if row["run_id"]} == {run.info.run_id for run in runs.values()}
    assert len(runs) == len(sweep.run_ids) == 14
    statuses = [row["status"] for row in rows]
    assert (statuses.count("FINISHED"), statuses.count("FAILED"), statuses.count("MISSING")) == (10, 4, 4)
    assert all(row["group_id"] and row["stem"] == "imagenet" and row["recipe"] for row in rows)


def test_aggregate_matches_a_hand_computation(sweep: Sweep) -> None:
    rows = pq.read_table(sweep.report_dir / "aggregate.parquet").to_pylist()
    by_method = {(row["attention"], row["rank_k"]): row for row in rows}
    assert set(by_method) == set(BASE_TOP1)
    for (attention, rank_k), row in by_method.items():
        seeds = [seed for seed in range(3) if (attention, seed) not in NEVER_RUN | FAILS]
        values = [top1(attention, rank_k, seed) for seed in seeds]
        assert row["n_runs"] == 3 and row["final_top1.n"] == len(values)
        assert (row["n_finished"], row["n_failed"], row["n_missing"]) == (
            len(values), sum((attention, s) in FAILS for s in range(3)), sum((attention, s) in NEVER_RUN for s in range(3)))
        if not values:
            assert row["final_top1.mean"] is None and row["final_top1.std"] is None  # never 0
            continue
        mean = sum(values) / len(values)
        assert row["final_top1.mean"] == pytest.approx(mean)
        if len(values) > 1:
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            assert row["final_top1.std"] == pytest.approx(std)
        else:
            assert row["final_top1.std"] is None
        assert row["best_top1.mean"] == pytest.approx(mean + 2.0)
        speeds = [throughput(attention, seed) for seed in seeds]
        assert row["throughput_img_s.mean"] == pytest.approx(sum(speeds) / len(speeds))
    sna = by_method[("sna", 1)]
    # SNA k=1 by hand: 56 + (0, 1.5, -0.7) → mean 56.2667, std sqrt(((−.2667)² + 1.2333² + (−.9667)²)/2) = 1.1240.
    assert sna["final_top1.mean"] == pytest.approx(56.266667, abs=1e-5)
    assert sna["final_top1.std"] == pytest.approx(1.123981, abs=1e-5)
    assert sorted(sna["seeds"]) == [0, 1, 2] and len(set(sna["run_ids"])) == 3


def test_stat_uses_sample_standard_deviation() -> None:
    stat = Stat.of([1.0, 2.0, 4.0])
    assert (stat.mean, stat.n) == (pytest.approx(7 / 3), 3)
    assert stat.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert Stat.of([5.0]).std is None and Stat.of([]).mean is None


# --------------------------------------------------------------------------------------------
# Tables


def test_table1_layout_values_marks_and_states(sweep: Sweep) -> None:
    table = next(t for t in sweep.report.tables if t.id.startswith("table-classification"))
    assert table.columns == ["none", "SE", "ECA", "SA", "SNA"] and table.groups == [("ResNet-18", 5)]
    assert [label for label, _ in table.rows] == [
        "#Param. (M)", "#Param. (paper units)", "FLOPs (G)", "FLOPs (paper units, G)", "Throughput (img/s)",
        "Top-1 (%)", "Top-5 (%)"]
    accuracy = column(table, "Top-1 (%)")
    assert accuracy["none"].text == "50.27 ± 1.12"
    assert accuracy["SE"].text == "52.00 (1/3; 1 failed, 1 missing)"
    assert (accuracy["ECA"].text, accuracy["ECA"].state) == ("failed", "failed")
    assert (accuracy["SA"].text, accuracy["SA"].state) == ("missing", "missing")
    assert accuracy["SNA"].text == "56.27 ± 1.12" and accuracy["SNA"].mark == "best"
    assert accuracy["SE"].mark == "second" and accuracy["none"].mark is None
    # Links: one per seed that has a run, pointing at the MLflow UI's run page.
    links = dict(accuracy["SNA"].links)
    assert set(links) == {"s0", "s1", "s2"}
    assert all(url.startswith("http://127.0.0.1:5000/#/experiments/") for url in links.values())
    assert set(dict(accuracy["SE"].links)) == {"s0", "s1"}
    # Complexity: correct units and the paper's units side by side.
    from sna_core.profiling import paper_param_count

    assert column(table, "#Param. (M)")["SE"].text == "11.27"
    assert column(table, "#Param. (paper units)")["none"].text == paper_param_count(PARAMS["none"])
    assert column(table, "FLOPs (G)")["SNA"].text == "0.501"
    assert column(table, "#Param. (paper units)")["ECA"].text == "failed"


def test_paper_unit_flops_equal_a_direct_count(sweep: Sweep) -> None:
    from sna_core.backbones import build_backbone
    from sna_core.profiling import paper_flops

    table = next(t for t in sweep.report.tables if t.id.startswith("table-classification"))
    row = column(table, "FLOPs (paper units, G)")
    for attention in ("none", "sa", "sna"):
        model = build_backbone("resnet18", 10, stem="imagenet", attention=attention, placement="stem",
                               attention_kwargs={"rank_k": 1} if attention == "sna" else {})
        assert row[{"none": "none", "sa": "SA", "sna": "SNA"}[attention]].text == f"{paper_flops(model):.2f}"


def test_every_table_is_written_as_markdown_latex_and_html(sweep: Sweep) -> None:
    manifest = json.loads((sweep.report_dir / "report.json").read_text())
    assert set(manifest["tables"]) == {table.id for table in sweep.report.tables}
    assert len(sweep.report.tables) == 2  # Table 1 layout and the rank-k (Fig. 4 data) table
    for table in sweep.report.tables:
        files = manifest["tables"][table.id]
        assert set(files) == {"md", "tex", "html"}
        texts = {fmt: (sweep.report_dir / relative).read_text(encoding="utf-8") for fmt, relative in files.items()}
        assert texts["md"] == to_markdown(table) and texts["tex"] == to_latex(table)
        assert to_html(table) in texts["html"] and texts["html"].startswith("<!DOCTYPE html>")
    classification = next(t for t in sweep.report.tables if t.id.startswith("table-classification"))
    md = to_markdown(classification)
    assert "| Top-1 (%) | 50.27 ± 1.12 | *52.00 (1/3; 1 failed, 1 missing)* | failed | missing | **56.27 ± 1.12** |" in md
    tex = to_latex(classification)
    assert r"\textbf{56.27 $\pm$ 1.12}" in tex and r"\multicolumn{5}{c}{ResNet-18}" in tex and "& failed &" in tex
    html = to_html(classification)
    # Every row but the paper-unit FLOPs (counted from the architecture, also for cells that never ran).
    assert html.count('class="state-failed"') == 6 and html.count('class="state-missing"') == 6
    assert column(classification, "FLOPs (paper units, G)")["SA"].state == "value"
    rank = next(t for t in sweep.report.tables if t.id.startswith("table-rank-k"))
    assert rank.columns == ["none", "SNA k=1", "SNA k=2"]
    assert column(rank, "Top-1 (%)")["SNA k=2"].mark == "best"


def test_report_writes_figures_claims_and_skips(sweep: Sweep) -> None:
    figures = {figure.id: figure for figure in sweep.report.figures}
    assert set(figures) == {"fig4-rank-k-redundant_shapes-stem", "tradeoff-redundant_shapes"}
    for figure in figures.values():
        png, svg = figure.files["png"], figure.files["svg"]
        with Image.open(png) as image:
            grey = numpy.asarray(image.convert("L"))
            assert image.size[0] > 300 and grey.std() > 5 and len(numpy.unique(grey)) > 10  # drawn, not blank
        assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    assert "SE" in figures["tradeoff-redundant_shapes"].caption or "ECA" in figures["tradeoff-redundant_shapes"].caption
    claims = json.loads((sweep.report_dir / "claims.json").read_text())
    assert claims["claims"] and {"best", "better", "equal", "within", "ratio"} <= set(claims["rules"])
    assert (sweep.report_dir / "claims.md").read_text().startswith("# Claim checks")
    skipped = json.loads((sweep.report_dir / "report.json").read_text())["skipped"]
    assert any(line.startswith("Table 3 skipped:") for line in skipped)
    assert any(line.startswith("Fig. 5 skipped:") for line in skipped)
    assert any("placement" in line for line in skipped)
    # Atomic writes leave no temporary files behind.
    assert not [path for path in sweep.report_dir.rglob("*") if path.name.endswith(".tmp")]


def test_index_links_every_run_to_the_mlflow_ui(sweep: Sweep) -> None:
    experiment = load_experiment(sweep.path, environ={})
    experiment_id = MlflowClient(experiment.tracking_uri).get_experiment_by_name(experiment.name).experiment_id
    page = (sweep.report_dir / "index.html").read_text(encoding="utf-8")
    for run_id in sweep.run_ids.values():
        assert f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}" in page
    assert "<script" not in page and 'rel="stylesheet"' not in page  # nothing fetched from anywhere
    for figure in sweep.report.figures:
        assert f'src="figures/{figure.files["png"].name}"' in page


# --------------------------------------------------------------------------------------------
# The command


def test_report_command_default_folder_and_best_epoch(sweep: Sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli_main(["report", str(sweep.path), "--at", "best", "--no-paper-flops"]) == 0
    out = capsys.readouterr().out
    default = sweep.path.parent / "results" / "report"
    assert f"report: {default}" in out and "[report] 18 runs in 6 groups" in out and "claims checked" in out
    md = next((default / "tables").glob("table-classification-*.md")).read_text()
    assert "**58.27 ± 1.12**" in md  # best epoch: value + 2
    assert "| FLOPs (paper units, G) | — | — | — | — | — |" in md
    shutil.rmtree(default)


@pytest.mark.parametrize("problem", ["bad_file", "no_store", "no_runs"])
def test_report_errors_exit_2_naming_the_problem(problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], sweep: Sweep) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write_experiment(tmp_path, "lonely")
    expected = "lonely"
    if problem == "bad_file":
        path.write_text("name: lonely\nmatrix: {dataset: [no_such_dataset]}\ntrain: {epochs: 1}\n")
        expected = str(path)
    elif problem == "no_runs":
        shutil.copyfile(sweep.path.parent / "mlflow.db", tmp_path / "mlflow.db")  # a store without this experiment
        MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("lonely")
    assert cli_main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# Tables 3 and 4 and Fig. 5 on constructed groups (the detection/multi-label metric names of
# sna_core.tasks: bbox_ap…, ap40, ap40_class<i>, auroc_class<i>; fractions, -1 = undefined)


def constructed(attention: str, per_seed: list[dict[str, float]], *, dataset: str, dataset_name: str, task: str,
                backbone: str = "resnet50", detector: str | None = None, statuses: list[str] | None = None) -> Group:
    runs = [RunRecord(key=f"{attention}{dataset}{i}", run_id=f"run-{attention}-{dataset}-{i}",
                      status=statuses[i] if statuses else "FINISHED", seed=i, metrics=metrics)
            for i, metrics in enumerate(per_seed)]
    axes = {"dataset": dataset, "task": task, "backbone": backbone, "stem": "imagenet", "detector": detector,
            "attention": attention, "rank_k": None, "placement": "stem", "recipe": "r"}
    return Group(axes=axes, dataset_name=dataset_name, recipe_label="", grid="g", config=None, runs=runs)


def test_table3_detection_layout_with_undefined_and_failed_cells() -> None:
    def coco(ap: float, small: float = 0.2) -> dict[str, float]:
        return {"final_bbox_ap": ap, "final_bbox_ap50": ap + 0.2, "final_bbox_ap75": ap + 0.03,
                "final_bbox_aps": small, "final_bbox_apm": ap + 0.02, "final_bbox_apl": ap + 0.1}

    groups = [constructed("none", [coco(0.36), coco(0.37), coco(0.365)], dataset="coco2017", dataset_name="coco2017",
                          task="detection", detector="faster_rcnn"),
              constructed("sna", [coco(0.40), coco(0.41), coco(0.405)], dataset="coco2017", dataset_name="coco2017",
                          task="detection", detector="faster_rcnn"),
              constructed("se", [{}, {}, {}], dataset="coco2017", dataset_name="coco2017", task="detection",
                          detector="faster_rcnn", statuses=["FAILED"] * 3),
              constructed("none", [coco(0.61), coco(0.62), coco(0.615)], dataset="voc2012", dataset_name="voc2012",
                          task="detection", detector="faster_rcnn")]
    table = detection_table(groups, ReportContext())
    assert table.groups == [("COCO2017", 6), ("VOC2012", 6)]
    assert table.columns[:6] == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert [label for label, _ in table.rows] == ["none", "+ SE", "+ SNA"]
    assert list(table.sections.values()) == ["ResNet-50 · Faster R-CNN (placement stem)"]
    cells = {label: cells for label, cells in table.rows}
    assert cells["+ SNA"][0].text == "40.50 ± 0.50" and cells["+ SNA"][0].mark == "best"
    assert cells["+ SE"][0].text == "failed" and cells["+ SNA"][6].text == "not in grid"
    assert cells["none"][6].text == "61.50 ± 0.50"
    assert "| **ResNet-50 · Faster R-CNN (placement stem)** |" in to_markdown(table)
    assert isinstance(detection_table([], ReportContext()), Skipped)


def box_and_mask(ap: float, *, masks: bool, per_class: bool = True) -> dict[str, float]:
    """A detection run's final metrics as sna_core.tasks.detection logs them (every detector logs
    ap40 per class too) and build_groups keeps them (APs undefined, -1: left out); mask AP 0.05
    below box AP."""
    stats = {"ap": ap, "ap50": ap + 0.2, "ap75": ap + 0.03, "apm": ap + 0.02, "apl": ap + 0.1}
    metrics = {f"final_bbox_{name}": value for name, value in stats.items()}
    if masks:
        metrics |= {f"final_segm_{name}": value - 0.05 for name, value in stats.items()}
    if per_class:
        metrics |= {"final_ap40": ap + 0.1, "final_ap40_class0": ap + 0.1}
    return metrics


def test_table3_mask_ap_beside_box_ap_for_mask_rcnn_only() -> None:
    groups = [constructed(attention, [box_and_mask(ap, masks=detector == "mask_rcnn"),
                                      box_and_mask(ap + 0.01, masks=detector == "mask_rcnn")],
                          dataset="coco2017", dataset_name="coco2017", task="detection", detector=detector)
              for detector in ("faster_rcnn", "mask_rcnn") for attention, ap in (("none", 0.36), ("sna", 0.40))]
    groups.append(constructed("se", [{}, {}], dataset="coco2017", dataset_name="coco2017", task="detection",
                              detector="mask_rcnn", statuses=["FAILED", "FAILED"]))
    # Every detection run logs ap40_class<i>: COCO stays in Table 3 and gets no per-class table.
    assert isinstance(per_class_tables(groups, ReportContext()), Skipped)
    table = detection_table(groups, ReportContext())
    box = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert table.columns == box + [f"mask {name}" for name in box] and table.groups == [("COCO2017", 12)]
    assert list(table.sections.values()) == ["ResNet-50 · Faster R-CNN (placement stem)",
                                             "ResNet-50 · Mask R-CNN (placement stem)"]
    faster, mask = (dict(zip(table.columns, cells, strict=True)) for cells in (table.rows[1][1], table.rows[4][1]))
    assert [label for label, _ in table.rows] == ["none", "+ SNA", "none", "+ SE", "+ SNA"]
    assert faster["AP"].text == "40.50 ± 0.71" and faster["AP"].mark == "best"
    assert all(faster[f"mask {name}"].text == "n/a" and faster[f"mask {name}"].state == "na" for name in box)
    assert mask["AP"].text == "40.50 ± 0.71" and mask["mask AP"].text == "35.50 ± 0.71"
    assert mask["mask AP50"].text == "55.50 ± 0.71" and mask["mask AP"].mark == "best"
    assert mask["APs"].text == mask["mask APs"].text == "—"  # undefined: shown as such, never 0
    failed = dict(zip(table.columns, table.rows[3][1], strict=True))
    assert failed["mask AP"].text == failed["AP"].text == "failed"
    assert any("mask AP" in note and "n/a" in note for note in table.notes)
    assert r"mask AP50" in to_latex(table) and "| n/a |" in to_markdown(table)


def test_table3_without_mask_rcnn_has_box_columns_only() -> None:
    groups = [constructed("none", [box_and_mask(0.3, masks=False)], dataset="voc2012", dataset_name="voc2012",
                          task="detection", detector="faster_rcnn")]
    table = detection_table(groups, ReportContext())
    assert table.columns == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert not any("mask" in note for note in table.notes)


def test_minus_one_ap_is_undefined_not_a_value() -> None:
    import pyarrow as pa

    from orchestrator.report.aggregate import build_groups

    table = pa.table({"key": ["a", "b"], "run_id": ["ra", "rb"], "status": ["FINISHED", "FINISHED"],
                      "dataset": ["coco2017"] * 2, "backbone": ["resnet50"] * 2, "attention": ["sna"] * 2,
                      "rank_k": pa.array([None, None], pa.int64()), "placement": ["stem"] * 2, "seed": [0, 1],
                      "task": ["detection"] * 2, "metrics.final_bbox_aps": [-1.0, 0.25],
                      "metrics.final_bbox_ap": [0.4, 0.5]})
    (group,) = build_groups(table)
    assert group.stat("final_bbox_aps").values == (0.25,) and group.stat("final_bbox_ap").n == 2


def test_table4_per_class_ap_with_counts_and_fig5_auroc(tmp_path: Path) -> None:
    from sna_core.data import dataset_info

    findings = dataset_info("vindr_cxr").class_names

    def ap40(base: float) -> dict[str, float]:
        return {"final_ap40": base, **{f"final_ap40_class{i}": base + 0.01 * i for i in range(len(findings))}}

    detection = [constructed(attention, [ap40(base), ap40(base + 0.01), ap40(base - 0.01)], dataset="vindr_cxr_det",
                             dataset_name="vindr_cxr", task="detection", backbone="resnet18", detector="faster_rcnn")
                 for attention, base in (("none", 0.55), ("sna", 0.62))]
    counts = ClassCounts({"train": tuple(range(100, 100 + len(findings))), "test": tuple(range(10, 10 + len(findings)))},
                         unit="images with the finding", source="counts.csv")
    no_counts = Skipped("train/test counts", "no train.csv")
    with_counts = ReportContext(class_counts=lambda name, task, dataset: counts if (name, task) == ("vindr_cxr", "detection")
                                else no_counts)
    (table,) = per_class_tables(detection, with_counts)
    assert [label for label, _ in table.rows] == [*findings, "Total"]
    assert table.columns == ["train", "test", "none", "SNA"]
    first = dict(zip(table.columns, dict(table.rows)[findings[0]], strict=True))
    assert (first["train"].text, first["test"].text) == ("100", "10")
    assert first["SNA"].text == "62.00 ± 1.00" and first["SNA"].mark == "best"
    total = dict(zip(table.columns, dict(table.rows)["Total"], strict=True))
    assert total["train"].text == f"{sum(counts.splits['train']):,}" and total["none"].text == "55.00 ± 1.00"
    assert any("counted from counts.csv" in note for note in table.notes)
    (unknown,) = per_class_tables(detection, ReportContext(class_counts=lambda name, task, dataset: no_counts))
    first_unknown = dict(unknown.rows)[findings[0]][0]
    assert (first_unknown.text, first_unknown.title) == ("—", "no train.csv")  # counts unknown, with the reason
    assert "train/test counts unknown (—): no train.csv." in unknown.notes

    def auroc(shift: float) -> list[dict[str, float]]:
        return [{"final_auroc": 0.8 + shift + d, **{f"final_auroc_class{i}": 0.7 + 0.05 * i + shift + d for i in range(3)}}
                for d in (0.0, 0.01, -0.01)]

    multilabel = [constructed(attention, auroc(shift), dataset="vindr_cxr_cls", dataset_name="vindr_cxr",
                              task="multilabel", backbone="densenet121") for attention, shift in (("none", 0.0), ("sna", 0.03))]
    multilabel.append(constructed("aa", [{}, {}, {}], dataset="vindr_cxr_cls", dataset_name="vindr_cxr", task="multilabel",
                                  backbone="densenet121", statuses=["FAILED", "FAILED", "KILLED"]))
    (fig5,) = auroc_figures(multilabel, ReportContext(), tmp_path)
    assert sorted(path.name for path in fig5.files.values()) == [
        "fig5-auroc-vindr_cxr_cls-densenet121.png", "fig5-auroc-vindr_cxr_cls-densenet121.svg"]
    assert "AA (failed)" in fig5.files["svg"].read_text()  # named in the legend (an SVG comment), not drawn as 0
    uncounted = ReportContext(class_counts=lambda name, task, dataset: Skipped("train/test counts", "not counted"))
    (auroc_table,) = per_class_tables(multilabel, uncounted)  # rows: the classes logged (no counts to widen them)
    assert [label for label, _ in auroc_table.rows] == [*findings[:3], "Mean"]
    assert dict(zip(auroc_table.columns, dict(auroc_table.rows)["Mean"], strict=True))["AA"].text == "failed"
    assert isinstance(auroc_figures(detection, ReportContext(), tmp_path), Skipped)


# --------------------------------------------------------------------------------------------
# Table 4's train/test counts from the dataset registry (sna_core.data.vindr_cxr.class_counts)

# The paper's Table 4, train and test images per finding (VinDr-CXR's 14, in class_id order).
PAPER_TRAIN = (2433, 150, 364, 1855, 275, 304, 492, 1053, 655, 903, 818, 1590, 81, 1316)
PAPER_TEST = (634, 36, 88, 445, 78, 82, 121, 269, 171, 231, 214, 391, 15, 301)
needs_shipped_csv = pytest.mark.skipif(
    shipped_train_csv() is None,
    reason="needs torchxrayvision's data/vinbigdata-train.csv.gz (pip install --no-deps torchxrayvision)")


@needs_shipped_csv
def test_vindr_counts_are_images_per_finding_as_in_the_paper() -> None:
    counts = registry_class_counts("vindr_cxr", "detection")  # no root here: the shipped train.csv
    assert counts.source.startswith(f"{shipped_train_csv()} (torchxrayvision's copy")
    assert counts.unit.startswith("images with the finding")
    # Summed over the two splits, images per finding equal the paper's train + test for all 14.
    both = [train + val for train, val in zip(counts.splits["train"], counts.splits["val"], strict=True)]
    assert both == [train + test for train, test in zip(PAPER_TRAIN, PAPER_TEST, strict=True)]
    assert sum(both) == 15_365 == 12_289 + 3_076
    # The split is ours (SHA-256 of image_id), not the paper's unpublished one.
    assert (sum(counts.splits["train"]), sum(counts.splits["val"])) == (12_111, 3_254)
    assert (counts.splits["train"][0], counts.splits["val"][0]) == (2_430, 637)  # paper: 2,433 / 634
    multilabel = registry_class_counts("vindr_cxr", "multilabel")
    assert len(multilabel.splits["train"]) == 15 and multilabel.splits["train"][:14] == counts.splits["train"]


@needs_shipped_csv
def test_table4_prints_the_registry_counts() -> None:
    from sna_core.data import dataset_info

    findings = dataset_info("vindr_cxr").class_names
    # Pneumothorax (12) had no ground truth in the test split: its AP is undefined, not logged.
    metrics = {"final_ap40": 0.5, **{f"final_ap40_class{i}": 0.5 for i in range(len(findings)) if i != 12}}
    groups = [constructed(attention, [metrics], dataset="vindr_cxr_det", dataset_name="vindr_cxr", task="detection",
                          backbone="resnet18", detector="faster_rcnn") for attention in ("none", "sna")]
    (table,) = per_class_tables(groups, ReportContext())
    assert [label for label, _ in table.rows] == [*findings, "Total"]  # also the classes no run could score
    assert dict(table.rows)["Pneumothorax"][2].text == "—"
    assert [cell.text for cell in dict(table.rows)["Aortic enlargement"][:2]] == ["2,430", "637"]
    assert [cell.text for cell in dict(table.rows)["Pneumothorax"][:2]] == ["69", "27"]
    assert [cell.text for cell in dict(table.rows)["Total"][:2]] == ["12,111", "3,254"]
    assert any("vinbigdata-train.csv.gz" in note and "test = the dataset's 'val' split" in note for note in table.notes)


def write_train_csv(root: Path, rows: list[tuple[str, str, int, str]]) -> None:
    root.mkdir(parents=True)
    lines = ["image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"]
    for image_id, name, class_id, rad in rows:
        box = ",,," if class_id == 14 else "10.0,10.0,50.0,50.0"
        lines.append(f"{image_id},{name},{class_id},{rad},{box}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")


def test_counts_read_the_dataset_root_with_the_trials_split(tmp_path: Path) -> None:
    images = {"a1": [("Aortic enlargement", 0, "R1"), ("Aortic enlargement", 0, "R2"), ("Cardiomegaly", 3, "R3")],
              "b2": [("No finding", 14, "R1"), ("No finding", 14, "R2")],
              "c3": [("Pneumothorax", 12, "R1")], "d4": [("Aortic enlargement", 0, "R4")]}
    write_train_csv(tmp_path / "vindr", [(image, *row) for image, rows in images.items() for row in rows])
    dataset = {"name": "vindr_cxr", "root": str(tmp_path / "vindr"), "kwargs": {"val_fraction": 0.5}}
    counts = registry_class_counts("vindr_cxr", "multilabel", dataset)
    assert counts.source == str(tmp_path / "vindr" / "train.csv")
    expected = {split: [0] * 15 for split in ("train", "val")}
    for image, rows in images.items():
        for class_id in {class_id for _, class_id, _ in rows}:
            expected[split_of(image, 0.5)][class_id] += 1  # one per image, however many radiologists
    assert {split: list(values) for split, values in counts.splits.items()} == expected
    assert sum(map(sum, counts.splits.values())) == 5
    limited = registry_class_counts("vindr_cxr", "detection", {**dataset, "kwargs": {"val_fraction": 0.5, "limit": 1}})
    assert all(sum(values) <= 2 and len(values) == 14 for values in limited.splits.values())


def test_counts_unknown_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sna_core.data import vindr_cxr

    coco = registry_class_counts("coco2017", "detection")
    assert isinstance(coco, Skipped) and "does not count the classes of 'coco2017'" in coco.reason
    monkeypatch.setattr(vindr_cxr, "shipped_train_csv", lambda: None)  # as without torchxrayvision
    missing = registry_class_counts("vindr_cxr", "detection", {"root": str(tmp_path / "absent")})
    assert isinstance(missing, Skipped)
    assert str(tmp_path / "absent") in missing.reason and "torchxrayvision" in missing.reason
    bad = registry_class_counts("vindr_cxr", "detection", {"root": str(tmp_path), "kwargs": {"val_fraction": 2}})
    assert isinstance(bad, Skipped) and "val_fraction" in bad.reason


# --------------------------------------------------------------------------------------------
# Fig. 5's grid through MLflow: VinDr-CXR multi-label classification (the plan needs no data)

AUROC_BASE = {"none": 0.85, "aa": 0.80, "sna": 0.90}


def test_multilabel_grid_gives_fig5_per_class_table_and_claims(tmp_path: Path) -> None:
    document = {
        "name": "fig5-test",
        "datasets": {"vindr_cxr_cls": {"name": "vindr_cxr", "task": "multilabel", "image_size": 64}},
        "matrix": {"dataset": ["vindr_cxr_cls"], "backbone": ["densenet121"], "attention": ["none", "aa", "sna"],
                   "placement": ["stem+blocks"], "seed": [0, 1]},
        "train": {"epochs": 1, "batch_size": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    path = tmp_path / "fig5.yaml"
    path.write_text(yaml.safe_dump(document))
    experiment, cells, run_ids = open_trial_runs(path)
    classes = cells[0].config["dataset"]["num_classes"]
    for cell in cells:
        base = AUROC_BASE[cell.attention] + 0.004 * cell.seed
        per_class = {f"auroc_class{i}": base + 0.005 * i for i in range(classes)}
        log_trial(experiment.tracking_uri, run_ids[cell.key], [{"auroc": base, **per_class}],
                  {"params": 6_950_000, "flops": 9.0e8, "throughput_img_s": 300.0 - cell.seed,
                   "final_auroc": base, **{f"final_{name}": value for name, value in per_class.items()}})

    report = build_report(experiment, tmp_path / "report", log=lambda line: None)
    layout = next(t for t in report.tables if t.id.startswith("table-classification"))
    assert layout.columns == ["none", "AA", "SNA"] and [label for label, _ in layout.rows][-1] == "AUROC (%)"
    assert column(layout, "AUROC (%)")["SNA"].text == "90.20 ± 0.28"
    per_class = next(t for t in report.tables if t.id.startswith("table-per-class-auroc"))
    assert len(per_class.rows) == classes + 1 and per_class.rows[-1][0] == "Mean"
    assert per_class.rows[0][0] == "Aortic enlargement"  # class names from the dataset registry
    assert {figure.id for figure in report.figures} == {"fig5-auroc-vindr_cxr_cls-densenet121", "tradeoff-vindr_cxr_cls"}
    verdicts = {claim.id.split("-vindr")[0]: claim.verdict for claim in report.claims}
    assert verdicts["aa-lowest"] == verdicts["sna-most-classes"] == verdicts["best-auroc"] == "supported"
    assert verdicts["no-extra-params"] == "supported"
