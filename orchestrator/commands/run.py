"""``sna-orch run FILE [--address ADDR] [--max-concurrent N] [--dry-run]``: run a sweep.

Every cell of the grid of Fang et al., "Combating spatial redundancy with spectral norm attention
in convolutional learners", Neurocomputing 511 (2022), that has no FINISHED MLflow run becomes a
Ray Tune trial fitting a Ray Train TorchTrainer (see :mod:`orchestrator.runner`). The file is
loaded and validated, and dataset roots are checked, before Ray starts (errors: exit 2).
``--dry-run`` prints what would run and starts nothing. Cells whose run FAILED before are skipped
unless ``--resume-failed`` (from their last checkpoint) or ``--restart-failed`` (from scratch).
SIGINT / SIGTERM stop gracefully (see :mod:`orchestrator.stop`). Exit code: 0 when everything
finished, 1 when a trial failed or did not run (or a failed cell was skipped), 130 / 143 when
SIGINT / SIGTERM stopped the sweep.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

from orchestrator.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the experiment YAML")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on this machine)")
    parser.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                        help="trials at once (default: resources.max_concurrent, else as many as fit)")
    parser.add_argument("--num-cpus", type=int, default=None, metavar="N",
                        help="CPUs of the local Ray (default: this machine's cores; ignored with --address)")
    failed = parser.add_mutually_exclusive_group()
    failed.add_argument("--resume-failed", action="store_true",
                        help="run cells whose run FAILED before again, from their last checkpoint (default: skip them)")
    failed.add_argument("--restart-failed", action="store_true",
                        help="run cells whose run FAILED before again from scratch (old run and checkpoints kept aside)")
    parser.add_argument("--dry-run", action="store_true", help="print the trials that would run; start nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs (workers, Train, Tune)")


def main(args: argparse.Namespace) -> int:
    from orchestrator.config import load_experiment
    from orchestrator.plan import expand
    from orchestrator.runner import check_dataset_roots, plan_run, run_sweep

    for option in ("max_concurrent", "num_cpus"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise UsageError(f"--{option.replace('_', '-')} must be an integer >= 1, got {value}")
    if not args.verbose:
        _quiet_libraries()
    experiment = load_experiment(args.file)
    cells = expand(experiment)
    check_dataset_roots(experiment, cells)
    failed = "resume" if args.resume_failed else "restart" if args.restart_failed else "skip"
    if args.dry_run:
        print_dry_run(experiment, plan_run(experiment, cells, failed), sys.stdout)
        return 0
    summary = run_sweep(experiment, cells, address=args.address, max_concurrent=args.max_concurrent,
                        num_cpus=args.num_cpus, verbose=args.verbose, failed=failed)
    return summary.exit_code


def _quiet_libraries() -> None:
    """MLflow announces creating and migrating its database, Optuna every study, at INFO; both
    set their loggers' levels when imported, so import them first."""
    import mlflow  # noqa: F401
    import optuna

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def print_dry_run(experiment, plan, stream: TextIO) -> None:
    """One line per cell that would run (with its search trials), then the counts."""
    from orchestrator.progress import describe_axes

    resources = experiment.resources
    for cell in plan.todo:
        trials = plan.search_remaining.get(cell.key)
        extra = f"  ({trials} Optuna trials)" if trials else ""
        print(f"would run  {cell.key}  {describe_axes(cell.fields())}  {cell.task}  "
              f"{cell.config['train']['epochs']} epochs{extra}", file=stream)
    print(f"sna-orch run --dry-run: {experiment.name!r}: {len(plan.cells)} cells, "
          f"{len(plan.cells) - len(plan.todo)} finished, {len(plan.todo)} to run as {plan.n_trials} trials "
          f"({resources.num_workers} Train worker(s) × {resources.cpus_per_worker:g} CPU"
          f"{f' + {resources.gpus_per_worker:g} GPU' if resources.gpus_per_worker else ''} each); "
          f"MLflow {experiment.tracking_uri}; storage {experiment.storage_path}. Nothing was started.",
          file=stream)
