"""orchestrator.tracking against real MLflow stores: sqlite files in tmp_path and a real
``mlflow server`` over HTTP. No mocks: every assertion reads back what MLflow stored."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sweep_helpers import StandInCell
from sweep_helpers import mlflow_server as running_mlflow_server

from orchestrator.tracking import (
    AXES,
    SweepTracker,
    TrialLogger,
    _retry,
    finished_trial_keys,
    flatten_config,
    git_commit,
    trial_states,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "sna-test"




def trial_config(seed: int = 0, attention: str = "sna", epochs: int = 3) -> dict[str, Any]:
    return {
        "seed": seed,
        "dataset": {"name": "redundant_shapes", "task": "classification", "root": None, "image_size": 32,
                    "num_classes": 10, "kwargs": {}},
        "model": {"backbone": "resnet18", "stem": "cifar", "attention": attention, "placement": "stem",
                  "attention_kwargs": {"rank_k": 1} if attention == "sna" else {}},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
                  "weight_decay": 5e-4, "schedule": {"name": "multistep", "milestones": [2], "gamma": 0.2},
                  "metric": "top1", "mode": "max", "loader_workers": 0, "limit_train_batches": None,
                  "limit_eval_batches": None},
    }


def make_cell(index: int, attention: str = "sna", epochs: int = 3) -> StandInCell:
    return StandInCell(key=f"{index:016x}", seed=index, attention=attention,
                       rank_k=1 if attention == "sna" else None,
                       config=trial_config(seed=index, attention=attention, epochs=epochs))


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite database with its schema, made once: migrating a fresh file takes
    seconds, copying it milliseconds."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def missing_store_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture
def sqlite_uri(missing_store_uri: str, tmp_path: Path, empty_store: Path) -> str:
    (tmp_path / "store").mkdir()
    shutil.copyfile(empty_store, tmp_path / "store" / "mlflow.db")
    return missing_store_uri


def trial_runs_of(uri: str, key: str | None = None) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    query = "tags.`sna.run_type` = 'trial'" + (f" and tags.`sna.trial_key` = '{key}'" if key else "")
    return client.search_runs([experiment.experiment_id], query, run_view_type=ViewType.ALL)


# --------------------------------------------------------------------------------------------
# URIs and git


def test_git_commit_inside_and_outside_a_repository(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("the project is not a git checkout here")
    commit = git_commit(REPO_ROOT)
    assert commit is not None and len(commit) == 40 and int(commit, 16) >= 0


# --------------------------------------------------------------------------------------------
# Readers create nothing


def test_readers_on_a_missing_store_create_nothing(missing_store_uri: str, tmp_path: Path) -> None:
    assert finished_trial_keys(missing_store_uri, EXPERIMENT) == set()
    assert trial_states(missing_store_uri, EXPERIMENT) == {}
    assert not (tmp_path / "store").exists()
    assert sorted(os.listdir(tmp_path)) == []


def test_readers_on_a_missing_experiment_create_nothing(sqlite_uri: str) -> None:
    SweepTracker(sqlite_uri, "another-experiment").ensure_experiment()
    assert finished_trial_keys(sqlite_uri, EXPERIMENT) == set()
    assert trial_states(sqlite_uri, EXPERIMENT) == {}
    assert MlflowClient(sqlite_uri).get_experiment_by_name(EXPERIMENT) is None


# --------------------------------------------------------------------------------------------
# Find-or-create


def test_trial_run_is_find_or_create(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    parent = tracker.start_sweep("quickstart.yaml", "f" * 64, None, n_cells=2)
    cell = make_cell(0)
    first = tracker.trial_run(cell, parent)
    again = SweepTracker(sqlite_uri, EXPERIMENT).trial_run(cell, parent)  # a second driver
    many = tracker.trial_runs([cell, make_cell(1), cell], parent)
    assert first == again == many[cell.key]
    assert len(trial_runs_of(sqlite_uri, cell.key)) == 1
    assert len(trial_runs_of(sqlite_uri)) == 2
    assert MlflowClient(sqlite_uri).get_run(first).info.status == "SCHEDULED"


@pytest.mark.parametrize("left_as", ["RUNNING", "FAILED", "KILLED"])
def test_crashed_trial_run_is_reused_not_duplicated(sqlite_uri: str, left_as: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    parent = tracker.start_sweep("x.yaml", "a" * 64, None, n_cells=1)
    cell = make_cell(3)
    run_id = tracker.trial_run(cell, parent)
    logger = TrialLogger(sqlite_uri, run_id)
    logger.mark_running()
    logger.log_epoch({"top1": 0.5}, epoch=1)
    if left_as != "RUNNING":  # RUNNING: the worker died without a word
        logger.finish(left_as, reason="worker lost")

    restarted = SweepTracker(sqlite_uri, EXPERIMENT)  # the driver after a crash
    resumed_parent = restarted.start_sweep("x.yaml", "a" * 64, None, n_cells=1)
    assert resumed_parent == parent
    assert restarted.trial_run(cell, resumed_parent) == run_id
    assert len(trial_runs_of(sqlite_uri, cell.key)) == 1
    state = trial_states(sqlite_uri, EXPERIMENT)[cell.key]
    assert (state.status, state.run_id, state.epoch) == ("SCHEDULED", run_id, 1)


def test_run_created_by_a_driver_that_died_half_way_is_completed(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    parent = tracker.start_sweep("x.yaml", "b" * 64, None, n_cells=1)
    cell = make_cell(4)
    # The driver died right after create_run: tags only, no params, no artifact.
    half = tracker.client.create_run(tracker.ensure_experiment(), tags=tracker._trial_tags(cell, parent))
    assert tracker.trial_run(cell, parent) == half.info.run_id
    run = tracker.client.get_run(half.info.run_id)
    assert run.data.params["train.lr"] == "0.1"
    assert run.data.tags["sna.initialised"] == "1"
    assert [a.path for a in tracker.client.list_artifacts(half.info.run_id)] == ["resolved_config.json"]


def test_finished_run_is_found_and_left_alone(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    parent = tracker.start_sweep("x.yaml", "c" * 64, None, n_cells=2)
    done, todo = make_cell(5), make_cell(6)
    ids = tracker.trial_runs([done, todo], parent)
    logger = TrialLogger(sqlite_uri, ids[done.key])
    logger.mark_running()
    logger.finish("FINISHED")
    assert finished_trial_keys(sqlite_uri, EXPERIMENT) == {done.key}
    assert tracker.trial_run(done, parent) == ids[done.key]
    assert tracker.client.get_run(ids[done.key]).info.status == "FINISHED"


def test_trial_run_logs_params_tags_and_resolved_config(sqlite_uri: str, tmp_path: Path) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    commit = "0123456789abcdef0123456789abcdef01234567"
    parent = tracker.start_sweep(str(tmp_path / "quickstart.yaml"), "d" * 64, commit, n_cells=1)
    cell = make_cell(7)
    run_id = tracker.trial_run(cell, parent)
    run = tracker.client.get_run(run_id)
    params, tags = run.data.params, run.data.tags
    assert params == flatten_config(cell.config)
    assert params["train.lr"] == "0.1" and params["model.attention"] == "sna"
    assert params["train.schedule.milestones"] == "[2]" and params["dataset.root"] == "null"
    assert params["dataset.kwargs"] == "{}" and params["model.attention_kwargs.rank_k"] == "1"
    assert tags["sna.trial_key"] == cell.key and tags["mlflow.parentRunId"] == parent
    assert {axis: tags[f"sna.{axis}"] for axis in AXES} == {
        "dataset": "redundant_shapes", "backbone": "resnet18", "attention": "sna", "rank_k": "1",
        "placement": "stem", "seed": "7", "task": "classification"}
    assert tags["sna.git_commit"] == commit and tags["sna.config_hash"] == "d" * 64
    assert tags["sna.config_path"] == str(tmp_path / "quickstart.yaml")
    # Another tracker given only the parent run id tags its trials the same way.
    other = SweepTracker(sqlite_uri, EXPERIMENT).trial_run(make_cell(70), parent)
    other_tags = tracker.client.get_run(other).data.tags
    assert (other_tags["sna.config_hash"], other_tags["sna.git_commit"]) == ("d" * 64, commit)
    local = tracker.client.download_artifacts(run_id, "resolved_config.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == cell.config
    # Artifacts sit beside the sqlite database, not in the current directory.
    assert run.info.artifact_uri.startswith((tmp_path / "store" / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_long_param_values_are_cut_to_mlflows_limit(sqlite_uri: str) -> None:
    cell = StandInCell(key="e" * 16, config=dict(trial_config(), notes="x" * 7000))
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    run_id = tracker.trial_run(cell, tracker.start_sweep("x.yaml", "e" * 64, None, 1))
    value = tracker.client.get_run(run_id).data.params["notes"]
    assert len(value) == 6000 and value.endswith("[truncated]")


def test_sweep_parent_is_reused_until_finished(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    first = tracker.start_sweep("x.yaml", "1" * 64, None, n_cells=3)
    assert tracker.start_sweep("x.yaml", "1" * 64, None, n_cells=3) == first
    assert tracker.start_sweep("x.yaml", "2" * 64, None, n_cells=3) != first  # another config
    tracker.finish_sweep(first, "FAILED")
    assert tracker.start_sweep("x.yaml", "1" * 64, None, n_cells=3) == first
    assert tracker.client.get_run(first).info.status == "RUNNING"
    tracker.finish_sweep(first, "FINISHED")
    assert tracker.start_sweep("x.yaml", "1" * 64, None, n_cells=3) != first


def test_deleted_experiment_is_named_not_recreated(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    tracker.client.delete_experiment(tracker.ensure_experiment())
    assert trial_states(sqlite_uri, EXPERIMENT) == {}
    with pytest.raises(ValueError, match=f"'{EXPERIMENT}'.*deleted"):
        SweepTracker(sqlite_uri, EXPERIMENT).ensure_experiment()


# --------------------------------------------------------------------------------------------
# The worker's logger


def test_epoch_metrics_use_step_epoch_and_track_the_best(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    cell = make_cell(8, epochs=6)
    run_id = tracker.trial_run(cell, tracker.start_sweep("x.yaml", "3" * 64, None, 1))
    top1 = [0.2, 0.6, 0.4, 0.5, 0.7, 0.65]
    logger = TrialLogger(sqlite_uri, run_id)
    logger.mark_running()
    for epoch in range(1, 4):
        logger.log_epoch({"top1": top1[epoch - 1], "train_loss": 1.0 / epoch}, epoch)
    # A restart in a new worker process: the best so far is read back from MLflow.
    logger = pickle.loads(pickle.dumps(logger))
    for epoch in range(4, 7):
        logger.log_epoch({"top1": top1[epoch - 1], "train_loss": 1.0 / epoch}, epoch)
    logger.log_summary({"best_top1": 0.7, "final_top1": 0.65, "params": 11_200_000, "flops": 5.5e8,
                        "sna": {"iterations_mean": 2.5}})
    logger.finish("FINISHED")

    history = tracker.client.get_metric_history(run_id, "top1")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    assert [m.value for m in history] == top1
    best = tracker.client.get_metric_history(run_id, "best_top1")
    # Kept by log_epoch at each step, then log_summary's value at the last epoch's step.
    best_in_order = sorted((m.step, m.timestamp, m.value) for m in best)
    assert [(step, value) for step, _, value in best_in_order] == [
        (1, 0.2), (2, 0.6), (3, 0.6), (4, 0.6), (5, 0.7), (6, 0.7), (6, 0.7)]
    assert [m.step for m in tracker.client.get_metric_history(run_id, "final_top1")] == [6]
    metrics = tracker.client.get_run(run_id).data.metrics
    assert metrics["sna.iterations_mean"] == 2.5 and metrics["params"] == 11_200_000
    state = trial_states(sqlite_uri, EXPERIMENT)[cell.key]
    assert (state.status, state.epoch, state.epochs, state.metric, state.best) == ("FINISHED", 6, 6, "top1", 0.7)
    assert {a.path for a in tracker.client.list_artifacts(run_id)} == {"resolved_config.json", "final_metrics.json"}


def test_failure_reason_is_tagged_and_cleared_on_restart(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    cell = make_cell(9)
    run_id = tracker.trial_run(cell, tracker.start_sweep("x.yaml", "4" * 64, None, 1))
    logger = TrialLogger(sqlite_uri, run_id)
    logger.mark_running()
    logger.finish("FAILED", reason="RuntimeError: CUDA out of memory")
    state = trial_states(sqlite_uri, EXPERIMENT)[cell.key]
    assert (state.status, state.failure_reason) == ("FAILED", "RuntimeError: CUDA out of memory")
    assert state.end_time is not None and state.end_time >= state.start_time
    logger.mark_running()
    state = trial_states(sqlite_uri, EXPERIMENT)[cell.key]
    assert (state.status, state.failure_reason, state.end_time) == ("RUNNING", None, None)


def test_bad_values_are_named(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    run_id = tracker.trial_run(make_cell(10), tracker.start_sweep("x.yaml", "5" * 64, None, 1))
    logger = TrialLogger(sqlite_uri, run_id)
    with pytest.raises(ValueError, match=r"'DONE'.*\['FINISHED', 'FAILED', 'KILLED'\]"):
        logger.finish("DONE")
    with pytest.raises(TypeError, match="'top1'.*str"):
        logger.log_epoch({"top1": "high"}, epoch=1)
    with pytest.raises(ValueError, match="epoch.*-1"):
        logger.log_epoch({"top1": 0.1}, epoch=-1)
    with pytest.raises(ValueError, match="'../escape.json'"):
        logger.log_json_artifact("../escape.json", {})
    with pytest.raises(ValueError, match="experiment name.*''"):
        SweepTracker(sqlite_uri, "")


# --------------------------------------------------------------------------------------------
# Retries and concurrent writers


def test_retry_rides_out_a_locked_database_and_stops_on_real_errors() -> None:
    calls = []

    def locked_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked", error_code="TEMPORARILY_UNAVAILABLE")
        return "written"

    assert _retry(locked_twice, what="test", base_delay_s=0.001) == "written" and len(calls) == 3

    def invalid() -> None:
        calls.append(1)
        raise MlflowException("Changing param values is not allowed", error_code="INVALID_PARAMETER_VALUE")

    calls.clear()
    with pytest.raises(MlflowException, match="Changing param values"):
        _retry(invalid, what="test", base_delay_s=0.001)
    assert len(calls) == 1

    def server_down() -> None:
        calls.append(1)
        raise MlflowException("API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed with "
                              "exception HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded")

    calls.clear()
    with pytest.raises(MlflowException, match="Max retries exceeded"):
        _retry(server_down, what="test", base_delay_s=0.001)
    assert len(calls) == 3  # MLflow's REST client already retried each of these


WRITERS, EPOCHS, METRICS = 8, 30, ("top1", "top5", "train_loss", "val_loss")


def _write_epochs(uri: str, run_id: str, start_barrier: Any) -> None:
    logger = TrialLogger(uri, run_id)
    start_barrier.wait()
    logger.mark_running()
    for epoch in range(EPOCHS):
        logger.log_epoch({name: epoch + index / 10 for index, name in enumerate(METRICS)}, epoch)
    logger.log_summary({"final_top1": EPOCHS - 1.0})
    logger.finish("FINISHED")


@pytest.mark.slow
def test_eight_concurrent_writer_processes_lose_nothing(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    cells = [make_cell(100 + i, epochs=EPOCHS) for i in range(WRITERS)]
    ids = tracker.trial_runs(cells, tracker.start_sweep("x.yaml", "6" * 64, None, WRITERS))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    processes = [context.Process(target=_write_epochs, args=(sqlite_uri, ids[c.key], barrier)) for c in cells]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * WRITERS

    assert finished_trial_keys(sqlite_uri, EXPERIMENT) == {c.key for c in cells}
    for run_id in ids.values():
        for index, name in enumerate(METRICS + ("epoch",)):
            history = tracker.client.get_metric_history(run_id, name)
            assert sorted(m.step for m in history) == list(range(EPOCHS)), (run_id, name)
            if name != "epoch":
                assert sorted(m.value for m in history) == [e + index / 10 for e in range(EPOCHS)]
        assert tracker.client.get_run(run_id).data.metrics["final_top1"] == EPOCHS - 1.0


# --------------------------------------------------------------------------------------------
# A real tracking server over HTTP


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copyfile(empty_store, tmp_path / "server.db")  # skips the schema migration
    with running_mlflow_server(tmp_path) as url:
        yield url


@pytest.mark.slow
def test_tracking_over_http_server(mlflow_server: str, tmp_path: Path) -> None:
    assert trial_states(mlflow_server, EXPERIMENT) == {}
    tracker = SweepTracker(mlflow_server, EXPERIMENT)
    parent = tracker.start_sweep("x.yaml", "7" * 64, None, n_cells=2)
    done, failed = make_cell(20), make_cell(21, attention="se")
    ids = tracker.trial_runs([done, failed], parent)
    assert tracker.trial_run(done, parent) == ids[done.key]

    logger = TrialLogger(mlflow_server, ids[done.key])
    logger.mark_running()
    for epoch in range(1, 4):
        logger.log_epoch({"top1": 0.1 * epoch}, epoch)
    logger.log_summary({"final_top1": 0.3})
    logger.finish("FINISHED")
    TrialLogger(mlflow_server, ids[failed.key]).finish("FAILED", reason="diverged")

    assert finished_trial_keys(mlflow_server, EXPERIMENT) == {done.key}
    states = trial_states(mlflow_server, EXPERIMENT)
    assert (states[done.key].epoch, states[done.key].best) == (3, pytest.approx(0.3))
    assert (states[failed.key].status, states[failed.key].failure_reason) == ("FAILED", "diverged")
    assert [m.step for m in tracker.client.get_metric_history(ids[done.key], "top1")] == [1, 2, 3]
    config = tracker.client.download_artifacts(ids[done.key], "resolved_config.json", str(tmp_path))
    assert json.loads(Path(config).read_text()) == done.config
    assert len(trial_runs_of(mlflow_server)) == 2
