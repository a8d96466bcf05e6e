"""Paper-style reports of a sweep: tables, figures, claim checks and a static dashboard.

Regenerates the comparisons of Fang et al., "Combating spatial redundancy with spectral norm
attention in convolutional learners" (Neurocomputing 511, 2022) — Tables 1–4, Figs. 4–5 — from an
experiment's MLflow runs, with the spread over seeds. One concept per module:

- :mod:`~orchestrator.report.aggregate`: runs → groups of seeds (mean, std ddof = 1, n);
- :mod:`~orchestrator.report.quantities`: which logged metric gives which table row;
- :mod:`~orchestrator.report.context`: run links, paper-unit FLOPs, class names/counts;
- :mod:`~orchestrator.report.complexity`: the paper's torchstat FLOPs of each model;
- :mod:`~orchestrator.report.tables`: Tables 1–4 as Markdown, LaTeX and HTML;
- :mod:`~orchestrator.report.figures`: Figs. 4–5 and accuracy vs throughput (PNG, SVG);
- :mod:`~orchestrator.report.claims`: the paper's claims → supported / contradicted / inconclusive;
- :mod:`~orchestrator.report.dashboard`: the static ``index.html``;
- :mod:`~orchestrator.report.mlflow_ui`: the MLflow UI process ``sna-orch dashboard`` runs;
- :mod:`~orchestrator.report.output`: atomic writes;
- :mod:`~orchestrator.report.build`: the whole report of one experiment.
"""

from orchestrator.report.build import (
    Report,
    build_report,
    default_report_dir,
    default_ui_url,
)

__all__ = ["Report", "build_report", "default_report_dir", "default_ui_url"]
