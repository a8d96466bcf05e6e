"""``sna-orch report FILE [--out DIR]``: paper-style tables, figures, claim checks and a dashboard.

Regenerates Tables 1–4 and Figs. 4–5 of "Combating spatial redundancy with spectral norm attention
in convolutional learners" (Neurocomputing 2022) from the experiment's MLflow runs, aggregated
over seeds (mean ± std, n), checks the paper's claims the grid covers, and writes a static
``index.html``. Default folder: ``<storage>/report`` (``storage:`` defaults to ``sna_results/``
beside the YAML). MLflow is only read; every file is written atomically.
"""

from __future__ import annotations

import argparse

from orchestrator.report.quantities import AT_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the experiment YAML file")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="report folder (default: <storage>/report, i.e. sna_results/report beside the YAML)")
    parser.add_argument("--at", choices=AT_CHOICES, default="final",
                        help="epoch to read: the last ('final', default) or the best of the selection metric ('best')")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the claim checks (0.05)")
    parser.add_argument("--ui-url", metavar="URL", default=None,
                        help="MLflow UI the run links point at (default: the tracking server, or "
                             "http://127.0.0.1:5000 where `sna-orch dashboard` serves a sqlite store)")
    parser.add_argument("--no-paper-flops", action="store_true",
                        help="skip rebuilding each model to count FLOPs in the paper's units (torchstat at 244²)")


def main(args: argparse.Namespace) -> int:
    from orchestrator.config import load_experiment
    from orchestrator.report.build import build_report

    experiment = load_experiment(args.file)
    report = build_report(experiment, args.out, at=args.at, alpha=args.alpha, ui_url=args.ui_url,
                          paper_flops=not args.no_paper_flops)
    print(f"report: {report.directory} ({len(report.tables)} tables, {len(report.figures)} figures, "
          f"{len(report.claims)} claims; open {report.index})")
    return 0
