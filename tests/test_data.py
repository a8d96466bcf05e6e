"""Datasets: the generated and embedded sets, the real Fashion-MNIST files, fixtures in the exact
on-disk formats of Fashion-MNIST, CIFAR-100 and ImageNet, and the errors for missing roots.
(COCO/VOC: test_data_coco_voc.py; VinDr-CXR: test_data_vindr.py.)"""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from sna_core.data import (
    DatasetNotAvailableError,
    DatasetRootError,
    build_dataset,
    build_transform,
    check_root,
    data_home,
    dataset_info,
    list_datasets,
    resolve_root,
)
from sna_core.data.digits import Digits
from sna_core.data.fashion_mnist import DEFAULT_ROOT as FASHION_ROOT
from sna_core.data.synthetic import (
    SHAPES,
    RedundantShapes,
    generate_image,
    top_singular_share,
)

PAPER_DATASETS = ("cifar100", "imagenet", "coco2017", "voc2012", "vindr_cxr")
FILE_DATASETS = (*PAPER_DATASETS, "fashion_mnist")


def identity(image):
    return image


# -- registry ------------------------------------------------------------------------------------

def test_every_expected_dataset_is_registered():
    assert set(list_datasets()) >= {"redundant_shapes", "digits", "fashion_mnist", *PAPER_DATASETS}


@pytest.mark.parametrize("name", sorted(list_datasets()))
def test_dataset_info_is_complete(name):
    info = dataset_info(name)
    assert info.name == name and info.tasks and info.num_classes >= 1 and info.image_size >= 8
    assert info.layout and info.source
    assert len(info.mean) == len(info.std) == info.in_channels
    if info.class_names:
        assert len(info.class_names) == info.num_classes
    assert info.needs_files == (info.default_root is not None)


@pytest.mark.parametrize(
    ("name", "tasks", "num_classes", "multilabel_outputs"),
    [("coco2017", ("detection",), 80, None), ("voc2012", ("detection",), 20, None), ("vindr_cxr", ("detection", "multilabel"), 14, 15)],
)
def test_paper_detection_datasets_are_registered_with_loaders(name, tasks, num_classes, multilabel_outputs):
    info = dataset_info(name)
    assert (info.tasks, info.num_classes, info.available) == (tasks, num_classes, True)
    assert info.classes_for("detection") == num_classes
    if multilabel_outputs is not None:  # VinDr-CXR: 14 findings + "No finding"
        assert info.classes_for("multilabel") == multilabel_outputs


def test_unknown_names_list_the_known_ones():
    with pytest.raises(KeyError, match="unknown dataset 'cifar10'.*Did you mean 'cifar100'.*Known: .*digits"):
        dataset_info("cifar10")
    with pytest.raises(ValueError, match="no split 'test'; splits: train, val"):
        build_dataset("redundant_shapes", split="test")
    with pytest.raises(ValueError, match="does not serve task 'detection'; its tasks: classification"):
        build_dataset("digits", task="detection")


@pytest.mark.parametrize("name", FILE_DATASETS)
def test_missing_root_names_path_layout_and_source(name, tmp_path):
    missing = tmp_path / "nowhere"
    info = dataset_info(name)
    with pytest.raises(DatasetRootError) as caught:
        build_dataset(name, str(missing), "train")
    message = str(caught.value)
    assert str(missing) in message and info.layout in message and info.source in message
    assert not isinstance(caught.value, DatasetNotAvailableError)


@pytest.mark.parametrize("name", FILE_DATASETS)
def test_root_missing_required_files_is_reported(name, tmp_path):
    with pytest.raises(DatasetRootError, match=f"missing .*root '{tmp_path}'"):
        check_root(name, str(tmp_path))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("coco2017", r"instances_train2017.json has no list 'images'"),
        ("voc2012", r"missing the image list .*ImageSets/Main/train.txt"),
        ("vindr_cxr", r"train.csv lacks the column\(s\) image_id, class_name"),
    ],
)
def test_detection_roots_with_empty_files_are_reported_as_malformed(name, message, tmp_path):
    for relative in dataset_info(name).required_paths:
        path = tmp_path / relative
        if "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
        else:
            path.mkdir(parents=True, exist_ok=True)
    check_root(name, str(tmp_path))  # the pre-flight only looks for the paths
    with pytest.raises(DatasetRootError, match=message) as caught:
        build_dataset(name, str(tmp_path), "train")
    assert dataset_info(name).source in str(caught.value)


def test_planning_only_datasets_refuse_clearly_once_their_root_exists(tmp_path, monkeypatch):
    from dataclasses import replace

    from sna_core.data import DATASETS

    planned = replace(dataset_info("digits"), name="planned_only", default_root=str(tmp_path), needs_files=True, available=False, notes="coming later")
    monkeypatch.setitem(DATASETS._entries, "planned_only", planned)
    with pytest.raises(DatasetNotAvailableError, match="planned_only.*loader is not in this release.*coming later"):
        build_dataset("planned_only", str(tmp_path), "train")


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_paper_default_roots_are_absolute_under_sna_data_home(name):
    assert dataset_info(name).default_root == os.path.join(data_home(), name)
    assert resolve_root(name) == dataset_info(name).default_root


# -- redundant_shapes ----------------------------------------------------------------------------

def test_redundant_shapes_is_deterministic_and_balanced():
    first = RedundantShapes("train", train_size=40, image_size=32, seed=3)
    again = RedundantShapes("train", train_size=40, image_size=32, seed=3)
    other_seed = RedundantShapes("train", train_size=40, image_size=32, seed=4)
    val = RedundantShapes("val", val_size=40, image_size=32, seed=3)
    for index in (0, 17, 39):
        image, label = first[index]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert torch.equal(image, again[index][0]) and label == again[index][1] == index % 10
        assert not torch.equal(image, other_seed[index][0])
        assert not torch.equal(image, val[index][0])
    assert np.bincount(first.targets).tolist() == [4] * 10
    assert first.classes == list(SHAPES)


def test_redundancy_knob_raises_the_top_singular_value_share():
    shares = {
        redundancy: np.mean([top_singular_share(generate_image(i, redundancy=redundancy)[0]) for i in range(30)])
        for redundancy in (0.0, 0.5, 1.0)
    }
    assert shares[0.0] < shares[0.5] < shares[1.0]
    assert shares[0.0] < 0.65 and shares[1.0] > 0.8


def test_top_singular_share_extremes():
    rank_one = torch.outer(torch.arange(1.0, 9.0), torch.arange(2.0, 10.0)).expand(3, 8, 8)
    assert top_singular_share(rank_one) == pytest.approx(1.0)
    assert top_singular_share(torch.eye(8)) == pytest.approx(1 / 8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"redundancy": 1.5}, "redundancy must be in \\[0, 1\\], got 1.5"),
        ({"num_classes": 11}, "num_classes must be in 2..10 .* got 11"),
        ({"train_size": 0}, "train_size must be >= 1, got 0"),
        ({"transform": "flip"}, "unknown transform preset 'flip'; presets: cifar, imagenet, shift, none"),
    ],
)
def test_redundant_shapes_rejects_bad_knobs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RedundantShapes("train", **kwargs)


# -- digits --------------------------------------------------------------------------------------

def test_digits_shapes_and_stratified_split():
    train, val = Digits("train", seed=0), Digits("val", seed=0)
    assert len(train) + len(val) == 1797
    assert set(train.indices.tolist()).isdisjoint(val.indices.tolist())
    image, label = train[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    train_counts, val_counts = np.bincount(train.labels), np.bincount(val.labels)
    assert np.array_equal(val_counts, np.round(0.2 * (train_counts + val_counts)).astype(int))
    assert np.array_equal(Digits("val", seed=0).indices, val.indices)
    assert not np.array_equal(Digits("val", seed=1).indices, val.indices)
    assert Digits("val", in_channels=1, image_size=16)[0][0].shape == (1, 16, 16)


def test_digits_keep_the_real_pixels():
    from sklearn.datasets import load_digits

    val = Digits("val", image_size=8, transform=identity)
    original = load_digits().images[val.indices[0]] / 16.0
    assert torch.allclose(val[0][0][0], torch.tensor(original, dtype=torch.float32), atol=1e-6)


# -- fashion_mnist -------------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir(FASHION_ROOT), reason=f"Debian package dataset-fashion-mnist not installed ({FASHION_ROOT})")
def test_fashion_mnist_reads_the_real_idx_files():
    train = build_dataset("fashion_mnist", split="train", transform=identity)
    val = build_dataset("fashion_mnist", split="val")
    assert (len(train), len(val)) == (60000, 10000)
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert label == 9 and train.classes[label] == "Ankle boot"  # the first training image
    assert image[:, :2].sum() == 0 and image[:, 2:30, 2:30].sum() > 0  # 2-pixel zero padding
    assert np.bincount(val.labels).tolist() == [1000] * 10
    assert val[0][0].dtype == torch.float32


def _write_idx(directory, prefix, images: np.ndarray, labels: np.ndarray) -> None:
    count, rows, cols = images.shape
    with gzip.open(directory / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">iiii", 2051, count, rows, cols) + images.astype(np.uint8).tobytes())
    with gzip.open(directory / f"{prefix}-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">ii", 2049, count) + labels.astype(np.uint8).tobytes())


@pytest.fixture()
def fashion_fixture(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 0, 9, 1, 7], dtype=np.uint8)
    _write_idx(tmp_path, "train", images, labels)
    _write_idx(tmp_path, "t10k", images[:2], labels[:2])
    return tmp_path, images, labels


@pytest.mark.parametrize("in_channels", [1, 3])
def test_fashion_mnist_reads_an_idx_fixture(fashion_fixture, in_channels):
    root, images, labels = fashion_fixture
    train = build_dataset("fashion_mnist", str(root), "train", in_channels=in_channels, transform=identity)
    assert len(train) == 5 and train.targets == labels.tolist()
    image, label = train[2]
    assert image.shape == (in_channels, 32, 32) and label == 9
    assert torch.equal(image[0, 2:30, 2:30], torch.from_numpy(images[2]))
    assert len(build_dataset("fashion_mnist", str(root), "val")) == 2


def test_fashion_mnist_rejects_a_malformed_idx_file(fashion_fixture):
    root, _, _ = fashion_fixture
    with gzip.open(root / "train-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">iiii", 2049, 5, 28, 28))  # label magic in an image file
    with pytest.raises(DatasetRootError, match="malformed train-images-idx3-ubyte.gz: expected an idx3 image file"):
        build_dataset("fashion_mnist", str(root), "train")


# -- cifar100 ------------------------------------------------------------------------------------

def _write_cifar(root, train_count: int = 6, test_count: int = 4, data_width: int = 3072) -> dict[str, np.ndarray]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for name, count in (("train", train_count), ("test", test_count)):
        data = rng.integers(0, 256, size=(count, data_width), dtype=np.uint8)
        fine = rng.integers(0, 100, size=count).tolist()
        batch = {
            b"filenames": [f"img_{i}.png".encode() for i in range(count)],
            b"batch_label": f"{name} batch".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [label // 5 for label in fine],
            b"data": data,
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        arrays[name] = data
        arrays[f"{name}_fine"] = np.array(fine)
    meta = {
        b"fine_label_names": [f"fine{i}" for i in range(100)],
        b"coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    with open(folder / "meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return arrays


def test_cifar100_reads_a_pickle_fixture_pixel_exact(tmp_path):
    arrays = _write_cifar(tmp_path)
    train = build_dataset("cifar100", str(tmp_path), "train", transform=identity)
    val = build_dataset("cifar100", str(tmp_path), "val", transform=identity)
    assert (len(train), len(val)) == (6, 4)
    image, label = train[1]
    row = arrays["train"][1]
    for channel, y, x in ((0, 0, 0), (1, 5, 7), (2, 31, 30)):
        assert int(image[channel, y, x]) == int(row[channel * 1024 + y * 32 + x])
    assert label == arrays["train_fine"][1] and train.classes[:2] == ["fine0", "fine1"]
    assert val.targets == arrays["test_fine"].tolist()  # "val" reads the test batch


def test_cifar100_coarse_labels_and_paper_augmentation(tmp_path):
    arrays = _write_cifar(tmp_path)
    coarse = build_dataset("cifar100", str(tmp_path), "train", label_type="coarse")
    assert coarse.num_classes == 20 and coarse.targets == (arrays["train_fine"] // 5).tolist()
    image, _ = build_dataset("cifar100", str(tmp_path), "train")[0]  # random crop pad 4 + flip + normalise
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32


def test_cifar100_follows_the_paper_preprocessing(tmp_path):
    """Train: a random 32 crop of the image zero-padded by 4, flipped half the time, normalised;
    val: normalisation only (§4.1)."""
    from sna_core.data.cifar import MEAN, STD

    _write_cifar(tmp_path)
    raw = build_dataset("cifar100", str(tmp_path), "train", transform=identity)[0][0].float() / 255
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4))
    candidates = {
        (dy, dx, flip): ((padded[:, dy : dy + 32, dx : dx + 32].flip(-1) if flip else padded[:, dy : dy + 32, dx : dx + 32]) - mean) / std
        for dy in range(9) for dx in range(9) for flip in (False, True)
    }
    train = build_dataset("cifar100", str(tmp_path), "train")
    torch.manual_seed(0)
    seen = set()
    for _ in range(24):
        image = train[0][0]
        matches = [key for key, candidate in candidates.items() if torch.allclose(image, candidate, atol=1e-5)]
        assert matches, "a training image is not a padded crop (+ flip) of the original"
        seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True} and len({(dy, dx) for dy, dx, _ in seen}) > 5
    val = build_dataset("cifar100", str(tmp_path), "val", transform=None)
    val_raw = build_dataset("cifar100", str(tmp_path), "val", transform=identity)[0][0].float() / 255
    assert torch.allclose(val[0][0], (val_raw - mean) / std, atol=1e-6)


def test_cifar100_rejects_malformed_batches(tmp_path):
    _write_cifar(tmp_path, data_width=100)
    with pytest.raises(DatasetRootError, match=r"malformed cifar-100-python/train: data is uint8 of shape \(6, 100\)"):
        build_dataset("cifar100", str(tmp_path), "train")


# -- imagenet ------------------------------------------------------------------------------------

def _write_image_folder(root, layout: dict[str, dict[str, int]]) -> None:
    rng = np.random.default_rng(2)
    for split, classes in layout.items():
        for wnid, count in classes.items():
            (root / split / wnid).mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{index}.JPEG")


def test_imagenet_reads_an_image_folder_fixture(tmp_path):
    _write_image_folder(tmp_path, {"train": {"n01440764": 2, "n01443537": 3}, "val": {"n01443537": 2}})
    train = build_dataset("imagenet", str(tmp_path), "train", image_size=32)
    val = build_dataset("imagenet", str(tmp_path), "val", image_size=32)
    assert train.classes == ["n01440764", "n01443537"] and len(train) == 5
    assert sorted(train.targets) == [0, 0, 1, 1, 1]
    assert val.targets == [1, 1]  # indices follow train/, although val lacks the first class
    image, label = train[0]
    assert image.shape == (3, 32, 32) and label == 0
    assert val[0][0].shape == (3, 32, 32)


def test_imagenet_train_crops_randomly_and_val_is_deterministic(tmp_path):
    _write_image_folder(tmp_path, {"train": {"n01440764": 1}, "val": {"n01440764": 1}})
    train = build_dataset("imagenet", str(tmp_path), "train", image_size=24)
    val = build_dataset("imagenet", str(tmp_path), "val", image_size=24)
    torch.manual_seed(0)
    assert not torch.equal(train[0][0], train[0][0])  # random-resized crop + flip
    assert torch.equal(val[0][0], val[0][0])  # resize 24·256/224 = 27, center crop 24
    assert val[0][0].shape == (3, 24, 24)


def test_imagenet_explains_an_unsorted_val_folder(tmp_path):
    _write_image_folder(tmp_path, {"train": {"n01440764": 1}})
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetRootError, match="no class folders .*sort them into <wnid>/ folders"):
        build_dataset("imagenet", str(tmp_path), "val")


# -- transforms ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("preset", "train", "size"),
    [("cifar", True, 32), ("cifar", False, 32), ("imagenet", True, 24), ("imagenet", False, 24), ("shift", True, 32), ("none", False, 32)],
)
def test_transform_presets_output_float_images_of_the_size(preset, train, size):
    source = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    out = build_transform(preset, train=train, image_size=size, mean=(0.5,) * 3, std=(0.25,) * 3)(source)
    assert out.shape == (3, size, size) and out.dtype == torch.float32
