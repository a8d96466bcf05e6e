"""Orchestrator overhead: a sweep of N short trials against the same training in a plain loop.

``python -m benchmarks.orchestrator_overhead [--trials 6] [--concurrency 2] [--trial-seconds 7]``
prints ONE JSON object. Both sides train the same fixed workload (a small CNN on random 32×32
batches, one thread, the number of SGD steps calibrated here to ``--trial-seconds``):

- ``plain``: the N trials one after another in this process; the ideal sweep time is
  serial time ÷ concurrency (what perfect parallel execution would take).
- ``sweep``: the orchestrator's own machinery (:func:`orchestrator.runner.ray_session` and
  :func:`~orchestrator.runner.tune_trials`: Tune trials that each fit a Ray Train TorchTrainer,
  with per-epoch MLflow logging to a sqlite store and a checkpoint per epoch), on a local Ray with
  ``--concurrency`` CPUs.
- ``plain_parallel``: the same trials in a pool of ``--concurrency`` warm plain processes. Its
  ratio to the ideal (``core_contention``) is what the cores lose by running side by side
  (shared caches, sibling hyperthreads, a busy VM host): no orchestrator can beat it.
  ``ratio_vs_plain_parallel`` is the sweep against it: the orchestration's own share.
- ``overhead_cpu_s_per_trial``: the CPU the whole machine spent during the sweep (``/proc/stat``)
  beyond the plain loop's training, per trial: process start-ups, imports, polling, logging,
  checkpoints. On 2 busy cores every CPU-second of it costs about half a second of wall time.
- ``cpu_s_by_process`` (:mod:`benchmarks.process_cpu`): that CPU by kind of process (Train
  workers, Train controllers, Train synchronisation actors, Tune trial actors, the result relay,
  Ray's daemons, the driver); ``cpu_s_per_trial_beyond_compute`` divides the per-trial kinds by
  the trials (the worker's share less its training compute); ``worker_startup_cpu_s`` is the CPU
  a Train worker process spent before its loop's first line.

Reported per trial (means, with min/max): Train start-up (``TorchTrainer.fit()`` called → the
worker loop's first line), Tune launch (trial started in the driver → ``fit()`` called: the trial
actor's start-up), and tear-down (last epoch reported → trial complete in the driver). The
``ratio`` is sweep wall time ÷ ideal. ``--ray-defaults`` runs the sweep as Ray's docs build it
(no :func:`orchestrator.runner.fast_start_env`, the stock ``TorchTrainer`` with its process
group and Ray's per-trial report queue, a new trial actor per trial) for comparison. The target
(issue 3) is ``ratio`` ≤ 1.15 for 60-second trials on 2 cores.

Context: Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022) — the sweeps this orchestrator runs are grids of such trials.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

import torch
from torch import nn

from benchmarks.process_cpu import PER_TRIAL_KINDS, ProcessCpuSampler

WORKLOAD_BATCH = 32


def _workload_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10),
    )


def run_workload(steps: int, seed: int = 0) -> nn.Module:
    """``steps`` SGD steps of the workload model on random data, single-threaded."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(seed)
    model = _workload_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    inputs = torch.randn(WORKLOAD_BATCH, 3, 32, 32, generator=generator)
    targets = torch.randint(0, 10, (WORKLOAD_BATCH,), generator=generator)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return model


def calibrate(seconds: float = 2.0) -> float:
    """Workload steps per second in this process (after a short warm-up)."""
    run_workload(5)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run_workload(10)
        steps += 10
    return steps / (time.perf_counter() - start)


def _warm_worker() -> None:
    run_workload(5)


def _trial_workload(steps_and_epochs: tuple[int, int]) -> None:
    steps, epochs = steps_and_epochs
    for epoch in range(epochs):
        run_workload(steps, seed=epoch)


def plain_parallel_seconds(trials: int, concurrency: int, steps: int, epochs: int) -> float:
    """The trials in a pool of ``concurrency`` warm plain processes: what this machine's cores
    achieve side by side without any orchestration. Against serial ÷ concurrency it shows the
    cores' own contention (shared caches, sibling hyperthreads, a busy VM host)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(concurrency, initializer=_warm_worker) as pool:
        pool.map(_trial_workload, [(1, 1)] * concurrency, chunksize=1)  # every process started and warm
        start = time.perf_counter()
        pool.map(_trial_workload, [(steps, epochs)] * trials, chunksize=1)
        return time.perf_counter() - start


def benchmark_loop(loop_config: dict) -> None:
    """The Train worker loop of a benchmark trial: the workload split into epochs, each reported
    with a checkpoint and logged to MLflow, like the real trainable."""
    import ray.train

    from orchestrator.tracking import TrialLogger

    started_at, startup_cpu_s = time.time(), time.process_time()  # this worker process's start-up CPU
    fit_called_at = loop_config.pop("fit_called_at", started_at)
    config = loop_config["config"]
    steps, epochs = int(config["steps_per_epoch"]), int(config["train"]["epochs"])
    logger = None
    if ray.train.get_context().get_world_rank() == 0 and loop_config["tracking_uri"]:
        logger = TrialLogger(loop_config["tracking_uri"], loop_config["run_id"])
        logger.mark_running()
    for epoch in range(epochs):
        epoch_start, epoch_cpu_start = time.perf_counter(), time.process_time()
        model = run_workload(steps, seed=epoch)
        metrics = {"epoch": epoch, "epochs": epochs, "epoch_time_s": time.perf_counter() - epoch_start,
                   "epoch_cpu_s": time.process_time() - epoch_cpu_start, "worker_startup_cpu_s": startup_cpu_s,
                   "train_startup_s": started_at - fit_called_at, "fit_called_at": fit_called_at, "loss": 0.0}
        if logger is not None:
            logger.log_epoch({"loss": 0.0, "epoch_time_s": metrics["epoch_time_s"]}, epoch)
        with tempfile.TemporaryDirectory() as directory:
            torch.save(model.state_dict(), os.path.join(directory, "model.pt"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    if logger is not None:
        logger.finish("FINISHED")


def _timing_callback() -> Any:
    from ray.tune import Callback

    class TrialTimes(Callback):
        def __init__(self) -> None:
            self.times: dict[str, dict[str, float]] = {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.times[trial.trial_id] = {"start": time.time()}

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            entry = self.times.setdefault(trial.trial_id, {})
            entry["last_result"] = time.time()
            entry["train_startup_s"] = float(result["train_startup_s"])
            entry["fit_called_at"] = float(result["fit_called_at"])
            entry["compute_s"] = entry.get("compute_s", 0.0) + float(result["epoch_time_s"])
            entry["compute_cpu_s"] = entry.get("compute_cpu_s", 0.0) + float(result["epoch_cpu_s"])
            entry["worker_startup_cpu_s"] = float(result["worker_startup_cpu_s"])

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.times.setdefault(trial.trial_id, {})["complete"] = time.time()

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.times.setdefault(trial.trial_id, {})["error"] = time.time()

    return TrialTimes()


def machine_cpu_seconds() -> float | None:
    """CPU time all processes of this machine have used so far (Linux ``/proc/stat``; None
    elsewhere): the sweep's CPU cost, its Ray and MLflow processes included."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def _benchmark_cells(trials: int, epochs: int, steps_per_epoch: int) -> list[Any]:
    from orchestrator.plan import Cell, trial_key

    cells = []
    for index in range(trials):
        config = {"seed": index, "steps_per_epoch": steps_per_epoch,
                  "dataset": {"name": "random", "task": "classification"},
                  "model": {"backbone": "tiny_cnn", "attention": "none", "placement": "none"},
                  "train": {"epochs": epochs, "metric": "loss", "mode": "min"}}
        cells.append(Cell(key=trial_key(config), dataset="random", backbone="tiny_cnn", attention="none", rank_k=None,
                          placement="none", seed=index, task="classification", stem="none", detector=None,
                          grid="benchmark", config=config))
    return cells


def run_sweep_side(args: argparse.Namespace, steps_per_epoch: int, workdir: str) -> dict[str, Any]:
    from orchestrator import runner
    from orchestrator.tracking import SweepTracker
    from orchestrator.trainable import TrialSpec, make_trainable

    cells = _benchmark_cells(args.trials, args.epochs, steps_per_epoch)
    tracking_uri = ""
    run_ids = {cell.key: "benchmark" for cell in cells}
    if not args.no_mlflow:
        tracking_uri = f"sqlite:///{os.path.join(workdir, 'mlflow.db')}"
        tracker = SweepTracker(tracking_uri, "orchestrator-overhead")
        parent = tracker.start_sweep("benchmark", "benchmark", None, len(cells))
        run_ids = tracker.trial_runs(cells, parent)
    specs = [TrialSpec(key=cell.key, run_id=run_ids[cell.key], config=cell.config, tracking_uri=tracking_uri,
                       storage_path=workdir, fields=cell.fields()) for cell in cells]
    callback = _timing_callback()
    init_start = time.perf_counter()
    with runner.ray_session(num_cpus=args.concurrency, tuned=not args.ray_defaults) as session:
        init_s = time.perf_counter() - init_start
        with ProcessCpuSampler() as sampler:
            sweep_start, cpu_start = time.perf_counter(), machine_cpu_seconds()
            runner.tune_trials(runner.make_cell_queue(specs), len(specs), storage_path=workdir, name="overhead",
                               concurrency=args.concurrency, callbacks=[callback],
                               trainable=make_trainable(benchmark_loop, lean=not args.ray_defaults),
                               reuse_actors=not args.ray_defaults, start_ahead=args.start_ahead,
                               trial_resources=session.trial_resources, relay=not args.ray_defaults)
            sweep_s, cpu_end = time.perf_counter() - sweep_start, machine_cpu_seconds()
    times = list(callback.times.values())
    by_kind = sampler.by_kind()
    compute_cpu = sum(t.get("compute_cpu_s", 0.0) for t in times)
    return {
        "ray_init_s": round(init_s, 2),
        "sweep_s": round(sweep_s, 2),
        "sweep_machine_cpu_s": None if cpu_start is None else round(cpu_end - cpu_start, 1),
        "trials_finished": sum("complete" in t for t in times),
        "trials_failed": sum("error" in t for t in times),
        "train_startup_s": _stats([t["train_startup_s"] for t in times if "train_startup_s" in t]),
        "tune_launch_s": _stats([t["fit_called_at"] - t["start"] for t in times if "fit_called_at" in t]),
        "teardown_s": _stats([t["complete"] - t["last_result"] for t in times if "complete" in t and "last_result" in t]),
        "compute_s": _stats([t["compute_s"] for t in times if "compute_s" in t]),
        "compute_cpu_s": _stats([t["compute_cpu_s"] for t in times if "compute_cpu_s" in t]),
        "worker_startup_cpu_s": _stats([t["worker_startup_cpu_s"] for t in times if "worker_startup_cpu_s" in t]),
        "trial_wall_s": _stats([t["complete"] - t["start"] for t in times if "complete" in t]),
        "cpu_s_by_process": by_kind or None,
        # Per trial, what is not the workload itself: the Train worker's start-up, imports,
        # logging and checkpoints (its CPU beyond compute), and the Train controller and
        # synchronisation actor that each TorchTrainer.fit() starts.
        "cpu_s_per_trial_beyond_compute": None if not by_kind else {
            kind: round((by_kind.get(kind, {}).get("cpu_s", 0.0) - (compute_cpu if kind == "train_worker" else 0.0))
                        / args.trials, 2) for kind in PER_TRIAL_KINDS},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.orchestrator_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="number of trials (default 6)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once = local Ray CPUs (default 2)")
    parser.add_argument("--trial-seconds", type=float, default=7.0, help="compute per trial in seconds (default 7)")
    parser.add_argument("--epochs", type=int, default=1, help="reports (epochs, checkpoints) per trial (default 1)")
    parser.add_argument("--start-ahead", type=int, default=None,
                        help="trials started ahead of free CPUs (default: runner.START_AHEAD; 0 with --ray-defaults)")
    parser.add_argument("--no-mlflow", action="store_true", help="leave MLflow logging out of the trials")
    parser.add_argument("--ray-defaults", action="store_true", help="Ray's stock settings instead of fast_start_env()")
    args = parser.parse_args(argv)
    for name in ("trials", "concurrency", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.trial_seconds <= 0:
        parser.error(f"--trial-seconds must be > 0, got {args.trial_seconds}")
    if args.start_ahead is None:
        from orchestrator import runner

        args.start_ahead = 0 if args.ray_defaults else runner.START_AHEAD
    elif args.start_ahead < 0:
        parser.error(f"--start-ahead must be >= 0, got {args.start_ahead}")

    load_start = os.getloadavg()
    rate = calibrate()
    steps_per_epoch = max(1, round(rate * args.trial_seconds / args.epochs))
    plain_start, plain_cpu_start = time.perf_counter(), time.process_time()
    for index in range(args.trials):
        for epoch in range(args.epochs):
            run_workload(steps_per_epoch, seed=epoch)
    plain_serial_s, plain_cpu_s = time.perf_counter() - plain_start, time.process_time() - plain_cpu_start
    ideal_s = plain_serial_s / args.concurrency
    parallel_s = plain_parallel_seconds(args.trials, args.concurrency, steps_per_epoch, args.epochs)

    # stdout carries the one JSON object; whatever Ray, Tune or MLflow print goes to stderr.
    with tempfile.TemporaryDirectory(prefix="sna-overhead-") as workdir, contextlib.redirect_stdout(sys.stderr):
        sweep = run_sweep_side(args, steps_per_epoch, workdir)
    import ray

    result = {
        "benchmark": "orchestrator_overhead",
        "trials": args.trials,
        "concurrency": args.concurrency,
        "start_ahead": args.start_ahead,
        "epochs_per_trial": args.epochs,
        "trial_seconds_target": args.trial_seconds,
        "steps_per_epoch": steps_per_epoch,
        "settings": "ray-defaults" if args.ray_defaults else "fast_start_env",
        "mlflow_logging": not args.no_mlflow,
        "plain_serial_s": round(plain_serial_s, 2),
        "plain_ideal_s": round(ideal_s, 2),
        "plain_cpu_s": round(plain_cpu_s, 2),
        "plain_parallel_s": round(parallel_s, 2),
        "core_contention": round(parallel_s / ideal_s, 3),
        **sweep,
        "ratio": round(sweep["sweep_s"] / ideal_s, 3),
        # The orchestration's own share: the sweep against plain processes running side by side.
        "ratio_vs_plain_parallel": round(sweep["sweep_s"] / parallel_s, 3),
        # CPU the sweep spent beyond the plain loop's training, per trial: process start-ups,
        # imports, polling, logging, checkpoints (and any other job running on this machine).
        "overhead_cpu_s_per_trial": None if sweep["sweep_machine_cpu_s"] is None else
        round((sweep["sweep_machine_cpu_s"] - plain_cpu_s) / args.trials, 2),
        "ratio_with_ray_init": round((sweep["sweep_s"] + sweep["ray_init_s"]) / ideal_s, 3),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_start],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "versions": {"python": platform.python_version(), "ray": ray.__version__, "torch": torch.__version__},
    }
    print(json.dumps(result))
    return 0 if sweep["trials_failed"] == 0 and sweep["trials_finished"] == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
