"""Running a sweep: every unfinished cell as a Ray Tune trial that fits a Ray Train TorchTrainer.

The sweep reproduces the experiment programme of Fang et al., "Combating spatial redundancy with
spectral norm attention in convolutional learners", Neurocomputing 511 (2022) 105-116.

Flow of :func:`run_sweep`: check that every dataset that needs files has its root (before Ray
starts); ask MLflow which trial keys are finished and keep the rest; open the sweep's parent run
and find-or-create one MLflow run per trial (serially, in the driver: sqlite takes one writer);
start Ray; hand the trials to Tune through a :class:`~ray.tune.search.Searcher` (one trial per
cell, or with ``search:`` an Optuna study per cell); print progress; end the parent run; stop Ray.

Identity and restarts. A trial's key (the plan's cell key, or ``<cell key>-<optuna trial
number>`` in a search) names its Tune trial, its Train run folder ``<storage>/trials/<key>`` and
tags its MLflow run. Running the same file again skips keys with a FINISHED MLflow run; Train V2
resumes an interrupted trial from the newest checkpoint in its folder, and the checkpoint carries
the MLflow run id, so the run continues where it stopped. Optuna studies live in
``<storage>/optuna.db`` (one study per cell): trials a killed driver left RUNNING are run again
under their own number, so they resume from their checkpoints too.

Start-up cost. Each Train run starts a controller, a worker group and a handful of helper actors,
each a fresh Python process importing Ray (and most of them torch); on a small machine that, not
the training, dominates short trials. :func:`fast_start_env`,
:func:`~orchestrator.trainable.sweep_trainer_class` and Tune's actor reuse cut a trial from eight
new processes to four and the end-of-trial wait from ~2.7 s to ~0.3 s
(``python -m benchmarks.orchestrator_overhead`` measures it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from orchestrator.errors import UsageError
from orchestrator.result_relay import start_relay
from orchestrator.stop import StopRequest
from orchestrator.trainable import (
    SKIP_PG_CLEANER_ENV,
    SPEC_KEY,
    TrialSpec,
    make_trainable,
)

if TYPE_CHECKING:
    from orchestrator.config import ExperimentConfig
    from orchestrator.plan import Cell

# Where a sweep keeps its state under the experiment's storage path.
TUNE_DIR = "tune"
OPTUNA_DB = "optuna.db"
# What a Tune trial actor (which only waits on its Train run) asks for. On a joined cluster:
# 0.01 CPU (Tune refuses an empty request). On a local Ray: no CPU and one slot of a custom
# resource, so every logical CPU is a Train worker's and a trial started ahead (start_ahead)
# waits for a CPU instead of squeezing a third worker onto two cores.
TRIAL_DRIVER_CPU = 0.01
TRIAL_SLOT_RESOURCE = "sna_trial_slot"
LOCAL_TRIAL_SLOTS = 10_000
# MLflow tags of search trials.
TAG_SEARCH_CELL = "sna.search_cell"
TAG_OPTUNA_TRIAL = "sna.optuna_trial"
TAG_STUDY = "sna.optuna_study"
TAG_BEST = "sna.best"

# Trials admitted beyond those that fit (resources.start_ahead's default): see tune_trials.
START_AHEAD = 1

# Outcomes of a trial in a sweep's summary.
FINISHED, FAILED, INTERRUPTED, NOT_RUN = "FINISHED", "FAILED", "INTERRUPTED", "NOT_RUN"


def fast_start_env() -> dict[str, str]:
    """Environment for every Ray process of a sweep: Train V2's knobs for short trials.

    Read from ``ray/train/v2/_internal/constants.py`` (Ray 2.60):

    - ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s): the controller polls its workers at this
      interval, so every trial waited up to 2 s to notice that training had started and again that
      it had ended. 0.2 s costs a few RPCs per second.
    - ``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER`` (on): one more actor — one more process start — per
      trial, polling the GCS every 5 s for node drains (a cloud preemption signal; a checkpoint
      each epoch covers preemption here).
    - ``RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION`` (on) and ``RAY_TRAIN_METRICS_ENABLED``:
      dashboard bookkeeping that queries the state API every 30 s and exports Prometheus metrics.
    - ``RAY_WARN_BLOCKING_GET_INSIDE_ASYNC=0`` and ``PL_DISABLE_FORK=1``: Train and Tune put these
      into the runtime env of the actors they create. Set job-wide with the same values, those
      actors' runtime env equals the job's instead of being a new one per actor kind.
    - ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``: no per-trial CSV/JSON/TensorBoard files (MLflow
      has the metrics); ``RAY_AIR_NEW_OUTPUT=0`` with ``verbose=0`` silences Tune's table.
    """
    return {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
        "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
        "RAY_TRAIN_METRICS_ENABLED": "0",
        "RAY_WARN_BLOCKING_GET_INSIDE_ASYNC": "0",
        "PL_DISABLE_FORK": "1",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
    }


# ------------------------------------------------------------------------------------------------
# Before Ray: what to run


@dataclass
class RunPlan:
    """The cells of an experiment split into those to run and those already finished."""

    cells: list[Cell]
    todo: list[Cell]
    finished: set[str]
    # search only: cell key -> trials still to start (resumed ones included)
    search_remaining: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # keys whose run FAILED (skipped unless asked)
    interrupted: set[str] = field(default_factory=set)  # keys with a run left RUNNING/KILLED: resumed
    failed_policy: str = "skip"

    @property
    def n_trials(self) -> int:
        """How many Tune trials this run starts."""
        if self.search_remaining:
            return sum(self.search_remaining.values())
        return len(self.todo)


def check_dataset_roots(experiment: ExperimentConfig, cells: Iterable[Cell]) -> None:
    """Raise ConfigError (exit 2) naming the path and the expected layout when a dataset that
    needs files cannot be read on this machine (root or required files missing, or no loader in
    this release). Object-storage roots are left to the loaders on the workers."""
    from sna_core.data import DatasetRootError, check_root

    for entry in dict.fromkeys(cell.dataset for cell in cells):
        spec = experiment.datasets[entry]
        root = spec.get("root")
        if root is not None and "://" in str(root):
            continue
        try:
            check_root(spec["name"], root)
        except DatasetRootError as error:
            raise experiment.error(
                f"datasets.{entry}.root",
                f"dataset {entry!r} cannot start: {str(error).rstrip('.')}. Set datasets.{entry}.root in the experiment file",
            ) from None


FAILED_POLICIES = ("skip", "resume", "restart")


def plan_run(experiment: ExperimentConfig, cells: Sequence[Cell], failed: str = "skip") -> RunPlan:
    """Which cells still need a run, from their MLflow runs (and, with ``search``, each cell's
    Optuna study). Creates nothing.

    New cells and interrupted ones (a run left RUNNING by a killed driver, or KILLED by a stop)
    run; FINISHED ones do not. FAILED ones are skipped (``failed="skip"``: a NaN trial would only
    fail again), resumed from their last checkpoint (``"resume"``) or started over (``"restart"``).
    """
    from orchestrator.tracking import trial_states

    if failed not in FAILED_POLICIES:
        raise ValueError(f"failed must be one of {FAILED_POLICIES}, got {failed!r}")
    states = trial_states(experiment.tracking_uri, experiment.name)
    status = {key: state.status for key, state in states.items()}
    finished = {key for key, value in status.items() if value == "FINISHED"}
    if experiment.search is None:
        failed_keys = {c.key for c in cells if status.get(c.key) == "FAILED"}
        interrupted = {c.key for c in cells if status.get(c.key) in ("RUNNING", "KILLED")}
        skipped = finished | (failed_keys if failed == "skip" else set())
        return RunPlan(list(cells), [c for c in cells if c.key not in skipped], finished,
                       failed=failed_keys, interrupted=interrupted, failed_policy=failed)
    url = _study_storage(experiment, create=False)
    storage = None
    if url is not None:
        import optuna

        storage = optuna.storages.RDBStorage(url)
    remaining = {}
    for cell in cells:
        left = experiment.search.n_trials if storage is None else _study_remaining(experiment, cell, storage)
        if left:
            remaining[cell.key] = left
    return RunPlan(list(cells), [c for c in cells if c.key in remaining], finished, remaining)


def concurrency_for(experiment: ExperimentConfig, session: RaySession, max_concurrent: int | None) -> int:
    """Trials that fit at once in ``session``'s cluster, capped by ``max_concurrent`` (the flag)
    or ``resources.max_concurrent`` (the file)."""
    wanted = experiment.resources
    worker_cpus = wanted.num_workers * wanted.cpus_per_worker
    fit = math.floor(session.resources.get("CPU", 0.0) / (worker_cpus + session.trial_resources["CPU"]) + 1e-9)
    if session.worker_cpus is not None:
        fit = min(fit, math.floor(session.worker_cpus / worker_cpus + 1e-9))
    if wanted.gpus_per_worker:
        fit = min(fit, math.floor(session.resources.get("GPU", 0.0) / (wanted.num_workers * wanted.gpus_per_worker) + 1e-9))
    cap = max_concurrent if max_concurrent is not None else wanted.max_concurrent
    return max(1, min(fit, cap) if cap is not None else fit)


def check_fits(experiment: ExperimentConfig, session: RaySession) -> None:
    """UsageError when one trial asks for more than the whole cluster has."""
    wanted = experiment.resources
    have = {"CPU": session.resources.get("CPU", 0.0), "GPU": session.resources.get("GPU", 0.0)}
    if session.worker_cpus is not None:
        have["CPU"] = session.worker_cpus
    need = {"CPU": wanted.num_workers * wanted.cpus_per_worker, "GPU": wanted.num_workers * wanted.gpus_per_worker}
    for name, amount in need.items():
        if amount and amount > have[name] + 1e-9:
            raise UsageError(
                f"one trial needs {amount:g} {name} (resources: num_workers={wanted.num_workers}, "
                f"cpus_per_worker={wanted.cpus_per_worker:g}, gpus_per_worker={wanted.gpus_per_worker:g}) "
                f"but the Ray cluster has {have[name]:g} {name} for training; lower the resources, "
                "raise --num-cpus, or use a bigger cluster (--address)"
            )


# ------------------------------------------------------------------------------------------------
# Ray


@dataclass(frozen=True)
class RaySession:
    """The Ray cluster a sweep runs on: its resources, and on a local Ray the CPUs that Train
    workers may use (all of them: trial actors take a :data:`TRIAL_SLOT_RESOURCE` slot)."""

    resources: dict[str, float]
    worker_cpus: float | None = None  # None: a cluster joined with --address; all of its CPUs

    @property
    def trial_resources(self) -> dict[str, float]:
        """The Tune trial actor's request (see :data:`TRIAL_SLOT_RESOURCE`)."""
        if self.resources.get(TRIAL_SLOT_RESOURCE):
            return {"CPU": 0.0, TRIAL_SLOT_RESOURCE: 1.0}
        return {"CPU": TRIAL_DRIVER_CPU}


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, verbose: bool = False,
                tuned: bool = True) -> Iterator[RaySession]:
    """``ray.init`` with :func:`fast_start_env` (``tuned=False``: Ray's defaults, for the
    benchmark); always ``ray.shutdown()`` (and the driver's environment restored) on the way out.

    Local by default (``num_cpus`` = this machine's cores, all for Train workers; trial actors
    take :data:`TRIAL_SLOT_RESOURCE` slots); ``address`` or ``RAY_ADDRESS`` joins a running
    cluster, where the environment travels as the job's runtime env.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    env = fast_start_env() if tuned else {}
    if tuned and not address:
        env[SKIP_PG_CLEANER_ENV] = "1"  # no dashboard, so no state API for the cleaner to ask
    saved = {name: os.environ.get(name) for name in env}
    # Set here too: a local cluster's processes inherit the driver's environment, and Train and
    # Tune read these in the driver to build the runtime envs of the actors they create.
    os.environ.update(env)
    kwargs: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": verbose,
    }
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
    try:
        worker_cpus = None
        if address:
            ray.init(address=address, **kwargs)
        else:
            worker_cpus = num_cpus or os.cpu_count() or 1
            ray.init(num_cpus=worker_cpus, resources={TRIAL_SLOT_RESOURCE: LOCAL_TRIAL_SLOTS},
                     include_dashboard=False, **kwargs)
        _quiet_ray_loggers(verbose)
        yield RaySession({name: float(value) for name, value in ray.cluster_resources().items()}, worker_cpus)
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _quiet_ray_loggers(verbose: bool) -> None:
    """Tune logs every failed trial's traceback and a closing "Trials did not complete" at
    ERROR; the sweep prints each failure's reason itself (and MLflow keeps it)."""
    if verbose:
        return
    for name in ("ray.tune", "ray.train", "ray.air", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def tune_trials(searcher: Any, n_trials: int, *, storage_path: str, name: str, concurrency: int,
                max_failures: int = 0, callbacks: Sequence[Any] = (), trainable: Callable[[dict], None] | None = None,
                reuse_actors: bool = True, start_ahead: int = 0, trial_resources: dict[str, float] | None = None,
                relay: bool = True) -> Any:
    """Run ``n_trials`` Tune trials that ``searcher`` hands out (each config a
    :class:`TrialSpec`); trial names and folders are the trial keys. Returns Tune's ResultGrid.

    Shared by :func:`run_sweep` and ``benchmarks.orchestrator_overhead`` (which passes its own
    ``trainable`` built by :func:`~orchestrator.trainable.make_trainable`). ``relay=False`` starts
    no result relay, for a trainable built with ``lean=False`` (Ray's report queue instead)."""
    from ray import tune

    trainable = trainable or make_trainable()
    # Owned by this driver, so it outlives every trial actor; trials find it by name.
    relay_handle = start_relay() if relay else None  # noqa: F841 - held for the sweep's lifetime
    tuner = tune.Tuner(
        tune.with_resources(trainable, tune.PlacementGroupFactory([trial_resources or {"CPU": TRIAL_DRIVER_CPU}])),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=n_trials,
            # start_ahead trials beyond what trains at once: each starts its Train controller
            # while the running trials compute, then waits for its workers' CPUs.
            max_concurrent_trials=concurrency + start_ahead,
            # One trial actor serves trial after trial: a new process (and its ~4 CPU-seconds
            # of ray.tune + torch imports) per trial was the largest cut measured here.
            reuse_actors=reuse_actors,
            trial_name_creator=_trial_key,
            trial_dirname_creator=_trial_key,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path.rstrip("/") + "/" + TUNE_DIR,
            verbose=0,
            callbacks=list(callbacks),
            failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
        ),
    )
    return tuner.fit()


def _trial_key(trial: Any) -> str:
    return trial.config[SPEC_KEY]["key"]


# ------------------------------------------------------------------------------------------------
# Searchers: what Tune runs next


def _searcher_base() -> type:
    from ray.tune.search import Searcher

    return Searcher


class _JsonState:
    """Tune saves a searcher's state beside its experiment; ours lives in MLflow, Optuna and the
    Train checkpoints, so the saved file is only a record of what was left."""

    def save(self, checkpoint_path: str) -> None:
        import json

        with open(checkpoint_path, "w", encoding="utf-8") as handle:
            json.dump(self.describe_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a restarted sweep re-plans from MLflow and Optuna."""


def make_cell_queue(specs: Sequence[TrialSpec], stop: StopRequest | None = None) -> Any:
    """A Tune searcher that hands out ``specs`` in order, then (or once ``stop`` is requested)
    says FINISHED."""
    Searcher = _searcher_base()

    class CellQueue(_JsonState, Searcher):
        def __init__(self) -> None:
            super().__init__()
            self.queue = deque(specs)

        def suggest(self, trial_id: str) -> dict | str | None:
            if stop is not None and stop.requested:
                return Searcher.FINISHED
            return self.queue.popleft().as_config() if self.queue else Searcher.FINISHED

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            pass

        def describe_state(self) -> dict:
            return {"pending": len(self.queue), "next": self.queue[0].key if self.queue else None}

    return CellQueue()


def _study_storage(experiment: ExperimentConfig, *, create: bool) -> str | None:
    if "://" in experiment.storage_path:
        raise UsageError(
            f"search: the Optuna studies are kept in {OPTUNA_DB} under the storage path, which must be a "
            f"local or shared folder; got {experiment.storage_path!r}"
        )
    path = os.path.join(experiment.storage_path, OPTUNA_DB)
    if not create and not os.path.isfile(path):
        return None
    os.makedirs(experiment.storage_path, exist_ok=True)
    return f"sqlite:///{path}"


def study_name(experiment: ExperimentConfig, cell: Cell) -> str:
    return f"{experiment.name}/{cell.key}"


def _search_settings(experiment: ExperimentConfig, cell: Cell) -> tuple[str, str]:
    search = experiment.search
    metric = search.metric or cell.config["train"]["metric"]
    mode = search.mode or cell.config["train"].get("mode", "max")
    return metric, mode


def _open_study(experiment: ExperimentConfig, cell: Cell, storage: Any) -> Any:
    import optuna

    _, mode = _search_settings(experiment, cell)
    seed = experiment.search.seed
    return optuna.create_study(
        storage=storage,
        study_name=study_name(experiment, cell),
        direction="maximize" if mode == "max" else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )


def _study_remaining(experiment: ExperimentConfig, cell: Cell, storage: Any) -> int:
    """Trials of ``cell``'s study still to start: new ones plus those a killed driver left."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name(experiment, cell), storage=storage)
    except KeyError:  # no such study yet
        return experiment.search.n_trials
    ended = sum(trial.state.is_finished() for trial in study.get_trials(deepcopy=False))
    return max(0, experiment.search.n_trials - ended)


def _distributions(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    distributions = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            distributions[name] = CategoricalDistribution(spec["choices"])
        elif spec["type"] == "int":
            distributions[name] = IntDistribution(int(spec["low"]), int(spec["high"]), log=spec.get("log", False), step=int(spec.get("step", 1)))
        else:
            distributions[name] = FloatDistribution(float(spec["low"]), float(spec["high"]), log=spec.get("log", False), step=spec.get("step"))
    return distributions


def search_trial_cell(cell: Cell, number: int, params: dict[str, Any]) -> Cell:
    """The cell of one Optuna trial: key ``<cell key>-<number>``, the sampled train settings."""
    config = {**cell.config, "train": {**cell.config["train"], **params}}
    return dataclasses.replace(cell, key=f"{cell.key}-{number}", config=config)


def make_optuna_search(experiment: ExperimentConfig, cells: Sequence[Cell], register: Callable[[Cell, Cell], TrialSpec],
                       stop: StopRequest | None = None) -> Any:
    """A Tune searcher running ``search.n_trials`` Optuna trials per cell (studies persisted in
    ``<storage>/optuna.db``). ``register(search_cell, cell)`` creates the MLflow run and returns
    the trial's spec; it is called in the driver, one trial at a time. Once ``stop`` is requested
    it hands out nothing more, and a trial stopped before its last epoch stays RUNNING in its
    study, so the next run resumes it under its own number."""
    import optuna

    Searcher = _searcher_base()
    url = _study_storage(experiment, create=True)
    storage = optuna.storages.RDBStorage(url)
    distributions = _distributions(experiment.search.space)

    class OptunaCellSearch(_JsonState, Searcher):
        def __init__(self) -> None:
            super().__init__()
            self.studies = {cell.key: _open_study(experiment, cell, storage) for cell in cells}
            self.cells = {cell.key: cell for cell in cells}
            self.resume: deque[tuple[str, int, dict]] = deque()  # trials a killed driver left RUNNING
            self.new: dict[str, int] = {}
            for cell in cells:
                trials = self.studies[cell.key].get_trials(deepcopy=False)
                stale = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
                self.resume.extend((cell.key, t.number, dict(t.params)) for t in stale)
                ended = sum(t.state.is_finished() for t in trials)
                self.new[cell.key] = max(0, experiment.search.n_trials - ended - len(stale))
            self.order = deque(cell.key for cell in cells)
            self.live: dict[str, tuple[str, int]] = {}

        def suggest(self, trial_id: str) -> dict | str | None:
            if stop is not None and stop.requested:
                return Searcher.FINISHED
            if self.resume:
                cell_key, number, params = self.resume.popleft()
            else:
                cell_key = self._next_cell()
                if cell_key is None:
                    return Searcher.FINISHED
                self.new[cell_key] -= 1
                trial = self.studies[cell_key].ask(distributions)
                number, params = trial.number, dict(trial.params)
            cell = self.cells[cell_key]
            spec = register(search_trial_cell(cell, number, params), cell)
            self.live[trial_id] = (cell_key, number)
            return spec.as_config()

        def _next_cell(self) -> str | None:
            for _ in range(len(self.order)):
                cell_key = self.order[0]
                self.order.rotate(-1)  # round-robin: every cell's search advances together
                if self.new[cell_key] > 0:
                    return cell_key
            return None

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id not in self.live:
                return
            cell_key, number = self.live.pop(trial_id)
            if not error and result and int(result.get("epoch", -1)) + 1 < int(result.get("epochs", 0)):
                return  # stopped before its last epoch: resumed by the next run
            metric, _ = _search_settings(experiment, self.cells[cell_key])
            value = None if (error or not result) else result.get(f"best_{metric}")
            study = self.studies[cell_key]
            if value is None or not math.isfinite(float(value)):
                study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            else:
                study.tell(number, float(value), skip_if_finished=True)

        def describe_state(self) -> dict:
            return {"new": self.new, "resume": [f"{k}-{n}" for k, n, _ in self.resume]}

    return OptunaCellSearch()


def mark_best_search_trials(experiment: ExperimentConfig, cells: Sequence[Cell]) -> dict[str, str]:
    """Tag each searched cell's best Optuna trial's MLflow run ``sna.best=true`` (the others
    ``false``). Returns cell key -> best trial key."""
    import optuna
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import trial_runs

    url = _study_storage(experiment, create=False)
    if url is None:
        return {}
    runs = trial_runs(experiment.tracking_uri, experiment.name)
    client = MlflowClient(experiment.tracking_uri)
    best_keys = {}
    for cell in cells:
        try:
            study = optuna.load_study(study_name=study_name(experiment, cell), storage=url)
        except KeyError:
            continue
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            continue
        best_number = study.best_trial.number
        best_keys[cell.key] = f"{cell.key}-{best_number}"
        for trial in study.get_trials(deepcopy=False):
            run = runs.get(f"{cell.key}-{trial.number}")
            if run is None:
                continue
            flag = "true" if trial.number == best_number else "false"
            if run.data.tags.get(TAG_BEST) != flag:
                client.log_batch(run.info.run_id, tags=[RunTag(TAG_BEST, flag)])
    return best_keys


# ------------------------------------------------------------------------------------------------
# The sweep


@dataclass
class TrialOutcome:
    key: str
    fields: dict[str, Any]
    status: str  # FINISHED | FAILED | INTERRUPTED | NOT_RUN
    metric: str
    best: float | None = None
    epochs_done: int = 0
    epochs: int | None = None
    wall_s: float | None = None
    error: str | None = None

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SweepSummary:
    experiment: str
    n_cells: int
    already_finished: int
    trials: list[TrialOutcome]
    wall_s: float
    parent_run_id: str | None = None
    concurrency: int = 0
    best_search_trials: dict[str, str] = field(default_factory=dict)
    skipped_failed: list[str] = field(default_factory=list)  # keys FAILED earlier, not run again
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the sweep
    stop_exit_code: int | None = None
    forced_stop: bool = False

    def count(self, status: str) -> int:
        return sum(trial.status == status for trial in self.trials)

    @property
    def exit_code(self) -> int:
        """130 / 143 when SIGINT / SIGTERM stopped the sweep; else 0 when every trial this run
        started finished and no failed cell was skipped, 1 otherwise."""
        if self.stop_exit_code is not None:
            return self.stop_exit_code
        ok = all(trial.status == FINISHED for trial in self.trials) and not self.skipped_failed
        return 0 if ok else 1


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "sweep"


def _spec(experiment: ExperimentConfig, cell: Cell, run_id: str) -> TrialSpec:
    resources = experiment.resources
    return TrialSpec(
        key=cell.key, run_id=run_id, config=cell.config, tracking_uri=experiment.tracking_uri,
        storage_path=experiment.storage_path, num_workers=resources.num_workers,
        cpus_per_worker=resources.cpus_per_worker, gpus_per_worker=resources.gpus_per_worker,
        max_failures=resources.max_failures, fields=cell.fields(),
    )


def run_sweep(experiment: ExperimentConfig, cells: Sequence[Cell], address: str | None = None,
              max_concurrent: int | None = None, *, num_cpus: int | None = None, verbose: bool = False,
              stream: TextIO | None = None, progress_interval_s: float = 5.0, failed: str = "skip",
              stop: StopRequest | None = None) -> SweepSummary:
    """Run every cell of ``cells`` that has no FINISHED MLflow run; see the module docstring.

    ``failed``: what to do with cells whose run FAILED before (see :func:`plan_run`). ``stop``:
    the graceful-stop request (default: one bound to SIGINT/SIGTERM while the sweep runs)."""
    from orchestrator.driver_lock import DriverLock

    stream = stream if stream is not None else sys.stdout
    started = time.monotonic()
    check_dataset_roots(experiment, cells)
    with DriverLock(experiment.storage_path, experiment.path) as lock:
        if lock.previous is not None:
            print(f"sna-orch run: the previous driver of this sweep (pid {lock.previous.pid} on "
                  f"{lock.previous.host}) is gone; resuming its trials", file=stream, flush=True)
        return _run_locked(experiment, cells, address, max_concurrent, num_cpus=num_cpus, verbose=verbose,
                           stream=stream, progress_interval_s=progress_interval_s, failed=failed, stop=stop,
                           started=started)


def _say(stream: TextIO, message: str) -> None:
    print(message, file=stream, flush=True)


def _run_locked(experiment: ExperimentConfig, cells: Sequence[Cell], address: str | None, max_concurrent: int | None,
                *, num_cpus: int | None, verbose: bool, stream: TextIO, progress_interval_s: float, failed: str,
                stop: StopRequest | None, started: float) -> SweepSummary:
    from orchestrator.progress import SweepProgress, summary_table
    from orchestrator.tracking import SweepTracker, git_commit

    plan = plan_run(experiment, cells, failed)
    already = len(plan.finished & {cell.key for cell in cells})
    skipped_failed = sorted(plan.failed) if failed == "skip" else []
    if skipped_failed:
        _say(stream, f"sna-orch run: {len(skipped_failed)} cell(s) FAILED in an earlier run and are skipped "
                     f"({', '.join(key[:8] for key in skipped_failed[:5])}{' …' if len(skipped_failed) > 5 else ''}); "
                     "--resume-failed continues them from their last checkpoint, --restart-failed starts them over")
    if plan.interrupted & {cell.key for cell in plan.todo}:
        _say(stream, f"sna-orch run: {len(plan.interrupted)} interrupted trial(s) resume from their last checkpoint")
    if not plan.todo:
        where = "have a FINISHED MLflow run" if experiment.search is None else "have all their Optuna trials"
        if skipped_failed:
            where = "have a FINISHED or a FAILED (skipped) MLflow run"
        _say(stream, f"sna-orch run: all {len(cells)} cells of {experiment.name!r} {where}; nothing to run")
        return SweepSummary(experiment.name, len(cells), already, [], time.monotonic() - started,
                            skipped_failed=skipped_failed)

    tracker = SweepTracker(experiment.tracking_uri, experiment.name)
    parent = tracker.start_sweep(experiment.path, experiment.file_hash,
                                 git_commit(os.path.dirname(os.path.abspath(__file__))), len(cells))
    stale = tracker.close_stale_sweeps(parent, "its driver stopped without ending it (killed or preempted)")
    if stale:
        _say(stream, f"sna-orch run: closed {stale} sweep run(s) a lost driver left RUNNING (now KILLED)")
    if failed == "restart" and plan.failed:
        restart_trials(experiment, tracker, sorted(plan.failed), stream)
    summary = SweepSummary(experiment.name, len(cells), already, [], 0.0, parent, skipped_failed=skipped_failed)
    stop = stop or StopRequest(experiment.storage_path, announce=lambda message: _say(stream, message))
    status = "KILLED"
    progress = None
    try:
        # Handlers after ray.init: Ray's core worker installs its own SIGTERM handler (a stack
        # dump, then abort) in the driver.
        with ray_session(address, num_cpus=num_cpus, verbose=verbose) as session, stop.installed():
            check_fits(experiment, session)
            concurrency = concurrency_for(experiment, session, max_concurrent)
            summary.concurrency = concurrency
            if experiment.search is None:
                run_ids = tracker.trial_runs(plan.todo, parent)
                searcher = make_cell_queue([_spec(experiment, cell, run_ids[cell.key]) for cell in plan.todo], stop)
            else:
                searcher = make_optuna_search(experiment, plan.todo, _registrar(experiment, tracker, parent), stop)
            start_ahead = experiment.resources.start_ahead
            _say(stream, f"sna-orch run: {experiment.name!r}: {len(cells)} cells, {already} already finished, "
                         f"{plan.n_trials} trials to run, {concurrency} at a time "
                         f"({experiment.resources.num_workers} Train worker(s) each"
                         f"{f'; {start_ahead} more starting ahead' if start_ahead else ''})")
            progress = SweepProgress(plan.n_trials, concurrency, already_done=0 if experiment.search else already,
                                     interval_s=progress_interval_s, stream=stream)
            try:
                tune_trials(searcher, plan.n_trials, storage_path=experiment.storage_path,
                            name=_safe_name(experiment.name), concurrency=concurrency,
                            max_failures=experiment.resources.max_failures, callbacks=[progress],
                            start_ahead=start_ahead, trial_resources=session.trial_resources)
            except KeyboardInterrupt:
                summary.forced_stop = True
        summary.trials = _outcomes(progress, plan)
        if experiment.search is not None:
            summary.best_search_trials = mark_best_search_trials(experiment, plan.todo)
        if stop.requested:
            status = "KILLED"
        else:
            status = "FINISHED" if summary.exit_code == 0 else "FAILED"
    finally:
        summary.wall_s = time.monotonic() - started
        summary.stopped_by = None if stop.signal is None else stop.signal.name
        summary.stop_exit_code = stop.exit_code
        if stop.requested or status == "KILLED":
            # A forced stop (second signal, or an error in the driver) leaves trials mid-epoch.
            killed = tracker.kill_running_trials(parent, "the sweep's driver stopped during this trial's epoch; "
                                                         "`sna-orch run` resumes it from its last checkpoint")
            if killed:
                summary.trials = [outcome if outcome.key not in killed else
                                  dataclasses.replace(outcome, status=INTERRUPTED) for outcome in summary.trials]
        tracker.finish_sweep(parent, status)
    if progress is not None:
        print(summary_table([trial.row() for trial in summary.trials]), file=stream)
    _say(stream, f"sna-orch run: {summary.count(FINISHED)} finished, {summary.count(FAILED)} failed, "
                 f"{summary.count(INTERRUPTED)} interrupted, {summary.count(NOT_RUN)} not run, "
                 f"in {summary.wall_s:.0f} s; MLflow: {experiment.tracking_uri} (experiment {experiment.name!r})")
    if summary.stopped_by:
        _say(stream, f"sna-orch run: stopped by {summary.stopped_by}. Run the same command to resume: finished "
                     "cells are kept, interrupted trials continue from their last checkpoint.")
    return summary


def restart_trials(experiment: ExperimentConfig, tracker: Any, keys: Sequence[str], stream: TextIO) -> None:
    """Start ``keys`` over: retire their MLflow runs (kept, untagged as the key's run) and move
    their Train run folders (checkpoints) aside to ``<storage>/trials/.retired/`` — nothing is
    deleted."""
    from orchestrator.trainable import train_runs_path

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for key in keys:
        tracker.retire_trial(key)
        folder = os.path.join(train_runs_path(experiment.storage_path), key)
        if os.path.isdir(folder):
            target = os.path.join(train_runs_path(experiment.storage_path), ".retired", f"{key}-{stamp}")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(folder, target)
    _say(stream, f"sna-orch run: restarting {len(keys)} failed cell(s) from scratch (their old runs and "
                 "checkpoints are kept aside)")


def _registrar(experiment: ExperimentConfig, tracker: Any, parent: str) -> Callable[[Cell, Cell], TrialSpec]:
    """Find-or-create the MLflow run of one search trial (tagged with its cell and study)."""
    from mlflow.entities import RunTag

    def register(search_cell: Cell, cell: Cell) -> TrialSpec:
        run_id = tracker.trial_run(search_cell, parent)
        number = search_cell.key.rsplit("-", 1)[1]
        tracker.client.log_batch(run_id, tags=[RunTag(TAG_SEARCH_CELL, cell.key), RunTag(TAG_OPTUNA_TRIAL, number),
                                               RunTag(TAG_STUDY, study_name(experiment, cell))])
        return _spec(experiment, search_cell, run_id)

    return register


def _outcomes(progress: Any, plan: RunPlan) -> list[TrialOutcome]:
    from orchestrator.progress import FAILED as P_FAILED
    from orchestrator.progress import FINISHED as P_FINISHED
    from orchestrator.progress import INTERRUPTED as P_INTERRUPTED

    outcomes = []
    for trial in progress.trials.values():
        status = {P_FINISHED: FINISHED, P_FAILED: FAILED, P_INTERRUPTED: INTERRUPTED}.get(trial.status, NOT_RUN)
        outcomes.append(TrialOutcome(trial.key, trial.fields, status, trial.metric, trial.best, trial.epochs_done,
                                     trial.epochs, trial.wall_s, trial.error))
    started = {trial.key for trial in progress.trials.values()}
    if not plan.search_remaining:
        for cell in plan.todo:
            if cell.key not in started:
                outcomes.append(TrialOutcome(cell.key, cell.fields(), NOT_RUN, cell.config["train"]["metric"],
                                             epochs=cell.config["train"]["epochs"]))
    else:
        missing = plan.n_trials - len(started)
        if missing > 0:
            outcomes.append(TrialOutcome(f"{missing} search trial(s)", {}, NOT_RUN, "-"))
    return outcomes
