"""COCO2017 and VOC2012 loaders: fixtures written in the exact on-disk formats (instances json +
jpgs; a VOCdevkit tree with XML annotations and palette SegmentationObject PNGs), the real PASCAL
VOC images and annotations of Debian's labelme-examples, the shared detection helpers, and the
errors for malformed roots."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from PIL import Image

from sna_core.data import DatasetRootError, build_dataset, check_root, detection_collate
from sna_core.data.detection import flip_coin, hflip, shorter_side_size
from sna_core.data.voc import VOC_CLASSES

LABELME = "/usr/share/doc/labelme-examples/examples"
LABELME_COCO = f"{LABELME}/instance_segmentation/data_dataset_coco"
LABELME_INSTANCES = f"{LABELME}/instance_segmentation/data_dataset_voc"
LABELME_BOXES = f"{LABELME}/bbox_detection/data_dataset_voc"
needs_labelme = pytest.mark.skipif(
    not os.path.isdir(LABELME_COCO), reason=f"Debian package labelme-examples not installed ({LABELME})"
)


def perfect_detection_ap(ground_truth, iou_type: str) -> list[float]:
    """COCO AP, AP50, AP75 of detections that copy the ground truth (1.0 when it is consistent)."""
    from pycocotools.cocoeval import COCOeval

    detections = [
        {key: annotation[key] for key in ("image_id", "category_id", "bbox", "segmentation") if key in annotation} | {"score": 1.0}
        for annotation in ground_truth.anns.values()
        if not annotation["iscrowd"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [round(float(value), 6) for value in evaluation.stats[:3]]


# -- coco2017 fixture ----------------------------------------------------------------------------

COCO_IMAGES = [  # id, file, width, height
    (42, "000000000042.jpg", 40, 30),
    (7, "000000000007.jpg", 20, 20),
    (1000, "000000001000.jpg", 24, 16),
]


def _rectangle(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def write_coco(root, split: str = "val", **overrides) -> dict:
    """A COCO 2017 instances file + jpgs: categories with gaps (ids 90, 1, 3, listed unsorted), a
    polygon object, a crowd region (uncompressed RLE), a zero-width box and an image without objects."""
    crowd_mask = np.zeros((30, 40), dtype=np.uint8)
    crowd_mask[20:30, 0:10] = 1
    counts, previous, run = [], 0, 0  # column-major run lengths starting with zeros
    for value in crowd_mask.flatten(order="F"):
        if value != previous:
            counts.append(run)
            previous, run = value, 0
        run += 1
    counts.append(run)
    data = {
        "info": {"description": "fixture"},
        "licenses": [],
        "images": [{"id": i, "file_name": name, "width": w, "height": h} for i, name, w, h in COCO_IMAGES],
        "categories": [
            {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 3, "bbox": [4.0, 6.0, 16.0, 10.0], "area": 160.0, "iscrowd": 0,
             "segmentation": _rectangle(4, 6, 20, 16)},
            {"id": 2, "image_id": 42, "category_id": 1, "bbox": [0.0, 20.0, 10.0, 10.0], "area": 100.0, "iscrowd": 1,
             "segmentation": {"size": [30, 40], "counts": counts}},
            {"id": 3, "image_id": 42, "category_id": 90, "bbox": [30.0, 2.0, 0.0, 5.0], "area": 0.0, "iscrowd": 0,
             "segmentation": _rectangle(30, 2, 30, 7)},
            {"id": 4, "image_id": 1000, "category_id": 90, "bbox": [2.0, 2.0, 8.0, 12.0], "area": 96.0, "iscrowd": 0,
             "segmentation": _rectangle(2, 2, 10, 14)},
        ],
    } | overrides
    folder = root / ("val2017" if split == "val" else "train2017")
    folder.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{folder.name}.json").write_text(json.dumps(data))
    rng = np.random.default_rng(0)
    for _, name, w, h in COCO_IMAGES:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name, quality=95)
    return data


@pytest.fixture()
def coco_root(tmp_path):
    for split in ("train", "val"):
        write_coco(tmp_path, split)
    return tmp_path


def test_coco_fixture_boxes_labels_and_crowd(coco_root):
    dataset = build_dataset("coco2017", str(coco_root), "val")
    assert len(dataset) == 3 and dataset.image_ids == [42, 7, 1000]  # the json's order
    assert dataset.class_names == ("person", "car", "toothbrush") and dataset.num_classes == 3
    assert dataset.category_id_to_label == {1: 1, 3: 2, 90: 3}
    image, target = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32 and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    # Only the car: the crowd region is not a training object, the zero-width box is dropped.
    assert target["boxes"].tolist() == [[4.0, 6.0, 20.0, 16.0]] and target["labels"].tolist() == [2]
    assert target["image_id"] == 42 and target["iscrowd"].tolist() == [0] and target["area"].tolist() == [160.0]
    empty = dataset[1][1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == torch.int64
    with_crowd = build_dataset("coco2017", str(coco_root), "val", include_crowd=True)[0][1]
    assert with_crowd["labels"].tolist() == [2, 1] and with_crowd["iscrowd"].tolist() == [0, 1]


def test_coco_fixture_masks_resize_and_ground_truth(coco_root):
    dataset = build_dataset("coco2017", str(coco_root), "val", masks=True, image_size=15)
    image, target = dataset[0]
    assert shorter_side_size(30, 40, 15) == (15, 20) and image.shape == (3, 15, 20)
    assert torch.allclose(target["boxes"], torch.tensor([[2.0, 3.0, 10.0, 8.0]]))  # scaled by 0.5
    assert target["masks"].shape == (1, 15, 20) and target["masks"].dtype == torch.uint8
    rows, cols = torch.nonzero(target["masks"][0], as_tuple=True)
    assert (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1) == (2, 3, 10, 8)
    assert target["area"].tolist() == [float(target["masks"][0].sum())]

    truth = dataset.coco_ground_truth()
    assert sorted(truth.getImgIds()) == [7, 42, 1000]
    assert truth.imgs[42]["width"] == 20 and truth.imgs[42]["height"] == 15
    annotations = truth.loadAnns(truth.getAnnIds(imgIds=[42]))
    assert [(a["category_id"], a["iscrowd"]) for a in annotations] == [(2, 0), (1, 1)]
    assert annotations[1]["bbox"] == [0.0, 10.0, 5.0, 5.0] and "segmentation" in annotations[1]
    assert [c["id"] for c in truth.loadCats(truth.getCatIds())] == [1, 2, 3]
    assert perfect_detection_ap(truth, "bbox") == [1.0, 1.0, 1.0]
    assert perfect_detection_ap(truth, "segm") == [1.0, 1.0, 1.0]
    assert dataset.coco_ground_truth() is truth  # built once


def test_coco_train_split_flips_reproducibly_and_collates(coco_root):
    dataset = build_dataset("coco2017", str(coco_root), "train", masks=True)
    plain = build_dataset("coco2017", str(coco_root), "train", masks=True, train_transforms=False)
    flipped_epoch = next(epoch for epoch in range(20) if flip_coin(0, epoch, 0))
    kept_epoch = next(epoch for epoch in range(20) if not flip_coin(0, epoch, 0))
    original_image, original = plain[0]
    dataset.set_epoch(kept_epoch)
    assert torch.equal(dataset[0][0], original_image)
    dataset.set_epoch(flipped_epoch)
    image, target = dataset[0]
    assert torch.equal(image, original_image.flip(-1))
    assert target["boxes"].tolist() == [[40.0 - 20.0, 6.0, 40.0 - 4.0, 16.0]]
    assert torch.equal(target["masks"], original["masks"].flip(-1))
    assert torch.equal(dataset[0][0], image)  # same epoch, same coin
    assert not build_dataset("coco2017", str(coco_root), "val").flip  # never on val

    images, targets = detection_collate([dataset[0], dataset[1], dataset[2]])
    assert [tuple(i.shape) for i in images] == [(3, 30, 40), (3, 20, 20), (3, 16, 24)]
    assert [t["image_id"] for t in targets] == [42, 7, 1000]


def test_hflip_mirrors_boxes_within_the_image():
    image = torch.arange(12.0).reshape(1, 3, 4)
    target = {"boxes": torch.tensor([[0.0, 0.0, 1.0, 3.0], [1.0, 1.0, 4.0, 2.0]]), "masks": torch.zeros(2, 3, 4, dtype=torch.uint8)}
    target["masks"][0, :, 0] = 1
    flipped, out = hflip(image, target)
    assert out["boxes"].tolist() == [[3.0, 0.0, 4.0, 3.0], [0.0, 1.0, 3.0, 2.0]]
    assert out["masks"][0, :, 3].tolist() == [1, 1, 1] and flipped[0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert target["boxes"][0].tolist() == [0.0, 0.0, 1.0, 3.0]  # the input is not modified


def test_coco_limit_takes_the_first_images(coco_root):
    dataset = build_dataset("coco2017", str(coco_root), "val", limit=2)
    assert dataset.image_ids == [42, 7]
    assert len(dataset.coco_ground_truth().anns) == 2  # image 1000's object is not in this split


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "annotations" / "instances_val2017.json").write_text("{not json"), "instances_val2017.json is not valid json"),
        (lambda root: (root / "annotations" / "instances_val2017.json").write_text('{"images": []}'), "has no list 'annotations'"),
        (lambda root: write_coco(root, images=[{"id": 1, "file_name": "a.jpg", "width": 4}]), "image 1 lacks height"),
        (lambda root: write_coco(root, categories=[{"id": 1, "name": "person"}]), "annotation 1 has category_id 3, not among the categories"),
        (lambda root: (root / "val2017" / "000000000007.jpg").unlink(), "1 of 3 image files are missing: val2017/000000000007.jpg"),
        (lambda root: (root / "annotations" / "instances_val2017.json").unlink(), "missing annotations/instances_val2017.json"),
    ],
)
def test_coco_malformed_roots_name_the_file(coco_root, damage, message):
    damage(coco_root)
    with pytest.raises(DatasetRootError, match=message) as caught:
        build_dataset("coco2017", str(coco_root), "val")
    assert "cocodataset.org" in str(caught.value)


def test_coco_broken_image_is_reported_when_read(coco_root):
    (coco_root / "val2017" / "000000000007.jpg").write_bytes(b"not a jpeg")
    dataset = build_dataset("coco2017", str(coco_root), "val")
    with pytest.raises(DatasetRootError, match="cannot decode image .*000000000007.jpg"):
        dataset[1]


# -- voc2012 fixture -----------------------------------------------------------------------------

def write_voc_xml(path, file_id: str, width: int, height: int, objects) -> None:
    """A VOC annotation: objects are (name, xmin, ymin, xmax, ymax, difficult), 1-based pixels."""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "folder").text = "VOC2012"
    ElementTree.SubElement(root, "filename").text = f"{file_id}.jpg"
    size = ElementTree.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ElementTree.SubElement(size, key).text = str(value)
    ElementTree.SubElement(root, "segmented").text = "1"
    for name, xmin, ymin, xmax, ymax, difficult in objects:
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = name
        ElementTree.SubElement(obj, "pose").text = "Unspecified"
        ElementTree.SubElement(obj, "truncated").text = "0"
        ElementTree.SubElement(obj, "difficult").text = str(int(difficult))
        box = ElementTree.SubElement(obj, "bndbox")
        for key, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ElementTree.SubElement(box, key).text = str(value)
    ElementTree.ElementTree(root).write(path)


def save_palette_png(path, indices: np.ndarray, palette: list[int] | None = None) -> None:
    png = Image.fromarray(indices.astype(np.uint8), mode="P")
    png.putpalette(palette or [channel for index in range(256) for channel in (index, 255 - index, (index * 7) % 256)])
    png.save(path)


VOC_OBJECTS = {  # per image: objects (1-based boxes) and the pixels of each instance (0-based slices)
    "2008_000001": [("dog", 3, 2, 10, 8, False, (slice(1, 8), slice(2, 10))), ("person", 12, 4, 20, 12, True, (slice(3, 12), slice(11, 20)))],
    "2008_000002": [("tvmonitor", 1, 1, 16, 10, False, (slice(0, 10), slice(0, 16)))],
}


@pytest.fixture()
def voc_root(tmp_path):
    year = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationObject", "SegmentationClass"):
        (year / folder).mkdir(parents=True)
    rng = np.random.default_rng(1)
    width, height = 24, 14
    for file_id, objects in VOC_OBJECTS.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(year / "JPEGImages" / f"{file_id}.jpg")
        write_voc_xml(year / "Annotations" / f"{file_id}.xml", file_id, width, height, [o[:6] for o in objects])
        instances = np.zeros((height, width), dtype=np.uint8)
        classes = np.zeros((height, width), dtype=np.uint8)
        for index, (name, *_, pixels) in enumerate(objects, start=1):
            instances[pixels] = index
            classes[pixels] = VOC_CLASSES.index(name) + 1
        border = (instances > 0) & (np.roll(instances, 1, axis=1) == 0)  # VOC's void band on the left edges
        instances[border], classes[border] = 255, 255
        save_palette_png(year / "SegmentationObject" / f"{file_id}.png", instances)
        save_palette_png(year / "SegmentationClass" / f"{file_id}.png", classes)
    for image_set in ("Main", "Segmentation"):
        (year / "ImageSets" / image_set / "val.txt").write_text("2008_000001\n2008_000002\n")
        (year / "ImageSets" / image_set / "train.txt").write_text("2008_000002\n")
    (year / "ImageSets" / "Main" / "dog_val.txt").write_text("2008_000001  1\n2008_000002 -1\n")  # per-class lists are not read
    return tmp_path


def test_voc_fixture_boxes_labels_and_difficult(voc_root):
    dataset = build_dataset("voc2012", str(voc_root), "val")
    assert len(dataset) == 2 and dataset.image_ids == [2008000001, 2008000002]
    assert dataset.num_classes == 20 and dataset.class_names[14] == "person"
    image, target = dataset[0]
    assert image.shape == (3, 14, 24)
    assert target["boxes"].tolist() == [[2.0, 1.0, 10.0, 8.0], [11.0, 3.0, 20.0, 12.0]]  # xmin/ymin − 1
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    assert target["iscrowd"].tolist() == [0, 0] and target["area"].tolist() == [56.0, 81.0]
    as_crowd = build_dataset("voc2012", str(voc_root), "val", difficult_as_crowd=True)
    assert as_crowd[0][1]["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]
    truth = as_crowd.coco_ground_truth()
    assert [a["iscrowd"] for a in truth.loadAnns(truth.getAnnIds(imgIds=[2008000001]))] == [0, 1]


def test_voc_fixture_instance_masks_follow_the_xml_order(voc_root):
    dataset = build_dataset("voc2012", str(voc_root), "val", masks=True)
    png = np.asarray(Image.open(voc_root / "VOCdevkit/VOC2012/SegmentationObject/2008_000001.png"))
    _, target = dataset[0]
    assert target["masks"].shape == (2, 14, 24)
    for index in range(2):
        assert np.array_equal(target["masks"][index].numpy(), (png == index + 1).astype(np.uint8))
    assert not target["masks"][:, png == 255].any()  # the void band belongs to no instance
    assert target["area"].tolist() == [float((png == 1).sum()), float((png == 2).sum())]
    truth = dataset.coco_ground_truth()
    assert perfect_detection_ap(truth, "segm") == [1.0, 1.0, 1.0]
    train = build_dataset("voc2012", str(voc_root), "train", masks=True, image_size=7)
    assert train.image_ids == [2008000002] and train[0][1]["masks"].shape == (1, 7, 12)


@pytest.mark.parametrize("relative", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_root_may_be_the_devkit_parent_the_devkit_or_voc2012(voc_root, relative):
    root = str(voc_root / relative) if relative else str(voc_root)
    assert check_root("voc2012", root) == root
    assert build_dataset("voc2012", root, "val").image_ids == [2008000001, 2008000002]


def test_voc_masks_read_the_segmentation_list(voc_root):
    segmentation = voc_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    segmentation.write_text("2008_000002\n")
    assert build_dataset("voc2012", str(voc_root), "val").image_ids == [2008000001, 2008000002]  # Main
    assert build_dataset("voc2012", str(voc_root), "val", masks=True).image_ids == [2008000002]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda year: (year / "Annotations" / "2008_000002.xml").write_text("<annotation><size>"), r"2008_000002.xml is not valid XML"),
        (lambda year: write_voc_xml(year / "Annotations" / "2008_000002.xml", "2008_000002", 24, 14, [("tv/monitor", 1, 1, 5, 5, False)]),
         r"unknown class 'tv/monitor'; VOC classes: aeroplane"),
        (lambda year: (year / "JPEGImages" / "2008_000002.jpg").unlink(), r"1 of 2 image files are missing: VOCdevkit/VOC2012/JPEGImages/2008_000002.jpg"),
        (lambda year: (year / "ImageSets" / "Main" / "val.txt").unlink(), r"missing the image list .*Main/val.txt"),
    ],
)
def test_voc_malformed_roots_name_the_file(voc_root, damage, message):
    damage(voc_root / "VOCdevkit" / "VOC2012")
    with pytest.raises(DatasetRootError, match=message) as caught:
        build_dataset("voc2012", str(voc_root), "val")
    assert "host.robots.ox.ac.uk" in str(caught.value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: save_palette_png(path, np.full((14, 24), 3)), r"instance indices \[3\] but its XML lists 2 objects"),
        (lambda path: Image.new("RGB", (24, 14)).save(path), r"is a RGB image, expected an indexed \(palette\) PNG"),
        (lambda path: path.unlink(), r"missing .*SegmentationObject/2008_000001.png"),
    ],
)
def test_voc_bad_segmentation_object_png_is_named(voc_root, damage, message):
    damage(voc_root / "VOCdevkit/VOC2012/SegmentationObject/2008_000001.png")
    dataset = build_dataset("voc2012", str(voc_root), "val", masks=True)
    with pytest.raises(DatasetRootError, match=message):
        dataset[0]


# -- the real PASCAL VOC images of labelme-examples ----------------------------------------------

@pytest.fixture(scope="module")
def labelme_coco(tmp_path_factory):
    """The labelme COCO export as COCO 2017 val: annotations.json as is, its file_names
    (JPEGImages/…) under val2017/."""
    root = tmp_path_factory.mktemp("labelme_coco")
    (root / "annotations").mkdir()
    shutil.copy(f"{LABELME_COCO}/annotations.json", root / "annotations" / "instances_val2017.json")
    shutil.copytree(f"{LABELME_COCO}/JPEGImages", root / "val2017" / "JPEGImages")
    (root / "train2017").mkdir()
    (root / "annotations" / "instances_train2017.json").write_text('{"images": [], "annotations": [], "categories": []}')
    with open(f"{LABELME_COCO}/annotations.json") as handle:
        return root, json.load(handle)


@needs_labelme
def test_coco_on_labelme_real_voc_images(labelme_coco):
    root, raw = labelme_coco
    dataset = build_dataset("coco2017", str(root), "val", masks=True)
    # labelme2coco writes "_background_" as category 0: skipped, so labels 1..20 = the VOC ids.
    assert dataset.num_classes == 20 and dataset.class_names[14] == "person" and len(dataset) == 3
    per_image = {image["id"]: [a for a in raw["annotations"] if a["image_id"] == image["id"]] for image in raw["images"]}
    assert sum(len(v) for v in per_image.values()) == 12
    for index, image_id in enumerate(dataset.image_ids):
        image, target = dataset[index]
        expected = per_image[image_id]
        assert image.shape[1:] == (raw["images"][index]["height"], raw["images"][index]["width"])
        assert target["labels"].tolist() == [a["category_id"] for a in expected]
        assert target["boxes"].tolist() == [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in expected)]
        # labelme measured areas on its own rasterisation; pycocotools' differs by a few pixels per edge.
        for mask, annotation in zip(target["masks"], expected):
            assert abs(float(mask.sum()) - annotation["area"]) <= 0.1 * annotation["area"]
    assert dataset.coco_ground_truth().getImgIds() == [0, 1, 2]


@needs_labelme
def test_voc_on_labelme_bbox_detection_annotations(tmp_path):
    year = tmp_path / "VOCdevkit" / "VOC2012"
    shutil.copytree(f"{LABELME_BOXES}/JPEGImages", year / "JPEGImages")
    shutil.copytree(f"{LABELME_BOXES}/Annotations", year / "Annotations")
    ids = sorted(name[:-4] for name in os.listdir(year / "Annotations"))
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids) + "\n")
    dataset = build_dataset("voc2012", str(tmp_path), "val")
    assert dataset.image_ids == [2011000003, 2011000006, 2011000025]
    targets = [dataset[index][1] for index in range(3)]
    assert [len(t["labels"]) for t in targets] == [2, 4, 3]
    person, bus, car = (VOC_CLASSES.index(name) + 1 for name in ("person", "bus", "car"))
    assert targets[2]["labels"].tolist() == [bus, bus, car] and set(targets[1]["labels"].tolist()) == {person}
    # 2011_000003's first person: xmin 191.0, ymin 107.369…, xmax 313.0, ymax 329.369… (xmin/ymin − 1).
    assert torch.allclose(targets[0]["boxes"][0], torch.tensor([190.0, 106.36900369003689, 313.0, 329.36900369003695]))
    assert targets[2]["boxes"][1].tolist() == [0.0, 98.0, 107.0, 282.0]  # xmin 1 → 0: the image's left edge


@pytest.fixture(scope="module")
def labelme_voc_instances(tmp_path_factory, labelme_coco):
    """A VOCdevkit tree of labelme's instance-segmentation export in VOC's own conventions: XML
    objects in the order of the COCO export's annotations (the order of the instance ids), and
    SegmentationObject PNGs with the void (labelme's __ignore__ shapes, 255 in its class PNGs) set
    to 255 and instance ids made consecutive (labelme leaves the id of an __ignore__ shape unused)."""
    _, raw = labelme_coco
    root = tmp_path_factory.mktemp("labelme_voc")
    year = root / "VOCdevkit" / "VOC2012"
    shutil.copytree(f"{LABELME_INSTANCES}/JPEGImages", year / "JPEGImages")
    for folder in ("Annotations", "SegmentationObject", "ImageSets/Segmentation", "ImageSets/Main"):
        (year / folder).mkdir(parents=True)
    names = {c["id"]: c["name"] for c in raw["categories"]}
    ids = []
    for image in raw["images"]:
        file_id = os.path.splitext(os.path.basename(image["file_name"]))[0]
        ids.append(file_id)
        objects = [
            (names[a["category_id"]], a["bbox"][0] + 1, a["bbox"][1] + 1, a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3], False)
            for a in raw["annotations"] if a["image_id"] == image["id"]
        ]
        write_voc_xml(year / "Annotations" / f"{file_id}.xml", file_id, image["width"], image["height"], objects)
        with Image.open(f"{LABELME_INSTANCES}/SegmentationObjectPNG/{file_id}.png") as png:
            instances, palette = np.asarray(png).copy(), png.getpalette()
        void = np.asarray(Image.open(f"{LABELME_INSTANCES}/SegmentationClassPNG/{file_id}.png")) == 255
        compact = np.zeros_like(instances)
        for new, old in enumerate(sorted(set(np.unique(instances).tolist()) - {0}), start=1):
            compact[instances == old] = new
        compact[void] = 255
        save_palette_png(year / "SegmentationObject" / f"{file_id}.png", compact, palette)
    for image_set in ("Segmentation", "Main"):
        (year / "ImageSets" / image_set / "val.txt").write_text("\n".join(ids) + "\n")
    return root, raw


@needs_labelme
def test_voc_masks_on_labelme_instances_match_the_coco_polygons(labelme_voc_instances):
    from pycocotools import mask as mask_utils

    root, raw = labelme_voc_instances
    dataset = build_dataset("voc2012", str(root), "val", masks=True)
    assert len(dataset) == 3
    for index, image in enumerate(raw["images"]):
        _, target = dataset[index]
        annotations = [a for a in raw["annotations"] if a["image_id"] == image["id"]]
        assert target["labels"].tolist() == [a["category_id"] for a in annotations]  # labelme's ids are VOC's order
        assert target["masks"].shape == (len(annotations), image["height"], image["width"])
        for mask, annotation in zip(target["masks"].numpy(), annotations):
            polygons = mask_utils.frPyObjects(annotation["segmentation"], image["height"], image["width"])
            reference = mask_utils.decode(mask_utils.merge(polygons))
            iou = (mask & reference).sum() / (mask | reference).sum()
            assert iou > 0.9, (image["file_name"], annotation["id"], iou)
    assert perfect_detection_ap(dataset.coco_ground_truth(), "segm") == [1.0, 1.0, 1.0]
