"""Image pre-processing presets, as in the paper's §4.1.

Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022): "The input images of the CIFAR-100 dataset are randomly cropped to
32 × 32 and the input images of other natural datasets are randomly cropped to 224×224, both with
random horizontal flipping and normalization."

Presets (``build_transform(preset, train=..., image_size=..., mean=..., std=...)``):

- ``"cifar"``: train = random crop ``image_size`` with 4 pixels of zero padding + horizontal flip;
  eval = nothing. Both end in normalisation.
- ``"imagenet"``: train = random-resized crop ``image_size`` + horizontal flip; eval = resize the
  short side to ``image_size · 256/224`` (256 for 224) + center crop ``image_size``.
- ``"shift"``: random crop with padding but no flip, for data that a mirror would change
  (digits).
- ``"none"``: only conversion to float and normalisation (deterministic; cheapest).

Inputs may be PIL images or uint8/float ``(C, H, W)`` tensors; outputs are float32 tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

Transform = Callable[[object], torch.Tensor]

PRESETS = ("cifar", "imagenet", "shift", "none")


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def build_transform(
    preset: str, *, train: bool, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Transform:
    """The ``preset`` pipeline for training (``train=True``) or evaluation."""
    if preset not in PRESETS:
        raise ValueError(f"unknown transform preset {preset!r}; presets: {', '.join(PRESETS)}")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size!r}")
    steps: list[v2.Transform] = []
    if preset == "cifar" and train:
        steps += [v2.RandomCrop(image_size, padding=4), v2.RandomHorizontalFlip()]
    elif preset == "shift" and train:
        steps += [v2.RandomCrop(image_size, padding=max(1, image_size // 16))]
    elif preset == "imagenet":
        if train:
            steps += [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
        else:
            steps += [v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(steps + _to_normalised_tensor(mean, std))


def resolve_transform(
    transform: str | Transform | None,
    *,
    default_preset: str,
    train: bool,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Transform:
    """A dataset's ``transform`` argument: ``None`` → its default preset, a preset name → that
    preset, a callable → itself."""
    if transform is None:
        transform = default_preset
    if isinstance(transform, str):
        return build_transform(transform, train=train, image_size=image_size, mean=mean, std=std)
    if callable(transform):
        return transform
    raise TypeError(f"transform must be a preset name ({', '.join(PRESETS)}), a callable or None, got {transform!r}")
