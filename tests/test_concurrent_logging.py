"""Concurrent writers: 8 trial processes logging to one MLflow store at once lose no metric.

The default store is sqlite, which takes one writer at a time ("database is locked"):
:class:`orchestrator.tracking.TrialLogger` retries those errors. For clusters, the store is an
``mlflow server`` process the workers reach over HTTP; the same load runs against a real one
started here (sqlite behind it; PostgreSQL in production — see the README).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweep_helpers import StandInCell, mlflow_server

from orchestrator.tracking import SweepTracker, TrialLogger

pytestmark = pytest.mark.slow

WRITERS = 8
EPOCHS = 25
METRICS = ("loss", "top1", "top5")



def write_trial(tracking_uri: str, run_id: str, index: int) -> None:
    logger = TrialLogger(tracking_uri, run_id)
    logger.mark_running()
    for epoch in range(EPOCHS):
        logger.log_epoch({name: index + epoch / 100 for name in METRICS}, epoch)
    logger.log_summary({"params": 1.0 + index})
    logger.finish("FINISHED")


def log_concurrently(tracking_uri: str) -> dict[str, str]:
    tracker = SweepTracker(tracking_uri, "concurrent")
    parent = tracker.start_sweep("concurrent.yaml", "0" * 64, None, WRITERS)
    cells = [StandInCell(key=f"{index:016x}", seed=index,
                         config={"seed": index, "train": {"epochs": EPOCHS, "metric": "top1", "mode": "max"}})
             for index in range(WRITERS)]
    run_ids = tracker.trial_runs(cells, parent)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=write_trial, args=(tracking_uri, run_ids[cell.key], index))
               for index, cell in enumerate(cells)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0] * WRITERS
    tracker.finish_sweep(parent)
    return run_ids


def assert_nothing_lost(tracking_uri: str, run_ids: dict[str, str]) -> None:
    client = MlflowClient(tracking_uri)
    for index, run_id in enumerate(run_ids.values()):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for name in (*METRICS, "epoch"):
            history = client.get_metric_history(run_id, name)
            assert sorted(m.step for m in history) == list(range(EPOCHS)), (run_id, name)
        assert run.data.metrics["params"] == 1.0 + index
        assert run.data.metrics["top1"] == pytest.approx(index + (EPOCHS - 1) / 100)


def test_eight_writers_on_sqlite_lose_nothing(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert_nothing_lost(uri, log_concurrently(uri))


def test_eight_writers_over_http_to_an_mlflow_server(tmp_path: Path) -> None:
    with mlflow_server(tmp_path) as uri:
        assert_nothing_lost(uri, log_concurrently(uri))
