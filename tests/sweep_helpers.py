"""Helpers of the sweep tests (test_run_e2e, test_fault_injection, test_tracking,
test_concurrent_logging): experiment files of tiny trials, finding every process a test's Ray
started (by a marker in their environment), and a real ``mlflow server`` to log to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


# ~15 s on an idle 2-core machine; minutes when a sweep shares the cores.
SERVER_START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_server(folder: Path, *, timeout_s: float = SERVER_START_TIMEOUT_S) -> Iterator[str]:
    """A real ``mlflow server`` (one worker) on 127.0.0.1 over ``folder/server.db``; yields its
    URL and ends its whole process group after. The store's schema is created first, here, so the
    server does not migrate it while it starts (slow, and racy with several workers)."""
    from mlflow.tracking import MlflowClient

    store = folder / "server.db"
    if not store.exists():
        MlflowClient(f"sqlite:///{store}").search_experiments()
    port = free_port()
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store}",
             "--artifacts-destination", str(folder / "server-artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not answer /health within {timeout_s} s:\n"
                                       f"{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            try:  # the server runs its workers in its own session: end that group (ours alone)
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
