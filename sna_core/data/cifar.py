"""``cifar100``: CIFAR-100 from the python pickle batches, with the paper's pre-processing.

Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.1 and Table 1: CIFAR-100 images "are randomly cropped to 32 × 32 ...
with random horizontal flipping and normalization" (here: crop with 4 pixels of padding, the
standard recipe and the authors' code).

Layout: ``ROOT/cifar-100-python/{train,test,meta}`` as unpacked from ``cifar-100-python.tar.gz``.
Each batch is a pickled dict with ``data`` (N×3072 uint8, channel-major 3×32×32 rows),
``fine_labels`` and ``coarse_labels``; ``meta`` holds ``fine_label_names`` and
``coarse_label_names``. Keys may be ``str`` or ``bytes`` (the original files come from Python 2).
No md5 check: any file in that format loads, which is what lets tests use tiny fixtures.
CIFAR-100 has no validation split; split ``"val"`` reads ``test``, which is also where the paper
(and the authors' code) report accuracy.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sna_core.data.registry import (
    DatasetInfo,
    data_home,
    dataset_info,
    register_dataset,
    root_error,
)
from sna_core.data.transforms import Transform, resolve_transform

FOLDER = "cifar-100-python"
SPLIT_FILES = {"train": "train", "val": "test"}
LABEL_KEYS = {"fine": ("fine_labels", "fine_label_names", 100), "coarse": ("coarse_labels", "coarse_label_names", 20)}
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)


def _load_pickle(path: str) -> dict[str, Any]:
    info = dataset_info("cifar100")
    try:
        with open(path, "rb") as handle:
            raw = pickle.load(handle, encoding="latin1")
    except FileNotFoundError:
        raise root_error(info, os.path.dirname(os.path.dirname(path)), f"missing {FOLDER}/{os.path.basename(path)}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as error:
        raise root_error(info, os.path.dirname(os.path.dirname(path)), f"{path} is not a CIFAR pickle ({type(error).__name__}: {error})") from None
    if not isinstance(raw, dict):
        raise root_error(info, os.path.dirname(os.path.dirname(path)), f"{path} holds a {type(raw).__name__}, expected a dict")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in raw.items()}


class CIFAR100(Dataset):
    """One split of CIFAR-100 (``label_type="fine"``: 100 classes, ``"coarse"``: 20 superclasses)."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        *,
        label_type: str = "fine",
        image_size: int = 32,
        transform: str | Transform | None = None,
    ) -> None:
        if split not in SPLIT_FILES:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLIT_FILES)}")
        if label_type not in LABEL_KEYS:
            raise ValueError(f"unknown label_type {label_type!r}; label types: {', '.join(LABEL_KEYS)}")
        label_key, names_key, num_classes = LABEL_KEYS[label_type]
        path = os.path.join(root, FOLDER, SPLIT_FILES[split])
        batch = _load_pickle(path)
        meta = _load_pickle(os.path.join(root, FOLDER, "meta"))

        def malformed(problem: str) -> Exception:
            return root_error(dataset_info("cifar100"), root, f"malformed {FOLDER}/{SPLIT_FILES[split]}: {problem}")

        if "data" not in batch or label_key not in batch:
            raise malformed(f"keys {sorted(batch)}, expected 'data' and {label_key!r}")
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise malformed(f"data is {data.dtype} of shape {data.shape}, expected uint8 (N, 3072)")
        if labels.shape != (len(data),):
            raise malformed(f"{len(labels)} labels for {len(data)} images")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise malformed(f"{label_key} outside 0..{num_classes - 1} (min {labels.min()}, max {labels.max()})")
        self.images = torch.from_numpy(data.reshape(-1, 3, 32, 32))
        self.labels = labels
        self.num_classes = num_classes
        names = meta.get(names_key, [str(index) for index in range(num_classes)])
        self.classes = [name.decode() if isinstance(name, bytes) else str(name) for name in names]
        self.transform = resolve_transform(
            transform, default_preset="cifar", train=split == "train", image_size=image_size, mean=MEAN, std=STD
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()


def _build(root: str, split: str, *, task: str = "classification", **kwargs: Any) -> CIFAR100:
    return CIFAR100(root, split, **kwargs)


INFO = register_dataset(
    DatasetInfo(
        name="cifar100",
        tasks=("classification",),
        num_classes=100,
        image_size=32,
        in_channels=3,
        builder=_build,
        default_root=os.path.join(data_home(), "cifar100"),
        layout=f"ROOT/{FOLDER}/train, ROOT/{FOLDER}/test, ROOT/{FOLDER}/meta (python pickles)",
        source="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (unpack into ROOT)",
        stem="cifar",
        train_size=50000,
        required_paths=(f"{FOLDER}/train", f"{FOLDER}/test", f"{FOLDER}/meta"),
        mean=MEAN,
        std=STD,
        notes="split 'val' reads the test batch (the paper reports test accuracy); kwargs: label_type fine|coarse, image_size, transform",
    )
)
