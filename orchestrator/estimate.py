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
counted (no detector builder yet, a block that fails) is reported as unknown with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
        raise LookupError(f"no detector builder for {signature.detector!r} yet")
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
