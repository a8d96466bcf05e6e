"""One row per trial as a typed pyarrow table, and an atomic parquet writer.

The results of the grid of "Combating spatial redundancy with spectral norm attention in
convolutional learners" (Neurocomputing, 2022), read back from MLflow: one row per trial run
(found by its ``sna.trial_key`` tag) with the matrix axes, the resolved config's params, the
latest value of every metric (summary metrics ``best_*``/``final_*`` and the last epoch's) and
the run status.

Columns, in this order:

- ``key``, ``run_id``, ``status`` (MLflow status, or ``MISSING`` for a planned cell without a
  run), the axes ``dataset, backbone, attention, rank_k, placement, seed, task`` (``rank_k``
  and ``seed`` int64, ``rank_k`` null unless attention is ``sna``);
- ``metric`` (the trial's ``train.metric``), ``best`` (its ``best_<metric>``), ``epoch`` (last
  epoch logged), ``start_time``/``end_time`` (UTC), ``duration_s`` (terminal runs only),
  ``failure_reason``, ``parent_run_id``, and for the runs of Optuna trials ``search_cell`` (the
  plan cell searched for) and ``search_best`` (its best trial);
- ``params.<name>`` for every param, typed back from the JSON the tracker logged (bool, int64,
  float64, else string);
- ``metrics.<name>`` (float64) for every metric.

Anything a run does not have is null, never 0. With ``cells`` (the plan) the rows follow the
plan: per cell its run, or with ``search:`` the runs of its Optuna trials (by trial number), or
one ``MISSING`` row when it has none; runs outside the plan are left out. Without ``cells`` there
is one row per trial run in the experiment.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.tracking import (
    AXES,
    TAG_STARTED_MS,
    TAG_TRIAL_KEY,
    TERMINAL_STATUSES,
    CellLike,
    flatten_config,
    search_cell_of,
    state_of,
    trial_runs,
)

__all__ = ["BASE_SCHEMA", "MISSING", "results_table", "write_parquet"]

MISSING = "MISSING"

BASE_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("run_id", pa.string()),
    ("status", pa.string()),
    ("dataset", pa.string()),
    ("backbone", pa.string()),
    ("attention", pa.string()),
    ("rank_k", pa.int64()),
    ("placement", pa.string()),
    ("seed", pa.int64()),
    ("task", pa.string()),
    ("metric", pa.string()),
    ("best", pa.float64()),
    ("epoch", pa.int64()),
    ("start_time", pa.timestamp("ms", tz="UTC")),
    ("end_time", pa.timestamp("ms", tz="UTC")),
    ("duration_s", pa.float64()),
    ("failure_reason", pa.string()),
    ("parent_run_id", pa.string()),
    ("search_cell", pa.string()),
    ("search_best", pa.bool_()),
])
_INT_AXES = ("rank_k", "seed")


def _axis_from_tag(axis: str, text: str | None) -> Any:
    if text is None or (axis in _INT_AXES and text in ("none", "")):
        return None
    if axis in _INT_AXES:
        try:
            return int(text)
        except ValueError:
            return None
    return text


def _row_for_run(run: Any, cell: CellLike | None) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    state = state_of(run)
    tags = run.data.tags
    row: dict[str, Any] = {"key": state.key, "run_id": state.run_id, "status": state.status}
    for axis in AXES:
        row[axis] = getattr(cell, axis) if cell is not None else _axis_from_tag(axis, tags.get(f"sna.{axis}"))
    started_ms = tags.get(TAG_STARTED_MS)
    begin = (datetime.fromtimestamp(int(started_ms) / 1000, tz=timezone.utc)
             if started_ms and started_ms.isdigit() else state.start_time)
    row |= {
        "metric": state.metric,
        "best": state.best,
        "epoch": state.epoch,
        "start_time": state.start_time,
        "end_time": state.end_time,
        "duration_s": (state.end_time - begin).total_seconds()
        if state.status in TERMINAL_STATUSES and state.end_time and begin else None,
        "failure_reason": state.failure_reason,
        "parent_run_id": state.parent_run_id,
        "search_cell": state.search_cell,
        "search_best": state.search_best,
    }
    return row, dict(run.data.params), dict(run.data.metrics)


def _row_for_missing(cell: CellLike) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    row: dict[str, Any] = {"key": cell.key, "run_id": None, "status": MISSING}
    row |= {axis: getattr(cell, axis) for axis in AXES}
    params = flatten_config(cell.config)
    row["metric"] = params.get("train.metric")
    return row, params, {}


def _trial_number(run: Any) -> tuple[int, str]:
    key = run.data.tags[TAG_TRIAL_KEY]
    suffix = key.rsplit("-", 1)[-1]
    return (int(suffix) if suffix.isdigit() else -1, key)


def _decode(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _param_column(texts: Sequence[str | None]) -> pa.Array:
    """Type a param column back from the tracker's encoding (strings raw, the rest JSON)."""
    values = [_decode(text) for text in texts]
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, bool) for value in present):
        return pa.array(values, type=pa.bool_())
    if present and all(isinstance(value, int) and not isinstance(value, bool) for value in present):
        return pa.array(values, type=pa.int64())
    if present and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in present):
        return pa.array([None if value is None else float(value) for value in values], type=pa.float64())
    # Strings, lists, mappings or a mixture: the logged text; a JSON null stays null.
    return pa.array([None if value is None else text for value, text in zip(values, texts, strict=True)],
                    type=pa.string())


def results_table(tracking_uri: str, experiment_name: str,
                  cells: Iterable[CellLike] | None = None) -> pa.Table:
    """The experiment's trials as a typed table (see the module docstring). Creates nothing."""
    runs = trial_runs(tracking_uri, experiment_name)
    rows: list[tuple[dict[str, Any], dict[str, str], dict[str, float]]] = []
    if cells is None:
        ordered = sorted(runs.values(), key=lambda run: (run.info.start_time or 0, run.data.tags[TAG_TRIAL_KEY]))
        rows = [_row_for_run(run, None) for run in ordered]
    else:
        searched: dict[str, list[Any]] = {}
        for run in runs.values():
            cell_key = search_cell_of(run)
            if cell_key is not None:
                searched.setdefault(cell_key, []).append(run)
        seen: set[str] = set()
        for cell in cells:
            if cell.key in seen:
                continue
            seen.add(cell.key)
            own = [runs[cell.key]] if cell.key in runs else []
            trials = sorted(searched.get(cell.key, []), key=_trial_number)
            rows += [_row_for_run(run, cell) for run in own + trials] or [_row_for_missing(cell)]

    columns: dict[str, pa.Array] = {
        field.name: pa.array([row.get(field.name) for row, _, _ in rows], type=field.type)
        for field in BASE_SCHEMA
    }
    param_names = sorted({name for _, params, _ in rows for name in params})
    metric_names = sorted({name for _, _, metrics in rows for name in metrics})
    for name in param_names:
        columns[f"params.{name}"] = _param_column([params.get(name) for _, params, _ in rows])
    for name in metric_names:
        columns[f"metrics.{name}"] = pa.array([metrics.get(name) for _, _, metrics in rows], type=pa.float64())
    table = pa.table(columns)
    return table.replace_schema_metadata({
        "sna.experiment": experiment_name,
        "sna.tracking_uri": tracking_uri,
        "sna.rows": "plan" if cells is not None else "runs",
    })


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` to ``path`` atomically: a temporary file beside it, then ``os.replace``.

    On any error the temporary file is removed and an existing ``path`` is left as it was.
    """
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise IsADirectoryError(f"results path {str(target)!r} is a directory; "
                                "give a file name such as results.parquet")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False)  # noqa: SIM115 - closed by the with below
    try:
        with handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return target

