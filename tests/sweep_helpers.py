"""Helpers of the sweep tests (test_run_e2e, test_fault_injection): experiment files of tiny
trials, and finding every process a test's Ray started (by a marker in their environment)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MARKER_VARIABLE = "SNA_ORCH_TEST_MARKER"
# Tiny trials: 2 batches of 8 images of 16² per epoch.
TINY_DATASET = {"image_size": 16, "kwargs": {"train_size": 16, "val_size": 8}}
TINY_TRAIN = {"epochs": 2, "batch_size": 8, "lr": 0.05, "limit_train_batches": 2, "limit_eval_batches": 1,
              "metric": "top1", "mode": "max", "schedule": {"name": "multistep", "milestones": [1], "gamma": 0.5}}


def write_experiment(directory: Path, name: str, **overrides: object) -> Path:
    document = {
        "name": name,
        "matrix": {"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "attention": ["none", "sna"],
                   "seed": [0, 1]},
        "datasets": {"redundant_shapes": TINY_DATASET},
        "train": dict(TINY_TRAIN),
        "resources": {"num_workers": 1, "cpus_per_worker": 1, "max_concurrent": 2},
        "tracking": {"uri": f"sqlite:///{directory / 'mlflow.db'}"},
        "storage": str(directory / "results"),
    }
    document.update(overrides)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def processes_with_marker(marker: str) -> list[int]:
    """PIDs (other than this one) whose environment carries ``marker``: everything Ray started
    for this test inherits it from the driver."""
    found = []
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def end_processes(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for_no_processes(marker: str, timeout_s: float = 20.0) -> list[int]:
    """The marked processes still alive after ``timeout_s`` (ray.shutdown's exit promptly)."""
    deadline = time.monotonic() + timeout_s
    left = processes_with_marker(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_with_marker(marker)
    return left


@dataclass(frozen=True)
class StandInCell:
    """The fields of orchestrator.plan.Cell that tracking, results and status read."""

    key: str
    dataset: str = "redundant_shapes"
    backbone: str = "resnet18"
    attention: str = "sna"
    rank_k: int | None = 1
    placement: str = "stem"
    seed: int = 0
    task: str = "classification"
    config: dict[str, Any] = field(default_factory=dict)
