"""The static dashboard of a report: one ``index.html`` that opens from disk with no server.

For a sweep reproducing Fang et al., "Combating spatial redundancy with spectral norm attention
in convolutional learners" (Neurocomputing 511, 2022): a summary, the claim checks, every table,
every figure (``<img>`` with paths relative to the page) and every run with a link to its page
in the MLflow UI (``<ui>/#/experiments/<id>/runs/<run id>``). The page template and stylesheet
live in the repository's ``dashboards/`` folder (``templates/index.html``,
``assets/dashboard.css``); the CSS is inlined and there is no JavaScript, so nothing is fetched
from anywhere.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from orchestrator.report.claims import RULES, Claim
from orchestrator.report.context import Skipped, run_url
from orchestrator.report.figures import FigureFile
from orchestrator.report.tables import PaperTable, to_html

__all__ = ["DashboardPage", "dashboards_dir", "render_index", "stylesheet"]

# Where the template and CSS live: <repository>/dashboards (this file is orchestrator/report/dashboard.py).
DASHBOARDS_ENV = "SNA_ORCH_DASHBOARDS"
_RUN_COLUMNS = ("key", "dataset", "backbone", "attention", "rank_k", "placement", "seed", "status", "metric", "best",
                "duration_s")


def dashboards_dir() -> Path:
    """The ``dashboards/`` folder (``$SNA_ORCH_DASHBOARDS`` overrides it)."""
    override = os.environ.get(DASHBOARDS_ENV)
    folder = Path(override) if override else Path(__file__).resolve().parents[2] / "dashboards"
    needed = [folder / "templates" / "index.html", folder / "assets" / "dashboard.css"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"dashboard template files not found: {', '.join(missing)} (they ship in the repository's "
            f"dashboards/ folder; install with `pip install -e .` from a clone or set ${DASHBOARDS_ENV})"
        )
    return folder


def stylesheet() -> str:
    return (dashboards_dir() / "assets" / "dashboard.css").read_text(encoding="utf-8")


@dataclass
class DashboardPage:
    experiment: str
    tracking_uri: str
    ui_url: str | None
    experiment_id: str | None
    config_path: str
    generated_at: str
    at: str
    counts: Mapping[str, int]  # MLflow status (or MISSING) → runs
    n_groups: int
    tables: Sequence[PaperTable] = ()
    table_files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # table id → format → relative path
    figures: Sequence[FigureFile] = ()
    figure_dir: str = "figures"
    claims: Sequence[Claim] = ()
    skipped: Sequence[Skipped] = ()
    runs: Sequence[Mapping[str, Any]] = ()  # rows of the results table
    notes: Sequence[str] = ()


def _summary(page: DashboardPage) -> str:
    ui = (f'<a href="{html.escape(page.ui_url)}">{html.escape(page.ui_url)}</a>' if page.ui_url else "—")
    experiment_link = run_url(page.ui_url, page.experiment_id, "x")
    if experiment_link:
        experiment_link = experiment_link.rsplit("/runs/", 1)[0]
        ui += f' · <a href="{html.escape(experiment_link)}">experiment {html.escape(str(page.experiment_id))}</a>'
    counts = ", ".join(f'<span class="status-{html.escape(k)}">{n} {html.escape(k.lower())}</span>'
                       for k, n in sorted(page.counts.items()))
    facts = [("Experiment", html.escape(page.experiment)), ("Experiment file", html.escape(page.config_path)),
             ("Tracking store", html.escape(page.tracking_uri)), ("MLflow UI", ui),
             ("Runs", counts or "none"), ("Groups (cells without the seed axis)", str(page.n_groups)),
             ("Epoch read", html.escape(page.at)), ("Generated", html.escape(page.generated_at))]
    body = '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
    if page.ui_url and page.tracking_uri.startswith("sqlite"):
        body += ("<p>Run links open the MLflow UI on this store; start it with "
                 "<code>sna-orch dashboard " + html.escape(page.config_path) + "</code>.</p>")
    if page.notes:
        body += '<ul class="notes">' + "".join(f"<li>{html.escape(note)}</li>" for note in page.notes) + "</ul>"
    return body


def _claims(page: DashboardPage) -> str:
    if not page.claims:
        return "<p>No claim of the paper is covered by this grid (see “Not covered”).</p>"
    rows = "".join(
        f'<tr><td><span class="verdict verdict-{html.escape(c.verdict)}">{html.escape(c.verdict)}</span></td>'
        f"<td>{html.escape(c.text)}</td><td>{html.escape(c.source)}</td>"
        f'<td title="{html.escape(RULES.get(c.rule, ""))}">{html.escape(c.rule)}</td>'
        f"<td>{html.escape(c.reason)}</td></tr>" for c in page.claims)
    rules = "".join(f"<li><strong>{html.escape(k)}</strong>: {html.escape(v)}</li>" for k, v in RULES.items())
    return ('<p>Also as <a href="claims.md">claims.md</a> and <a href="claims.json">claims.json</a>.</p>'
            '<div class="table-wrap"><table class="claims"><thead><tr><th>verdict</th><th>claim</th><th>source</th>'
            f"<th>rule</th><th>numbers</th></tr></thead><tbody>{rows}</tbody></table></div>"
            f'<details><summary>Rules</summary><ul class="notes">{rules}</ul></details>')


def _tables(page: DashboardPage) -> str:
    if not page.tables:
        return "<p>No table is covered by this grid.</p>"
    parts = []
    for table in page.tables:
        files = page.table_files.get(table.id, {})
        links = " · ".join(f'<a href="{html.escape(path)}">{html.escape(fmt)}</a>' for fmt, path in files.items())
        parts.append(f'<div class="table-wrap">{to_html(table)}</div>' + (f'<p class="notes">{links}</p>' if links else ""))
    return "\n".join(parts)


def _figures(page: DashboardPage) -> str:
    if not page.figures:
        return "<p>No figure is covered by this grid.</p>"
    parts = []
    for figure in page.figures:
        png = f"{page.figure_dir}/{figure.files['png'].name}"
        svg = f"{page.figure_dir}/{figure.files['svg'].name}" if "svg" in figure.files else None
        parts.append(f'<figure id="{html.escape(figure.id)}"><img src="{html.escape(png)}" alt="{html.escape(figure.title)}">'
                     f"<figcaption><strong>{html.escape(figure.title)}</strong>. {html.escape(figure.caption)}"
                     + (f' <a href="{html.escape(svg)}">SVG</a>' if svg else "") + "</figcaption></figure>")
    return "\n".join(parts)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _runs(page: DashboardPage) -> str:
    if not page.runs:
        return "<p>No runs.</p>"
    head = "".join(f"<th>{name}</th>" for name in _RUN_COLUMNS) + "<th>MLflow</th>"
    rows = []
    for run in page.runs:
        url = run_url(page.ui_url, page.experiment_id, run.get("run_id"))
        link = f'<a href="{html.escape(url)}">run</a>' if url else "—"
        status = html.escape(str(run.get("status")))
        cells = "".join(
            f'<td class="text status-{status}">{_cell(run.get(name))}</td>' if name == "status"
            else f'<td class="text">{_cell(run.get(name))}</td>' for name in _RUN_COLUMNS)
        rows.append(f"<tr>{cells}<td>{link}</td></tr>")
    return (f'<div class="table-wrap"><table class="runs-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
            '<p class="notes">Every row: <a href="results.parquet">results.parquet</a>; per group of seeds: '
            '<a href="aggregate.parquet">aggregate.parquet</a>.</p>')


def _skipped(page: DashboardPage) -> str:
    if not page.skipped:
        return "<p>Everything the report knows how to draw is covered.</p>"
    return "<ul>" + "".join(f"<li>{html.escape(skip.line())}</li>" for skip in page.skipped) + "</ul>"


def render_index(page: DashboardPage) -> str:
    """The dashboard page as HTML (the template from ``dashboards/templates/index.html``)."""
    template = Template((dashboards_dir() / "templates" / "index.html").read_text(encoding="utf-8"))
    return template.substitute(
        title=html.escape(f"sna-orch report: {page.experiment}"),
        style=stylesheet(),
        summary=_summary(page),
        claims=_claims(page),
        tables=_tables(page),
        figures=_figures(page),
        runs=_runs(page),
        skipped=_skipped(page),
        footer=html.escape(f"Generated by sna-orch report at {page.generated_at} from {page.tracking_uri}."),
    )
