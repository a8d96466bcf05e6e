"""``build_report``: an experiment's MLflow runs → results, aggregate, tables, figures, claims, dashboard.

The report of a sweep reproducing Fang et al., "Combating spatial redundancy with spectral norm
attention in convolutional learners" (Neurocomputing 511, 2022). Layout of the report folder::

    results.parquet      one row per run (orchestrator.results columns + group columns)
    aggregate.parquet    one row per group of seeds: <metric>.mean / .std (ddof = 1) / .n
    tables/<id>.md|.tex|.html
    figures/<id>.png|.svg
    claims.md, claims.json
    index.html           the static dashboard (opens from disk)
    report.json          what was written, skipped and from where

MLflow is only read. Every file is written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.report.aggregate import (
    Group,
    aggregate_table,
    annotate_results,
    build_groups,
)
from orchestrator.report.claims import (
    ALPHA,
    Claim,
    claims_json,
    claims_markdown,
    paper_claims,
)
from orchestrator.report.context import ReportContext, Skipped
from orchestrator.report.dashboard import DashboardPage, render_index
from orchestrator.report.figures import FigureFile, all_figures
from orchestrator.report.output import atomic_write_text
from orchestrator.report.quantities import AT_CHOICES
from orchestrator.report.tables import (
    PaperTable,
    all_tables,
    html_document,
    to_html,
    to_latex,
    to_markdown,
)

__all__ = ["DEFAULT_UI_PORT", "Report", "build_report", "default_report_dir", "default_ui_url", "experiment_id_of"]

DEFAULT_UI_PORT = 5000
REPORT_DIR_NAME = "report"
TABLE_FORMATS = {"md": to_markdown, "tex": to_latex}


@dataclass
class Report:
    directory: Path
    index: Path
    n_runs: int
    groups: list[Group]
    tables: list[PaperTable] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    ui_url: str | None = None


def default_report_dir(experiment: Any) -> Path:
    """``<storage>/report`` for a local ``storage:`` (default ``<yaml dir>/sna_results/report``);
    ``<yaml dir>/sna_report/<experiment name>`` when storage is remote (``s3://…``)."""
    if "://" in experiment.storage_path:
        return Path(experiment.base_dir) / "sna_report" / experiment.name
    return Path(experiment.storage_path) / REPORT_DIR_NAME


def default_ui_url(tracking_uri: str, port: int = DEFAULT_UI_PORT) -> str:
    """The MLflow UI for a store: an http(s) tracking server is its own UI; otherwise the one
    ``sna-orch dashboard`` starts on 127.0.0.1."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{port}"


def experiment_id_of(tracking_uri: str, name: str) -> str:
    """The MLflow experiment's id; UsageError naming the experiment and store when it is absent.
    Reads only: a missing sqlite file is not created."""
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import sqlite_path

    path = sqlite_path(tracking_uri)
    if tracking_uri.startswith("sqlite") and (path is None or not path.is_file() or path.stat().st_size == 0):
        raise UsageError(f"no MLflow store at {tracking_uri} (experiment {name!r} has never run: "
                         "`sna-orch run FILE` first)")
    experiment = MlflowClient(tracking_uri).get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        raise UsageError(f"unknown MLflow experiment {name!r} in {tracking_uri} (`sna-orch run FILE` creates it)")
    return experiment.experiment_id


def _write_tables(tables: list[PaperTable], directory: Path, style: str, log: Callable[[str], None]) -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = {}
    for table in tables:
        written = {}
        for fmt, render in TABLE_FORMATS.items():
            written[fmt] = atomic_write_text(directory / f"{table.id}.{fmt}", render(table))
        written["html"] = atomic_write_text(directory / f"{table.id}.html",
                                            html_document(table.title, to_html(table), style))
        files[table.id] = {fmt: f"tables/{path.name}" for fmt, path in written.items()}
        log(f"[report] table  {table.title} → tables/{table.id}.{{md,tex,html}}")
    return files


def build_report(experiment: Any, out_dir: str | Path | None = None, *, at: str = "final", alpha: float = ALPHA,
                 ui_url: str | None = None, paper_flops: bool = True,
                 log: Callable[[str], None] = print) -> Report:
    """Build the report of ``experiment`` (an :class:`orchestrator.config.ExperimentConfig`).

    UsageError when the store or experiment does not exist or has no trial runs, or ``at`` is
    not one of :data:`AT_CHOICES`.
    """
    from orchestrator.plan import expand
    from orchestrator.results import results_table as read_results
    from orchestrator.results import write_parquet
    from orchestrator.tracking import trial_runs

    if at not in AT_CHOICES:
        raise UsageError(f"--at must be one of {', '.join(AT_CHOICES)}, got {at!r}")
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")
    directory = Path(out_dir) if out_dir is not None else default_report_dir(experiment)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"report folder {str(directory)!r} is a file; give a folder with --out")
    tracking_uri, name = experiment.tracking_uri, experiment.name
    log(f"[report] reading the runs of experiment {name!r} from {tracking_uri}")
    experiment_id = experiment_id_of(tracking_uri, name)
    if not trial_runs(tracking_uri, name):
        raise UsageError(f"MLflow experiment {name!r} in {tracking_uri} has no trial runs (`sna-orch run FILE` first)")
    cells = expand(experiment)
    table = read_results(tracking_uri, name, cells)
    groups = build_groups(table, cells)
    counts = Counter(table.column("status").to_pylist())
    log(f"[report] {table.num_rows} runs in {len(groups)} groups ("
        + ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items())) + ")")

    directory.mkdir(parents=True, exist_ok=True)
    results = annotate_results(table, groups)
    write_parquet(results, directory / "results.parquet")
    write_parquet(aggregate_table(groups), directory / "aggregate.parquet")
    log(f"[report] wrote results.parquet ({results.num_rows} rows) and aggregate.parquet ({len(groups)} rows)")

    notes: list[str] = []
    flops: dict[str, float] = {}
    if paper_flops:
        flops, problems = paper_flops_for(groups, log)
        notes += problems
    else:
        notes.append("Paper-unit FLOPs not computed (--no-paper-flops).")
    ui = ui_url or default_ui_url(tracking_uri)
    context = ReportContext(at=at, ui_url=ui, experiment_id=experiment_id, paper_flops=flops)

    from orchestrator.report.dashboard import stylesheet

    style = stylesheet()
    tables, skipped = all_tables(groups, context)
    table_files = _write_tables(tables, directory / "tables", style, log)
    log("[report] drawing figures")
    figures, figure_skips = all_figures(groups, context, directory / "figures")
    skipped += figure_skips
    for figure in figures:
        log(f"[report] figure {figure.title} → figures/{figure.id}.{{png,svg}}")
    claims, claim_skips = paper_claims(groups, context, alpha)
    skipped += claim_skips
    atomic_write_text(directory / "claims.md", claims_markdown(claims, claim_skips, alpha))
    atomic_write_text(directory / "claims.json", claims_json(claims, claim_skips, alpha))
    verdicts = Counter(claim.verdict for claim in claims)
    log(f"[report] {len(claims)} claims checked ("
        + ", ".join(f"{n} {verdict}" for verdict, n in sorted(verdicts.items())) + ") → claims.md, claims.json")
    for skip in skipped:
        log(f"[report] {skip.line()}")

    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    runs = [{key: row.get(key) for key in ("key", "run_id", "dataset", "backbone", "attention", "rank_k", "placement",
                                           "seed", "status", "metric", "best", "duration_s")}
            for row in results.select([c for c in results.column_names if not c.startswith(("params.", "metrics."))])
            .to_pylist()]
    page = DashboardPage(experiment=name, tracking_uri=tracking_uri, ui_url=ui, experiment_id=experiment_id,
                         config_path=str(experiment.path), generated_at=generated, at=at, counts=dict(counts),
                         n_groups=len(groups), tables=tables, table_files=table_files, figures=figures,
                         claims=claims, skipped=skipped, runs=runs, notes=notes)
    index = atomic_write_text(directory / "index.html", render_index(page))
    manifest = {
        "experiment": name, "experiment_id": experiment_id, "tracking_uri": tracking_uri, "ui_url": ui,
        "config_path": str(experiment.path), "generated_at": generated, "at": at, "alpha": alpha,
        "runs": dict(counts), "groups": len(groups),
        "tables": {table.id: table_files[table.id] for table in tables},
        "figures": {figure.id: {fmt: f"figures/{path.name}" for fmt, path in figure.files.items()} for figure in figures},
        "claims": dict(verdicts), "skipped": [skip.line() for skip in skipped], "notes": notes,
    }
    atomic_write_text(directory / "report.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    log(f"[report] dashboard → {index}")
    return Report(directory=directory, index=index, n_runs=table.num_rows, groups=groups, tables=tables,
                  figures=figures, claims=claims, skipped=skipped, ui_url=ui)


def paper_flops_for(groups: list[Group], log: Callable[[str], None]) -> tuple[dict[str, float], list[str]]:
    from orchestrator.report.complexity import paper_flops_of_groups

    return paper_flops_of_groups(groups, log)
