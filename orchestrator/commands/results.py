"""``sna-orch results FILE [--out results.parquet]``: one row per trial, written to parquet.

Rows are the plan's cells (the grid of "Combating spatial redundancy with spectral norm
attention in convolutional learners", Neurocomputing 2022, or any experiment file); a cell
without an MLflow run has status ``MISSING``. Columns: see :mod:`orchestrator.results`.
The file is written atomically; MLflow is only read.
"""

from __future__ import annotations

import argparse
from collections import Counter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the experiment YAML file")
    parser.add_argument("--out", metavar="PATH", default="results.parquet",
                        help="parquet file to write (default: results.parquet in the current directory)")


def main(args: argparse.Namespace) -> int:
    from orchestrator.config import (
        load_experiment,  # lazily: `sna-orch --help` stays fast
    )
    from orchestrator.plan import expand
    from orchestrator.results import results_table, write_parquet

    experiment = load_experiment(args.file)
    table = results_table(experiment.tracking_uri, experiment.name, expand(experiment))
    path = write_parquet(table, args.out)
    counts = Counter(table.column("status").to_pylist())
    summary = ", ".join(f"{status.lower()} {n}" for status, n in sorted(counts.items()))
    print(f"wrote {table.num_rows} rows × {table.num_columns} columns to {path}" + (f" ({summary})" if summary else ""))
    return 0
