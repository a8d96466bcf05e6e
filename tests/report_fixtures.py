"""Helpers of the report tests (test_report, test_dashboard, test_report_detection): small
experiment files of the report's grids and their MLflow runs written with known values through
orchestrator.tracking's own API (SweepTracker / TrialLogger: what the runner and the Train
workers call), and reading a rendered paper table back by row and column."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sweep_helpers import write_experiment

from orchestrator.config import ExperimentConfig, load_experiment
from orchestrator.plan import Cell, expand
from orchestrator.tracking import SweepTracker, TrialLogger


def write_report_experiment(directory: Path, name: str, matrix: Mapping[str, Any], train: Mapping[str, Any],
                            **overrides: object) -> Path:
    """``directory/<name>.yaml``: ``matrix`` on the tiny redundant_shapes of sweep_helpers, a sqlite
    store and storage in ``directory``; ``overrides`` replace top-level keys (e.g. ``tracking``)."""
    return write_experiment(directory, name, matrix=dict(matrix), train=dict(train), **overrides)


def open_trial_runs(path: Path, ran: Callable[[Cell], bool] = lambda cell: True,
                    ) -> tuple[ExperimentConfig, list[Cell], dict[str, str]]:
    """The experiment, its planned cells and run ids (key → id) of the cells that ``ran``, created
    under one sweep parent run as ``sna-orch run`` creates them."""
    experiment = load_experiment(path, environ={})
    cells = expand(experiment)
    tracker = SweepTracker(experiment.tracking_uri, experiment.name)
    parent = tracker.start_sweep(str(path), experiment.file_hash, None, len(cells))
    return experiment, cells, tracker.trial_runs([cell for cell in cells if ran(cell)], parent)


def log_trial(tracking_uri: str, run_id: str, epochs: Sequence[Mapping[str, float]],
              summary: Mapping[str, float] | None = None, *, status: str = "FINISHED",
              reason: str | None = None) -> None:
    """One trial as its rank-0 worker logs it: running, one metrics dict per epoch (step = epoch),
    the summary, then the final status."""
    logger = TrialLogger(tracking_uri, run_id)
    logger.mark_running()
    for epoch, metrics in enumerate(epochs):
        logger.log_epoch(dict(metrics), epoch)
    if summary is not None:
        logger.log_summary(dict(summary))
    logger.finish(status, reason=reason)


def column(table: Any, row_label: str) -> dict[str, Any]:
    """The cells of one row of a PaperTable, by column label (columns must be unique)."""
    cells = dict(table.rows)[row_label]
    return dict(zip(table.columns, cells, strict=True))
