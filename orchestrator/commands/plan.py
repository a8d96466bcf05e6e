"""``sna-orch plan FILE [--json]``: expand and validate an experiment grid without starting Ray.

Prints every cell of the grid of Fang et al., "Combating spatial redundancy with spectral norm
attention in convolutional learners", Neurocomputing 511 (2022) — key, axes, task and its state
in MLflow (new / running / interrupted / finished / failed; read only when the store already exists) — the
number of cells per axis value and in total, and a compute estimate at a stated throughput.
``--json`` prints a JSON list of cells instead (the summary goes to stderr). Writes nothing but
the FLOPs cache (see :class:`orchestrator.estimate.FlopsCache`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any, TextIO

from orchestrator.errors import UsageError
from orchestrator.estimate import DEFAULT_ASSUME_TFLOPS, Estimate

if TYPE_CHECKING:  # imported when the verb runs (they import torch): `sna-orch --help` stays fast
    from orchestrator.config import ExperimentConfig
    from orchestrator.plan import Cell

# MLflow run status -> the plan's word for the cell.
STATE_OF_STATUS = {"FINISHED": "finished", "RUNNING": "running", "FAILED": "failed", "KILLED": "interrupted", "SCHEDULED": "new"}
STATES = ("new", "running", "interrupted", "finished", "failed", "unknown")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the experiment YAML")
    parser.add_argument("--json", action="store_true", help="print a JSON list of cells (summary to stderr)")
    parser.add_argument("--no-estimate", action="store_true", help="skip FLOP counting (no model is built)")
    parser.add_argument(
        "--assume-tflops", type=float, default=DEFAULT_ASSUME_TFLOPS, metavar="T",
        help=f"effective training throughput per device in TFLOP/s for the hours estimate (default {DEFAULT_ASSUME_TFLOPS:g})",
    )


def store_exists(tracking_uri: str) -> bool:
    """Whether reading the MLflow store cannot create it (a sqlite file must already be there)."""
    if tracking_uri.startswith("sqlite:"):
        path = tracking_uri[len("sqlite:///"):].partition("?")[0] if tracking_uri.startswith("sqlite:///") else ""
        return bool(path) and os.path.isfile(path) and os.path.getsize(path) > 0
    return True  # a server or database: reading creates nothing


def cell_states(experiment: ExperimentConfig, cells: list[Cell], warn: TextIO) -> dict[str, str]:
    """Trial key -> plan state; every cell "new" when the store does not exist yet."""
    states = dict.fromkeys((cell.key for cell in cells), "new")
    if not store_exists(experiment.tracking_uri):
        return states
    try:
        from orchestrator.tracking import trial_states

        known = trial_states(experiment.tracking_uri, experiment.name)
    except Exception as error:  # noqa: BLE001 (an unreachable server must not stop a plan)
        print(f"sna-orch plan: warning: cannot read MLflow at {experiment.tracking_uri}: {type(error).__name__}: {error}", file=warn)
        return dict.fromkeys(states, "unknown")
    for key in states:
        if key in known:
            states[key] = STATE_OF_STATUS.get(known[key].status, "unknown")
    return states


def cell_record(cell: Cell, state: str, flops: Estimate | None) -> dict[str, Any]:
    record: dict[str, Any] = {"key": cell.key, "state": state, **cell.fields()}
    if flops is not None:
        record["train_flops"] = flops.cell_flops.get(cell.key)
    record["config"] = cell.config
    return record


def _format_flops(value: float | None) -> str:
    if value is None:
        return "unknown"
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}FLOP"
    return f"{value:.3g} FLOP"


def _format_hours(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.1f} s"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.1f} h"


def summary_lines(experiment: ExperimentConfig, cells: list[Cell], states: dict[str, str], flops: Estimate | None) -> list[str]:
    from orchestrator.plan import axis_counts

    lines = []
    for axis, counter in axis_counts(cells).items():
        if set(counter) == {None}:
            continue  # e.g. detector in a classification-only grid
        parts = ", ".join(f"{'-' if value is None else value}: {n}" for value, n in counter.items())
        lines.append(f"  {axis:<10} {parts}")
    by_state = Counter(states.values())
    state_text = ", ".join(f"{state} {by_state[state]}" for state in STATES if by_state[state])
    lines.append(f"total: {len(cells)} cells ({state_text})")
    if flops is None:
        lines.append("estimate: skipped (--no-estimate)")
        return lines
    lines.append(
        f"estimate: {_format_flops(flops.total_flops)} of training (forward FLOPs per image × 3 for "
        f"forward+backward × training images per epoch × epochs; evaluation not counted) = "
        f"{_format_hours(flops.hours)} on one device at an assumed {flops.assume_tflops:g} TFLOP/s effective "
        "(--assume-tflops)"
    )
    pending = sum(f or 0.0 for key, f in flops.cell_flops.items() if states.get(key) != "finished")
    if pending != flops.total_flops:
        lines.append(f"  not yet finished: {_format_flops(pending)} = {_format_hours(pending / (flops.assume_tflops * 1e12) / 3600)}")
    if experiment.resources.max_concurrent:
        wall = flops.hours / experiment.resources.max_concurrent
        lines.append(f"  with {experiment.resources.max_concurrent} concurrent trials (resources.max_concurrent): about {_format_hours(wall)} of wall time")
    for signature, forward in flops.forward_flops.items():
        if forward is not None:
            lines.append(f"  {signature.describe():<58} {_format_flops(forward)} / image (forward)")
    if flops.unknown_cells:
        lines.append(f"  {flops.unknown_cells} cells unknown (not in the total):")
        for reason, count in Counter(flops.unknown_reasons.values()).items():
            lines.append(f"    {count} model(s): {reason}")
        for dataset in sorted(flops.images_unknown):
            lines.append(f"    dataset {dataset!r}: its registry entry gives no train_size and train.limit_train_batches is not set")
    return lines


def write_table(out: TextIO, experiment: ExperimentConfig, cells: list[Cell], states: dict[str, str]) -> None:
    header = ("key", "dataset", "task", "backbone", "stem", "attention", "rank_k", "placement", "seed", "detector", "grid", "state")
    rows = [header] + [
        (c.key, c.dataset, c.task, c.backbone, c.stem, c.attention, "-" if c.rank_k is None else str(c.rank_k),
         c.placement, str(c.seed), c.detector or "-", c.grid, states[c.key])
        for c in cells
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    template = "  ".join(f"{{:<{w}}}" for w in widths)
    out.write("\n".join(template.format(*row).rstrip() for row in rows) + "\n")


def write_json(out: TextIO, cells: list[Cell], states: dict[str, str], flops: Estimate | None) -> None:
    """A JSON list, one cell per line. Cells share their config's sub-dicts, so each distinct
    sub-dict is encoded once (100k cells take about a second, not the encoder's ten)."""
    encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
    encoded: dict[int, str] = {}

    def piece(value: dict) -> str:
        text = encoded.get(id(value))
        if text is None:
            text = encoded[id(value)] = encoder.encode(value)
        return text

    out.write("[")
    for index, cell in enumerate(cells):
        record = cell_record(cell, states[cell.key], flops)
        del record["config"]
        config = cell.config
        out.write(
            ("\n" if index == 0 else ",\n") + encoder.encode(record)[:-1]
            + f',"config":{{"seed":{encoder.encode(config["seed"])},"dataset":{piece(config["dataset"])},'
            f'"model":{piece(config["model"])},"train":{piece(config["train"])}}}}}'
        )
    out.write("\n]\n")


def main(args: argparse.Namespace) -> int:
    if not args.assume_tflops > 0:
        raise UsageError(f"--assume-tflops must be > 0, got {args.assume_tflops!r}")
    from orchestrator.config import load_experiment
    from orchestrator.estimate import FlopsCache, count_forward_flops, estimate
    from orchestrator.plan import expand

    experiment = load_experiment(args.file)
    cells = expand(experiment)
    states = cell_states(experiment, cells, sys.stderr)
    flops = None
    if not args.no_estimate:
        print("sna-orch plan: counting FLOPs once per distinct model (--no-estimate skips this)", file=sys.stderr, flush=True)
        cache = FlopsCache()
        flops = estimate(cells, assume_tflops=args.assume_tflops, count=cache.counter(count_forward_flops))
        cache.save()
    if args.json:
        write_json(sys.stdout, cells, states, flops)
        headline = [line for line in summary_lines(experiment, cells, states, flops) if line.startswith(("total:", "estimate:"))]
        print("\n".join(headline), file=sys.stderr)
        return 0
    out = sys.stdout
    out.write(f"experiment: {experiment.name}  ({experiment.path}, sha256 {experiment.file_hash[:12]})\n")
    out.write(f"tracking:   {experiment.tracking_uri}{'' if store_exists(experiment.tracking_uri) else '  (no store yet: every cell is new)'}\n")
    out.write(f"storage:    {experiment.storage_path}\n")
    resources = experiment.resources
    out.write(
        f"resources:  {resources.num_workers} worker(s) × {resources.cpus_per_worker:g} CPU, {resources.gpus_per_worker:g} GPU per trial; "
        f"max concurrent {resources.max_concurrent or 'unlimited'}"
        + (f"; search: {experiment.search.n_trials} Optuna trials per cell over {', '.join(experiment.search.space)}" if experiment.search else "")
        + "\n\n"
    )
    write_table(out, experiment, cells, states)
    out.write("\ncells per axis value:\n")
    out.write("\n".join(summary_lines(experiment, cells, states, flops)) + "\n")
    return 0
