"""A plan's compute estimate: training FLOPs per cell and the hours they take at a stated
throughput.

For the grid of Fang et al., "Combating spatial redundancy with spectral norm attention in
convolutional learners", Neurocomputing 511 (2022) 105-116. Per cell::

    forward FLOPs per image (sna_core.profiling.count_flops at the dataset's image size)
      × 3 (forward + backward ≈ 3 forwards)
      × training images per epoch (the dataset's train_size, capped by limit_train_batches)
      × epochs

Evaluation passes are not counted. FLOPs are counted once per distinct model (backbone, stem,
attention, placement, rank_k, detector, image size, classes, channels), on the meta device when
the model allows it (no arithmetic, no memory) and on the CPU otherwise. A model that cannot be
counted (a block that fails) is reported as unknown with the reason. Detectors are counted on the
meta device for their backbone and FPN, and once per (detector, classes, image size) on the CPU for
the rest (RPN, RoI heads), which does not depend on the backbone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from orchestrator.plan import Cell

FORWARD_BACKWARD_FACTOR = 3
DEFAULT_ASSUME_TFLOPS = 10.0


@dataclass(frozen=True)
class ModelSignature:
    """Everything that changes a model's FLOPs per image."""

    backbone: str
    stem: str
    attention: str
    placement: str
    rank_k: int | None
    detector: str | None
    image_size: int
    num_classes: int
    in_channels: int

    def describe(self) -> str:
        attention = self.attention if self.rank_k is None else f"{self.attention}(k={self.rank_k})"
        head = f"{self.detector}+{self.backbone}" if self.detector else self.backbone
        return f"{head}/{self.stem} {attention}@{self.placement} {self.in_channels}x{self.image_size}² {self.num_classes} cls"


@dataclass
class Estimate:
    """Training FLOPs of a plan and the device-hours they take at ``assume_tflops``."""

    assume_tflops: float
    forward_flops: dict[ModelSignature, int | None]  # per image, one forward pass
    unknown_reasons: dict[ModelSignature, str]
    cell_flops: dict[str, float | None] = field(default_factory=dict)  # key -> training FLOPs
    images_unknown: set[str] = field(default_factory=set)  # datasets without a train_size

    @property
    def total_flops(self) -> float:
        return sum(f for f in self.cell_flops.values() if f is not None)

    @property
    def unknown_cells(self) -> int:
        return sum(f is None for f in self.cell_flops.values())

    @property
    def hours(self) -> float:
        return self.total_flops / (self.assume_tflops * 1e12) / 3600

    def cell_hours(self, key: str) -> float | None:
        flops = self.cell_flops.get(key)
        return None if flops is None else flops / (self.assume_tflops * 1e12) / 3600


def model_signature(cell: Cell) -> ModelSignature:
    from sna_core.data import dataset_info

    dataset, model = cell.config["dataset"], cell.config["model"]
    return ModelSignature(
        backbone=model["backbone"],
        stem=model["stem"],
        attention=model["attention"],
        placement=model["placement"],
        rank_k=model["attention_kwargs"].get("rank_k"),
        detector=model.get("detector"),
        image_size=dataset["image_size"],
        num_classes=dataset["num_classes"],
        in_channels=dataset_info(dataset["name"]).in_channels,
    )


def count_forward_flops(signature: ModelSignature) -> int:
    """Forward FLOPs per image of the model ``signature`` describes (raises when it cannot)."""
    import torch

    from sna_core.backbones import build_backbone
    from sna_core.profiling import count_flops

    if signature.detector is not None:
        return _count_detector_flops(signature)
    shape = (signature.in_channels, signature.image_size, signature.image_size)

    def build() -> torch.nn.Module:
        attention_kwargs = {} if signature.rank_k is None else {"rank_k": signature.rank_k}
        return build_backbone(
            signature.backbone, signature.num_classes, stem=signature.stem, attention=signature.attention,
            placement=signature.placement, attention_kwargs=attention_kwargs, in_channels=signature.in_channels,
        )

    try:
        with torch.device("meta"):  # shapes only: fast and allocation-free
            return count_flops(build(), shape)
    except Exception:  # noqa: BLE001 (data-dependent control flow, e.g. a convergence test, needs real numbers)
        return count_flops(build(), shape)


# The RoI heads' work depends on how many proposals and detections survive, i.e. on the weights and
# the image. Counting without suppression (no NMS, no score threshold) and with zero box
# regression (every box stays its anchor, none collapses at the image border) fixes both at the
# detector's test-time limits — 1000 proposals (or every anchor, if fewer) and 100 detections per
# image — so the estimate is a reproducible upper bound, the same for every attention block.
DETECTOR_LIMITS = {"rpn_nms_thresh": 1.0, "box_nms_thresh": 1.0, "box_score_thresh": 0.0}


def _zero_box_regression(model: torch.nn.Module) -> None:
    import torch

    for path in ("rpn.head.bbox_pred", "roi_heads.box_predictor.bbox_pred"):
        layer = model.get_submodule(path)
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.zero_()


def _count_detector_flops(signature: ModelSignature) -> int:
    """Backbone (with its attention and FPN) on the meta device, plus the rest of the detector
    (transform, RPN, RoI heads), which does not depend on the backbone: counted once per
    (detector, classes, image size) on the CPU, where torchvision's detection ops run."""
    import torch

    from sna_core.detectors.backbone import build_detection_backbone
    from sna_core.profiling import count_flops

    attention_kwargs = {} if signature.rank_k is None else {"rank_k": signature.rank_k}

    def build() -> torch.nn.Module:
        return build_detection_backbone(signature.backbone, attention=signature.attention,
                                        placement=signature.placement, attention_kwargs=attention_kwargs,
                                        stem=signature.stem)

    shape = _detector_input_shape(signature.image_size)
    try:
        with torch.device("meta"):
            backbone = count_flops(build(), shape)
    except Exception:  # noqa: BLE001 - as in count_forward_flops
        backbone = count_flops(build(), shape)
    return backbone + _detector_heads_flops(signature.detector, signature.num_classes, signature.image_size)


def _detector_input_shape(image_size: int) -> tuple[int, int, int]:
    """What the backbone sees of a square image: torchvision pads batches to multiples of 32."""
    side = -(-image_size // 32) * 32
    return (3, side, side)


@functools.cache
def _detector_heads_flops(detector: str, num_classes: int, image_size: int) -> int:
    """A whole detector on the cheapest backbone (ResNet-18, no attention) minus that backbone."""
    import torch

    from sna_core.detectors import build_detector
    from sna_core.detectors.backbone import build_detection_backbone
    from sna_core.profiling import count_flops
    from sna_core.tasks.detection import resize_kwargs

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_detector(detector, "resnet18", num_classes, **resize_kwargs(image_size), **DETECTOR_LIMITS)
        _zero_box_regression(model)
        # Detection datasets give 3 channels (grey radiographs repeated), whatever the classifier's input.
        whole = count_flops(model, (3, image_size, image_size))
    with torch.device("meta"):
        backbone = count_flops(build_detection_backbone("resnet18"), _detector_input_shape(image_size))
    return whole - backbone


def training_images(cell: Cell) -> int | None:
    """Images one training epoch of ``cell`` sees, or None when the dataset does not say."""
    from sna_core.data import dataset_info

    train, dataset = cell.config["train"], cell.config["dataset"]
    size = dataset["kwargs"].get("train_size")  # generated sets take their size as a kwarg
    if not isinstance(size, int) or isinstance(size, bool):
        size = dataset_info(dataset["name"]).train_size
    limit = train.get("limit_train_batches")
    capped = None if limit is None else limit * train["batch_size"]
    if size is None:
        return capped
    return size if capped is None else min(size, capped)


class FlopsCache:
    """Counted FLOPs per model signature, kept across ``plan`` runs in a JSON file (default
    ``$SNA_ORCH_CACHE`` or ``~/.cache/sna-orch/flops.json``): counting is ~0.5-3 s per distinct
    model, so a grid of the paper's size (~70 models) is counted once, then planned in seconds.
    Keyed by the signature and the torch / sna-orch versions; written atomically; an unreadable
    file is ignored (recounted)."""

    def __init__(self, path: str | None = None) -> None:
        import os

        folder = os.environ.get("SNA_ORCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sna-orch")
        self.path = path or os.path.join(folder, "flops.json")
        self._entries: dict[str, int] | None = None
        self._dirty = False

    @staticmethod
    def key(signature: ModelSignature) -> str:
        import dataclasses
        import json

        import torch

        from orchestrator import __version__

        return json.dumps([dataclasses.astuple(signature), torch.__version__, __version__])

    def _load(self) -> dict[str, int]:
        import json

        if self._entries is None:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    loaded = json.load(handle)
                self._entries = {k: int(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
            except (OSError, ValueError, TypeError):
                self._entries = {}
        return self._entries

    def counter(self, count: Callable[[ModelSignature], int]) -> Callable[[ModelSignature], int]:
        def cached(signature: ModelSignature) -> int:
            entries, key = self._load(), self.key(signature)
            if key not in entries:
                entries[key] = int(count(signature))
                self._dirty = True
            return entries[key]

        return cached

    def save(self) -> None:
        import json
        import os
        import tempfile

        if not self._dirty or self._entries is None:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=os.path.dirname(self.path), suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(self._entries, out)
            os.replace(temporary, self.path)
        except OSError:
            pass  # a read-only home: the next plan counts again
        self._dirty = False


def estimate(
    cells: Iterable[Cell],
    *,
    assume_tflops: float = DEFAULT_ASSUME_TFLOPS,
    count: Callable[[ModelSignature], int] = count_forward_flops,
) -> Estimate:
    """The training-compute estimate of ``cells`` (FLOPs counted once per distinct model)."""
    if not assume_tflops > 0:
        raise ValueError(f"assume_tflops must be > 0, got {assume_tflops!r}")
    result = Estimate(assume_tflops=assume_tflops, forward_flops={}, unknown_reasons={})
    signatures: dict[tuple, ModelSignature] = {}
    images: dict[tuple, int | None] = {}
    for cell in cells:
        model_id = (id(cell.config["model"]), id(cell.config["dataset"]))  # shared across cells
        signature = signatures.get(model_id)
        if signature is None:
            signature = signatures[model_id] = model_signature(cell)
        if signature not in result.forward_flops:
            try:
                result.forward_flops[signature] = int(count(signature))
            except Exception as error:  # noqa: BLE001 (any failure to build or count: report it, don't stop the plan)
                result.forward_flops[signature] = None
                result.unknown_reasons[signature] = f"{type(error).__name__}: {error}"
        train = cell.config["train"]
        images_id = (id(cell.config["dataset"]), id(train))
        if images_id not in images:
            images[images_id] = training_images(cell)
        epoch_images = images[images_id]
        if epoch_images is None:
            result.images_unknown.add(cell.config["dataset"]["name"])
        forward = result.forward_flops[signature]
        result.cell_flops[cell.key] = (
            None if forward is None or epoch_images is None
            else float(forward) * FORWARD_BACKWARD_FACTOR * epoch_images * train["epochs"]
        )
    return result
