"""The ``sna-orch`` command line: ``plan``, ``run``, ``status``, ``results``, ``report``, ``dashboard``,
``analyze-redundancy``.

Each verb lives in ``orchestrator/commands/<verb>.py`` with ``add_arguments(parser)`` and
``main(args) -> int``. Configuration and usage errors print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from orchestrator import __version__
from orchestrator.errors import ConfigError, UsageError

VERBS = {
    "plan": "Expand and validate an experiment grid; no Ray is started.",
    "run": "Run every cell without a finished MLflow run as a Ray Tune trial.",
    "status": "Per-cell state of a sweep, read from MLflow.",
    "results": "Write one row per trial to a parquet file.",
    "report": "Paper-style tables, figures, claim checks and a static dashboard from MLflow.",
    "dashboard": "Serve the MLflow UI on 127.0.0.1 and point at the report's dashboard.",
    "analyze-redundancy": "Spatial redundancy of images and of feature maps at SNA sites (paper Fig. 1).",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sna-orch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sna-orch {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb, help_text in VERBS.items():
        module = importlib.import_module(f"orchestrator.commands.{verb.replace('-', '_')}")
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except (ConfigError, UsageError) as error:
        print(f"sna-orch {args.verb}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"sna-orch {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
