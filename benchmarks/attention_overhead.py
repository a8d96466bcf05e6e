"""Inference-throughput overhead of every registered attention block, relative to no attention.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), Table 1 "Inference" (FPS, CIFAR-100 ResNet-18 on a GPU): SNA 217 / 225
= 0.964 of the vanilla backbone, SE 0.83, ECA 0.90, SA 0.68, AA 0.34.

Each attention is placed once after the stem (the paper's default placement). All models of a
setting are measured *interleaved*: every round times each model in turn (the order rotates from
round to round), so that load from other processes and thermal drift hit all models alike; a
model's figure is the median of its rounds, and its ratio divides that by the vanilla model's.

AA runs in the configuration of the authors' code, which produced the paper's FPS figures
(``dk=40, dv=4, num_heads=1, relative=False``); the AA paper's own defaults (8 heads, relative
logits) need about 1 GB per 224² image at the stem's 56×56 map, 16 GB for a batch of 16.
``--attention-kwargs '{"aa": {}}'`` selects them instead.

    python -m benchmarks.attention_overhead [--quick] [--device cuda] [--threads N]

prints ONE JSON object on stdout (progress goes to stderr)::

    {"ratios": {"resnet18_cifar_32": {"sna": 0.99, ...}, "resnet50_imagenet_224": {...}},
     "images_per_s": {...}, "device": "...", "cpu_threads": 2, ...}
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch

from sna_core.attention import list_attention
from sna_core.backbones import build_backbone
from sna_core.profiling import measure_throughput

PAPER_GPU_RATIOS = {"sna": 0.964, "se": 0.83, "eca": 0.90, "sa": 0.68, "aa": 0.34}
SNA_TARGET_RATIO = 0.98
PLACEMENT = "stem"
DEFAULT_ATTENTION_KWARGS = {
    "aa": {"dk": 40, "dv": 4, "num_heads": 1, "relative": False}
}


@dataclass(frozen=True)
class Setting:
    key: str
    backbone: str
    stem: str
    image_size: int
    batch_size: int
    num_classes: int


SETTINGS = (
    Setting("resnet18_cifar_32", "resnet18", "cifar", 32, 64, 100),
    Setting("resnet50_imagenet_224", "resnet50", "imagenet", 224, 16, 1000),
)


@dataclass(frozen=True)
class Schedule:
    rounds: int
    iters_per_round: int
    warmup: int


FULL = Schedule(rounds=9, iters_per_round=3, warmup=3)
QUICK = Schedule(rounds=3, iters_per_round=1, warmup=1)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def measure_setting(
    setting: Setting,
    attentions: list[str],
    attention_kwargs: dict[str, dict],
    schedule: Schedule,
    device: torch.device,
) -> dict[str, float]:
    """Median images/s of each attention's model, measured round-robin."""
    torch.manual_seed(0)
    models = {
        name: build_backbone(
            setting.backbone,
            setting.num_classes,
            stem=setting.stem,
            attention=name,
            placement=PLACEMENT,
            attention_kwargs=attention_kwargs.get(name),
        )
        for name in attentions
    }
    shape = (3, setting.image_size, setting.image_size)
    for name, model in models.items():
        measure_throughput(
            model,
            shape,
            setting.batch_size,
            warmup=schedule.warmup,
            iters=1,
            device=device,
        )
    samples: dict[str, list[float]] = {name: [] for name in attentions}
    for round_index in range(schedule.rounds):
        shift = round_index % len(attentions)
        for name in attentions[shift:] + attentions[:shift]:
            samples[name].append(
                measure_throughput(
                    models[name],
                    shape,
                    setting.batch_size,
                    warmup=0,
                    iters=schedule.iters_per_round,
                    device=device,
                )
            )
        print(
            f"{setting.key}: round {round_index + 1}/{schedule.rounds} done",
            file=sys.stderr,
            flush=True,
        )
    return {name: statistics.median(values) for name, values in samples.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 rounds of 1 batch (default: 9 rounds of 3)",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )
    parser.add_argument(
        "--settings",
        default=",".join(s.key for s in SETTINGS),
        help=f"comma-separated subset of {', '.join(s.key for s in SETTINGS)}",
    )
    parser.add_argument(
        "--attention",
        default=None,
        help="comma-separated attention names (default: every registered one)",
    )
    parser.add_argument(
        "--attention-kwargs",
        type=json.loads,
        default=DEFAULT_ATTENTION_KWARGS,
        help=f"JSON object: attention name -> keyword arguments (default: {json.dumps(DEFAULT_ATTENTION_KWARGS)})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    known_settings = {s.key: s for s in SETTINGS}
    chosen_settings = [key for key in args.settings.split(",") if key]
    unknown = [key for key in chosen_settings if key not in known_settings]
    if unknown or not chosen_settings:
        raise SystemExit(
            f"unknown settings {unknown}; valid: {', '.join(known_settings)}"
        )
    registered = list_attention()
    attentions = (
        registered
        if args.attention is None
        else [a for a in args.attention.split(",") if a]
    )
    unknown = [name for name in attentions if name not in registered]
    if unknown:
        raise SystemExit(
            f"unknown attention {unknown}; registered: {', '.join(registered)}"
        )
    attentions = ["none"] + [
        name for name in attentions if name != "none"
    ]  # the reference first
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device!r}: CUDA is not available here")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    schedule = QUICK if args.quick else FULL

    started = time.perf_counter()
    if not isinstance(args.attention_kwargs, dict) or not all(
        isinstance(v, dict) for v in args.attention_kwargs.values()
    ):
        raise SystemExit(
            f"--attention-kwargs must map names to objects, got {args.attention_kwargs!r}"
        )
    images_per_s = {
        key: measure_setting(
            known_settings[key], attentions, args.attention_kwargs, schedule, device
        )
        for key in chosen_settings
    }
    ratios = {
        key: {
            name: rates[name] / rates["none"] for name in attentions if name != "none"
        }
        for key, rates in images_per_s.items()
    }
    result = {
        "ratios": ratios,
        "images_per_s": images_per_s,
        "device": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "placement": PLACEMENT,
        "attention_kwargs": args.attention_kwargs,
        "schedule": asdict(schedule),
        "settings": {key: asdict(known_settings[key]) for key in chosen_settings},
        "paper_gpu_ratios_resnet18_cifar": PAPER_GPU_RATIOS,
        "sna_target_ratio": SNA_TARGET_RATIO,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
