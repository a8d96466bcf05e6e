"""``sna-orch status FILE [--json]``: where each cell of a sweep stands, read from MLflow.

For every cell of the plan (the grid of "Combating spatial redundancy with spectral norm
attention in convolutional learners", Neurocomputing 2022, or any experiment file): its state
(pending, running, interrupted, finished, failed), the epoch reached (or, with ``search:``, the
Optuna trials finished), the epoch of its newest checkpoint in the Ray storage and the best value
of its metric, then the counts. "interrupted": stopped by a signal (KILLED in MLflow), or left
RUNNING by a driver that is gone (read from ``<storage>/driver.json``); ``run`` resumes both.
Reads only: no Ray is started and nothing is written to MLflow.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mlflow is imported only when the verb runs: `sna-orch --help` stays fast
    from orchestrator.tracking import CellLike, TrialState

STATES = ("pending", "running", "interrupted", "finished", "failed")
_STATE_OF_STATUS = {"SCHEDULED": "pending", "RUNNING": "running", "FINISHED": "finished",
                    "FAILED": "failed", "KILLED": "interrupted"}
_COLUMNS = ("key", "dataset", "backbone", "attention", "rank_k", "placement", "seed", "state", "epoch",
            "checkpoint", "best")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the experiment YAML file")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: {experiment, tracking_uri, cells: [...], counts}")


def sweep_status(cells: Iterable[CellLike], tracking_uri: str, experiment_name: str,
                 n_trials: int | None = None, storage_path: str | None = None) -> dict[str, Any]:
    """Each planned cell's state from MLflow (one search), the counts, and runs outside the plan.

    With an Optuna search (``n_trials`` per cell) a cell's state sums up its trials' runs:
    running while one runs, finished when ``n_trials`` have ended and one finished, failed when
    they all ended failing, pending otherwise; ``best`` is the best over its finished trials.
    """
    from orchestrator.driver_lock import read_driver
    from orchestrator.tracking import trial_states
    from orchestrator.trainable import checkpointed_epoch

    states = trial_states(tracking_uri, experiment_name)
    driver = read_driver(storage_path) if storage_path else None
    driver_alive = driver is not None and driver.alive
    searched: dict[str, list[TrialState]] = {}
    for state in states.values():
        if state.search_cell is not None:
            searched.setdefault(state.search_cell, []).append(state)
    rows: list[dict[str, Any]] = []
    planned: set[str] = set()
    for cell in cells:
        if cell.key in planned:
            continue
        planned.add(cell.key)
        trials = searched.get(cell.key)
        if cell.key not in states and trials:
            rows.append(_search_row(cell, trials, n_trials))
            continue
        row = _cell_row(cell, states.get(cell.key))
        # RUNNING with no live driver: the driver was killed (or its host lost) mid-trial.
        if row["state"] == "running" and storage_path and not driver_alive:
            row["state"] = "interrupted"
        row["checkpoint_epoch"] = checkpointed_epoch(storage_path, cell.key) if storage_path else None
        rows.append(row)
    counts = Counter(row["state"] for row in rows)
    outside = {key for key, state in states.items() if key not in planned and state.search_cell not in planned}
    return {
        "experiment": experiment_name,
        "tracking_uri": tracking_uri,
        "storage": storage_path,
        "driver": None if driver is None else {"pid": driver.pid, "host": driver.host, "alive": driver_alive},
        "cells": rows,
        "counts": {state: counts.get(state, 0) for state in STATES} | {"total": len(rows)},
        "runs_outside_plan": len(outside),
    }


def _axes(cell: CellLike) -> dict[str, Any]:
    return {"key": cell.key, "dataset": cell.dataset, "backbone": cell.backbone, "attention": cell.attention,
            "rank_k": cell.rank_k, "placement": cell.placement, "seed": cell.seed, "task": cell.task}


def _cell_row(cell: CellLike, state: TrialState | None) -> dict[str, Any]:
    if state is None:
        return _axes(cell) | {"state": "pending", "status": None, "run_id": None, "epoch": None, "epochs": None,
                              "metric": None, "best": None, "failure_reason": None, "trials": None}
    return _axes(cell) | {
        "state": _STATE_OF_STATUS.get(state.status, state.status.lower()),
        "status": state.status,
        "run_id": state.run_id,
        "epoch": state.epoch,
        "epochs": state.epochs,
        "metric": state.metric,
        "best": state.best,
        "failure_reason": state.failure_reason,
        "trials": None,
    }


def _search_row(cell: CellLike, trials: list[TrialState], n_trials: int | None) -> dict[str, Any]:
    by_status = Counter(trial.status for trial in trials)
    ended = by_status["FINISHED"] + by_status["FAILED"] + by_status["KILLED"]
    target = n_trials if n_trials is not None else len(trials)
    if by_status["RUNNING"]:
        state = "running"
    elif ended >= target and by_status["FINISHED"]:
        state = "finished"
    elif ended >= target:
        state = "failed"
    else:
        state = "pending"
    scored = [trial for trial in trials if trial.status == "FINISHED" and trial.best is not None]
    best = None
    if scored:
        pick = min if scored[0].mode == "min" else max
        best = pick(scored, key=lambda trial: trial.best)
    failures = [trial.failure_reason for trial in trials if trial.failure_reason]
    return _axes(cell) | {
        "state": state,
        "status": None,
        "run_id": None if best is None else best.run_id,
        "epoch": None,
        "epochs": None,
        "metric": trials[0].metric,
        "best": None if best is None else best.best,
        "failure_reason": failures[-1] if state == "failed" and failures else None,
        "checkpoint_epoch": None,
        "trials": {"finished": by_status["FINISHED"], "failed": by_status["FAILED"] + by_status["KILLED"],
                   "running": by_status["RUNNING"], "runs": len(trials), "n_trials": n_trials},
    }


def format_status(report: dict[str, Any]) -> str:
    """A table, one line per cell (columns as wide as their widest value), then the counts."""
    table = [[column.upper() for column in _COLUMNS]]
    for row in report["cells"]:
        if row["trials"] is not None:
            epoch = f"{row['trials']['finished']}/{row['trials']['n_trials'] or row['trials']['runs']} trials"
        elif row["epoch"] is None:
            epoch = "-"
        else:
            epoch = f"{row['epoch']}/{row['epochs']}" if row["epochs"] is not None else str(row["epoch"])
        checkpoint = "-" if row.get("checkpoint_epoch") is None else f"epoch {row['checkpoint_epoch']}"
        best = "-" if row["best"] is None else f"{row['metric']}={row['best']:.4g}"
        if row["state"] in ("failed", "interrupted") and row["failure_reason"]:
            best += "  " + row["failure_reason"].strip().splitlines()[-1][:80]
        table.append([
            row["key"], row["dataset"], row["backbone"], row["attention"],
            "-" if row["rank_k"] is None else str(row["rank_k"]), row["placement"], str(row["seed"]),
            row["state"], epoch, checkpoint, best,
        ])
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS) - 1)]
    lines = ["  ".join([*(value.ljust(width) for value, width in zip(line, widths, strict=False)), line[-1]]).rstrip()
             for line in table]
    counts = report["counts"]
    lines.append("")
    lines.append("  ".join(f"{state} {counts[state]}" for state in STATES) + f"  total {counts['total']}")
    lines.append(f"MLflow: {report['tracking_uri']}  experiment {report['experiment']!r}"
                 + (f"  ({report['runs_outside_plan']} trial runs not in this plan)"
                    if report["runs_outside_plan"] else ""))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from orchestrator.config import load_experiment
    from orchestrator.plan import expand

    experiment = load_experiment(args.file)
    n_trials = experiment.search.n_trials if experiment.search is not None else None
    report = sweep_status(expand(experiment), experiment.tracking_uri, experiment.name, n_trials,
                          storage_path=experiment.storage_path)
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0
