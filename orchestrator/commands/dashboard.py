"""``sna-orch dashboard FILE [--port N] [--no-browser]``: the report's dashboard and the MLflow UI.

For a sweep of "Combating spatial redundancy with spectral norm attention in convolutional
learners" (Neurocomputing 2022) or any experiment file: builds the report if it is missing (or its
run links point at another UI), then, for a sqlite store, starts the MLflow UI on 127.0.0.1 (the
dashboard's per-cell links open there), prints its URL and the report's path, opens the report
in a browser unless ``--no-browser``, and runs until Ctrl-C, when it stops the server and every
process it started. For an ``http(s)://`` tracking URI no server is started: the links point at
that server, and the command prints the paths and returns.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the experiment YAML file")
    parser.add_argument("--port", type=int, default=5000, help="port of the MLflow UI on 127.0.0.1 (default 5000; 0: any free port)")
    parser.add_argument("--no-browser", action="store_true", help="do not open the report in a web browser")
    parser.add_argument("--out", metavar="DIR", default=None, help="report folder (default: <storage>/report)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the report even if it exists")


def _built_for(directory: Path) -> str | None:
    try:
        return json.loads((directory / "report.json").read_text(encoding="utf-8")).get("ui_url")
    except (OSError, ValueError):
        return None


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    from orchestrator.config import load_experiment
    from orchestrator.errors import UsageError
    from orchestrator.report.build import (
        build_report,
        default_report_dir,
        default_ui_url,
    )
    from orchestrator.report.mlflow_ui import MlflowUI, free_port

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    experiment = load_experiment(args.file)
    directory = Path(args.out) if args.out else default_report_dir(experiment)
    remote = experiment.tracking_uri.startswith(("http://", "https://"))
    port = args.port if remote or args.port else free_port()
    ui_url = default_ui_url(experiment.tracking_uri, port)
    index = directory / "index.html"
    if args.rebuild or not index.is_file() or _built_for(directory) != ui_url:
        build_report(experiment, directory, ui_url=ui_url)
    if remote:
        print(f"MLflow UI: {ui_url} (the tracking server; nothing started)")
        print(f"report: {index}")
        _open(index, args.no_browser)
        return 0

    server = MlflowUI(experiment.tracking_uri, port, log_path=directory / "mlflow-ui.log", workdir=directory)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        server.start()
        print(f"starting the MLflow UI on {ui_url} (store {experiment.tracking_uri}) ...", flush=True)
        server.wait_ready()
        print(f"MLflow UI: {ui_url}", flush=True)
        print(f"report: {index}", flush=True)
        print("press Ctrl-C to stop", flush=True)
        _open(index, args.no_browser)
        while server.running():
            time.sleep(0.5)
        print(f"the MLflow UI exited with code {server.process.returncode}; its log: {directory / 'mlflow-ui.log'}")
        return 1
    except KeyboardInterrupt:
        print("stopping the MLflow UI ...", flush=True)
        return 0
    except RuntimeError as error:
        print(f"sna-orch dashboard: error: {error}")
        return 1
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
        if server.process is not None:
            print("MLflow UI stopped", flush=True)


def _open(index: Path, no_browser: bool) -> None:
    if no_browser:
        return
    import webbrowser

    webbrowser.open(index.resolve().as_uri())
