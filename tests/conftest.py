"""Fixtures shared by the test modules."""

import uuid

import pytest
import torch
from sweep_helpers import MARKER_VARIABLE, end_processes, wait_for_no_processes


@pytest.fixture(autouse=True, scope="session")
def _flops_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """`sna-orch plan` keeps counted FLOPs in ~/.cache; tests count afresh, in a temp folder."""
    import os

    previous = os.environ.get("SNA_ORCH_CACHE")
    os.environ["SNA_ORCH_CACHE"] = str(tmp_path_factory.mktemp("sna-orch-cache"))
    yield
    if previous is None:
        os.environ.pop("SNA_ORCH_CACHE", None)
    else:
        os.environ["SNA_ORCH_CACHE"] = previous


@pytest.fixture(scope="module")
def one_cpu_thread():
    """One intra-op thread: on a small shared CPU, OpenMP workers spin-waiting for descheduled
    siblings made model tests many times slower than their CPU cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch):
    """No inherited MLflow/Ray addresses; a marker to find every process the test starts. Any
    such process still alive at the end fails the test (after being ended, by PID)."""
    for variable in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(variable, raising=False)
    marker = uuid.uuid4().hex
    monkeypatch.setenv(MARKER_VARIABLE, marker)
    yield marker
    left = wait_for_no_processes(marker)
    end_processes(left)
    assert not left, f"processes left behind by the run: {left}"
