"""The sweep's result relay (Train controller → Tune trial) on a real local Ray, and the
one-worker Train backend's promise not to import torch where it is unpickled."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import ray

from orchestrator.result_relay import TAKE_WAIT_S, fit_reporting, start_relay


@pytest.fixture(scope="module")
def relay():
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield start_relay()
    finally:
        ray.shutdown()


def test_every_result_is_reported_in_order_including_those_put_just_before_fit_returns(relay) -> None:
    reported: list[dict] = []

    def fit() -> str:
        for epoch in range(3):
            ray.get(relay.put.remote("trial-a", {"epoch": epoch}))
            time.sleep(0.05)
        ray.get(relay.put.remote("trial-a", {"epoch": 3}))  # the last one, right before returning
        return "fitted"

    started = time.monotonic()
    assert fit_reporting("trial-a", relay, fit, reported.append) == "fitted"
    assert [item["epoch"] for item in reported] == [0, 1, 2, 3]
    # The end of fit() wakes the waiting take(): no TAKE_WAIT_S pause after the last result.
    assert time.monotonic() - started < TAKE_WAIT_S


def test_results_of_other_trials_stay_in_their_own_mailbox(relay) -> None:
    reported: list[dict] = []

    def fit() -> None:
        ray.get(relay.put.remote("trial-c", {"epoch": 0}))
        ray.get(relay.put.remote("trial-b", {"epoch": 7}))

    fit_reporting("trial-b", relay, fit, reported.append)
    assert reported == [{"epoch": 7}]
    assert ray.get(relay.take.remote("trial-c", 0.0)) == [{"epoch": 0}]


def test_fit_error_is_raised_after_its_results_are_reported(relay) -> None:
    reported: list[dict] = []

    def fit() -> None:
        ray.get(relay.put.remote("trial-d", {"epoch": 0}))
        raise ValueError("loss is nan at epoch 1")

    with pytest.raises(ValueError, match="loss is nan"):
        fit_reporting("trial-d", relay, fit, reported.append)
    assert reported == [{"epoch": 0}]


def test_take_returns_empty_after_waiting(relay) -> None:
    started = time.monotonic()
    assert ray.get(relay.take.remote("trial-none", 0.3)) == []
    assert 0.25 <= time.monotonic() - started < 3.0


def test_single_worker_config_does_not_import_torch() -> None:
    code = ("import sys, pickle, orchestrator.train_backend as b; "
            "pickle.loads(pickle.dumps(b.SingleWorkerConfig())); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
