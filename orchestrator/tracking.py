"""MLflow tracking owned by the orchestrator: exactly one MLflow run per trial key.

Reproduces the bookkeeping behind "Combating spatial redundancy with spectral norm attention in
convolutional learners" (Neurocomputing, 2022): every cell of the paper's grid (dataset ×
backbone × attention × rank_k × placement × seed) is one MLflow run, found or created by its
``sna.trial_key`` tag, nested under a sweep parent run, and written from the rank-0 Ray Train
worker with ``step=epoch``.

Two writers use this module:

- the Ray driver, serially, through :class:`SweepTracker` (experiment, sweep parent run, one
  trial run per cell, created before any trial is launched: sqlite takes one writer at a time);
- the rank-0 Train worker of each trial, in its own process, through :class:`TrialLogger`
  (explicit run ids on an ``MlflowClient``; no global active-run state).

Every write retries with jittered exponential backoff on "database is locked" and transient
HTTP errors. The readers (:func:`finished_trial_keys`, :func:`trial_states`) never create a
database, an experiment or a run, and fetch all trial runs with one paged ``search_runs``.

Run statuses: a trial run is created ``SCHEDULED`` (MLflow's own status for "not started"),
the worker marks it ``RUNNING`` and ends it ``FINISHED``, ``FAILED`` or ``KILLED``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, TypeVar

from mlflow.entities import Metric, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

__all__ = [
    "AXES",
    "TERMINAL_STATUSES",
    "CellLike",
    "SweepTracker",
    "TrialLogger",
    "TrialState",
    "finished_trial_keys",
    "flatten_config",
    "git_commit",
    "search_cell_of",
    "sqlite_path",
    "state_of",
    "trial_runs",
    "trial_states",
]

_log = logging.getLogger(__name__)

# Tag names: the key that identifies a trial, what kind of run this is, and the matrix axes.
TAG_TRIAL_KEY = "sna.trial_key"
TAG_RUN_TYPE = "sna.run_type"  # "trial" | "sweep"
TAG_CONFIG_HASH = "sna.config_hash"
TAG_CONFIG_PATH = "sna.config_path"
TAG_GIT_COMMIT = "sna.git_commit"
TAG_FAILURE_REASON = "sna.failure_reason"
TAG_INITIALISED = "sna.initialised"  # set last at creation: a run without it is completed on reuse
TAG_N_CELLS = "sna.n_cells"
TAG_SEARCH_CELL = "sna.search_cell"  # an Optuna trial's run: the plan cell it searches for
TAG_SEARCH_BEST = "sna.best"  # "true" on the best Optuna trial's run of its cell, else "false"
TAG_STARTED_MS = "sna.started_ms"  # when a worker last marked the run RUNNING (start_time = creation)
TAG_RETIRED_KEY = "sna.retired_trial_key"  # a run set aside by --restart-failed (was sna.trial_key)
TAG_RETIRED_MS = "sna.retired_ms"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
AXES: tuple[str, ...] = ("dataset", "backbone", "attention", "rank_k", "placement", "seed", "task")
_EXTRA_CELL_TAGS = ("stem", "detector", "grid")
# An Optuna trial's key is "<cell key>-<trial number>" (orchestrator.runner.search_trial_cell).
_SEARCH_TRIAL_KEY = re.compile(r"^(?P<cell>.+)-(?P<number>\d+)$")

RESOLVED_CONFIG_ARTIFACT = "resolved_config.json"
FINAL_METRICS_ARTIFACT = "final_metrics.json"
EPOCH_METRIC = "epoch"
RESUME_METRIC = "resumed_at_epoch"  # one point per resume from a checkpoint (value = step = epoch)

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
_STATUS_PREFERENCE = {"FINISHED": 0, "RUNNING": 1, "SCHEDULED": 2, "FAILED": 3, "KILLED": 4}

# MLflow's limits (mlflow.utils.validation); a batch holds at most 1000 entities in all.
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_SEARCH_PAGE = 50_000
_INVALID_NAME_CHARS = re.compile(r"[^\w.\- /:]")

_T = TypeVar("_T")


class CellLike(Protocol):
    """What tracking reads from a plan cell (``orchestrator.plan.Cell``)."""

    @property
    def key(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def backbone(self) -> str: ...
    @property
    def attention(self) -> str: ...
    @property
    def rank_k(self) -> int | None: ...
    @property
    def placement(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def task(self) -> str: ...
    @property
    def config(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class TrialState:
    """What MLflow knows about one trial, read without touching anything.

    ``status`` is the MLflow run status: SCHEDULED (created, not started), RUNNING, FINISHED,
    FAILED or KILLED. ``epoch`` is the last epoch passed to :meth:`TrialLogger.log_epoch`;
    ``best`` the run's ``best_<metric>`` where ``metric`` is the trial's ``train.metric``
    (``mode`` its ``train.mode``). For an Optuna trial's run, ``search_cell`` is the key of the
    plan cell it searches for and ``search_best`` whether it is that cell's best trial.
    """

    key: str
    status: str
    run_id: str
    epoch: int | None
    epochs: int | None
    metric: str | None
    best: float | None
    start_time: datetime | None
    end_time: datetime | None
    failure_reason: str | None
    parent_run_id: str | None
    mode: str | None = None
    search_cell: str | None = None
    search_best: bool | None = None


# ---------------------------------------------------------------------------------------------
# URIs


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (possibly relative), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    raw = tracking_uri.removeprefix("sqlite:///").partition("?")[0]
    if not raw or raw == ":memory:":
        return None
    return Path(raw)


def _store_absent(tracking_uri: str) -> bool:
    """True when reading would have to create the store (a sqlite file not there, or empty)."""
    if tracking_uri.startswith("sqlite:") and not tracking_uri.startswith("sqlite:///"):
        return True  # in-memory sqlite: nothing persistent to read
    path = sqlite_path(tracking_uri)
    if path is None:
        return tracking_uri.startswith("sqlite:///")
    return not path.is_file() or path.stat().st_size == 0


def git_commit(path: str | os.PathLike[str]) -> str | None:
    """The commit checked out at ``path`` (``git rev-parse HEAD``); None outside a repository."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = completed.stdout.strip()
    return commit if completed.returncode == 0 and commit else None


# ---------------------------------------------------------------------------------------------
# Retries


_HTTP_ATTEMPTS = 3  # MLflow's REST client already retries each request with backoff (~4 min)


def _transient_kind(error: BaseException) -> str | None:
    """"lock" (sqlite contention), "http" (a server or network error a later try can get
    through), or None (a real error: retrying would repeat it)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if "database is locked" in text or "database table is locked" in text or "database is busy" in text:
            return "lock"
        if isinstance(current, MlflowException):
            if current.error_code in ("TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED"):
                return "http"
            # The REST client's own retries ran out (connection refused/reset, 429, 5xx).
            if "max retries exceeded" in text or re.search(r"error code (429|50[0-4])\b", text):
                return "http"
        if type(current).__name__ in ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout",
                                      "ChunkedEncodingError", "RemoteDisconnected", "ProtocolError",
                                      "ConnectionResetError", "ConnectionRefusedError"):
            return "http"
        current = current.__cause__ or current.__context__
    return None


def _retry(operation: Callable[[], _T], *, what: str, attempts: int = 10,
           base_delay_s: float = 0.05, max_delay_s: float = 5.0) -> _T:
    """Run ``operation``; on a transient error sleep (full jitter, doubling) and try again:
    up to ``attempts`` tries for sqlite locks, 3 for HTTP errors (each already retried by MLflow)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except Exception as error:
            kind = _transient_kind(error)
            limit = min(attempts, _HTTP_ATTEMPTS) if kind == "http" else attempts
            if kind is None or attempt >= limit:
                raise
            delay = random.uniform(0.0, min(max_delay_s, base_delay_s * 2 ** (attempt - 1)))
            _log.warning("MLflow %s: %s error (try %d/%d), retrying in %.2fs: %s",
                         what, kind, attempt, limit, delay, str(error)[:300])
            time.sleep(delay)


# ---------------------------------------------------------------------------------------------
# Values


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → MLflow params: ``{"train": {"lr": 0.1}}`` → ``{"train.lr": "0.1"}``.

    Strings stay as they are; every other leaf is JSON (``null``, ``true``, ``[2, 4]``), so
    :mod:`orchestrator.results` can give columns their types back. An empty mapping is kept as
    ``"{}"``. Values longer than MLflow's 6000 characters are cut (the whole config is in the
    ``resolved_config.json`` artifact); characters MLflow refuses in names become ``_``.
    """
    flat: dict[str, str] = {}
    for raw_key, value in config.items():
        key = _INVALID_NAME_CHARS.sub("_", f"{prefix}{raw_key}")
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, prefix=f"{key}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        if len(text) > _MAX_PARAM_VALUE:
            text = text[: _MAX_PARAM_VALUE - 14] + "...[truncated]"
        flat[key] = text
    return flat


def _flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for raw_key, value in metrics.items():
        key = f"{prefix}{raw_key}"
        if isinstance(value, Mapping):
            flat.update(_flatten_metrics(value, prefix=f"{key}."))
            continue
        if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"metric {key!r}: expected a number (int or float), got {type(value).__name__} {value!r}"
            )
        flat[key] = float(value)
    return flat


def _now_ms() -> int:
    return int(time.time() * 1000)


def _axis_value(value: Any) -> str:
    return "none" if value is None else str(value)


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _log_json(client: MlflowClient, run_id: str, name: str, obj: Any) -> None:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.name.endswith(".json"):
        raise ValueError(f"artifact name {name!r}: expected a relative path ending in .json, e.g. 'final_metrics.json'")
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=True)
    with tempfile.TemporaryDirectory(prefix="sna-mlflow-") as tmp:
        local = Path(tmp) / relative.name
        local.write_text(text + "\n", encoding="utf-8")
        parent = str(relative.parent)
        _retry(lambda: client.log_artifact(run_id, str(local), None if parent == "." else parent),
               what=f"log_artifact {name}")


def _log_batch(client: MlflowClient, run_id: str, *, metrics: Sequence[Metric] = (),
               params: Sequence[Param] = (), tags: Sequence[RunTag] = ()) -> None:
    """log_batch within MLflow's per-request limits, in order: metrics, params, then tags
    (so a tag such as ``sna.initialised`` is written with or after the last params)."""
    requests: list[tuple[Sequence[Metric], Sequence[Param], Sequence[RunTag]]] = []
    requests += [(chunk, (), ()) for chunk in _chunks(list(metrics), _MAX_METRICS_PER_BATCH)]
    requests += [((), chunk, ()) for chunk in _chunks(list(params), _MAX_PARAMS_PER_BATCH)]
    tag_chunks = list(_chunks(list(tags), _MAX_PARAMS_PER_BATCH))
    if tag_chunks and requests and len(requests[-1][0]) + len(requests[-1][1]) + len(tag_chunks[0]) <= 1000:
        # One transaction: the tags land together with the last params/metrics, or not at all.
        last_metrics, last_params, _ = requests.pop()
        requests.append((last_metrics, last_params, tag_chunks.pop(0)))
    requests += [((), (), chunk) for chunk in tag_chunks]
    for m, p, t in requests:
        _retry(lambda m=m, p=p, t=t: client.log_batch(run_id, metrics=m, params=p, tags=t), what="log_batch")


# ---------------------------------------------------------------------------------------------
# Readers


def _existing_experiment_id(client: MlflowClient, experiment_name: str) -> str | None:
    experiment = _retry(lambda: client.get_experiment_by_name(experiment_name), what="get_experiment_by_name")
    if experiment is None or experiment.lifecycle_stage != "active":
        return None
    return experiment.experiment_id


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = _retry(
            lambda page_token=token: client.search_runs(
                [experiment_id], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                max_results=_SEARCH_PAGE, page_token=page_token),
            what="search_runs",
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _canonical_by_key(runs: Iterable[Run]) -> dict[str, Run]:
    """One run per trial key. Should duplicates exist (e.g. written by another tool), prefer
    FINISHED, then RUNNING, SCHEDULED, FAILED, KILLED; then the earliest started."""
    chosen: dict[str, Run] = {}
    for run in runs:
        key = run.data.tags.get(TAG_TRIAL_KEY)
        if not key:
            continue
        rank = (_STATUS_PREFERENCE.get(run.info.status, 9), run.info.start_time or 0, run.info.run_id)
        current = chosen.get(key)
        if current is None or rank < (_STATUS_PREFERENCE.get(current.info.status, 9),
                                      current.info.start_time or 0, current.info.run_id):
            chosen[key] = run
    return chosen


def _trial_runs(tracking_uri: str, experiment_name: str, extra_filter: str = "") -> dict[str, Run]:
    if _store_absent(tracking_uri):
        return {}
    client = MlflowClient(tracking_uri)
    experiment_id = _existing_experiment_id(client, experiment_name)
    if experiment_id is None:
        return {}
    filter_string = f"tags.`{TAG_RUN_TYPE}` = 'trial'" + (f" and {extra_filter}" if extra_filter else "")
    return _canonical_by_key(_search(client, experiment_id, filter_string))


def finished_trial_keys(tracking_uri: str, experiment_name: str) -> set[str]:
    """Keys of trials with a FINISHED run. Creates nothing: a missing store or experiment → empty."""
    runs = _trial_runs(tracking_uri, experiment_name, "attributes.status = 'FINISHED'")
    return {key for key, run in runs.items() if run.info.status == "FINISHED"}


def _ms_to_datetime(ms: int | None) -> datetime | None:
    return None if not ms else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(json.loads(text))
    except (ValueError, TypeError):
        return None


def state_of(run: Run) -> TrialState:
    """The :class:`TrialState` of one trial run (no extra calls: search results suffice)."""
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    metric = params.get("train.metric")
    best = metrics.get(f"best_{metric}") if metric else None
    epoch = metrics.get(EPOCH_METRIC)
    return TrialState(
        key=tags[TAG_TRIAL_KEY],
        status=run.info.status,
        run_id=run.info.run_id,
        epoch=None if epoch is None or math.isnan(epoch) else int(epoch),
        epochs=_int_or_none(params.get("train.epochs")),
        metric=metric,
        best=None if best is None or math.isnan(best) else float(best),
        start_time=_ms_to_datetime(run.info.start_time),
        end_time=_ms_to_datetime(run.info.end_time) if run.info.status in TERMINAL_STATUSES else None,
        failure_reason=tags.get(TAG_FAILURE_REASON),
        parent_run_id=tags.get(TAG_PARENT),
        mode=params.get("train.mode"),
        search_cell=search_cell_of(run),
        search_best={"true": True, "false": False}.get(tags.get(TAG_SEARCH_BEST, "")),
    )


def search_cell_of(run: Run) -> str | None:
    """The plan cell an Optuna trial's run searches for (its tag, else its key), or None."""
    tags = run.data.tags
    if tags.get(TAG_SEARCH_CELL):
        return tags[TAG_SEARCH_CELL]
    match = _SEARCH_TRIAL_KEY.match(tags.get(TAG_TRIAL_KEY, ""))
    return match["cell"] if match else None


def trial_runs(tracking_uri: str, experiment_name: str) -> dict[str, Run]:
    """Every trial run of the experiment, one per key (one paged search; creates nothing)."""
    return _trial_runs(tracking_uri, experiment_name)


def trial_states(tracking_uri: str, experiment_name: str) -> dict[str, TrialState]:
    """Trial key → :class:`TrialState`. Creates nothing: a missing store or experiment → empty."""
    return {key: state_of(run) for key, run in _trial_runs(tracking_uri, experiment_name).items()}


# ---------------------------------------------------------------------------------------------
# Driver side


def _trial_run_name(cell: CellLike) -> str:
    attention = cell.attention if cell.rank_k is None else f"{cell.attention}-k{cell.rank_k}"
    return f"{cell.dataset}-{cell.backbone}-{attention}-{cell.placement}-s{cell.seed}-{cell.key[:6]}"


class SweepTracker:
    """The driver's side: experiment, sweep parent run, and find-or-create of trial runs.

    Call it from one process, serially (sqlite takes one writer at a time). Finding is by the
    ``sna.trial_key`` tag, so calling twice, or again after a crash, never makes a second run
    for a key; a run left SCHEDULED/RUNNING/FAILED/KILLED is reused and set back to SCHEDULED.
    """

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        if not experiment_name or not experiment_name.strip():
            raise ValueError(f"experiment name must be a non-empty string, got {experiment_name!r}")
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.client = MlflowClient(tracking_uri)
        self._experiment_id: str | None = None
        self._config_hash: str | None = None
        self._config_path: str | None = None
        self._git_commit: str | None = None

    # -- experiment and sweep ---------------------------------------------------------------

    def ensure_experiment(self) -> str:
        """The experiment's id, creating it (artifacts beside a sqlite database) if missing."""
        if self._experiment_id is not None:
            return self._experiment_id
        experiment = _retry(lambda: self.client.get_experiment_by_name(self.experiment_name),
                            what="get_experiment_by_name")
        if experiment is not None and experiment.lifecycle_stage != "active":
            raise ValueError(
                f"MLflow experiment {self.experiment_name!r} (id {experiment.experiment_id}) is deleted; "
                f"restore it (mlflow experiments restore --experiment-id {experiment.experiment_id}) "
                "or choose another name"
            )
        if experiment is None:
            try:
                experiment_id = _retry(
                    lambda: self.client.create_experiment(self.experiment_name,
                                                          artifact_location=self._artifact_location()),
                    what="create_experiment",
                )
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = self.client.get_experiment_by_name(self.experiment_name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        self._experiment_id = experiment_id
        return experiment_id

    def _artifact_location(self) -> str | None:
        # Without this MLflow writes artifacts to ./mlruns of whatever the current directory is;
        # a tracking server chooses its own (None).
        path = sqlite_path(self.tracking_uri)
        return None if path is None else (path.resolve().parent / "mlartifacts").as_uri()

    def start_sweep(self, config_path: str, file_hash: str, git_commit: str | None, n_cells: int) -> str:
        """The sweep parent run's id: the unfinished one of this config hash, else a new one."""
        experiment_id = self.ensure_experiment()
        self._config_hash, self._config_path, self._git_commit = file_hash, str(config_path), git_commit
        tags = {TAG_RUN_TYPE: "sweep", TAG_CONFIG_HASH: file_hash, TAG_CONFIG_PATH: str(config_path),
                TAG_N_CELLS: str(n_cells)}
        if git_commit:
            tags |= {TAG_GIT_COMMIT: git_commit, "mlflow.source.git.commit": git_commit}
        found = _search(self.client, experiment_id,
                        f"tags.`{TAG_RUN_TYPE}` = 'sweep' and tags.`{TAG_CONFIG_HASH}` = {_quoted(file_hash)}")
        unfinished = sorted((run for run in found if run.info.status != "FINISHED"),
                            key=lambda run: run.info.start_time or 0, reverse=True)
        if unfinished:
            run_id = unfinished[0].info.run_id
            _log_batch(self.client, run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            if unfinished[0].info.status != "RUNNING":
                _retry(lambda: self.client.update_run(run_id, status="RUNNING"), what="update_run")
            return run_id
        tags[TAG_RUN_NAME] = f"sweep-{Path(config_path).stem}-{file_hash[:8]}"
        run = _retry(lambda: self.client.create_run(experiment_id, tags=tags), what="create_run")
        if Path(config_path).is_file():
            _retry(lambda: self.client.log_artifact(run.info.run_id, str(config_path)), what="log_artifact")
        return run.info.run_id

    def finish_sweep(self, parent_run_id: str, status: str = "FINISHED") -> None:
        """End the sweep parent run: FINISHED, FAILED (some trial failed) or KILLED."""
        _check_terminal(status)
        _retry(lambda: self.client.set_terminated(parent_run_id, status=status), what="set_terminated")

    def close_stale_sweeps(self, keep: str, reason: str) -> int:
        """KILLED (with ``reason``) for every other sweep parent run left RUNNING (its driver is
        gone: the caller holds the sweep's driver lock). Returns how many."""
        experiment_id = self.ensure_experiment()
        stale = [run for run in _search(self.client, experiment_id,
                                        f"tags.`{TAG_RUN_TYPE}` = 'sweep' and attributes.status = 'RUNNING'")
                 if run.info.run_id != keep]
        for run in stale:
            self._end(run.info.run_id, "KILLED", reason)
        return len(stale)

    def kill_running_trials(self, parent_run_id: str, reason: str) -> list[str]:
        """KILLED (with ``reason``) for this sweep's trial runs still RUNNING: what a stop
        interrupted mid-epoch. They resume from their last checkpoint. Returns their keys."""
        experiment_id = self.ensure_experiment()
        running = _search(self.client, experiment_id,
                          f"tags.`{TAG_RUN_TYPE}` = 'trial' and tags.`{TAG_PARENT}` = {_quoted(parent_run_id)} "
                          "and attributes.status = 'RUNNING'")
        for run in running:
            self._end(run.info.run_id, "KILLED", reason)
        return [run.data.tags.get(TAG_TRIAL_KEY, run.info.run_id) for run in running]

    def retire_trial(self, key: str) -> str | None:
        """Take ``key``'s run out of find-or-create (for a restart from scratch) without deleting
        it: its ``sna.trial_key`` tag moves to ``sna.retired_trial_key``. Returns its run id."""
        experiment_id = self.ensure_experiment()
        runs = _search(self.client, experiment_id,
                       f"tags.`{TAG_RUN_TYPE}` = 'trial' and tags.`{TAG_TRIAL_KEY}` = {_quoted(key)}")
        for run in runs:
            _log_batch(self.client, run.info.run_id,
                       tags=[RunTag(TAG_RETIRED_KEY, key), RunTag(TAG_RETIRED_MS, str(_now_ms()))])
            _retry(lambda run=run: self.client.delete_tag(run.info.run_id, TAG_TRIAL_KEY), what="delete_tag")
        return runs[0].info.run_id if runs else None

    def _end(self, run_id: str, status: str, reason: str) -> None:
        _log_batch(self.client, run_id, tags=[RunTag(TAG_FAILURE_REASON, reason[-_MAX_TAG_VALUE:])])
        _retry(lambda: self.client.set_terminated(run_id, status=status), what="set_terminated")

    # -- trials -------------------------------------------------------------------------------

    def trial_run(self, cell: CellLike, parent_run_id: str) -> str:
        """FIND-OR-CREATE the one run of ``cell.key``; returns its run id."""
        return self.trial_runs([cell], parent_run_id)[cell.key]

    def trial_runs(self, cells: Iterable[CellLike], parent_run_id: str) -> dict[str, str]:
        """Find-or-create for many cells with one search: key → run id."""
        cells = list(cells)
        experiment_id = self.ensure_experiment()
        trial_filter = f"tags.`{TAG_RUN_TYPE}` = 'trial'"
        if len(cells) == 1:  # one search trial at a time: look up its key, not every run (O(n²))
            trial_filter += f" and tags.`{TAG_TRIAL_KEY}` = {_quoted(cells[0].key)}"
        existing = _canonical_by_key(_search(self.client, experiment_id, trial_filter))
        run_ids: dict[str, str] = {}
        for cell in cells:
            if cell.key in run_ids:
                continue
            run = existing.get(cell.key)
            if run is None:
                run = self._create_trial_run(experiment_id, cell, parent_run_id)
            run_ids[cell.key] = self._reuse(run, cell, parent_run_id)
        return run_ids

    def _create_trial_run(self, experiment_id: str, cell: CellLike, parent_run_id: str) -> Run:
        tries = 0

        def create() -> Run:
            nonlocal tries
            tries += 1
            if tries > 1:
                # A failed try may have created the run before its answer was lost: find it first.
                found = _canonical_by_key(_search(
                    self.client, experiment_id,
                    f"tags.`{TAG_RUN_TYPE}` = 'trial' and tags.`{TAG_TRIAL_KEY}` = {_quoted(cell.key)}"))
                if cell.key in found:
                    return found[cell.key]
            return self.client.create_run(experiment_id, tags=self._trial_tags(cell, parent_run_id),
                                          run_name=_trial_run_name(cell))

        return _retry(create, what="create_run")

    def _sweep_tags(self, parent_run_id: str) -> None:
        """Config hash/path and commit for trial tags: from start_sweep, else the parent run."""
        if self._config_hash is not None:
            return
        tags = _retry(lambda: self.client.get_run(parent_run_id), what="get_run").data.tags
        self._config_hash, self._config_path = tags.get(TAG_CONFIG_HASH), tags.get(TAG_CONFIG_PATH)
        self._git_commit = tags.get(TAG_GIT_COMMIT)

    def _trial_tags(self, cell: CellLike, parent_run_id: str) -> dict[str, str]:
        self._sweep_tags(parent_run_id)
        tags = {TAG_RUN_TYPE: "trial", TAG_TRIAL_KEY: cell.key, TAG_PARENT: parent_run_id}
        tags |= {f"sna.{axis}": _axis_value(getattr(cell, axis)) for axis in AXES}
        # Resolved extras that the plan's Cell carries (stem, detector, grid), when present.
        tags |= {f"sna.{name}": _axis_value(getattr(cell, name)) for name in _EXTRA_CELL_TAGS if hasattr(cell, name)}
        if self._config_hash:
            tags[TAG_CONFIG_HASH] = self._config_hash
        if self._config_path:
            tags[TAG_CONFIG_PATH] = self._config_path
        if self._git_commit:
            tags |= {TAG_GIT_COMMIT: self._git_commit, "mlflow.source.git.commit": self._git_commit}
        return tags

    def _reuse(self, run: Run, cell: CellLike, parent_run_id: str) -> str:
        run_id, status, tags = run.info.run_id, run.info.status, run.data.tags
        if tags.get(TAG_INITIALISED) != "1":
            # New, or created by a driver that died half-way: params are idempotent (same values).
            _log_json(self.client, run_id, RESOLVED_CONFIG_ARTIFACT, dict(cell.config))
            params = [Param(k, v) for k, v in flatten_config(cell.config).items()]
            _log_batch(self.client, run_id, params=params, tags=[RunTag(TAG_INITIALISED, "1")])
        if status == "FINISHED":
            return run_id
        if tags.get(TAG_PARENT) != parent_run_id:
            # This sweep is the one that (re)runs it.
            _log_batch(self.client, run_id, tags=[RunTag(TAG_PARENT, parent_run_id)])
        if status != "SCHEDULED":
            # set_terminated is MLflow's one-statement status update (update_run reads the run
            # first, ~10x slower); SCHEDULED runs keep end_time = start_time, a zero duration.
            end_time = run.info.end_time or run.info.start_time
            _retry(lambda: self.client.set_terminated(run_id, status="SCHEDULED", end_time=end_time),
                   what="set_terminated")
        return run_id


def _check_terminal(status: str) -> None:
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"run status {status!r} is not a final status; expected one of {list(TERMINAL_STATUSES)}")


# ---------------------------------------------------------------------------------------------
# Worker side


class TrialLogger:
    """The rank-0 Train worker's writer for one trial run (explicit run id; safe in Ray workers).

    ``log_epoch`` also keeps ``best_<train.metric>`` up to date (by ``train.mode``) when the
    epoch's metrics contain the key named by the run's ``train.metric`` param, so ``status``
    can show the best value while the trial runs. Picklable: it reconnects where unpickled.
    """

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        if not run_id:
            raise ValueError(f"run_id must be a non-empty MLflow run id, got {run_id!r}")
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.client = MlflowClient(tracking_uri)
        self._best_rule: tuple[str, str] | None = None  # (metric, mode), read on first use
        self._best: float | None = None
        self._rule_loaded = False
        self._last_epoch: int | None = None

    def __reduce__(self) -> tuple[type[TrialLogger], tuple[str, str]]:
        return (TrialLogger, (self.tracking_uri, self.run_id))

    def mark_running(self) -> None:
        """RUNNING, with the host and process that run it; clears an earlier failure reason."""
        _retry(lambda: self.client.update_run(self.run_id, status="RUNNING"), what="update_run")
        _log_batch(self.client, self.run_id,
                   tags=[RunTag("sna.host", socket.gethostname()), RunTag("sna.pid", str(os.getpid())),
                         RunTag(TAG_STARTED_MS, str(_now_ms()))])
        try:
            _retry(lambda: self.client.delete_tag(self.run_id, TAG_FAILURE_REASON), what="delete_tag")
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def log_epoch(self, metrics: Mapping[str, Any], epoch: int) -> None:
        """One ``log_batch`` of the epoch's metrics at ``step=epoch`` (plus ``epoch`` and the best)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        values = _flatten_metrics(metrics)
        values[EPOCH_METRIC] = float(epoch)
        self._last_epoch = epoch
        best = self._update_best(values)
        if best is not None:
            values[f"best_{best[0]}"] = best[1]
        timestamp = _now_ms()
        _log_batch(self.client, self.run_id,
                   metrics=[Metric(key, value, timestamp, epoch) for key, value in values.items()])

    def _update_best(self, values: Mapping[str, float]) -> tuple[str, float] | None:
        if not self._rule_loaded:
            run = _retry(lambda: self.client.get_run(self.run_id), what="get_run")
            metric, mode = run.data.params.get("train.metric"), run.data.params.get("train.mode")
            if metric and mode in ("max", "min"):
                self._best_rule = (metric, mode)
                self._best = run.data.metrics.get(f"best_{metric}")
            self._rule_loaded = True
        if self._best_rule is None:
            return None
        metric, mode = self._best_rule
        value = values.get(metric)
        if value is None or math.isnan(value):
            return None if self._best is None else (metric, self._best)
        if self._best is None or (value > self._best if mode == "max" else value < self._best):
            self._best = value
        return metric, self._best

    def log_resume(self, epoch: int) -> None:
        """Record that the trial resumed from a checkpoint at ``epoch``: the metric
        ``resumed_at_epoch`` (value and step = ``epoch``; one point per resume)."""
        _log_batch(self.client, self.run_id, metrics=[Metric(RESUME_METRIC, float(epoch), _now_ms(), epoch)])

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """Summary metrics (best_*, final_*, params, FLOPs, throughput, SNA iterations; nested
        dicts flatten to ``a.b``) and the ``final_metrics.json`` artifact.

        They are logged at the last epoch's step: MLflow shows a metric's value at its highest
        step, so a ``best_<metric>`` given here wins over the one ``log_epoch`` kept."""
        values = _flatten_metrics(metrics)
        if self._last_epoch is None:
            run = _retry(lambda: self.client.get_run(self.run_id), what="get_run")
            last = run.data.metrics.get(EPOCH_METRIC)
            self._last_epoch = 0 if last is None or math.isnan(last) else int(last)
        step, timestamp = self._last_epoch, _now_ms()
        _log_batch(self.client, self.run_id, metrics=[Metric(k, v, timestamp, step) for k, v in values.items()])
        _log_json(self.client, self.run_id, FINAL_METRICS_ARTIFACT, values)

    def log_json_artifact(self, name: str, obj: Any) -> None:
        """``obj`` as the JSON artifact ``name`` (a relative path ending in .json)."""
        _log_json(self.client, self.run_id, name, obj)

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End the run. ``reason`` (FAILED or KILLED only) goes to the ``sna.failure_reason`` tag."""
        _check_terminal(status)
        if reason is not None:
            if status == "FINISHED":
                raise ValueError(f"a failure reason was given for a FINISHED run: {reason[:200]!r}")
            _log_batch(self.client, self.run_id, tags=[RunTag(TAG_FAILURE_REASON, reason[-_MAX_TAG_VALUE:])])
        _retry(lambda: self.client.set_terminated(self.run_id, status=status), what="set_terminated")
