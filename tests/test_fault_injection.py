"""Fault injection: a sweep survives a SIGKILLed driver, SIGTERM, an added seed and a lost node,
without reruns, duplicate MLflow runs or gaps in the per-epoch metrics.

Everything is real: ``sna-orch run`` as a subprocess (killed with real signals), a local Ray, a
simulated multi-node cluster (``ray.cluster_utils.Cluster``), a real MLflow sqlite store in
tmp_path. Each test asserts counts read back from MLflow and the files; each ends, by PID, every
process it started (a SIGKILLed driver leaves Ray's agents behind).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweep_helpers import (
    end_processes,
    processes_with_marker,
    wait_for_no_processes,
    write_experiment,
)

from orchestrator.cli import main as cli_main
from orchestrator.config import load_experiment
from orchestrator.plan import expand
from orchestrator.tracking import RESUME_METRIC, sqlite_path, trial_runs
from orchestrator.trainable import checkpointed_epoch

pytestmark = pytest.mark.slow

# Trials slow enough to be caught mid-way: 4 epochs of 6 batches of 16 images of 32².
SLOW_DATASET = {"image_size": 32, "kwargs": {"train_size": 96, "val_size": 16}}
SLOW_TRAIN = {"epochs": 4, "batch_size": 16, "lr": 0.05, "limit_train_batches": 6, "limit_eval_batches": 1,
              "metric": "top1", "mode": "max"}
REPO = Path(__file__).resolve().parents[1]


def start_driver(path: Path, *extra: str) -> subprocess.Popen:
    """``sna-orch run`` in its own process (its environment carries the test's marker). The
    MLflow store is created first: the test reads it while the driver writes, and two processes
    creating one sqlite store at once race in its schema migration."""
    MlflowClient(load_experiment(path).tracking_uri).search_experiments()
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(path), *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until(condition, timeout_s: float, what: str, driver: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if driver is not None and driver.poll() is not None:
            pytest.fail(f"the driver exited ({driver.returncode}) before {what}:\n{driver.stdout.read()}")
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def all_trial_runs(tracking_uri: str, name: str) -> list:
    """Every trial run of the experiment, duplicates included (trial_runs keeps one per key)."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], "tags.`sna.run_type` = 'trial'", max_results=1000)


def epoch_steps(tracking_uri: str, run_id: str) -> list[int]:
    return sorted(metric.step for metric in MlflowClient(tracking_uri).get_metric_history(run_id, "epoch"))


def checkpointed_mid_trial(experiment, cells):
    """A (key, run) whose run is RUNNING with a checkpoint of epoch >= 1, once there is one."""
    store = sqlite_path(experiment.tracking_uri)
    runs = trial_runs(experiment.tracking_uri, experiment.name) if store is not None and store.exists() else {}
    for cell in cells:
        run = runs.get(cell.key)
        if run is not None and run.info.status == "RUNNING":
            epoch = checkpointed_epoch(experiment.storage_path, cell.key)
            if epoch is not None and 1 <= epoch < SLOW_TRAIN["epochs"] - 1:
                return cell.key, run
    return None


def test_driver_sigkill_then_rerun_resumes_without_duplicates(tmp_path: Path, clean_env: str) -> None:
    path = write_experiment(
        tmp_path, "sigkill",
        matrix={"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "attention": ["none", "se", "sna"],
                "seed": [0]},
        datasets={"redundant_shapes": SLOW_DATASET}, train=dict(SLOW_TRAIN),
        resources={"num_workers": 1, "cpus_per_worker": 1, "max_concurrent": 1},
    )
    experiment = load_experiment(path)
    cells = expand(experiment)
    driver = start_driver(path, "--num-cpus", "1")
    try:
        key, before = wait_until(lambda: checkpointed_mid_trial(experiment, cells), 240,
                                 "a trial with a checkpoint of epoch >= 1", driver)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        # What the killed driver leaves behind (raylet, GCS, agents, workers), ended by PID.
        end_processes(processes_with_marker(clean_env))
    assert wait_for_no_processes(clean_env, 10) == []

    runs_before = trial_runs(experiment.tracking_uri, experiment.name)
    finished_before = {k: r.info.start_time for k, r in runs_before.items() if r.info.status == "FINISHED"}
    assert runs_before[key].info.status == "RUNNING"  # what a killed driver leaves
    checkpoint_epoch = checkpointed_epoch(experiment.storage_path, key)
    assert checkpoint_epoch is not None and checkpoint_epoch >= 1

    rerun = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(path), "--num-cpus", "1"],
                           check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "the previous driver of this sweep" in rerun.stdout and "is gone" in rerun.stdout

    every_run = all_trial_runs(experiment.tracking_uri, experiment.name)
    keys = [run.data.tags["sna.trial_key"] for run in every_run]
    assert len(every_run) == len(cells) == 3 and sorted(keys) == sorted(cell.key for cell in cells)
    runs = {run.data.tags["sna.trial_key"]: run for run in every_run}
    assert all(run.info.status == "FINISHED" for run in runs.values())
    for finished_key, start_time in finished_before.items():  # not run again
        assert runs[finished_key].info.start_time == start_time
        assert RESUME_METRIC not in runs[finished_key].data.metrics
    resumed = runs[key]
    assert resumed.info.run_id == before.info.run_id
    epochs = SLOW_TRAIN["epochs"]
    assert epoch_steps(experiment.tracking_uri, resumed.info.run_id) == list(range(epochs))  # no gap, no repeat
    for name in ("top1", "train_loss"):
        history = MlflowClient(experiment.tracking_uri).get_metric_history(resumed.info.run_id, name)
        assert sorted(m.step for m in history) == list(range(epochs)), name
    # It continued from its checkpoint rather than starting over.
    resumes = MlflowClient(experiment.tracking_uri).get_metric_history(resumed.info.run_id, RESUME_METRIC)
    assert [int(m.value) for m in resumes] == [checkpoint_epoch + 1]
    # The killed driver's sweep run is closed, not left RUNNING.
    client = MlflowClient(experiment.tracking_uri)
    sweeps = client.search_runs([client.get_experiment_by_name(experiment.name).experiment_id],
                                "tags.`sna.run_type` = 'sweep'")
    assert sweeps and all(run.info.status != "RUNNING" for run in sweeps)


def test_sigterm_stops_after_a_checkpoint_leaves_nothing_running_and_resumes(tmp_path: Path, clean_env: str) -> None:
    path = write_experiment(
        tmp_path, "sigterm",
        matrix={"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "attention": ["none", "sna"], "seed": [0]},
        datasets={"redundant_shapes": SLOW_DATASET}, train=dict(SLOW_TRAIN),
        resources={"num_workers": 1, "cpus_per_worker": 1, "max_concurrent": 1, "start_ahead": 0},
    )
    experiment = load_experiment(path)
    cells = expand(experiment)
    driver = start_driver(path, "--num-cpus", "1")
    try:
        def first_epoch_logged():
            runs = trial_runs(experiment.tracking_uri, experiment.name) if (tmp_path / "mlflow.db").exists() else {}
            return any("epoch" in run.data.metrics and run.info.status == "RUNNING" for run in runs.values())

        wait_until(first_epoch_logged, 240, "a trial's first epoch", driver)
        driver.send_signal(signal.SIGTERM)
        out, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            end_processes(processes_with_marker(clean_env))
    assert driver.returncode == 143, out
    assert "SIGTERM" in out and "stopped by SIGTERM" in out and "resume" in out
    # The CLI ended its Ray: no process of this test is left.
    assert wait_for_no_processes(clean_env, 20) == []
    assert not (Path(experiment.storage_path) / "STOP").exists()
    assert not (Path(experiment.storage_path) / "driver.json").exists()

    runs = trial_runs(experiment.tracking_uri, experiment.name)
    assert all(run.info.status != "RUNNING" for run in runs.values())
    stopped = {key: run for key, run in runs.items() if run.info.status == "KILLED"}
    assert len(stopped) == 1, {k: r.info.status for k, r in runs.items()}
    (stopped_key, stopped_run), = stopped.items()
    assert "resumes" in stopped_run.data.tags["sna.failure_reason"]
    stopped_at = checkpointed_epoch(experiment.storage_path, stopped_key)
    assert stopped_at is not None and stopped_at < SLOW_TRAIN["epochs"] - 1
    assert epoch_steps(experiment.tracking_uri, stopped_run.info.run_id) == list(range(stopped_at + 1))
    status = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", str(path)], check=False, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "interrupted 1" in status.stdout, status.stdout

    assert cli_main(["run", str(path), "--num-cpus", "1"]) == 0
    runs = trial_runs(experiment.tracking_uri, experiment.name)
    assert len(all_trial_runs(experiment.tracking_uri, experiment.name)) == len(runs) == len(cells)
    assert all(run.info.status == "FINISHED" for run in runs.values())
    assert runs[stopped_key].info.run_id == stopped_run.info.run_id
    assert epoch_steps(experiment.tracking_uri, stopped_run.info.run_id) == list(range(SLOW_TRAIN["epochs"]))
    resumes = MlflowClient(experiment.tracking_uri).get_metric_history(stopped_run.info.run_id, RESUME_METRIC)
    assert [int(m.value) for m in resumes] == [stopped_at + 1]


def test_added_seed_runs_only_the_new_cell_and_removed_cells_keep_their_runs(tmp_path: Path, clean_env: str,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    tiny = {"epochs": 1, "batch_size": 8, "limit_train_batches": 1, "limit_eval_batches": 1, "metric": "top1",
            "mode": "max"}
    common = {"datasets": {"redundant_shapes": {"image_size": 16, "kwargs": {"train_size": 8, "val_size": 8}}},
              "train": tiny, "resources": {"num_workers": 1, "cpus_per_worker": 1, "max_concurrent": 2}}
    matrix = {"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "attention": ["eca"]}
    path = write_experiment(tmp_path, "grow", matrix={**matrix, "seed": [0, 1]}, **common)
    assert cli_main(["run", str(path), "--num-cpus", "2"]) == 0
    experiment = load_experiment(path)
    first = {key: (run.info.run_id, run.info.start_time)
             for key, run in trial_runs(experiment.tracking_uri, experiment.name).items()}
    assert len(first) == 2
    capsys.readouterr()

    path = write_experiment(tmp_path, "grow", matrix={**matrix, "seed": [0, 1, 2]}, **common)
    assert cli_main(["plan", str(path)]) == 0
    plan_out = capsys.readouterr().out
    new_key = next(cell.key for cell in expand(load_experiment(path)) if cell.key not in first)
    new_line = next(line for line in plan_out.splitlines() if line.startswith(new_key))
    assert "new" in new_line
    assert sum("finished" in line.split() for line in plan_out.splitlines() if line[:16] in first) == 2

    assert cli_main(["run", str(path), "--num-cpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 already finished, 1 trials to run" in out and "1 finished, 0 failed" in out
    after = trial_runs(experiment.tracking_uri, experiment.name)
    assert len(all_trial_runs(experiment.tracking_uri, experiment.name)) == len(after) == 3
    assert {key: (run.info.run_id, run.info.start_time) for key, run in after.items() if key in first} == first

    # Removing seeds deletes nothing and runs nothing.
    path = write_experiment(tmp_path, "grow", matrix={**matrix, "seed": [0]}, **common)
    assert cli_main(["run", str(path), "--num-cpus", "2"]) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert len(all_trial_runs(experiment.tracking_uri, experiment.name)) == 3


def test_a_lost_worker_node_is_replaced_and_the_trial_continues_from_its_checkpoint(tmp_path: Path,
                                                                                      clean_env: str) -> None:
    """Head (1 CPU: trial actors and controllers, too small for a 1-CPU Train worker) plus one
    worker node; the worker node is removed while the trial runs on it, a new one joins, and
    Ray Train (FailureConfig max_failures=1) restarts the worker group there from the checkpoint."""
    from ray.cluster_utils import Cluster

    from orchestrator.runner import run_sweep

    path = write_experiment(
        tmp_path, "lost-node",
        matrix={"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "attention": ["sna"], "seed": [0]},
        datasets={"redundant_shapes": SLOW_DATASET}, train=dict(SLOW_TRAIN),
        resources={"num_workers": 1, "cpus_per_worker": 1, "max_failures": 1, "start_ahead": 0},
    )
    experiment = load_experiment(path)
    (cell,) = expand(experiment)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        doomed = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        outcome: dict = {}

        def sweep() -> None:
            try:
                outcome["summary"] = run_sweep(experiment, [cell], address=cluster.address, progress_interval_s=60)
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                outcome["error"] = error

        thread = threading.Thread(target=sweep, daemon=True)
        thread.start()
        wait_until(lambda: "error" in outcome or checkpointed_mid_trial(experiment, [cell]), 240,
                   "the trial's checkpoint of epoch >= 1")
        assert "error" not in outcome, outcome
        lost_at = checkpointed_epoch(experiment.storage_path, cell.key)
        cluster.add_node(num_cpus=1)
        cluster.remove_node(doomed)
        thread.join(timeout=300)
        assert not thread.is_alive(), "the sweep did not end after the node was replaced"
    finally:
        cluster.shutdown()
        end_processes(processes_with_marker(clean_env))
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"].exit_code == 0

    (run,) = all_trial_runs(experiment.tracking_uri, experiment.name)
    assert run.info.status == "FINISHED"
    assert epoch_steps(experiment.tracking_uri, run.info.run_id) == list(range(SLOW_TRAIN["epochs"]))
    resumes = MlflowClient(experiment.tracking_uri).get_metric_history(run.info.run_id, RESUME_METRIC)
    # The restarted worker group resumed after the checkpoint it had when the node went (or a later one).
    assert len(resumes) == 1 and int(resumes[0].value) >= lost_at + 1, (lost_at, [m.value for m in resumes])


def test_failed_cells_are_skipped_unless_asked(tmp_path: Path, clean_env: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A NaN cell beside a healthy one: FAILED with its reason, the sweep finishes the other, exit
    1; the next run skips it (exit 1 again, nothing new, no Ray); with --restart-failed it runs
    anew (and fails again) while its old run is kept aside, untagged as the key's run."""
    path = write_experiment(
        tmp_path, "nan",
        matrix={"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "attention": ["none"], "seed": [0]},
        include=[{"seed": 1, "train": {"lr": 1.0e30}}],
        datasets={"redundant_shapes": {"image_size": 16, "kwargs": {"train_size": 16, "val_size": 8}}},
        train={"epochs": 1, "batch_size": 8, "limit_eval_batches": 1, "metric": "top1", "mode": "max"},
        resources={"num_workers": 1, "cpus_per_worker": 1, "max_concurrent": 2},
    )
    experiment = load_experiment(path)
    assert cli_main(["run", str(path), "--num-cpus", "2"]) == 1
    assert "1 finished, 1 failed" in capsys.readouterr().out
    runs = trial_runs(experiment.tracking_uri, experiment.name)
    failed = sorted(key for key, run in runs.items() if run.info.status == "FAILED")
    assert len(failed) == 1 and len(runs) == 2
    assert "NonFinite" in runs[failed[0]].data.tags["sna.failure_reason"]
    assert cli_main(["status", str(path)]) == 0
    assert "failed 1" in capsys.readouterr().out

    assert cli_main(["run", str(path), "--num-cpus", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAILED in an earlier run and are skipped" in out and "nothing to run" in out
    assert len(all_trial_runs(experiment.tracking_uri, experiment.name)) == 2

    assert cli_main(["run", str(path), "--num-cpus", "2", "--restart-failed"]) == 1
    assert "0 finished, 1 failed" in capsys.readouterr().out
    every_run = all_trial_runs(experiment.tracking_uri, experiment.name)
    assert len(every_run) == 3
    retired = [run for run in every_run if run.data.tags.get("sna.retired_trial_key")]
    assert [run.data.tags["sna.retired_trial_key"] for run in retired] == failed
    assert "sna.trial_key" not in retired[0].data.tags
    assert len(trial_runs(experiment.tracking_uri, experiment.name)) == 2  # still one run per key
