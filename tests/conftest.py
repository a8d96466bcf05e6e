"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_cpu_thread():
    """One intra-op thread: on a small shared CPU, OpenMP workers spin-waiting for descheduled
    siblings made model tests many times slower than their CPU cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
