"""The detection task (sna_core.tasks.detection): trial-config validation, errors that survive
Ray's pickling, and real training on the 3 real PASCAL VOC images of Debian's labelme-examples —
read through the coco2017 and voc2012 loaders in their real layouts — including a detection cell
planned from a YAML file by the orchestrator and run through the trainable's worker loop."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from sna_core.metrics import average_precision_at_iou, coco_evaluate, detection_entry
from sna_core.tasks import (
    DetectionTask,
    NonFiniteLossError,
    TrialConfigError,
    build_task,
    seed_everything,
    validate_config,
)

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

LABELME = Path("/usr/share/doc/labelme-examples/examples")
LABELME_VOC = LABELME / "bbox_detection" / "data_dataset_voc"
LABELME_SEGMENTATION = LABELME / "instance_segmentation" / "data_dataset_voc"
LABELME_COCO = LABELME / "instance_segmentation" / "data_dataset_coco"
needs_labelme = pytest.mark.skipif(
    not LABELME_VOC.is_dir() or not LABELME_COCO.is_dir(),
    reason="Debian package labelme-examples not installed (apt-get install labelme-examples)",
)
IMAGE_SIZE = 128  # shorter side: a ResNet-50-FPN step takes seconds on one CPU thread
# Fewer proposals and sampled RoIs: the two-layer box head (12544 → 1024 per RoI) costs more than
# the backbone at this size; these cut a Mask R-CNN step and an evaluation 5-10 fold.
FEW_ROIS = {"rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100,
            "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 64, "box_detections_per_img": 20}
BOX_KEYS = {f"bbox_{stat}" for stat in ("ap", "ap50", "ap75", "aps", "apm", "apl")}
MASK_KEYS = {key.replace("bbox_", "segm_") for key in BOX_KEYS}


def detection_config(dataset: str = "voc2012", detector: str | None = "faster_rcnn", **train: object) -> dict:
    model = {"backbone": "resnet50"} if detector is None else {"backbone": "resnet50", "detector": detector}
    return {"dataset": {"name": dataset}, "model": model, "train": train}


# -- trial config --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("config", "key", "message"),
    [
        (detection_config(detector=None), "model.detector", "is required for task 'detection' .*faster_rcnn, mask_rcnn"),
        (detection_config(detector="faster_rcn"), "model.detector", "unknown value 'faster_rcn'. Did you mean 'faster_rcnn'"),
        (detection_config(metric="segm_ap"), "train.metric", "'segm_ap' needs a detector that predicts masks"),
        (detection_config(metric="loss"), "train.metric", "unknown value 'loss'.*bbox_ap, bbox_ap50"),
        ({"dataset": {"name": "digits"}, "model": {"backbone": "resnet18", "detector": "faster_rcnn"}}, "model.detector",
         "only applies to task 'detection', not 'classification'"),
        ({"dataset": {"name": "digits"}, "model": {"backbone": "resnet18", "detector_kwargs": {"fpn": False}}},
         "model.detector_kwargs", "only applies to task 'detection'"),
        ({"dataset": {"name": "voc2012"}, "model": {"backbone": "resnet18", "detector": "faster_rcnn", "detector_kwargs": {"fnp": False}}},
         "model.detector_kwargs", "takes no option 'fnp'. Did you mean 'fpn'"),
        ({"dataset": {"name": "voc2012"}, "model": {"backbone": "resnet18", "detector": "faster_rcnn", "detector_kwargs": [1]}},
         "model.detector_kwargs", "must be a mapping"),
    ],
)
def test_bad_detection_configs_name_the_key(config: dict, key: str, message: str) -> None:
    with pytest.raises(TrialConfigError, match=message) as caught:
        validate_config(config)
    assert caught.value.key == key and key in str(caught.value)


@pytest.mark.parametrize(
    ("dataset", "detector", "metric"),
    [("voc2012", "faster_rcnn", "bbox_ap"), ("coco2017", "mask_rcnn", "bbox_ap"),
     ({"name": "vindr_cxr", "task": "detection"}, "faster_rcnn", "ap40")],  # Table 4 reports AP at IoU > 0.4
)
def test_detection_defaults(dataset: object, detector: str, metric: str) -> None:
    config = detection_config(detector=detector)
    config["dataset"] = dataset if isinstance(dataset, dict) else {"name": dataset}
    task = build_task(config)
    assert isinstance(task, DetectionTask)
    assert (task.metric, task.mode, task.detector) == (metric, "max", detector)
    assert task.in_channels == 3  # detection datasets repeat grey radiographs on 3 channels
    assert task.predicts_masks == (detector == "mask_rcnn")
    if detector == "mask_rcnn":
        assert validate_config(detection_config("coco2017", "mask_rcnn", metric="segm_ap"))["train"]["metric"] == "segm_ap"


def test_the_detector_follows_the_config() -> None:
    """Resize step at the dataset's size, the dataset's normalisation (none for VinDr-CXR), and
    model.detector_kwargs winning over both."""
    voc = build_task({"dataset": {"name": "voc2012", "image_size": 96}, "model": {"backbone": "resnet18", "detector": "faster_rcnn"}})
    transform = voc.build_model().transform
    assert (transform.min_size, transform.max_size) == ((96,), 160)  # 96 · 1333/800, torchvision's ratio
    assert transform.image_mean == [0.485, 0.456, 0.406]
    vindr = build_task({
        "dataset": {"name": "vindr_cxr", "task": "detection", "image_size": 96},
        "model": {"backbone": "resnet18", "detector": "faster_rcnn", "detector_kwargs": {"fpn": False, "min_size": 64}},
    })
    model = vindr.build_model()
    assert (model.transform.image_mean, model.transform.image_std) == ([0.0] * 3, [1.0] * 3)
    assert model.transform.min_size == (64,) and model.backbone.featmap_names == ["0"]


def test_other_tasks_keep_their_model_keys() -> None:
    # No "detector" key outside detection: classification trial keys (hashes of the config) stay as they were.
    model = validate_config({"dataset": {"name": "digits"}, "model": {"backbone": "resnet18"}})["model"]
    assert set(model) == {"backbone", "stem", "attention", "placement", "attention_kwargs", "stages"}


@pytest.mark.parametrize(
    "error",
    [TrialConfigError("model.detector", "is required"), NonFiniteLossError(float("nan"), 3)],
    ids=["TrialConfigError", "NonFiniteLossError"],
)
def test_errors_survive_pickling(error: Exception) -> None:
    """Ray ships a worker's exception to the driver by pickling it."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert vars(copy).keys() == vars(error).keys()
    assert all(repr(getattr(copy, name)) == repr(getattr(error, name)) for name in vars(error))


def test_the_plan_estimate_counts_detectors_reproducibly() -> None:
    """orchestrator.estimate counts a detector at its test-time limits (1000 proposals, 100
    detections), so blocks that add (almost) no FLOPs give (almost) the same count."""
    from orchestrator.estimate import ModelSignature, count_forward_flops

    def flops(attention: str) -> int:
        rank_k = 1 if attention == "sna" else None
        return count_forward_flops(ModelSignature("resnet18", "imagenet", attention, "stem", rank_k, "faster_rcnn", 64, 14, 1))

    plain, sna = flops("none"), flops("sna")
    assert plain > 27.8e9  # the two-layer box head alone: 1000 RoIs × 2 × (12544·1024 + 1024²)
    assert plain < sna < plain * 1.001  # SNA's own products, nothing else


def test_a_nan_loss_stops_before_the_update() -> None:
    """Like every task: NonFiniteLossError at the first non-finite loss (the sum of the detector's
    loss dict), with the weights as they were."""
    task = build_task({
        "dataset": {"name": "voc2012", "image_size": 64},
        "model": {"backbone": "resnet18", "detector": "faster_rcnn", "detector_kwargs": {"fpn": False, **FEW_ROIS}},
        "train": {"batch_size": 2},
    })
    seed_everything(0)
    model = task.build_model()
    target = {"boxes": torch.tensor([[4.0, 4.0, 40.0, 50.0]]), "labels": torch.tensor([3]), "image_id": 1,
              "area": torch.tensor([1656.0]), "iscrowd": torch.zeros(1, dtype=torch.int64)}
    batch = [(torch.full((3, 64, 64), float("nan")), target), (torch.rand(3, 64, 80), {**target, "image_id": 2})]
    optimizer, _ = task.build_optimizer(model)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    with pytest.raises(NonFiniteLossError, match="non-finite training loss nan at step 0"):
        task.train_one_epoch(model, task.build_loader(batch, train=True), optimizer, "cpu")
    assert all(torch.equal(value, before[name]) for name, value in model.named_parameters())


# -- real data: the labelme-examples images in the real COCO and VOC layouts ----------------------

def link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)


def assemble_voc(root: Path) -> Path:
    """ROOT/VOCdevkit/VOC2012 with JPEGImages, Annotations (labelme's VOC XML), the instance and
    class PNGs as SegmentationObject / SegmentationClass, and every image in both splits of
    ImageSets/Main and ImageSets/Segmentation (3 images: train = val)."""
    devkit = root / "VOCdevkit" / "VOC2012"
    ids = sorted(path.stem for path in (LABELME_VOC / "JPEGImages").glob("*.jpg"))
    for image_id in ids:
        link(LABELME_VOC / "JPEGImages" / f"{image_id}.jpg", devkit / "JPEGImages" / f"{image_id}.jpg")
        link(LABELME_VOC / "Annotations" / f"{image_id}.xml", devkit / "Annotations" / f"{image_id}.xml")
        link(LABELME_SEGMENTATION / "SegmentationObjectPNG" / f"{image_id}.png", devkit / "SegmentationObject" / f"{image_id}.png")
        link(LABELME_SEGMENTATION / "SegmentationClassPNG" / f"{image_id}.png", devkit / "SegmentationClass" / f"{image_id}.png")
    for image_set in ("Main", "Segmentation"):
        (devkit / "ImageSets" / image_set).mkdir(parents=True)
        for split in ("train", "val"):
            (devkit / "ImageSets" / image_set / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def assemble_voc_segmentation(root: Path) -> Path:
    """A VOCdevkit for Mask R-CNN from labelme's instance-segmentation export: its SegmentationObject
    and SegmentationClass PNGs, and Annotations XML written from the same export's COCO file (its
    objects in instance order: index k of the PNG is the k-th <object>, as in VOC). Only the images
    whose PNG numbers its instances 1..N are listed: in 2011_000006 an '__ignore__' shape took index
    6 and the sofa is index 7."""
    from PIL import Image

    coco = json.loads((LABELME_COCO / "annotations.json").read_text())
    names = {category["id"]: category["name"] for category in coco["categories"]}
    devkit = root / "VOCdevkit" / "VOC2012"
    ids = []
    for image in coco["images"]:
        image_id = Path(image["file_name"]).stem
        objects = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        png = LABELME_SEGMENTATION / "SegmentationObjectPNG" / f"{image_id}.png"
        indices = set(Image.open(png).getdata()) - {0, 255}
        if indices != set(range(1, len(objects) + 1)):
            continue
        ids.append(image_id)
        link(LABELME_SEGMENTATION / "JPEGImages" / f"{image_id}.jpg", devkit / "JPEGImages" / f"{image_id}.jpg")
        link(png, devkit / "SegmentationObject" / f"{image_id}.png")
        link(LABELME_SEGMENTATION / "SegmentationClassPNG" / f"{image_id}.png", devkit / "SegmentationClass" / f"{image_id}.png")
        xml = "".join(
            f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox><xmin>{a['bbox'][0]}</xmin>"
            f"<ymin>{a['bbox'][1]}</ymin><xmax>{a['bbox'][0] + a['bbox'][2]}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]}</ymax></bndbox></object>"
            for a in objects
        )
        size = f"<size><width>{image['width']}</width><height>{image['height']}</height><depth>3</depth></size>"
        (devkit / "Annotations").mkdir(parents=True, exist_ok=True)
        (devkit / "Annotations" / f"{image_id}.xml").write_text(f"<annotation><filename>{image_id}.jpg</filename>{size}{xml}</annotation>")
    assert len(ids) == 2, ids
    for image_set in ("Main", "Segmentation"):
        (devkit / "ImageSets" / image_set).mkdir(parents=True)
        for split in ("train", "val"):
            (devkit / "ImageSets" / image_set / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def assemble_coco(root: Path) -> Path:
    """ROOT/annotations/instances_{train,val}2017.json + ROOT/{train,val}2017/*.jpg from labelme's
    COCO export (file names made bare as in COCO; labelme's '_background_' category dropped: COCO
    lists object categories only)."""
    annotations = json.loads((LABELME_COCO / "annotations.json").read_text())
    annotations["categories"] = [c for c in annotations["categories"] if c["name"] != "_background_"]
    for image in annotations["images"]:
        source = LABELME_COCO / image["file_name"]
        image["file_name"] = source.name
        for split in ("train", "val"):
            link(source, root / f"{split}2017" / source.name)
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(annotations))
    return root


def check_ap_metrics(metrics: dict[str, float], keys: set[str], num_classes: int, images: int = 3) -> None:
    """COCO AP keys present, each in [0, 1] or -1 (pycocotools: no ground truth in that range)."""
    assert keys | {"ap40", "ap40_pooled", "num_images"} <= set(metrics)
    assert {key for key in metrics if key.startswith("ap40_class")} == {f"ap40_class{i}" for i in range(num_classes)}
    for key, value in metrics.items():
        if key != "num_images":
            assert value == -1.0 or 0.0 <= value <= 1.0, (key, value)
    assert metrics["num_images"] == images


@needs_labelme
@pytest.mark.parametrize(("dataset", "assemble", "images"), [("coco2017", assemble_coco, 3), ("voc2012", assemble_voc_segmentation, 2)])
def test_mask_rcnn_trains_and_evaluates_on_real_data(tmp_path: Path, dataset: str, assemble, images: int) -> None:
    """Mask R-CNN, ResNet-50-FPN from scratch with SNA, on the real images: COCO layout (masks from
    the polygons) and VOCdevkit layout (masks from the SegmentationObject PNGs), as Table 3."""
    from sna_core.data import build_dataset

    root = assemble(tmp_path / dataset)
    num_classes = build_dataset(dataset, str(root), "val", task="detection", image_size=IMAGE_SIZE).num_classes
    config = {
        "dataset": {"name": dataset, "root": str(root), "image_size": IMAGE_SIZE, "num_classes": num_classes},
        "model": {"backbone": "resnet50", "detector": "mask_rcnn", "attention": "sna", "placement": "stem", "detector_kwargs": FEW_ROIS},
        "train": {"batch_size": 2, "optimizer": "sgd", "lr": 0.002, "limit_train_batches": 1},
    }
    task = build_task(config)
    seed_everything(task.seed)
    model = task.build_model()
    train_set, val_set = task.build_datasets()
    assert "masks" in train_set[0][1]  # built with masks=True because the detector predicts masks
    optimizer, _ = task.build_optimizer(model)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    train = task.train_one_epoch(model, task.build_loader(train_set, train=True), optimizer, "cpu")
    assert math.isfinite(train["loss"]) and train["steps"] == 1.0
    assert train["loss"] == pytest.approx(sum(train[k] for k in ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")))
    changed = [name for name, value in model.named_parameters() if not torch.equal(value, before[name])]
    assert any(name.startswith("backbone.body.layer1") for name in changed)
    assert any(name.startswith("roi_heads.mask_predictor") for name in changed)
    metrics = task.evaluate(model, task.build_loader(val_set, train=False), "cpu")
    check_ap_metrics(metrics, BOX_KEYS | MASK_KEYS, num_classes, images)
    # The val targets themselves, as detections, score 1: boxes, labels, masks and image ids of the
    # items and of coco_ground_truth() agree.
    truth = [val_set[index][1] for index in range(len(val_set))]
    perfect = [
        detection_entry(t["image_id"], {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
                                        "masks": t["masks"][:, None].float()}, masks=True)
        for t in truth
    ]
    assert sum(len(t["labels"]) for t in truth) == len(val_set.coco_ground_truth().anns)
    scores = coco_evaluate(val_set.coco_ground_truth(), perfect, ("bbox", "segm"))
    assert scores["bbox_ap"] == pytest.approx(1.0) and scores["segm_ap"] == pytest.approx(1.0)
    assert average_precision_at_iou(val_set.coco_ground_truth(), perfect).mean == pytest.approx(1.0)


def assemble_vindr(root: Path) -> Path:
    """A Kaggle-layout VinDr-CXR root from real annotation rows (the real train.csv shipped by
    torchxrayvision): two images with findings per split and a 'No finding' image in val, each
    read from the real chest radiograph of pydicom-data. The real images are larger than that
    one, so each image's coordinates are scaled by one factor that fits its boxes inside it."""
    import csv
    import gzip

    pydicom_data = pytest.importorskip("pydicom.data", reason="pydicom / pydicom-data not installed (pip install pydicom pydicom-data)")
    xrv = pytest.importorskip("torchxrayvision", reason="torchxrayvision not installed (pip install --no-deps torchxrayvision)")
    from sna_core.data.vindr_cxr import split_of

    radiograph = pydicom_data.get_testdata_file("RG1_UNCR.dcm")
    rows_by_image: dict[str, list[dict[str, str]]] = {}
    with gzip.open(Path(xrv.__file__).parent / "data" / "vinbigdata-train.csv.gz", "rt") as handle:
        for row in csv.DictReader(handle):
            rows_by_image.setdefault(row["image_id"], []).append(row)
    wanted = {("train", True): 2, ("val", True): 2, ("val", False): 1}
    chosen = []
    for image_id in sorted(rows_by_image):
        kind = (split_of(image_id), any(row["class_id"] != "14" for row in rows_by_image[image_id]))
        if wanted.get(kind, 0) > 0:
            wanted[kind] -= 1
            chosen.append(image_id)
    height, width = pytest.importorskip("pydicom").dcmread(radiograph).pixel_array.shape
    (root / "train").mkdir(parents=True)
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows_by_image[chosen[0]][0]))
        writer.writeheader()
        for image_id in chosen:
            rows = rows_by_image[image_id]
            boxed = [row for row in rows if row["x_max"]]
            scale = min([width / float(row["x_max"]) for row in boxed] + [height / float(row["y_max"]) for row in boxed] + [1.0])
            for row in rows:
                writer.writerow({**row, **{key: f"{float(row[key]) * scale:.1f}" for key in ("x_min", "y_min", "x_max", "y_max") if row[key]}})
            shutil.copyfile(radiograph, root / "train" / f"{image_id}.dicom")
    return root


def test_faster_rcnn_on_vindr_cxr_rows_with_the_table4_metric(tmp_path: Path) -> None:
    """Table 4's cell: Faster R-CNN, ResNet-18, SNA at the stem and in the blocks, 14 findings,
    AP at IoU > 0.4 per finding and in total; here on real annotation rows."""
    root = assemble_vindr(tmp_path / "vindr")
    task = build_task({
        "dataset": {"name": "vindr_cxr", "task": "detection", "root": str(root), "image_size": 96},
        "model": {"backbone": "resnet18", "detector": "faster_rcnn", "attention": "sna", "placement": "stem+blocks",
                  "detector_kwargs": FEW_ROIS},
        "train": {"batch_size": 2, "lr": 0.002, "optimizer": "sgd"},
    })
    assert task.metric == "ap40"
    seed_everything(task.seed)
    model = task.build_model()
    train_set, val_set = task.build_datasets()
    assert (len(train_set), len(val_set)) == (2, 3)
    assert tuple(train_set[0][0].shape) == (3, 96, 96)
    optimizer, _ = task.build_optimizer(model)
    train = task.train_one_epoch(model, task.build_loader(train_set, train=True), optimizer, "cpu")
    assert math.isfinite(train["loss"])
    metrics = task.evaluate(model, task.build_loader(val_set, train=False), "cpu")
    assert {f"ap40_class{i}" for i in range(14)} <= set(metrics) and metrics["num_images"] == 3
    boxed = {label - 1 for _, target in val_set for label in target["labels"].tolist()}
    assert boxed and all(0.0 <= metrics[f"ap40_class{i}"] <= 1.0 for i in boxed)
    assert all(metrics[f"ap40_class{i}"] == -1.0 for i in set(range(14)) - boxed)  # no box of that finding in val
    assert 0.0 <= metrics["ap40"] <= 1.0


# -- a detection cell through the orchestrator's path ---------------------------------------------

def write_detection_experiment(directory: Path, voc_root: Path) -> Path:
    """Table 3's VOC cell in miniature: Faster R-CNN, ResNet-50-FPN, SNA at the stem."""
    document = {
        "name": "detection-smoke",
        "matrix": {"dataset": ["voc2012"], "backbone": ["resnet50"], "detector": ["faster_rcnn"],
                   "attention": ["sna"], "placement": ["stem"], "seed": [0]},
        "datasets": {"voc2012": {"root": str(voc_root), "image_size": IMAGE_SIZE}},
        "train": {"epochs": 1, "batch_size": 2, "optimizer": "sgd", "lr": 0.002, "momentum": 0.9,
                  "weight_decay": 1.0e-4, "limit_train_batches": 1, "loader_workers": 0},
        "tracking": {"uri": f"sqlite:///{directory / 'mlflow.db'}"},
        "storage": str(directory / "results"),
    }
    path = directory / "detection.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_worker_loop(cell, storage: Path) -> tuple[list[dict[str, float]], dict[str, float], dict[str, torch.Tensor]]:
    """orchestrator.trainable's worker loop (``_fit``) for one rank without Ray (it needs Ray
    Train's context): the same Task API calls in the same order, with the trainable's own helpers
    for finiteness, SNA statistics, best metric and summary; the checkpoint written as it is."""
    from orchestrator.trainable import (
        CHECKPOINT_FILE,
        TrialSpec,
        _add_sna_stats,
        _best,
        _check_finite,
        _reset_sna_stats,
        _rng_states,
        _summary,
    )

    spec = TrialSpec(key=cell.key, run_id="no-mlflow-here", config=json.loads(json.dumps(cell.config)),
                     tracking_uri="", storage_path=str(storage))
    task = build_task(spec.config)
    seed_everything(task.seed)
    model = task.build_model()
    initial = {name: value.detach().clone() for name, value in model.named_parameters()}
    optimizer, scheduler = task.build_optimizer(model)
    train_set, val_set = task.build_datasets()
    train_loader = task.build_loader(train_set, train=True, sampler=None)
    val_loader = task.build_loader(val_set, train=False, sampler=None)
    history: list[dict[str, float]] = []
    sna_totals = {"iterations": 0.0, "calls": 0, "max": 0}
    for epoch in range(task.epochs):
        task.set_epoch(train_loader, epoch)
        _reset_sna_stats(model)
        train_metrics = task.train_one_epoch(model, train_loader, optimizer, "cpu")
        _check_finite(train_metrics, epoch)
        if scheduler is not None:
            scheduler.step()
        val_metrics = task.evaluate(model, val_loader, "cpu")
        _add_sna_stats(model, sna_totals)
        history.append({**{f"train_{k}": float(v) for k, v in train_metrics.items()}, **{k: float(v) for k, v in val_metrics.items()}})
        assert _best(history, task.metric, task.mode) is not None
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                    "history": history, "sna": sna_totals, "rng": _rng_states()}, storage / CHECKPOINT_FILE)
    summary = _summary(spec, task, model, history, sna_totals, startup_s=0.0)
    changed = {name for name, value in model.named_parameters() if not torch.equal(value, initial[name])}
    return history, summary, changed


@needs_labelme
def test_a_detection_cell_runs_through_the_orchestrator_path(tmp_path: Path) -> None:
    from orchestrator.config import load_experiment
    from orchestrator.plan import expand

    path = write_detection_experiment(tmp_path, assemble_voc(tmp_path / "voc"))
    cells = expand(load_experiment(path))
    assert len(cells) == 1
    cell = cells[0]
    assert (cell.task, cell.detector) == ("detection", "faster_rcnn")
    assert cell.config["model"]["detector"] == "faster_rcnn" and cell.config["train"]["metric"] == "bbox_ap"
    (tmp_path / "trial").mkdir()
    history, summary, changed = run_worker_loop(cell, tmp_path / "trial")

    (epoch,) = history
    assert math.isfinite(epoch["train_loss"]) and epoch["train_steps"] == 1.0
    check_ap_metrics({k: v for k, v in epoch.items() if not k.startswith("train_")}, BOX_KEYS, 20)
    assert any(name.startswith("backbone.body.layer1") for name in changed)  # the step reached the backbone
    assert summary["best_bbox_ap"] == epoch["bbox_ap"] and summary["final_bbox_ap"] == epoch["bbox_ap"]
    assert summary["sna_iterations_mean"] >= 1  # SNA ran inside the detector's backbone
    assert summary["params"] > 40e6 and summary["flops"] > 0  # Faster R-CNN R50-FPN: 41.3 M parameters
    assert (tmp_path / "trial" / "trial_state.pt").is_file()
