"""``sna-orch report`` on a real detection sweep: Table 3 (box and Mask R-CNN mask AP) and Table 4
(per-finding AP at IoU > 0.4 with train/test counts) read back from the files the command wrote.

One sweep for the module, run by ``sna-orch run`` (real local Ray, Ray Tune trials fitting Ray
Train TorchTrainers, a real MLflow sqlite store in tmp_path): Faster R-CNN and Mask R-CNN on a
ResNet-18-FPN, 1 epoch of one step, on the 3 real PASCAL VOC images of Debian's labelme-examples
in the COCO 2017 layout (64-pixel shorter side), and Faster R-CNN on VinDr-CXR rows of the real
train.csv (torchxrayvision's copy) over pydicom-data's real chest radiograph. Every number of the
tables must equal the runs' logged metric × 100 (one seed: no ±), and every count a count of the
images in the root's train.csv.

Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners" (Neurocomputing 511, 2022), Tables 3 and 4.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from report_fixtures import write_report_experiment
from sweep_helpers import MARKER_VARIABLE, end_processes, wait_for_no_processes
from test_detection_task import LABELME_COCO, assemble_coco, assemble_vindr

from orchestrator.cli import main as cli_main
from orchestrator.config import load_experiment
from orchestrator.plan import Cell, expand
from orchestrator.tracking import trial_runs
from sna_core.data.vindr_cxr import VINDR_FINDINGS, split_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LABELME_COCO.is_dir(),
                       reason="Debian package labelme-examples not installed (apt-get install labelme-examples)"),
]

# VinDr-CXR's cell needs the real train.csv rows and the real radiograph; COCO's runs without them.
WITH_VINDR = importlib.util.find_spec("torchxrayvision") is not None and importlib.util.find_spec("pydicom.data") is not None
IMAGE_SIZE = 64  # the smallest shorter side at which a ResNet-18-FPN detector still trains and scores
BOX = ("AP", "AP50", "AP75", "APs", "APm", "APl")
METRIC_OF = dict(zip(BOX, ("ap", "ap50", "ap75", "aps", "apm", "apl"), strict=True))


@dataclass
class DetectionSweep:
    path: Path
    report_dir: Path
    cells: list[Cell]
    metrics: dict[str, dict[str, float]]  # trial key → the run's logged metrics
    statuses: dict[str, str]
    vindr_root: Path | None
    left_behind: list[int]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> DetectionSweep:
    directory = tmp_path_factory.mktemp("detection-report")
    datasets = {"coco2017": {"root": str(assemble_coco(directory / "coco")), "image_size": IMAGE_SIZE,
                             "num_classes": 20}}
    vindr_root = None
    if WITH_VINDR:
        vindr_root = assemble_vindr(directory / "vindr")
        datasets["vindr_det"] = {"name": "vindr_cxr", "task": "detection", "root": str(vindr_root),
                                 "image_size": IMAGE_SIZE}
    path = write_report_experiment(
        directory, "detection-report",
        matrix={"dataset": list(datasets), "backbone": ["resnet18"], "detector": ["faster_rcnn", "mask_rcnn"],
                "attention": ["none"], "seed": [0]},
        train={"epochs": 1, "batch_size": 3, "optimizer": "sgd", "lr": 0.002, "limit_train_batches": 1,
               "loader_workers": 0},
        datasets=datasets,
        exclude=[{"dataset": "vindr_det", "detector": "mask_rcnn"}] if WITH_VINDR else [],
    )
    marker = uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
            patch.delenv(variable, raising=False)
        patch.setenv(MARKER_VARIABLE, marker)
        assert cli_main(["run", str(path), "--num-cpus", "2"]) == 0
        left = wait_for_no_processes(marker)
        end_processes(left)
        report_dir = directory / "report"
        assert cli_main(["report", str(path), "--out", str(report_dir), "--no-paper-flops"]) == 0
    experiment = load_experiment(path, environ={})
    runs = trial_runs(experiment.tracking_uri, experiment.name)
    return DetectionSweep(path, report_dir, expand(experiment),
                          {key: dict(run.data.metrics) for key, run in runs.items()},
                          {key: run.info.status for key, run in runs.items()}, vindr_root, left)


def read_markdown_table(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """A table file as written: (section, row label) → column header → cell text (marks removed)."""
    lines = [re.split(r"(?<!\\)\|", line)[1:-1] for line in path.read_text(encoding="utf-8").splitlines()
             if line.startswith("|")]
    header = [cell.strip() for cell in lines[0]]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    section = ""
    for line in lines[2:]:
        cells = [cell.strip().strip("*") for cell in line]
        if all(not cell for cell in cells[1:]):
            section = cells[0]
            continue
        rows[(section, cells[0])] = dict(zip(header[1:], cells[1:], strict=True))
    return rows


def percent(value: float | None) -> str:
    """How the report prints a logged AP of one seed: ×100, or — where pycocotools wrote -1."""
    assert value is not None
    return "—" if value < 0 else f"{value * 100:.2f}"


def test_every_trial_finished_and_the_parquet_has_a_row_per_run(sweep: DetectionSweep) -> None:
    assert sweep.left_behind == [], "processes left behind by the sweep"
    assert len(sweep.cells) == (3 if WITH_VINDR else 2)
    assert set(sweep.statuses) == {cell.key for cell in sweep.cells}
    assert set(sweep.statuses.values()) == {"FINISHED"}
    results = pq.read_table(sweep.report_dir / "results.parquet")
    assert results.num_rows == len(sweep.statuses)
    assert set(results.column("key").to_pylist()) == set(sweep.statuses)
    assert sorted(results.column("detector").to_pylist()) == sorted(cell.detector for cell in sweep.cells)
    assert pq.read_table(sweep.report_dir / "aggregate.parquet").num_rows == len(sweep.cells)


def test_table3_shows_the_logged_box_and_mask_ap(sweep: DetectionSweep) -> None:
    manifest = json.loads((sweep.report_dir / "report.json").read_text())
    assert set(manifest["tables"]["table-3-detection"]) == {"md", "tex", "html"}
    assert not any(line.startswith("Table 3 skipped") for line in manifest["skipped"])
    table = read_markdown_table(sweep.report_dir / manifest["tables"]["table-3-detection"]["md"])
    columns = [f"COCO2017 · {name}" for name in BOX] + [f"COCO2017 · mask {name}" for name in BOX]
    sections = {"faster_rcnn": "ResNet-18 · Faster R-CNN (placement stem)",
                "mask_rcnn": "ResNet-18 · Mask R-CNN (placement stem)"}
    assert set(table) == {(section, "none") for section in sections.values()}
    for cell in (cell for cell in sweep.cells if cell.dataset == "coco2017"):
        row, metrics = table[(sections[cell.detector], "none")], sweep.metrics[cell.key]
        assert list(row) == columns
        for name in BOX:
            assert row[f"COCO2017 · {name}"] == percent(metrics.get(f"final_bbox_{METRIC_OF[name]}")), (cell.detector, name)
            mask = row[f"COCO2017 · mask {name}"]
            if cell.detector == "mask_rcnn":
                assert mask == percent(metrics.get(f"final_segm_{METRIC_OF[name]}")), name
            else:
                assert mask == "n/a" and not any(metric.startswith("final_segm_") for metric in metrics)
    assert sweep.metrics[next(c.key for c in sweep.cells if c.detector == "mask_rcnn")]["final_segm_ap"] >= 0


def test_coco_gets_no_per_class_table(sweep: DetectionSweep) -> None:
    manifest = json.loads((sweep.report_dir / "report.json").read_text())
    assert not [table for table in manifest["tables"] if table.startswith("table-per-class") and "coco" in table]
    assert all(f"final_ap40_class{i}" in sweep.metrics[cell.key] for cell in sweep.cells for i in range(14))


def images_per_finding(root: Path) -> dict[str, list[int]]:
    """By hand from ROOT/train.csv: per split, the images in which any radiologist marked each finding."""
    findings_of: dict[str, set[int]] = {}
    with open(root / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            findings_of.setdefault(row["image_id"], set()).add(int(row["class_id"]))
    counts = {split: [0] * len(VINDR_FINDINGS) for split in ("train", "val")}
    for image_id, class_ids in findings_of.items():
        for class_id in class_ids - {14}:
            counts[split_of(image_id)][class_id] += 1
    return counts


@pytest.mark.skipif(not WITH_VINDR, reason="needs torchxrayvision (its vinbigdata-train.csv.gz) and pydicom-data "
                                           "(pip install --no-deps torchxrayvision; pip install pydicom-data)")
def test_table4_per_finding_ap_with_the_roots_counts(sweep: DetectionSweep) -> None:
    manifest = json.loads((sweep.report_dir / "report.json").read_text())
    files = manifest["tables"]["table-per-class-ap40-vindr-det"]
    table = read_markdown_table(sweep.report_dir / files["md"])
    (cell,) = [cell for cell in sweep.cells if cell.dataset == "vindr_det"]
    metrics, counts = sweep.metrics[cell.key], images_per_finding(sweep.vindr_root)
    assert [label for _, label in table] == [*VINDR_FINDINGS, "Total"]
    for index, finding in enumerate(VINDR_FINDINGS):
        row = table[("", finding)]
        header = next(name for name in row if name.endswith("none"))
        assert row[header] == percent(metrics[f"final_ap40_class{index}"]), finding
        assert [row["counts · train"], row["counts · test"]] == [str(counts["train"][index]), str(counts["val"][index])]
    total = table[("", "Total")]
    assert total["counts · train"] == str(sum(counts["train"])) and total["counts · test"] == str(sum(counts["val"]))
    assert sum(counts["train"]) > 0 and sum(counts["val"]) > 0
    text = (sweep.report_dir / files["md"]).read_text(encoding="utf-8")
    assert f"counted from {sweep.vindr_root / 'train.csv'}" in text  # the root's own file, not the shipped copy
