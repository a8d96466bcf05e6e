"""``sna-orch run`` end to end: a real local Ray (2 CPUs), real Ray Tune trials fitting real Ray
Train TorchTrainers on the generated ``redundant_shapes`` data, and a real MLflow sqlite store in
tmp_path. No mocks: every assertion reads back what MLflow, the files or the processes show.

Also: ``--dry-run`` and a missing dataset root start nothing (no Ray); a NaN trial is FAILED in
MLflow with its reason, beside a healthy 2-worker DDP trial, and the exit code says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweep_helpers import (
    TINY_DATASET,
    TINY_TRAIN,
    processes_with_marker,
    write_experiment,
)

from orchestrator.cli import main as cli_main
from orchestrator.config import load_experiment
from orchestrator.plan import expand
from orchestrator.tracking import trial_runs

pytestmark = pytest.mark.slow

def test_dry_run_starts_nothing(tmp_path: Path, clean_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_experiment(tmp_path, "dry")
    cells = expand(load_experiment(path))
    assert cli_main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("would run") for line in out.splitlines()) == len(cells) == 4
    assert all(cell.key in out for cell in cells)
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "results").exists()
    assert processes_with_marker(clean_env) == []


@pytest.mark.parametrize("root", ["missing_folder", "empty_folder"])
def test_missing_dataset_root_exits_2_before_ray(tmp_path: Path, clean_env: str, root: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty_folder").mkdir()
    path = write_experiment(tmp_path, "needs-files",
                            matrix={"dataset": ["fashion_mnist"], "backbone": ["resnet18"], "attention": ["none"]},
                            datasets={"fashion_mnist": {"root": str(tmp_path / root)}})
    assert cli_main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / root) in err and "Expected layout" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "results").exists()
    assert processes_with_marker(clean_env) == []


def test_run_grid_end_to_end_then_nothing_new(tmp_path: Path, clean_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_experiment(tmp_path, "e2e")
    experiment = load_experiment(path)
    cells = expand(experiment)
    assert len(cells) == 4

    assert cli_main(["run", str(path), "--num-cpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 finished, 0 failed, 0 interrupted, 0 not run" in out

    runs = trial_runs(experiment.tracking_uri, experiment.name)
    assert set(runs) == {cell.key for cell in cells}
    client = MlflowClient(experiment.tracking_uri)
    epochs = TINY_TRAIN["epochs"]
    for key, run in runs.items():
        assert run.info.status == "FINISHED", (key, run.data.tags.get("sna.failure_reason"))
        assert run.data.tags["sna.trial_key"] == key
        history = client.get_metric_history(run.info.run_id, "top1")
        assert sorted(m.step for m in history) == list(range(epochs))
        train_loss = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted(m.step for m in train_loss) == list(range(epochs))
        metrics = run.data.metrics
        for name in ("params", "flops", "throughput_img_s", "best_top1", "final_top1"):
            assert name in metrics, (key, name, sorted(metrics))
        assert metrics["params"] > 0 and metrics["flops"] > 0
    sna_runs = [run for run in runs.values() if run.data.tags["sna.attention"] == "sna"]
    assert sna_runs and all(run.data.metrics["sna_iterations_mean"] >= 1 for run in sna_runs)
    # Train runs are named by trial key under the storage path, with their checkpoints.
    for cell in cells:
        assert list((tmp_path / "results" / "trials" / cell.key).glob("checkpoint_*")), cell.key

    run_ids = {key: run.info.run_id for key, run in runs.items()}
    assert cli_main(["run", str(path), "--num-cpus", "2"]) == 0
    assert "nothing to run" in capsys.readouterr().out
    again = trial_runs(experiment.tracking_uri, experiment.name)
    assert {key: run.info.run_id for key, run in again.items()} == run_ids
    assert all(run.info.status == "FINISHED" for run in again.values())

    pyarrow = pytest.importorskip("pyarrow.parquet")
    out_path = tmp_path / "x.parquet"
    assert cli_main(["results", str(path), "--out", str(out_path)]) == 0
    table = pyarrow.read_table(out_path)
    assert table.num_rows == len(cells)
    key_column = next(name for name in ("key", "trial_key") if name in table.column_names)
    assert set(table.column(key_column).to_pylist()) == set(run_ids)


def test_nan_trial_fails_beside_a_ddp_trial(tmp_path: Path, clean_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Two 1-epoch cells with two Train workers each (gloo DDP); the include's huge lr makes one NaN
    # at its second step (32 images: 2 batches of 8 per worker).
    path = write_experiment(
        tmp_path, "nan-ddp",
        matrix={"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "attention": ["none"], "seed": [0]},
        include=[{"seed": 1, "train": {"lr": 1.0e30}}],
        datasets={"redundant_shapes": {**TINY_DATASET, "kwargs": {"train_size": 32, "val_size": 8}}},
        train={**TINY_TRAIN, "epochs": 1},
        resources={"num_workers": 2, "cpus_per_worker": 1, "max_concurrent": 2},
    )
    experiment = load_experiment(path)
    cells = expand(experiment)
    assert len(cells) == 2
    nan_key = next(cell.key for cell in cells if cell.config["train"]["lr"] > 1)

    # 5 logical CPUs: both 2-worker trials at once on this 2-core machine.
    assert cli_main(["run", str(path), "--num-cpus", "5"]) == 1
    out = capsys.readouterr().out
    assert "1 finished, 1 failed" in out and f"FAILED {nan_key}" in out

    runs = trial_runs(experiment.tracking_uri, experiment.name)
    assert {key: run.info.status for key, run in runs.items()} == {
        cell.key: ("FAILED" if cell.key == nan_key else "FINISHED") for cell in cells}
    reason = runs[nan_key].data.tags["sna.failure_reason"]
    assert "NonFinite" in reason or "nan" in reason.lower() or "inf" in reason.lower(), reason
    healthy = next(run for key, run in runs.items() if key != nan_key)
    history = MlflowClient(experiment.tracking_uri).get_metric_history(healthy.info.run_id, "top1")
    assert [m.step for m in history] == [0]


def test_search_runs_an_optuna_study_per_cell_and_marks_the_best(tmp_path: Path, clean_env: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    path = write_experiment(
        tmp_path, "search",
        matrix={"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "attention": ["none"], "seed": [0]},
        train={**TINY_TRAIN, "epochs": 1},
        search={"space": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}, "n_trials": 2, "seed": 0},
    )
    experiment = load_experiment(path)
    (cell,) = expand(experiment)
    assert cli_main(["run", str(path), "--num-cpus", "2"]) == 0
    assert "2 finished, 0 failed, 0 interrupted, 0 not run" in capsys.readouterr().out

    runs = trial_runs(experiment.tracking_uri, experiment.name)
    assert set(runs) == {f"{cell.key}-0", f"{cell.key}-1"}
    study = optuna.load_study(study_name=f"{experiment.name}/{cell.key}",
                              storage=f"sqlite:///{tmp_path / 'results' / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        run = runs[f"{cell.key}-{trial.number}"]
        assert run.info.status == "FINISHED"
        assert run.data.tags["sna.search_cell"] == cell.key
        assert float(run.data.params["train.lr"]) == pytest.approx(trial.params["lr"])
        assert run.data.metrics["best_top1"] == pytest.approx(trial.value)
        assert run.data.tags["sna.best"] == ("true" if trial.number == study.best_trial.number else "false")

    assert cli_main(["run", str(path), "--dry-run"]) == 0
    assert "0 to run as 0 trials" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# The pieces around the sweep, without Ray: capacity, progress lines, the summary table, flags.


@pytest.mark.parametrize(
    ("resources", "worker_cpus", "num_workers", "cpus_per_worker", "max_concurrent", "expected"),
    [
        ({"CPU": 2.0, "sna_trial_slot": 1e4}, 2, 1, 1.0, None, 2),  # a local 2-CPU Ray (trial actors: slots)
        ({"CPU": 2.0, "sna_trial_slot": 1e4}, 2, 1, 1.0, 1, 1),  # capped by --max-concurrent / resources.max_concurrent
        ({"CPU": 5.0, "sna_trial_slot": 1e4}, 5, 2, 1.0, None, 2),  # 2-worker trials on 5 CPUs
        ({"CPU": 8.0}, None, 1, 1.0, None, 7),  # a joined 8-CPU cluster: 7 × (1 + 0.01) fit
        ({"CPU": 16.0, "GPU": 2.0}, None, 1, 1.0, None, 2),  # GPUs bound it
    ],
)
def test_concurrency_fits_the_cluster(tmp_path: Path, resources: dict, worker_cpus: int | None, num_workers: int,
                                      cpus_per_worker: float, max_concurrent: int | None, expected: int) -> None:
    from orchestrator.runner import RaySession, concurrency_for

    gpus = 1.0 if "GPU" in resources else 0.0
    experiment = load_experiment(write_experiment(
        tmp_path, "capacity", resources={"num_workers": num_workers, "cpus_per_worker": cpus_per_worker,
                                         "gpus_per_worker": gpus}))
    assert concurrency_for(experiment, RaySession(resources, worker_cpus), max_concurrent) == expected


@pytest.mark.parametrize(("resources", "worker_cpus", "message"), [
    ({"CPU": 3.0}, 2, "needs 4 CPU"),
    ({"CPU": 64.0, "GPU": 0.0}, None, "needs 2 GPU"),
])
def test_a_trial_bigger_than_the_cluster_is_refused(tmp_path: Path, resources: dict, worker_cpus: int | None,
                                                     message: str) -> None:
    from orchestrator.errors import UsageError
    from orchestrator.runner import RaySession, check_fits

    gpus = 1.0 if message.endswith("GPU") else 0.0
    experiment = load_experiment(write_experiment(
        tmp_path, "too-big", resources={"num_workers": 2, "cpus_per_worker": 2, "gpus_per_worker": gpus}))
    with pytest.raises(UsageError, match=message):
        check_fits(experiment, RaySession(resources, worker_cpus))


@pytest.mark.parametrize("flag", ["--max-concurrent", "--num-cpus"])
def test_bad_counts_exit_2_naming_the_value(tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_experiment(tmp_path, "flags")
    assert cli_main(["run", str(path), flag, "0"]) == 2
    assert f"{flag} must be an integer >= 1, got 0" in capsys.readouterr().err


class _Trial:
    """What SweepProgress reads from a Tune trial: its id, config and error file."""

    def __init__(self, trial_id: str, key: str, epochs: int = 2, error_file: str | None = None) -> None:
        self.trial_id, self.error_file = trial_id, error_file
        self.config = {"trial": {"key": key, "fields": {"dataset": "redundant_shapes", "backbone": "resnet18",
                                                        "attention": "sna", "rank_k": 2, "placement": "stem", "seed": 1},
                                 "config": {"train": {"metric": "top1", "mode": "max", "epochs": epochs}}}}


def test_progress_counts_eta_and_summary(tmp_path: Path) -> None:
    import io

    from orchestrator.progress import SweepProgress, summary_table

    stream = io.StringIO()
    progress = SweepProgress(expected=3, concurrency=2, already_done=1, interval_s=0.0, stream=stream)
    first, second = _Trial("a", "key-a"), _Trial("b", "key-b", error_file=str(tmp_path / "error.txt"))
    (tmp_path / "error.txt").write_text("Traceback ...\nTrialFailed: trial key-b: NonFiniteLossError: loss nan\n")
    progress.on_trial_start(0, [], first)
    progress.on_trial_result(0, [], first, {"epoch": 0, "epochs": 2, "top1": 40.0, "best_top1": 40.0, "epoch_time_s": 10.0})
    assert progress.counts() == {"FINISHED": 0, "RUNNING": 1, "FAILED": 0, "PENDING": 2}
    eta = progress.eta_s()
    assert eta is not None and eta >= (1 * 10.0 + 2 * 2 * 10.0) / 2  # 1 epoch left + 2 pending trials
    line = progress.status_line()
    assert "1/4 done, 1 running, 2 pending, 0 failed" in line and "key-a ep 1/2 top1 40" in line
    progress.on_trial_complete(0, [], first)
    progress.on_trial_start(0, [], second)
    progress.on_trial_error(0, [], second)
    text = stream.getvalue()
    assert "start  key-a redundant_shapes/resnet18/sna-k2/stem/s1" in text
    assert "FAILED key-b redundant_shapes/resnet18/sna-k2/stem/s1: TrialFailed: trial key-b: NonFiniteLossError: loss nan" in text

    table = summary_table([
        {"key": "key-a", "fields": first.config["trial"]["fields"], "status": "FINISHED", "metric": "top1",
         "best": 40.0, "epochs_done": 2, "epochs": 2, "wall_s": 75.0},
        {"key": "key-b", "fields": {}, "status": "FAILED", "metric": "top1", "best": None, "epochs_done": 0,
         "epochs": 2, "wall_s": 3661.0, "error": "NonFiniteLossError: loss nan"},
    ])
    lines = table.splitlines()
    assert lines[0].split() == ["key", "axes", "status", "best", "epochs", "wall"]
    assert lines[2].split() == ["key-a", "redundant_shapes/resnet18/sna-k2/stem/s1", "FINISHED", "top1", "40", "2/2", "1:15"]
    assert lines[3].split() == ["key-b", "FAILED", "-", "0/2", "1:01:01"]
    assert lines[-1] == "  key-b: NonFiniteLossError: loss nan"
