"""The Tune function trainable: one trial = one Ray Train ``TorchTrainer`` fitting one cell.

Each trial of a sweep reproducing Fang et al., "Combating spatial redundancy with spectral norm
attention in convolutional learners", Neurocomputing 511 (2022) 105-116, trains one resolved
cell config (dataset × backbone × attention × rank-k × placement × seed) through
``sna_core.tasks.build_task``.

The Ray 2.60 pattern that works (Train V2 refuses a ``TorchTrainer`` passed to a ``Tuner``): a
Tune *function* trainable builds a ``TorchTrainer`` and calls ``fit()``; the Train run is named
after the trial key (no timestamp) and stored under the sweep's storage path, so after a restart
Train V2 finds the run's latest checkpoint and the worker loop continues from it.

The worker loop, per epoch: train, evaluate (every rank its shard of the validation set, on the
unwrapped model; the task sums over ranks), log to MLflow (rank 0, ``step=epoch``), then
``ray.train.report`` with a checkpoint written by rank 0 (model, optimiser, scheduler, epoch, RNG
states, the metric history, and the MLflow run id). The sweep's result relay
(:mod:`orchestrator.result_relay`) carries rank 0's metrics to Tune. At the end, rank 0 logs the
summary (parameters, FLOPs at the dataset's image size, throughput, SNA power iteration
statistics, ``best_*`` and ``final_*``) and finishes the MLflow run; an exception or a
non-finite loss finishes it ``FAILED`` with the reason and fails the trial.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# The Tune config key under which a trial's spec travels.
SPEC_KEY = "trial"
# The file inside a Train checkpoint directory.
CHECKPOINT_FILE = "trial_state.pt"
# Train runs live in <storage>/<TRAIN_RUNS_DIR>/<trial key>: one stable folder per trial.
TRAIN_RUNS_DIR = "trials"
# Checkpoints kept per trial: the newest is enough to resume; one more covers a crash mid-upload.
CHECKPOINTS_KEPT = 2
# Throughput is measured once, at the end, on a few inference batches.
THROUGHPUT_BATCH = 16
THROUGHPUT_ITERS = 3
# "1": trials leave out Ray Train's placement-group cleaner actor (see sweep_trainer_class).
SKIP_PG_CLEANER_ENV = "SNA_ORCH_SKIP_PG_CLEANER"

TrainLoop = Callable[[dict], None]


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs, as plain data (it travels inside the Tune config).

    ``key`` names the Tune trial, its Train run and checkpoints, and tags its MLflow run;
    ``config`` is the resolved trial config (schema in :mod:`sna_core.tasks`).
    """

    key: str
    run_id: str
    config: dict
    tracking_uri: str
    storage_path: str
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 0
    fields: dict = field(default_factory=dict)  # the cell's axes, for progress lines and tables

    def as_config(self) -> dict[str, Any]:
        return {SPEC_KEY: asdict(self)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrialSpec:
        try:
            return cls(**config[SPEC_KEY])
        except KeyError as error:
            raise ValueError(f"not an sna-orch trial config: no {SPEC_KEY!r} key (keys: {sorted(config)})") from error

    @property
    def metric(self) -> str:
        return self.config["train"]["metric"]

    @property
    def mode(self) -> str:
        return self.config["train"].get("mode", "max")

    @property
    def epochs(self) -> int:
        return int(self.config["train"]["epochs"])


def train_runs_path(storage_path: str) -> str:
    """The folder that holds one Train run (and its checkpoints) per trial key."""
    return storage_path.rstrip("/") + "/" + TRAIN_RUNS_DIR


def checkpointed_epoch(storage_path: str, key: str) -> int | None:
    """The epoch of the checkpoint trial ``key`` resumes from (None: none yet): the newest one
    Ray Train committed to its checkpoint manager's snapshot. A checkpoint folder written just
    before a kill, but not yet committed there, is not the one Train resumes from."""
    from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

    path = os.path.join(train_runs_path(storage_path), key, CHECKPOINT_MANAGER_SNAPSHOT_FILENAME)
    try:
        with open(path, encoding="utf-8") as handle:
            latest = json.load(handle).get("latest_checkpoint_result") or {}
        return int(latest["metrics"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------------------
# The Tune side


def make_trainable(train_loop: TrainLoop | None = None, *, lean: bool = True) -> Callable[[dict], None]:
    """The Tune function trainable for ``train_loop`` (default :func:`train_loop_per_worker`).

    The benchmark passes its own loop to time the same Tune + Train machinery on a fixed
    workload, and ``lean=False`` for Ray's stock ``TorchTrainer`` (see :func:`sweep_trainer_class`).
    """
    loop = train_loop or train_loop_per_worker

    def run_trial(config: dict) -> None:
        import ray.tune

        from orchestrator.result_relay import fit_reporting, start_relay

        spec = TrialSpec.from_config(config)
        relay = start_relay() if lean else None
        trainer = build_trainer(spec, loop, lean=lean, relay=relay)
        try:
            if relay is None:
                trainer.fit()
            else:
                fit_reporting(spec.key, relay, trainer.fit, ray.tune.report)
        except Exception as error:
            # The worker marks its own failures; this catches what it could not (a lost worker
            # process, a failed start) so no MLflow run stays RUNNING.
            _fail_open_run(spec, _reason(error))
            raise

    run_trial.__name__ = "sna_trial"
    return run_trial


def sweep_trainer_class() -> type:
    """``TorchTrainer`` without the per-trial helper actors that a sweep without Ray Data has no
    use for. Each actor is one more Python process per trial (~1-4 CPU-seconds of start-up and
    imports on a small machine):

    - ``DatasetsCallback`` starts a ``DatasetManager`` actor (importing Ray Data) even when no
      dataset is passed; trials here load their data with torch DataLoaders.
    - ``PlacementGroupCleanerCallback`` starts a detached actor that asks the state API every
      second whether the controller lives. Without the dashboard (local sweeps) it cannot reach
      that API and only logs failures; the placement groups of a local sweep's trials go with
      the driver's job. Dropped only when :data:`SKIP_PG_CLEANER_ENV` is "1".
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import (
        PlacementGroupCleanerCallback,
    )

    class SweepTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list:
            dropped: tuple[type, ...] = ()
            if not self.datasets:
                dropped += (DatasetsCallback,)
            if os.environ.get(SKIP_PG_CLEANER_ENV) == "1":
                dropped += (PlacementGroupCleanerCallback,)
            return [callback for callback in super()._create_default_callbacks() if not isinstance(callback, dropped)]

    return SweepTorchTrainer


def build_trainer(spec: TrialSpec, train_loop: TrainLoop, *, lean: bool = True, relay: Any = None):
    """The ``TorchTrainer`` of one trial: a stable Train run name (the trial key) under the
    sweep's storage, so Train V2 resumes it from its latest checkpoint after a restart.

    Results reach Tune through ``relay`` (:mod:`orchestrator.result_relay`), else through Ray's
    ``TuneReportCallback``. ``lean``: one-worker trials get
    :class:`~orchestrator.train_backend.SingleWorkerConfig` (no process group) and the trainer
    class of :func:`sweep_trainer_class`; ``lean=False`` is Ray's stock set-up, for the benchmark.
    """
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.result_relay import relay_callback
    from orchestrator.train_backend import SingleWorkerConfig

    resources = {"CPU": spec.cpus_per_worker}
    if spec.gpus_per_worker:
        resources["GPU"] = spec.gpus_per_worker
    loop_config = {**asdict(spec), "fit_called_at": time.time()}
    trainer_class = sweep_trainer_class() if lean else TorchTrainer
    return trainer_class(
        train_loop,
        train_loop_config=loop_config,
        torch_config=SingleWorkerConfig() if lean and spec.num_workers == 1 else None,
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.num_workers,
            use_gpu=spec.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=spec.key,
            storage_path=train_runs_path(spec.storage_path),
            callbacks=[relay_callback(spec.key, relay) if relay is not None else TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
    )


def _reason(error: BaseException) -> str:
    """The last line of an error's text: for a Train error, the worker's own exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:2000]


def _fail_open_run(spec: TrialSpec, reason: str) -> None:
    from orchestrator.tracking import TERMINAL_STATUSES, TrialLogger

    try:
        logger = TrialLogger(spec.tracking_uri, spec.run_id)
        if logger.client.get_run(spec.run_id).info.status not in TERMINAL_STATUSES:
            logger.finish("FAILED", reason=reason)
    except Exception:  # noqa: BLE001 - the trial's own error is the one to raise
        traceback.print_exc()


# ------------------------------------------------------------------------------------------------
# The Train worker side


class TrialFailed(RuntimeError):
    """A trial's error as plain text. Some task errors take several constructor arguments and do
    not survive Ray's pickling (Tune would report a TypeError instead of the cause)."""


def train_loop_per_worker(loop_config: dict) -> None:
    """Train one cell on this Train worker; rank 0 logs, checkpoints and summarises."""
    import ray.train

    started_at = time.time()
    fit_called_at = loop_config.pop("fit_called_at", started_at)
    spec = TrialSpec(**loop_config)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    logger = None
    if rank == 0:
        from orchestrator.tracking import TrialLogger

        logger = TrialLogger(spec.tracking_uri, spec.run_id)
        logger.mark_running()
    try:
        _fit(spec, rank, world_size, logger, startup_s=started_at - fit_called_at)
    except Exception as error:  # noqa: BLE001 - every failure is recorded, then re-raised
        reason = f"{type(error).__name__}: {error}"
        traceback.print_exc()  # the whole traceback stays in the worker's log
        if logger is not None:
            logger.finish("FAILED", reason=reason)
        raise TrialFailed(f"trial {spec.key}: {reason}") from None


def _fit(spec: TrialSpec, rank: int, world_size: int, logger: Any, *, startup_s: float) -> None:
    import ray.train
    import ray.train.torch
    import torch
    from torch.utils.data import DistributedSampler

    from sna_core.tasks import build_task, seed_everything

    task = build_task(spec.config)
    seed_everything(task.seed)
    device = ray.train.torch.get_device()
    model = task.build_model()

    state = _load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        if state.get("run_id") not in (None, spec.run_id):
            print(f"[sna-orch] trial {spec.key}: checkpoint names MLflow run {state['run_id']}, "
                  f"the driver found {spec.run_id}; logging to {spec.run_id}")
    model = ray.train.torch.prepare_model(model)
    unwrapped = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    optimizer, scheduler = task.build_optimizer(unwrapped)

    history: list[dict[str, float]] = []
    sna_totals = {"iterations": 0.0, "calls": 0, "max": 0}
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        history, sna_totals = state["history"], state["sna"]
        start_epoch = int(state["epoch"]) + 1
        _set_rng_states(state["rng"])
        if logger is not None:
            logger.log_resume(start_epoch)

    train_set, val_set = task.build_datasets()
    train_sampler = val_sampler = None
    if world_size > 1:
        train_sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=task.seed)
        val_sampler = ShardSampler(len(val_set), rank, world_size)
    train_loader = task.build_loader(train_set, train=True, sampler=train_sampler)
    # Every rank evaluates its shard of the validation set; the task sums the counts over ranks.
    val_loader = task.build_loader(val_set, train=False, sampler=val_sampler)

    metric, mode, epochs = task.metric, task.mode, task.epochs
    logged_through = _last_logged_epoch(logger) if logger is not None else -1
    for epoch in range(start_epoch, epochs):
        task.set_epoch(train_loader, epoch)
        _reset_sna_stats(unwrapped)
        epoch_start = time.monotonic()
        train_metrics = task.train_one_epoch(model, train_loader, optimizer, device)
        _check_finite(train_metrics, epoch)
        if scheduler is not None:
            scheduler.step()
        # The unwrapped model: DDP's forward would broadcast buffers, a collective per batch.
        val_metrics = task.evaluate(unwrapped, val_loader, device)
        _add_sna_stats(unwrapped, sna_totals)
        epoch_metrics = {
            **{f"train_{name}": float(value) for name, value in train_metrics.items()},
            **{name: float(value) for name, value in val_metrics.items()},
            "epoch_time_s": time.monotonic() - epoch_start,
        }
        history.append(epoch_metrics)
        best = _best(history, metric, mode)
        reported = {**epoch_metrics, "epoch": epoch, "epochs": epochs, "train_startup_s": startup_s}
        if best is not None:
            reported[f"best_{metric}"] = best
        if rank != 0:
            ray.train.report(reported)
        else:
            if epoch > logged_through:  # a resumed epoch that MLflow already has is not logged twice
                logger.log_epoch(epoch_metrics, epoch)
            with tempfile.TemporaryDirectory(prefix="sna-ckpt-") as directory:
                torch.save(
                    {
                        "model": unwrapped.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": None if scheduler is None else scheduler.state_dict(),
                        "epoch": epoch,
                        "run_id": spec.run_id,
                        "history": history,
                        "sna": sna_totals,
                        "rng": _rng_states(),
                    },
                    os.path.join(directory, CHECKPOINT_FILE),
                )
                ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(directory))
        if epoch < epochs - 1 and _stop_agreed(spec, rank, device):
            if logger is not None:
                logger.finish("KILLED", reason=f"stopped by the driver after epoch {epoch} (its checkpoint); "
                                                "`sna-orch run` resumes it from there")
            return

    if rank == 0:
        logger.log_summary(_summary(spec, task, unwrapped, history, sna_totals, startup_s))
        logger.finish("FINISHED")


class ShardSampler:
    """Every ``world_size``-th index from ``rank``: each validation image on exactly one rank
    (DistributedSampler pads the last shard with repeats, which would count them twice)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _stop_agreed(spec: TrialSpec, rank: int, device: Any) -> bool:
    """Whether the driver asked the sweep to stop (rank 0 reads the stop file; with several
    ranks, one all-reduce makes it every rank's answer, so none starts an epoch the others skip)."""
    from orchestrator.stop import stop_requested
    from sna_core.tasks.base import reduce_sums

    asked = 1.0 if rank == 0 and stop_requested(spec.storage_path) else 0.0
    return reduce_sums({"stop": asked}, device)["stop"] > 0


def _load_checkpoint() -> dict | None:
    import ray.train
    import torch

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        # weights_only=False: the state holds RNG states and plain Python history, written by us.
        return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=False)


def _last_logged_epoch(logger: Any) -> int:
    from orchestrator.tracking import EPOCH_METRIC

    value = logger.client.get_run(logger.run_id).data.metrics.get(EPOCH_METRIC)
    return -1 if value is None or math.isnan(value) else int(value)


def _check_finite(train_metrics: Mapping[str, Any], epoch: int) -> None:
    """A backstop for the task's own check (which raises NonFiniteLossError at the bad step)."""
    loss = train_metrics.get("loss")
    if isinstance(loss, (int, float)) and not math.isfinite(loss):
        raise FloatingPointError(f"epoch {epoch}: the mean training loss is {loss}")


def _best(history: list[dict[str, float]], metric: str, mode: str) -> float | None:
    values = [row[metric] for row in history if metric in row and math.isfinite(row[metric])]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _sna_modules(model: Any) -> list[Any]:
    return [m for m in model.modules() if callable(getattr(m, "iteration_stats", None))]


def _reset_sna_stats(model: Any) -> None:
    for module in _sna_modules(model):
        module.reset_iteration_stats()


def _add_sna_stats(model: Any, totals: dict[str, Any]) -> None:
    for module in _sna_modules(model):
        stats = module.iteration_stats()
        totals["iterations"] += stats["mean"] * stats["calls"]
        totals["calls"] += stats["calls"]
        totals["max"] = max(totals["max"], stats["max"])


def _rng_states() -> dict[str, Any]:
    import numpy
    import torch

    return {"python": random.getstate(), "numpy": numpy.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_states(states: Mapping[str, Any]) -> None:
    import numpy
    import torch

    random.setstate(states["python"])
    numpy.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def _summary(spec: TrialSpec, task: Any, model: Any, history: list[dict[str, float]],
             sna_totals: Mapping[str, Any], startup_s: float) -> dict[str, float]:
    """Parameters, FLOPs at the dataset's image size, throughput, SNA iterations, best/final."""
    from sna_core.profiling import count_flops, count_params, measure_throughput

    input_shape = tuple(task.input_shape)
    summary: dict[str, float] = {
        "params": count_params(model),
        "epochs_completed": len(history),
        "train_time_s": sum(row.get("epoch_time_s", 0.0) for row in history),
        "train_startup_s": startup_s,
    }
    try:
        summary["flops"] = count_flops(model, input_shape)
    except Exception as error:  # noqa: BLE001 - a model FlopCounterMode cannot trace still trained
        print(f"[sna-orch] trial {spec.key}: FLOPs not counted at {input_shape}: {type(error).__name__}: {error}")
    try:
        batch = min(THROUGHPUT_BATCH, int(task.config["train"]["batch_size"]))
        device = next(model.parameters()).device
        summary["throughput_img_s"] = measure_throughput(model, input_shape, batch, warmup=1, iters=THROUGHPUT_ITERS, device=device)
    except Exception as error:  # noqa: BLE001 - as above
        print(f"[sna-orch] trial {spec.key}: throughput not measured: {type(error).__name__}: {error}")
    if sna_totals["calls"]:
        summary["sna_iterations_mean"] = sna_totals["iterations"] / sna_totals["calls"]
        summary["sna_iterations_max"] = sna_totals["max"]
    if history:
        best = _best(history, task.metric, task.mode)
        if best is not None:
            summary[f"best_{task.metric}"] = best
        summary.update({f"final_{name}": value for name, value in history[-1].items()})
    return summary
