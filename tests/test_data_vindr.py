"""VinDr-CXR: box fusion on constructed readings with known answers, the deterministic split, a
Kaggle-layout fixture whose DICOMs are written with pydicom (MONOCHROME1 and 2, rescale, window),
real annotation rows of the real train.csv (shipped in torchxrayvision) on the real chest
radiograph of pydicom-data, and the errors for malformed roots."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch

from sna_core.data import DatasetRootError, build_dataset, dataset_info
from sna_core.data.vindr_cxr import (
    CLASS_NAMES,
    CSV_COLUMNS,
    VINDR_FINDINGS,
    box_iou,
    fuse_boxes,
    read_dicom,
    split_of,
)

pydicom = pytest.importorskip("pydicom", reason="VinDr-CXR reads DICOM with pydicom (pip install pydicom)")

AORTIC, NODULE, EFFUSION, NO_FINDING = 0, 8, 10, 14


# -- box fusion ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("boxes", "labels", "expected_boxes", "expected_labels"),
    [
        # Three radiologists, one nodule: one box at the mean coordinates.
        ([[10, 10, 20, 20], [11, 9, 21, 19], [12, 11, 22, 21]], [9, 9, 9], [[11, 10, 21, 20]], [9]),
        # Two nodules far apart: both kept, unchanged.
        ([[0, 0, 10, 10], [50, 50, 60, 60]], [9, 9], [[0, 0, 10, 10], [50, 50, 60, 60]], [9, 9]),
        # Same place, different findings: never merged (sorted by label).
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [11, 1], [[0, 0, 10, 10], [0, 0, 10, 10]], [1, 11]),
        # A chain (IoU(a, b) = IoU(b, c) = 0.54, IoU(a, c) = 0.25): one connected group.
        ([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], [1, 1, 1], [[3, 0, 13, 10]], [1]),
        # IoU exactly 0.4 (a box inside one 2.5× its area) is not linked; IoU 0.6 is.
        ([[0, 0, 10, 10], [0, 0, 4, 10], [30, 0, 40, 10], [32.5, 0, 42.5, 10]], [2, 2, 2, 2],
         [[0, 0, 10, 10], [0, 0, 4, 10], [31.25, 0, 41.25, 10]], [2, 2, 2]),
        # One radiologist's box that no other overlaps is kept.
        ([[0, 0, 10, 10], [1, 1, 11, 11], [40, 40, 45, 45]], [3, 3, 3], [[0.5, 0.5, 10.5, 10.5], [40, 40, 45, 45]], [3, 3]),
        ([], [], [], []),
    ],
)
def test_fuse_boxes_known_answers(boxes, labels, expected_boxes, expected_labels):
    fused, fused_labels = fuse_boxes(np.array(boxes, dtype=float).reshape(-1, 4), np.array(labels), 0.4)
    assert fused.shape == (len(expected_boxes), 4)
    assert np.allclose(fused, np.array(expected_boxes, dtype=float).reshape(-1, 4))
    assert fused_labels.tolist() == expected_labels


def test_box_iou_threshold_cases_used_above():
    boxes = np.array([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10], [0, 0, 4, 10], [30, 0, 40, 10], [32.5, 0, 42.5, 10]], dtype=float)
    iou = box_iou(boxes, boxes)
    assert iou[0, 1] == pytest.approx(70 / 130) and iou[1, 2] == pytest.approx(70 / 130) and iou[0, 2] == pytest.approx(40 / 160)
    assert iou[0, 3] == 0.4 and iou[4, 5] == pytest.approx(75 / 125)
    assert np.allclose(np.diag(iou), 1.0)


# -- split ---------------------------------------------------------------------------------------

def test_split_is_a_deterministic_hash_of_the_image_id():
    ids = [f"{index:032x}" for index in range(3000)]
    val = {image_id for image_id in ids if split_of(image_id) == "val"}
    assert 0.17 < len(val) / len(ids) < 0.23
    assert val == {image_id for image_id in ids if split_of(image_id, 0.2) == "val"}
    assert val < {image_id for image_id in ids if split_of(image_id, 0.3) == "val"}  # nested fractions
    assert split_of("869f39afbdd8783b531530942eda8bad") == "val" and split_of("0005e8e3701dfb1dd93d53e2ff537b6e") == "train"


# -- Kaggle-layout fixture -----------------------------------------------------------------------

def write_dicom(path, pixels: np.ndarray, photometric: str, **attributes) -> None:
    """An uncompressed 16-bit grey DICOM file, as a scanner or PACS export writes it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    for key, value in attributes.items():
        setattr(dataset, key, value)
    dataset.PixelData = pixels.astype("<u2").tobytes()
    dataset.save_as(str(path), enforce_file_format=True)


def write_train_csv(path, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for image_id, class_id, rad_id, box in rows:
            writer.writerow([image_id, CLASS_NAMES[class_id], class_id, rad_id, *(box or ["", "", "", ""])])


RAMP = np.arange(24, dtype=np.uint16).reshape(4, 6) * 100  # 0 … 2300
FIXTURE_ROWS = [
    # image, class_id, radiologist, box (x_min, y_min, x_max, y_max) in original pixels
    ("mono2_rescaled", NODULE, "R8", [1, 1, 3, 3]),
    ("mono2_rescaled", NODULE, "R9", [1, 1, 3, 2]),
    ("mono2_rescaled", AORTIC, "R10", [4, 0, 6, 2]),
    ("mono1", NO_FINDING, "R1", None),
    ("mono1", NO_FINDING, "R2", None),
    ("mono1", NO_FINDING, "R3", None),
    ("windowed", EFFUSION, "R2", [0, 2, 6, 4]),
    ("windowed", NO_FINDING, "R3", None),
]


@pytest.fixture()
def vindr_root(tmp_path):
    (tmp_path / "train").mkdir()
    write_dicom(tmp_path / "train" / "mono2_rescaled.dicom", RAMP, "MONOCHROME2", RescaleSlope=2, RescaleIntercept=-1024)
    write_dicom(tmp_path / "train" / "mono1.dicom", RAMP, "MONOCHROME1")
    write_dicom(tmp_path / "train" / "windowed.dicom", RAMP, "MONOCHROME2", WindowCenter=1150, WindowWidth=1001)
    write_train_csv(tmp_path / "train.csv", FIXTURE_ROWS)
    return tmp_path


# Every fixture image lands in "train" at val_fraction 0.01, and in "val" at 0.999.
ALL_TRAIN = {"val_fraction": 0.01}


def test_fixture_ids_fall_where_the_tests_expect():
    assert {split_of(name, 0.01) for name in ("mono2_rescaled", "mono1", "windowed")} == {"train"}
    assert {split_of(name, 0.999) for name in ("mono2_rescaled", "mono1", "windowed")} == {"val"}


def test_dicom_pixels_follow_photometric_rescale_and_window(vindr_root):
    ramp = RAMP.astype(np.float64)
    expected = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    assert np.allclose(read_dicom(str(vindr_root / "train" / "mono2_rescaled.dicom"), str(vindr_root)), expected, atol=1e-6)
    assert np.allclose(read_dicom(str(vindr_root / "train" / "mono1.dicom"), str(vindr_root)), 1.0 - expected, atol=1e-6)
    windowed = read_dicom(str(vindr_root / "train" / "windowed.dicom"), str(vindr_root))
    # Window [650, 1650] (centre 1150, width 1001): below is black, above is white, linear between.
    assert windowed.min() == 0.0 and windowed.max() == 1.0
    assert np.all(windowed[RAMP <= 600] == 0.0) and np.all(windowed[RAMP >= 1700] == 1.0)
    inside = (RAMP > 700) & (RAMP < 1600)
    assert np.all(np.diff(windowed[inside]) > 0)


def test_multilabel_targets_mark_any_radiologists_findings(vindr_root):
    dataset = build_dataset("vindr_cxr", str(vindr_root), "train", task="multilabel", image_size=8, **ALL_TRAIN)
    assert dataset.vindr_ids == ["mono1", "mono2_rescaled", "windowed"]  # image_id order
    assert dataset.num_classes == 15 and dataset.class_names[-1] == "No finding"
    targets = {image_id: dataset[index][1] for index, image_id in enumerate(dataset.vindr_ids)}
    assert torch.nonzero(targets["mono1"]).flatten().tolist() == [NO_FINDING]
    assert torch.nonzero(targets["mono2_rescaled"]).flatten().tolist() == [AORTIC, NODULE]
    assert torch.nonzero(targets["windowed"]).flatten().tolist() == [EFFUSION, NO_FINDING]
    image, target = dataset[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and target.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert torch.equal(image[0], image[2])  # grey repeated
    grey = build_dataset("vindr_cxr", str(vindr_root), "train", task="multilabel", image_size=8, in_channels=1, no_finding=False, **ALL_TRAIN)
    assert grey[0][0].shape == (1, 8, 8) and grey[0][1].shape == (14,) and grey.num_classes == 14


def test_detection_fuses_and_scales_boxes_to_the_square_image(vindr_root):
    dataset = build_dataset("vindr_cxr", str(vindr_root), "train", task="detection", image_size=12, **ALL_TRAIN)
    assert dataset.num_classes == 14 and dataset.class_names == VINDR_FINDINGS
    assert dataset.image_ids == [1, 2, 3]  # positions among train.csv's sorted image ids
    image, target = dataset[1]  # mono2_rescaled: 6 wide, 4 high → 12 × 12 (x × 2, y × 3)
    assert image.shape == (3, 12, 12)
    # Two nodule readings (IoU 0.5) fused to their mean (1, 1, 3, 2.5); the aortic box kept.
    assert target["labels"].tolist() == [AORTIC + 1, NODULE + 1]
    assert torch.allclose(target["boxes"], torch.tensor([[8.0, 0.0, 12.0, 6.0], [2.0, 3.0, 6.0, 7.5]]))
    assert target["area"].tolist() == [24.0, 18.0] and target["iscrowd"].tolist() == [0, 0]
    no_finding = dataset[0][1]
    assert no_finding["boxes"].shape == (0, 4) and no_finding["labels"].shape == (0,)
    unfused = build_dataset("vindr_cxr", str(vindr_root), "train", image_size=12, box_fusion="none", **ALL_TRAIN)
    assert unfused[1][1]["labels"].tolist() == [NODULE + 1, NODULE + 1, AORTIC + 1]
    truth = dataset.coco_ground_truth()
    assert truth.imgs[2]["width"] == truth.imgs[2]["height"] == 12
    assert [a["bbox"] for a in truth.loadAnns(truth.getAnnIds(imgIds=[2]))] == [[8.0, 0.0, 4.0, 6.0], [2.0, 3.0, 4.0, 4.5]]
    keep_aspect = build_dataset("vindr_cxr", str(vindr_root), "train", image_size=8, square=False, **ALL_TRAIN)
    assert keep_aspect[1][0].shape == (3, 8, 12)


def test_split_and_limit_select_images(vindr_root):
    assert len(build_dataset("vindr_cxr", str(vindr_root), "val", **ALL_TRAIN)) == 0
    assert len(build_dataset("vindr_cxr", str(vindr_root), "val", val_fraction=0.999)) == 3
    limited = build_dataset("vindr_cxr", str(vindr_root), "train", task="multilabel", limit=2, **ALL_TRAIN)
    assert limited.vindr_ids == ["mono1", "mono2_rescaled"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "train.csv").write_text("image_id,class_name,class_id,x_min,y_min,x_max,y_max\n"), r"train.csv lacks the column\(s\) rad_id"),
        (lambda root: write_train_csv(root / "train.csv", [("mono1", 3, "R1", ["", "", "", ""])]), r"train.csv line 2: finding 'Cardiomegaly' needs numeric"),
        (lambda root: (root / "train.csv").write_text(
            ",".join(CSV_COLUMNS) + "\nmono1,Nodule/Mass,3,R1,1,1,2,2\n"), r"line 2: class_name 'Nodule/Mass' does not match class_id 3 \('Cardiomegaly'\)"),
        (lambda root: (root / "train" / "windowed.dicom").unlink(), r"1 of 3 image files are missing: train/windowed.dicom"),
        (lambda root: (root / "train.csv").unlink(), r"missing train.csv"),
    ],
)
def test_malformed_roots_name_the_file(vindr_root, damage, message):
    damage(vindr_root)
    with pytest.raises(DatasetRootError, match=message) as caught:
        build_dataset("vindr_cxr", str(vindr_root), "train", task="multilabel", **ALL_TRAIN)
    assert dataset_info("vindr_cxr").source in str(caught.value)


def test_unreadable_dicom_is_named_when_read(vindr_root):
    (vindr_root / "train" / "mono1.dicom").write_bytes(b"\x00" * 64)
    dataset = build_dataset("vindr_cxr", str(vindr_root), "train", task="multilabel", **ALL_TRAIN)
    with pytest.raises(DatasetRootError, match=r"train/mono1.dicom is not a readable DICOM image"):
        dataset[0]


# -- real rows of the real train.csv on the real radiograph ---------------------------------------

def _vinbigdata_csv() -> str | None:
    spec = importlib.util.find_spec("torchxrayvision")  # located, not imported (installed --no-deps)
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "data", "vinbigdata-train.csv.gz")
    return path if os.path.exists(path) else None


def _radiograph() -> str | None:
    try:
        from pydicom.data import get_testdata_file

        return get_testdata_file("RG1_UNCR.dcm")
    except Exception:  # noqa: BLE001 - pydicom-data absent or its store unreadable
        return None


REAL_CSV, RADIOGRAPH = _vinbigdata_csv(), _radiograph()
# Two train images with several findings, one "No finding" image of the val split.
REAL_IDS = ("0005e8e3701dfb1dd93d53e2ff537b6e", "0061cf6d35e253b6e7f03940592cc35e", "869f39afbdd8783b531530942eda8bad")
# The real images are not shipped: every image here is pydicom-data's RG1_UNCR.dcm (1841 × 1955,
# MONOCHROME1). Each row's coordinates, given in its own image of unknown size (VinDr images are
# 2-3k pixels a side; these rows reach 1,976), are mapped onto RG1 as if that image were
# 2500 × 2500: x · 1841/2500, y · 1955/2500.
NOMINAL_SIDE, RG1_WIDTH, RG1_HEIGHT = 2500.0, 1841, 1955


@pytest.fixture(scope="module")
def real_vindr(tmp_path_factory):
    if REAL_CSV is None or RADIOGRAPH is None:
        pytest.skip("needs torchxrayvision (pip install --no-deps torchxrayvision: its data/vinbigdata-train.csv.gz) and pydicom-data (RG1_UNCR.dcm)")
    root = tmp_path_factory.mktemp("vindr_real")
    (root / "train").mkdir()
    with gzip.open(REAL_CSV, "rt", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["image_id"] in REAL_IDS]
    for row in rows:
        for key, scale in (("x_min", RG1_WIDTH), ("x_max", RG1_WIDTH), ("y_min", RG1_HEIGHT), ("y_max", RG1_HEIGHT)):
            if row[key]:
                row[key] = repr(float(row[key]) * scale / NOMINAL_SIDE)
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for image_id in REAL_IDS:
        shutil.copy(RADIOGRAPH, root / "train" / f"{image_id}.dicom")
    return root, rows


def test_real_rows_give_multilabel_targets(real_vindr):
    root, rows = real_vindr
    assert len(rows) == 15 and {row["rad_id"] for row in rows if row["image_id"] == REAL_IDS[0]} == {"R8", "R9", "R10"}
    train = build_dataset("vindr_cxr", str(root), "train", task="multilabel", image_size=64)
    val = build_dataset("vindr_cxr", str(root), "val", task="multilabel", image_size=64)
    assert train.vindr_ids == list(REAL_IDS[:2]) and val.vindr_ids == [REAL_IDS[2]]
    for dataset in (train, val):
        for index, image_id in enumerate(dataset.vindr_ids):
            expected = sorted({int(row["class_id"]) for row in rows if row["image_id"] == image_id})
            assert torch.nonzero(dataset[index][1]).flatten().tolist() == expected
    assert torch.nonzero(val[0][1]).flatten().tolist() == [NO_FINDING]
    # 0005e8e3…: consolidation, infiltration, lung opacity, nodule/mass.
    assert torch.nonzero(train[0][1]).flatten().tolist() == [4, 6, 7, 8]


def test_real_rows_fused_on_the_real_radiograph(real_vindr):
    root, rows = real_vindr
    dataset = build_dataset("vindr_cxr", str(root), "train", image_size=224)
    image, target = dataset[1]  # 0061cf6d…
    assert image.shape == (3, 224, 224) and float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    scale = torch.tensor([224 / RG1_WIDTH, 224 / RG1_HEIGHT] * 2)

    def rows_of(class_id: int) -> torch.Tensor:
        return torch.tensor([
            [float(row[key]) for key in ("x_min", "y_min", "x_max", "y_max")]
            for row in rows if row["image_id"] == REAL_IDS[1] and int(row["class_id"]) == class_id
        ])

    # Calcification (class 2): R8, R9 and R10 boxed the same spot → one box, their mean.
    # Pulmonary fibrosis (13): R9 gave two separate boxes → both kept. Aortic, nodule: one each.
    assert target["labels"].tolist() == [1, 3, 9, 14, 14]
    calcification = rows_of(2)
    assert len(calcification) == 3
    assert torch.allclose(target["boxes"][1], calcification.mean(dim=0) * scale, atol=1e-3)
    assert torch.allclose(target["boxes"][3:], rows_of(13) * scale, atol=1e-3)
    assert torch.allclose(target["boxes"][0], rows_of(0)[0] * scale, atol=1e-3)
    other = dataset[0][1]  # 0005e8e3…: R9's and R10's lung opacity fused; three single readings
    assert other["labels"].tolist() == [5, 7, 8, 9]


def test_real_radiograph_is_inverted_monochrome1(real_vindr):
    root, _ = real_vindr
    raw = pydicom.dcmread(RADIOGRAPH)
    assert raw.PhotometricInterpretation == "MONOCHROME1"
    image = read_dicom(str(root / "train" / f"{REAL_IDS[0]}.dicom"), str(root))
    assert image.shape == (RG1_HEIGHT, RG1_WIDTH) and image.min() == 0.0 and image.max() == 1.0
    pixels = raw.pixel_array.astype(np.float64)
    # Its window (centre 15000, width 30000) holds every stored value: a decreasing linear map.
    assert np.corrcoef(pixels[::8, ::8].ravel(), image[::8, ::8].ravel())[0, 1] < -0.999
    assert image[np.unravel_index(np.argmax(pixels), pixels.shape)] == 0.0
