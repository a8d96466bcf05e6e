"""Spatial redundancy of the feature maps at a backbone's SNA sites (the in-network view of Fig. 1).

Paper: J. Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022), §1 (Fig. 1: redundancy of images) and §3.3 (Fig. 3: SNA
after the stem, optionally inside every residual / dense block). §4.5 finds SNA at the stem the
most effective, and SNA in the blocks "also beneficial ... as redundancy remains active in the
convolutional process"; this module measures how much redundancy there is at each site.

For every site of a placement (``stem``: the output of the stem's max-pool; ``blocks``: each
residual block's last BatchNorm / each dense layer's new features — exactly what the SNA module
there receives, see :mod:`sna_core.backbones.placement`) and every image, the (C, H, W) feature
map gives two spectra:

- per channel: the EVR curve ``σ_i² / Σσ²`` of each channel's H×W map, averaged over the
  channels that carry energy (all-zero channels, e.g. dead after a ReLU, are counted and left
  out), and the ranks where that mean curve reaches 90 % / 99 %;
- pooled: the spectrum of the channel-average H×W matrix, the one SNA (``pool="avg"``)
  decomposes; its ``top1_energy`` is the share SNA's rank-1 map keeps.

Over several images the curves are averaged. By default the network is the *vanilla* backbone
(attention ``none``): each site shows what SNA would receive if placed there, independent of SNA
elsewhere. With ``attention="sna"`` the network runs with SNA at the placement (e.g. to inspect a
checkpoint trained that way) and a block site sees the features after the earlier SNA modules.

Advice (:func:`placement_advice`). The rule, stated on the numbers this module reports:

    A site is *redundant* when its per-channel 99 %-energy rank is at most
    ``REDUNDANT_RANK_FRACTION`` (25 %) of min(H, W): three quarters of the spatial directions
    of its feature maps carry less than 1 % of the energy, which is where SNA's low-rank map
    separates informative from redundant positions (§1). The normalised rank
    ``ρ = rank_for_99 / min(H, W)`` is compared, not the rank itself, because sites differ in
    size (56×56 after a ResNet stem, 7×7 in stage 4).

    - stem redundant, no block stage redundant → "SNA at the stem" (the paper's default);
    - stem redundant and some block stages redundant → "stem, and blocks of those stages";
    - stem not redundant, some stages redundant → "blocks of those stages";
    - nothing redundant → "little spatial redundancy: expect small gains from SNA".

    A stage is redundant when the mean ρ of its blocks is. The threshold is a heuristic chosen
    for this tool, not a number from the paper; the advice prints every ρ it used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sna_core.analysis.redundancy import (
    DEFAULT_RANKS,
    ENERGY_LEVELS,
    MatrixRedundancy,
    analyze_matrix,
    explained_variance_ratio,
    rank_for_energy,
)
from sna_core.backbones import AttentionAfter, attention_sites, build_backbone

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REDUNDANT_RANK_FRACTION",
    "SiteRedundancy",
    "analyze_feature_maps",
    "build_network",
    "channel_spectrum",
    "placement_advice",
    "placement_sites",
    "preprocess",
    "site_stage",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REDUNDANT_RANK_FRACTION = 0.25


def site_stage(site: str) -> str:
    """``"layer2.1"`` → ``"layer2"``, ``"denseblock3.denselayer4"`` → ``"denseblock3"``, ``"stem"``."""
    return site.split(".", 1)[0]


def placement_sites(backbone: str, placement: str, **build_kwargs: Any) -> dict[str, str]:
    """Site name → qualified name of the module that SNA follows at that site.

    Found by building the backbone with SNA at ``placement`` and reading where the placement put
    it, so this stays in step with :mod:`sna_core.backbones.placement`; the same qualified names
    address the original modules in the vanilla backbone.
    """
    probe = build_backbone(backbone, build_kwargs.pop("num_classes", 10), attention="sna",
                           placement=placement, **build_kwargs)
    sites: dict[str, str] = {}
    for qualified, module in attention_sites(probe).items():
        container, _, leaf = qualified.rpartition(".")
        if leaf != "attention":
            raise ValueError(f"unexpected SNA module {qualified!r}: not the attention of an AttentionAfter")
        sites[module.attention_site] = container
    if not sites:
        raise ValueError(f"placement {placement!r} puts no SNA module in {backbone!r}")
    return sites


def channel_spectrum(feature_map: Tensor) -> tuple[Tensor, int]:
    """Mean per-channel EVR curve (length min(H, W)) of a (C, H, W) map, and its all-zero channels."""
    if feature_map.dim() != 3:
        raise ValueError(f"expected a (C, H, W) feature map, got shape {tuple(feature_map.shape)}")
    singular_values = torch.linalg.svdvals(feature_map.detach().to("cpu", torch.float64))
    live = (singular_values**2).sum(dim=-1) > 0
    ratios = explained_variance_ratio(singular_values[live])
    curve = ratios.mean(dim=0) if ratios.shape[0] else torch.zeros(singular_values.shape[-1], dtype=torch.float64)
    return curve, int((~live).sum())


@dataclass
class SiteRedundancy:
    """Redundancy at one SNA site, averaged over the images analysed."""

    site: str
    channels: int
    height: int
    width: int
    channel_evr: Tensor  # mean per-channel EVR curve, averaged over images
    dead_channels: float  # mean number of all-zero channels per image
    pooled_evr: Tensor  # EVR of the channel-average matrix, averaged over images
    pooled_relative_errors: dict[int, float]  # mean over images
    per_image: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def stage(self) -> str:
        return site_stage(self.site)

    def rank_for(self, level: float, *, pooled: bool = False) -> int:
        return rank_for_energy(self.pooled_evr if pooled else self.channel_evr, level)

    @property
    def normalised_rank_99(self) -> float:
        """``rank_for_99 / min(H, W)`` of the per-channel curve (the advice's ρ)."""
        return self.rank_for(0.99) / min(self.height, self.width)

    @property
    def pooled_top1_energy(self) -> float:
        return float(self.pooled_evr[0]) if self.pooled_evr.numel() else 0.0

    def to_dict(self, *, spectrum: bool = True) -> dict[str, Any]:
        record: dict[str, Any] = {
            "site": self.site,
            "stage": self.stage,
            "shape": [self.channels, self.height, self.width],
            "dead_channels": self.dead_channels,
            "channel_top1_energy": float(self.channel_evr[0]) if self.channel_evr.numel() else 0.0,
            **{f"channel_rank_for_{round(e * 100)}": self.rank_for(e) for e in ENERGY_LEVELS},
            "normalised_rank_99": self.normalised_rank_99,
            "pooled_top1_energy": self.pooled_top1_energy,
            **{f"pooled_rank_for_{round(e * 100)}": self.rank_for(e, pooled=True) for e in ENERGY_LEVELS},
            "pooled_relative_errors": {str(k): v for k, v in self.pooled_relative_errors.items()},
        }
        if spectrum:
            record["channel_explained_variance_ratio"] = self.channel_evr.tolist()
            record["pooled_explained_variance_ratio"] = self.pooled_evr.tolist()
            record["per_image"] = self.per_image
        return record


@dataclass
class Network:
    """A backbone ready for :func:`analyze_feature_maps`, and how it was made."""

    model: nn.Module
    sites: dict[str, str]
    backbone: str
    placement: str
    attention: str
    stem: str
    in_channels: int
    weights: str  # "untrained: torchvision init, seed N" or the checkpoint's path


def _checkpoint_state(path: str) -> dict[str, Tensor]:
    """The model state dict in ``path``: a plain state dict or a trial checkpoint's ``"model"``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        # weights_only=False: sna-orch's trial checkpoints also hold RNG states and history. Only
        # load checkpoints you trust, as with torch.load itself.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"{path}: cannot read as a torch checkpoint ({type(error).__name__}: {error})") from error
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no model state dict (expected a state dict or a dict with 'model')")
    return state


def build_network(
    backbone: str,
    placement: str,
    *,
    attention: str = "none",
    stem: str | None = None,
    checkpoint: str | None = None,
    seed: int = 0,
) -> Network:
    """The backbone whose feature maps are measured: untrained (torchvision's init, from ``seed``)
    unless ``checkpoint`` names a state dict. With a checkpoint, the number of classes, the input
    channels and (unless ``stem`` is given) the stem — a 3×3 first convolution means "cifar" —
    are read from its weights; the attention and placement must match the training run's.
    """
    state = _checkpoint_state(checkpoint) if checkpoint else None
    num_classes, in_channels = 1000, 3
    if state is not None:
        convs = [v for v in state.values() if v.dim() == 4]
        linears = [v for v in state.values() if v.dim() == 2]
        if not convs or not linears:
            raise ValueError(f"{checkpoint}: no convolution or classifier weights: not a {backbone} checkpoint")
        in_channels, num_classes = int(convs[0].shape[1]), int(linears[-1].shape[0])
        if stem is None:
            stem = "cifar" if convs[0].shape[-1] == 3 else "imagenet"
    stem = stem or "imagenet"
    build = {"num_classes": num_classes, "stem": stem, "in_channels": in_channels}
    sites = placement_sites(backbone, placement, **build)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_backbone(backbone, attention=attention, placement=placement, **build)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            hint = (" (it has '.module.' keys: trained with attention inside the backbone; pass the "
                    "attention and placement it was trained with)") if any(".module." in k for k in state) else ""
            first_line = str(error).strip().splitlines()
            raise ValueError(
                f"{checkpoint}: does not fit {backbone} with attention={attention!r}, placement={placement!r}, "
                f"stem={stem!r}{hint}: {' '.join(first_line[:3])[:400]}"
            ) from error
    weights = checkpoint if checkpoint else f"untrained: torchvision init, seed {seed}"
    return Network(model.eval(), sites, backbone, placement, attention, stem, in_channels, weights)


def _hook_target(model: nn.Module, qualified: str) -> nn.Module:
    """The module whose output is the site's attention input: the wrapped module of an
    ``AttentionAfter`` (model built with attention), else the module itself (vanilla model)."""
    module = model.get_submodule(qualified)
    return module.module if isinstance(module, AttentionAfter) else module


@torch.no_grad()
def analyze_feature_maps(
    model: nn.Module,
    images: Tensor,
    sites: Mapping[str, str],
    *,
    image_names: Sequence[str] | None = None,
    ranks: Iterable[int] = DEFAULT_RANKS,
) -> list[SiteRedundancy]:
    """Run ``model`` (eval mode) on an (N, C, H, W) batch and measure each site's feature maps.

    ``sites`` maps a site name to the qualified name of the module that SNA follows there
    (:func:`placement_sites`).
    """
    if images.dim() != 4 or images.shape[0] < 1:
        raise ValueError(f"expected an (N, C, H, W) batch of images, got shape {tuple(images.shape)}")
    names = list(image_names) if image_names is not None else [f"image{i}" for i in range(images.shape[0])]
    rank_tuple = tuple(ranks)
    captured: dict[str, Tensor] = {}
    handles = []
    for site, qualified in sites.items():
        def keep(_module: nn.Module, _inputs: Any, output: Tensor, site: str = site) -> None:
            # A copy: the block goes on in place (``out += identity``, ReLU(inplace=True)).
            captured[site] = output.detach().clone()

        handles.append(_hook_target(model, qualified).register_forward_hook(keep))
    was_training = model.training
    model.eval()
    try:
        # One image at a time: each map is the image's own (no batch statistics in eval mode anyway).
        per_site: dict[str, list[tuple[Tensor, int, MatrixRedundancy]]] = {site: [] for site in sites}
        for index in range(images.shape[0]):
            captured.clear()
            model(images[index : index + 1])
            for site in sites:
                if site not in captured:
                    raise RuntimeError(f"site {site!r} ({sites[site]}) did not run in the forward pass")
                feature_map = captured[site][0]
                curve, dead = channel_spectrum(feature_map)
                pooled = analyze_matrix(feature_map.mean(dim=0), rank_tuple)
                per_site[site].append((curve, dead, pooled))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    results = []
    for site, entries in per_site.items():
        channels, height, width = captured[site].shape[1:]
        per_image = []
        for name, (curve, dead, pooled) in zip(names, entries):
            per_image.append({
                "image": name,
                "dead_channels": dead,
                **{f"channel_rank_for_{round(e * 100)}": rank_for_energy(curve, e) for e in ENERGY_LEVELS},
                **{f"pooled_{key}": value for key, value in pooled.to_dict(spectrum=False).items() if key != "shape"},
            })
        results.append(SiteRedundancy(
            site=site,
            channels=int(channels),
            height=int(height),
            width=int(width),
            channel_evr=torch.stack([curve for curve, _, _ in entries]).mean(dim=0),
            dead_channels=sum(dead for _, dead, _ in entries) / len(entries),
            pooled_evr=torch.stack([p.explained_variance_ratio for _, _, p in entries]).mean(dim=0),
            pooled_relative_errors={k: sum(p.relative_errors[k] for _, _, p in entries) / len(entries) for k in rank_tuple},
            per_image=per_image,
        ))
    return results


def placement_advice(results: Sequence[SiteRedundancy], threshold: float = REDUNDANT_RANK_FRACTION) -> str:
    """One line saying where SNA should help, by the rule in the module docstring."""
    stem = [r for r in results if r.site == "stem"]
    stages: dict[str, list[float]] = {}
    for result in results:
        if result.site != "stem":
            stages.setdefault(result.stage, []).append(result.normalised_rank_99)
    stage_rho = {stage: sum(values) / len(values) for stage, values in stages.items()}
    redundant_stages = [stage for stage, rho in stage_rho.items() if rho <= threshold]
    stem_rho = stem[0].normalised_rank_99 if stem else None
    stem_redundant = stem_rho is not None and stem_rho <= threshold

    numbers = ([f"stem ρ={stem_rho:.2f}"] if stem_rho is not None else []) + [
        f"{stage} ρ={rho:.2f}" for stage, rho in stage_rho.items()
    ]
    evidence = f"(ρ = 99%-energy rank / min(H, W); redundant if ρ <= {threshold:g}: {', '.join(numbers)})"
    if stem_redundant and redundant_stages:
        verdict = f"SNA at the stem, and in the blocks of {', '.join(redundant_stages)}"
    elif stem_redundant:
        verdict = "SNA at the stem" + (" (the block stages show little redundancy)" if stage_rho else "")
    elif redundant_stages:
        verdict = f"SNA in the blocks of {', '.join(redundant_stages)}" + (
            " (the stem's input shows little redundancy)" if stem_rho is not None else "")
    else:
        verdict = "little spatial redundancy at these SNA sites: expect small gains from SNA"
    return f"advice: {verdict} {evidence}"


def preprocess(pixels: Any, image_size: int, in_channels: int = 3) -> Tensor:
    """An (H, W) or (H, W, 3) array in [0, 1] → a (in_channels, S, S) tensor for the backbone:
    shorter side resized to S (bilinear, antialiased), centre crop S×S, ImageNet mean/std
    (grey images are repeated over 3 channels; colour ones go to luminance for 1 channel)."""
    from sna_core.analysis.redundancy import luminance

    tensor = torch.as_tensor(pixels, dtype=torch.float32)
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(-1)
    if in_channels == 1 and tensor.shape[-1] == 3:
        tensor = luminance(tensor).float().unsqueeze(-1)
    tensor = tensor.permute(2, 0, 1)  # (c, H, W)
    if in_channels == 3 and tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    height, width = tensor.shape[-2:]
    scale = image_size / min(height, width)
    size = (max(image_size, round(height * scale)), max(image_size, round(width * scale)))
    resized = torch.nn.functional.interpolate(tensor.unsqueeze(0), size=size, mode="bilinear",
                                              align_corners=False, antialias=True)[0]
    top, left = (size[0] - image_size) // 2, (size[1] - image_size) // 2
    cropped = resized[:, top : top + image_size, left : left + image_size]
    if in_channels == 3:
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    else:
        mean = torch.tensor([sum(IMAGENET_MEAN) / 3]).view(1, 1, 1)
        std = torch.tensor([sum(IMAGENET_STD) / 3]).view(1, 1, 1)
    return (cropped - mean) / std
