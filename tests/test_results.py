"""orchestrator.results and the `status` / `results` verbs against real MLflow sqlite stores in
tmp_path: one typed row per trial, nulls (never 0) for what a run lacks, atomic parquet writes,
per-cell state read from MLflow."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from sweep_helpers import StandInCell

from orchestrator.commands.status import format_status, sweep_status
from orchestrator.results import BASE_SCHEMA, MISSING, results_table, write_parquet
from orchestrator.tracking import SweepTracker, TrialLogger

EXPERIMENT = "sna-results-test"




def make_cell(index: int, attention: str = "sna") -> StandInCell:
    config = {
        "seed": index,
        "dataset": {"name": "redundant_shapes", "root": None, "kwargs": {}},
        "model": {"backbone": "resnet18", "attention": attention, "pretrained": False,
                  "attention_kwargs": {"rank_k": 1} if attention == "sna" else {}},
        "train": {"epochs": 3, "lr": 0.05, "batch_size": 32, "metric": "top1", "mode": "max",
                  "schedule": {"name": "multistep", "milestones": [2]}, "limit_train_batches": None},
    }
    return StandInCell(key=f"{index:016x}", attention=attention, seed=index,
                       rank_k=1 if attention == "sna" else None, config=config)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite database with its schema, made once (a fresh migration takes seconds)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def sqlite_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> str:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "store").mkdir()
    shutil.copyfile(empty_store, tmp_path / "store" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def run_sweep_by_hand(uri: str, cells: list[StandInCell]) -> dict[str, str]:
    """What the runner does, written out: cells[0] finishes with summaries, cells[1] fails after
    one epoch, cells[2] is still running at epoch 2, the rest stay scheduled."""
    tracker = SweepTracker(uri, EXPERIMENT)
    ids = tracker.trial_runs(cells, tracker.start_sweep("exp.yaml", "9" * 64, None, len(cells)))
    finished = TrialLogger(uri, ids[cells[0].key])
    finished.mark_running()
    for epoch in (1, 2, 3):
        finished.log_epoch({"top1": 0.2 * epoch, "train_loss": 2.0 / epoch}, epoch)
    finished.log_summary({"final_top1": 0.6, "params": 11_181_642, "flops": 5.6e8, "throughput": 812.5})
    finished.finish("FINISHED")
    failed = TrialLogger(uri, ids[cells[1].key])
    failed.mark_running()
    failed.log_epoch({"top1": 0.1, "train_loss": math.nan}, 1)
    failed.finish("FAILED", reason="FloatingPointError: loss is nan")
    running = TrialLogger(uri, ids[cells[2].key])
    running.mark_running()
    for epoch in (1, 2):
        running.log_epoch({"top1": 0.3, "train_loss": 1.0}, epoch)
    return ids


# --------------------------------------------------------------------------------------------
# results_table


def test_one_typed_row_per_trial_run(sqlite_uri: str) -> None:
    cells = [make_cell(0), make_cell(1, "se"), make_cell(2, "eca"), make_cell(3)]
    ids = run_sweep_by_hand(sqlite_uri, cells)
    table = results_table(sqlite_uri, EXPERIMENT)
    assert table.num_rows == len(ids) == 4
    assert table.schema.names[: len(BASE_SCHEMA)] == BASE_SCHEMA.names
    rows = {row["key"]: row for row in table.to_pylist()}
    assert set(rows) == {cell.key for cell in cells}
    assert {key: rows[key]["status"] for key in rows} == {
        cells[0].key: "FINISHED", cells[1].key: "FAILED", cells[2].key: "RUNNING", cells[3].key: "SCHEDULED"}
    assert {rows[key]["run_id"] for key in rows} == set(ids.values())

    done = rows[cells[0].key]
    assert (done["attention"], done["rank_k"], done["seed"], done["task"]) == ("sna", 1, 0, "classification")
    assert (done["metric"], done["best"], done["epoch"]) == ("top1", pytest.approx(0.6), 3)
    assert done["metrics.final_top1"] == 0.6 and done["metrics.params"] == 11_181_642
    assert done["duration_s"] >= 0 and done["failure_reason"] is None
    assert rows[cells[1].key]["rank_k"] is None and rows[cells[1].key]["failure_reason"].startswith("FloatingPoint")

    # What a run does not have is null, never 0; a logged NaN stays NaN.
    scheduled, failed = rows[cells[3].key], rows[cells[1].key]
    for column in ("metrics.final_top1", "metrics.flops", "metrics.top1", "best", "epoch", "duration_s"):
        assert scheduled[column] is None, column
    assert failed["metrics.final_top1"] is None and math.isnan(failed["metrics.train_loss"])
    assert rows[cells[2].key]["end_time"] is None and rows[cells[2].key]["duration_s"] is None

    types = {name: table.schema.field(name).type for name in table.schema.names}
    assert types["rank_k"] == types["seed"] == types["epoch"] == pa.int64()
    assert types["params.train.lr"] == types["metrics.top1"] == types["best"] == pa.float64()
    assert types["params.train.epochs"] == types["params.seed"] == pa.int64()
    assert types["params.model.pretrained"] == pa.bool_()
    assert types["params.model.attention"] == types["params.train.schedule.milestones"] == pa.string()
    assert done["params.train.schedule.milestones"] == "[2]"
    assert done["params.dataset.root"] is None and done["params.train.limit_train_batches"] is None
    assert types["params.dataset.root"] == pa.string()
    assert done["params.model.attention_kwargs.rank_k"] == 1
    assert rows[cells[1].key]["params.model.attention_kwargs.rank_k"] is None


def test_planned_cells_without_a_run_are_missing_rows(sqlite_uri: str) -> None:
    ran = [make_cell(0), make_cell(1, "se"), make_cell(2)]
    run_sweep_by_hand(sqlite_uri, ran)
    unplanned_run = ran[2]
    plan = [make_cell(7, "aa"), ran[1], ran[0], make_cell(8), ran[0]]  # a duplicate key counts once
    table = results_table(sqlite_uri, EXPERIMENT, plan)
    rows = table.to_pylist()
    assert [row["key"] for row in rows] == [plan[0].key, ran[1].key, ran[0].key, plan[3].key]
    assert unplanned_run.key not in {row["key"] for row in rows}
    assert [row["status"] for row in rows] == [MISSING, "FAILED", "FINISHED", MISSING]
    missing = rows[0]
    assert (missing["run_id"], missing["attention"], missing["rank_k"], missing["seed"]) == (None, "aa", None, 7)
    assert missing["metric"] == "top1" and missing["params.train.lr"] == 0.05 and missing["metrics.top1"] is None
    assert table.schema.metadata[b"sna.rows"] == b"plan"


def test_reading_a_missing_store_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'never' / 'mlflow.db'}"
    empty = results_table(uri, EXPERIMENT)
    assert empty.num_rows == 0 and empty.schema.names == BASE_SCHEMA.names
    planned = results_table(uri, EXPERIMENT, [make_cell(0), make_cell(1, "none")])
    assert planned.column("status").to_pylist() == [MISSING, MISSING]
    assert not (tmp_path / "never").exists()


# --------------------------------------------------------------------------------------------
# write_parquet


def test_parquet_round_trip_keeps_rows_types_and_nulls(sqlite_uri: str, tmp_path: Path) -> None:
    cells = [make_cell(0), make_cell(1, "se"), make_cell(2), make_cell(3)]
    run_sweep_by_hand(sqlite_uri, cells)
    table = results_table(sqlite_uri, EXPERIMENT, cells + [make_cell(9)])
    path = write_parquet(table, tmp_path / "out" / "results.parquet")
    read = pq.read_table(path)
    assert read.num_rows == 5 and read.schema.remove_metadata() == table.schema.remove_metadata()
    assert read.column("metrics.final_top1").null_count == 4
    assert sorted(os.listdir(path.parent)) == ["results.parquet"]


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    # Parquet has no union type: the writer fails after it has opened its output.
    union = pa.UnionArray.from_dense(pa.array([0], pa.int8()), pa.array([0], pa.int32()), [pa.array([1])], ["i"])
    unwritable = pa.table({"key": ["a"], "value": union})
    target = tmp_path / "results.parquet"
    with pytest.raises(pa.ArrowNotImplementedError):
        write_parquet(unwritable, target)
    assert os.listdir(tmp_path) == []

    write_parquet(pa.table({"key": ["old"]}), target)
    with pytest.raises(pa.ArrowNotImplementedError):
        write_parquet(unwritable, target)
    assert os.listdir(tmp_path) == ["results.parquet"]
    assert pq.read_table(target).column("key").to_pylist() == ["old"]


def test_write_to_a_directory_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match=repr(str(tmp_path))):
        write_parquet(pa.table({"key": ["a"]}), tmp_path)


# --------------------------------------------------------------------------------------------
# status


def test_sweep_status_reads_each_cell_state(sqlite_uri: str) -> None:
    cells = [make_cell(0), make_cell(1, "se"), make_cell(2), make_cell(3)]
    run_sweep_by_hand(sqlite_uri, cells)
    plan = cells + [make_cell(5, "eca")]
    report = sweep_status(plan, sqlite_uri, EXPERIMENT)
    states = {row["key"]: row for row in report["cells"]}
    assert [states[c.key]["state"] for c in plan] == ["finished", "failed", "running", "pending", "pending"]
    done = states[cells[0].key]
    assert (done["epoch"], done["epochs"], done["best"]) == (3, 3, pytest.approx(0.6))
    assert (states[cells[2].key]["epoch"], states[cells[2].key]["best"]) == (2, pytest.approx(0.3))
    assert states[plan[4].key]["run_id"] is None
    assert report["counts"] == {"pending": 2, "running": 1, "finished": 1, "failed": 1, "interrupted": 0, "total": 5}
    assert report["runs_outside_plan"] == 0
    json.dumps(report)  # --json prints it as it is

    text = format_status(report)
    lines = text.splitlines()
    assert lines[0].split() == ["KEY", "DATASET", "BACKBONE", "ATTENTION", "RANK_K", "PLACEMENT", "SEED",
                                "STATE", "EPOCH", "CHECKPOINT", "BEST"]
    finished_line = next(line for line in lines if line.startswith(cells[0].key))
    assert "finished" in finished_line and "3/3" in finished_line and "top1=0.6" in finished_line
    assert "FloatingPointError: loss is nan" in next(line for line in lines if line.startswith(cells[1].key))
    assert "pending 2  running 1  interrupted 0  finished 1  failed 1  total 5" in text


def test_sweep_status_on_a_missing_store_is_all_pending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = sweep_status([make_cell(0), make_cell(1)], uri, EXPERIMENT)
    assert report["counts"]["pending"] == report["counts"]["total"] == 2
    assert not (tmp_path / "mlflow.db").exists()


# --------------------------------------------------------------------------------------------
# Optuna search: a cell's rows are its trials' runs


def test_search_trials_are_rows_of_their_cell_and_sum_up_in_status(sqlite_uri: str) -> None:
    from mlflow.entities import RunTag

    cell, other = make_cell(0), make_cell(1, "se")
    # The runner's search trials: key "<cell key>-<number>", train settings sampled.
    trials = [dataclasses.replace(cell, key=f"{cell.key}-{n}",
                                  config={**cell.config, "train": {**cell.config["train"], "lr": lr}})
              for n, lr in [(2, 0.01), (0, 0.1), (1, 0.03)]]
    tracker = SweepTracker(sqlite_uri, EXPERIMENT)
    ids = tracker.trial_runs(trials, tracker.start_sweep("exp.yaml", "8" * 64, None, 2))
    for trial, outcome in zip(trials, [0.7, 0.5, None], strict=True):
        tracker.client.log_batch(ids[trial.key], tags=[RunTag("sna.search_cell", cell.key)] if outcome else [])
        logger = TrialLogger(sqlite_uri, ids[trial.key])
        logger.mark_running()
        logger.log_epoch({"top1": outcome or 0.1}, 1)
        logger.finish("FINISHED" if outcome else "FAILED", reason=None if outcome else "diverged")
    tracker.client.log_batch(ids[trials[0].key], tags=[RunTag("sna.best", "true")])

    rows = results_table(sqlite_uri, EXPERIMENT, [cell, other]).to_pylist()
    assert [row["key"] for row in rows] == [f"{cell.key}-0", f"{cell.key}-1", f"{cell.key}-2", other.key]
    assert [row["search_cell"] for row in rows] == [cell.key, cell.key, cell.key, None]
    assert [row["search_best"] for row in rows] == [None, None, True, None]
    assert [row["params.train.lr"] for row in rows] == [0.1, 0.03, 0.01, 0.05]
    assert rows[3]["status"] == MISSING and rows[0]["attention"] == rows[2]["attention"] == "sna"

    ended = sweep_status([cell, other], sqlite_uri, EXPERIMENT, n_trials=3)
    searched = ended["cells"][0]
    assert (searched["state"], searched["best"], searched["run_id"]) == ("finished", 0.7, ids[trials[0].key])
    assert searched["trials"] == {"finished": 2, "failed": 1, "running": 0, "runs": 3, "n_trials": 3}
    assert ended["runs_outside_plan"] == 0 and ended["counts"]["finished"] == 1
    assert "2/3 trials" in format_status(ended)
    assert sweep_status([cell], sqlite_uri, EXPERIMENT, n_trials=5)["cells"][0]["state"] == "pending"


# --------------------------------------------------------------------------------------------
# The verbs, from an experiment file


def _register_cli_dataset() -> str:
    """A generated-data dataset plugin (needs no files) so the verbs can plan a grid here."""
    from sna_core.data import DatasetInfo, list_datasets, register_dataset

    name = "tracking_cli_shapes"
    if name not in list_datasets():
        def never_built(root: str | None, split: str, task: str = "classification", **kwargs: Any) -> Any:
            raise RuntimeError("status and results never build a dataset")

        register_dataset(DatasetInfo(name=name, tasks=("classification",), num_classes=10, image_size=32,
                                     in_channels=3, builder=never_built, default_root=None, stem="cifar",
                                     train_size=64, needs_files=False))
    return name


def run_verb(verb: str, argv: list[str]) -> int:
    """Parse and run one verb as orchestrator.cli does (each verb module on its own)."""
    module = importlib.import_module(f"orchestrator.commands.{verb}")
    parser = argparse.ArgumentParser(prog=f"sna-orch {verb}")
    module.add_arguments(parser)
    return module.main(parser.parse_args(argv))


def test_status_and_results_verbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                  empty_store: Path) -> None:
    from orchestrator.config import load_experiment
    from orchestrator.plan import expand

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    dataset = _register_cli_dataset()
    experiment_file = tmp_path / "exp.yaml"
    experiment_file.write_text(textwrap.dedent(f"""\
        name: {EXPERIMENT}
        matrix:
          dataset: [{dataset}]
          backbone: [resnet18]
          attention: [none, sna]
          rank_k: [1]
          placement: [stem]
          seed: [0, 1]
        train: {{epochs: 2, metric: top1, mode: max}}
        tracking: {{uri: sqlite:///runs/mlflow.db}}
        """))
    experiment = load_experiment(str(experiment_file))
    cells = expand(experiment)
    assert experiment.tracking_uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}" and len(cells) == 4

    assert run_verb("status", [str(experiment_file), "--json"]) == 0
    assert not (tmp_path / "runs").exists()  # reading created nothing
    assert json.loads(capsys.readouterr().out)["counts"]["pending"] == 4

    (tmp_path / "runs").mkdir()
    shutil.copyfile(empty_store, tmp_path / "runs" / "mlflow.db")
    tracker = SweepTracker(experiment.tracking_uri, experiment.name)
    ids = tracker.trial_runs(cells[:2], tracker.start_sweep(experiment.path, experiment.file_hash, None, len(cells)))
    logger = TrialLogger(experiment.tracking_uri, ids[cells[0].key])
    logger.mark_running()
    logger.log_epoch({"top1": 0.4}, 1)
    logger.finish("FINISHED")

    assert run_verb("status", [str(experiment_file)]) == 0
    out = capsys.readouterr().out
    assert "pending 3  running 0  interrupted 0  finished 1  failed 0  total 4" in out

    assert run_verb("results", [str(experiment_file), "--out", "out/results.parquet"]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 rows" in out and str(tmp_path / "out" / "results.parquet") in out
    table = pq.read_table(tmp_path / "out" / "results.parquet")
    assert sorted(table.column("status").to_pylist()) == sorted([MISSING, MISSING, "FINISHED", "SCHEDULED"])
    assert table.column("key").to_pylist() == [cell.key for cell in cells]
