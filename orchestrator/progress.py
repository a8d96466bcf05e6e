"""Sweep progress a person can follow, and the summary table at the end.

A sweep of the grid of Fang et al., "Combating spatial redundancy with spectral norm attention in
convolutional learners", Neurocomputing 511 (2022) 105-116, runs for hours; Ray's own reporter
prints a wide table of every trial on every result. :class:`SweepProgress` is a Tune callback
that instead prints, at most every ``interval_s`` seconds, one status line (trials done, running,
pending, failed; elapsed time; an ETA) with the current metric of each running trial, plus one
line whenever a trial starts, finishes or fails. :func:`summary_table` renders the end-of-sweep
table (key, axes, status, best metric, epochs, wall time).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from orchestrator.trainable import SPEC_KEY

# Statuses of a trial as the sweep sees it.
PENDING, RUNNING, FINISHED, FAILED = "PENDING", "RUNNING", "FINISHED", "FAILED"
# Stopped by the driver (graceful stop) after a checkpoint, before its last epoch: resumable.
INTERRUPTED = "INTERRUPTED"
# The axes shown in lines and in the summary table, in this order (those a trial lacks are skipped).
SHOWN_AXES = ("dataset", "backbone", "attention", "rank_k", "placement", "seed")


@dataclass
class TrialProgress:
    """What the sweep knows of one trial (filled from Tune events)."""

    key: str
    fields: dict[str, Any]
    metric: str
    mode: str
    epochs: int
    status: str = PENDING
    started: float | None = None  # time.monotonic() at start
    ended: float | None = None
    epochs_done: int = 0
    current: float | None = None  # the metric at the last reported epoch
    best: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    first_result_after_s: float | None = None  # start -> first epoch reported (start-up + 1 epoch)
    error: str | None = None

    @property
    def wall_s(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def describe(self) -> str:
        """``key dataset/backbone/attention-k1/placement/s0`` for one-line messages."""
        return f"{self.key} {describe_axes(self.fields)}"


def describe_axes(fields: dict[str, Any]) -> str:
    parts = []
    for axis in SHOWN_AXES:
        value = fields.get(axis)
        if value is None:
            continue
        if axis == "rank_k":
            parts[-1] += f"-k{value}"
        elif axis == "seed":
            parts.append(f"s{value}")
        else:
            parts.append(str(value))
    return "/".join(parts)


def format_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


class SweepProgress(Callback):
    """Prints the sweep's progress to ``stream``.

    ``expected`` is the number of trials this run will start (the plan's unfinished cells, or
    their search trials); ``concurrency`` how many run at once (for the ETA).
    """

    def __init__(self, expected: int, concurrency: int, *, already_done: int = 0,
                 interval_s: float = 5.0, stream: TextIO | None = None) -> None:
        self.expected = expected
        self.concurrency = max(1, concurrency)
        self.already_done = already_done
        self.interval_s = interval_s
        self._stream = stream
        self.trials: dict[str, TrialProgress] = {}  # Tune trial id -> progress
        self.sweep_started = time.monotonic()
        self._last_print = float("-inf")

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; an open stream does not pickle.
        return {**self.__dict__, "_stream": None}

    # -- Tune events ------------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        progress = self._progress(trial)
        progress.status, progress.started, progress.ended, progress.error = RUNNING, time.monotonic(), None, None
        self._say(f"start  {progress.describe()}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        progress = self._progress(trial)
        if "epoch" not in result:
            return
        progress.epochs_done = int(result["epoch"]) + 1
        progress.epochs = int(result.get("epochs", progress.epochs))
        progress.current = _number(result.get(progress.metric))
        progress.best = _number(result.get(f"best_{progress.metric}", progress.best))
        if "epoch_time_s" in result:
            progress.epoch_seconds.append(float(result["epoch_time_s"]))
        if progress.first_result_after_s is None and progress.started is not None:
            progress.first_result_after_s = time.monotonic() - progress.started
        self._maybe_print()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        progress = self._progress(trial)
        progress.ended = time.monotonic()
        if progress.epochs_done < progress.epochs:
            progress.status = INTERRUPTED
            self._say(f"stopped {progress.describe()} after epoch {progress.epochs_done}/{progress.epochs} "
                      "(checkpointed; `sna-orch run` resumes it)")
            return
        progress.status = FINISHED
        self._say(f"done   {progress.describe()}  best {progress.metric} {_format_value(progress.best)}"
                  f"  in {format_duration(progress.wall_s)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        progress = self._progress(trial)
        progress.status, progress.ended = FAILED, time.monotonic()
        progress.error = trial_error(trial)
        self._say(f"FAILED {progress.describe()}: {progress.error}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._maybe_print()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.print_status()

    # -- state ------------------------------------------------------------------------------------

    def _progress(self, trial: Any) -> TrialProgress:
        progress = self.trials.get(trial.trial_id)
        if progress is None:
            spec = trial.config[SPEC_KEY]
            train = spec["config"]["train"]
            progress = TrialProgress(key=spec["key"], fields=dict(spec.get("fields") or {}),
                                     metric=train["metric"], mode=train.get("mode", "max"),
                                     epochs=int(train["epochs"]))
            self.trials[trial.trial_id] = progress
        return progress

    def counts(self) -> dict[str, int]:
        counts = {FINISHED: 0, RUNNING: 0, FAILED: 0}
        for progress in self.trials.values():
            if progress.status in counts:
                counts[progress.status] += 1
        started = sum(counts.values())
        counts[PENDING] = max(0, self.expected - started)
        return counts

    def eta_s(self) -> float | None:
        """Remaining epochs × the mean epoch time, plus a start-up per pending trial, spread over
        the trials that run at once. None until some epoch has been timed."""
        seconds = [s for p in self.trials.values() for s in p.epoch_seconds]
        if not seconds:
            return None
        epoch_s = sum(seconds) / len(seconds)
        startups = [p.first_result_after_s - p.epoch_seconds[0] for p in self.trials.values()
                    if p.first_result_after_s is not None and p.epoch_seconds]
        startup_s = max(0.0, sum(startups) / len(startups)) if startups else 0.0
        running = [p for p in self.trials.values() if p.status == RUNNING]
        remaining = sum(max(0, p.epochs - p.epochs_done) * epoch_s for p in running)
        typical_epochs = max((p.epochs for p in self.trials.values()), default=1)
        remaining += self.counts()[PENDING] * (typical_epochs * epoch_s + startup_s)
        return remaining / self.concurrency

    # -- output -----------------------------------------------------------------------------------

    def status_line(self) -> str:
        counts = self.counts()
        total = self.expected + self.already_done
        done = counts[FINISHED] + self.already_done
        line = (f"[{format_duration(time.monotonic() - self.sweep_started)}] {done}/{total} done, "
                f"{counts[RUNNING]} running, {counts[PENDING]} pending, {counts[FAILED]} failed; "
                f"ETA {format_duration(self.eta_s())}")
        running = [p for p in self.trials.values() if p.status == RUNNING]
        details = [f"{p.key[:8]} ep {p.epochs_done}/{p.epochs} {p.metric} {_format_value(p.current)}" for p in running]
        return line + (" | " + " | ".join(details) if details else "")

    def print_status(self) -> None:
        self._last_print = time.monotonic()
        self._write(self.status_line())

    def _maybe_print(self) -> None:
        if time.monotonic() - self._last_print >= self.interval_s:
            self.print_status()

    def _say(self, message: str) -> None:
        self._write(f"[{format_duration(time.monotonic() - self.sweep_started)}] {message}")

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def trial_error(trial: Any) -> str:
    """The last line of a failed Tune trial's error file (the worker's exception)."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][:500]
    return "failed (no error file)"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def summary_table(rows: Iterable[dict[str, Any]]) -> str:
    """A plain-text table: key, axes, status, best metric, epochs, wall time (one row per trial).

    Each row: ``key``, ``fields`` (axes), ``status``, ``metric``, ``best``, ``epochs_done``,
    ``epochs``, ``wall_s`` and optionally ``error``.
    """
    rows = list(rows)
    header = ("key", "axes", "status", "best", "epochs", "wall")
    lines = [header]
    for row in rows:
        best = "-" if row.get("best") is None else f"{row['metric']} {row['best']:.4g}"
        epochs = f"{row.get('epochs_done', 0)}/{row.get('epochs', '?')}"
        lines.append((row["key"], describe_axes(row.get("fields") or {}), row["status"], best, epochs,
                      format_duration(row.get("wall_s"))))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ["  ".join(str(value).ljust(width) for value, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    errors = [f"  {row['key']}: {row['error']}" for row in rows if row.get("error")]
    return "\n".join(text + (["failures:"] + errors if errors else []))
