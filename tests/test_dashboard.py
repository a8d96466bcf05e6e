"""The static dashboard in a real browser, and ``sna-orch dashboard`` serving a real MLflow UI.

- headless Debian ``chromium`` opens ``index.html`` as a file (no server): ``--dump-dom`` shows
  the tables and ``<img>`` elements (whose files exist), ``--screenshot`` a page that is not blank;
- ``sna-orch dashboard FILE`` (a subprocess) builds the missing report, starts the MLflow UI on
  127.0.0.1, which answers ``/health`` and serves the sweep's runs over its REST API; a second
  dashboard on an ``http://`` tracking URI (that server) starts nothing and links there; SIGINT
  stops the first one with every process it started gone (checked by PID).

The chromium test skips, with the reason, only when no ``chromium`` binary is installed (CI
installs Debian's ``chromium``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy
import pytest
from PIL import Image
from report_fixtures import log_trial, open_trial_runs, write_report_experiment

from orchestrator.cli import main as cli_main
from orchestrator.config import load_experiment
from orchestrator.report import build_report
from orchestrator.report.mlflow_ui import free_port

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags that work here (../shared/notes/stack.md), plus: resolve no host at all, so the page
# provably needs no network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=5000"]


def write_sweep(directory: Path, name: str = "dashboard-test", tracking_uri: str | None = None) -> Path:
    return write_report_experiment(
        directory, name,
        matrix={"dataset": ["redundant_shapes"], "backbone": ["resnet18"], "stem": ["imagenet"],
                "attention": ["none", "sna"], "seed": [0, 1]},
        train={"epochs": 1, "batch_size": 8, "metric": "top1"},
        tracking={"uri": tracking_uri or f"sqlite:///{directory / 'mlflow.db'}"})


def populate(path: Path) -> dict[str, str]:
    """Four finished runs (SNA ahead of none by 5 points), written through orchestrator.tracking."""
    experiment, cells, run_ids = open_trial_runs(path)
    for cell in cells:
        value = (60.0 if cell.attention == "sna" else 55.0) + cell.seed
        log_trial(experiment.tracking_uri, run_ids[cell.key], [{"top1": value, "top5": value + 30}],
                  {"params": 11_181_642, "flops": 5.0e8, "throughput_img_s": 900.0 + cell.seed,
                   "final_top1": value, "final_top5": value + 30})
    return run_ids


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    directory = tmp_path_factory.mktemp("dashboard")
    path = write_sweep(directory)
    return path, populate(path)


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, str]] = []
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "table":
            self.tables.append(attributes)
        elif tag == "img":
            self.images.append(attributes)
        elif tag in ("script", "link") and (attributes.get("src") or attributes.get("href")):
            self.external.append(f"{tag} {attributes}")


def chromium(*arguments: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="sna-chromium-") as profile:
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
                              capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_static_dashboard_renders_in_headless_chromium(sweep: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    path, run_ids = sweep
    report = build_report(load_experiment(path, environ={}), tmp_path / "report", paper_flops=False, log=lambda line: None)
    url = report.index.resolve().as_uri()

    dumped = chromium("--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = _Elements()
    dom.feed(dumped.stdout)
    paper_tables = [table for table in dom.tables if "paper-table" in table.get("class", "")]
    assert len(paper_tables) == len(report.tables) == 1  # Table 1 layout (none vs SNA)
    assert any("claims" in table.get("class", "") for table in dom.tables)
    assert any("runs-table" in table.get("class", "") for table in dom.tables)
    assert len(dom.images) == len(report.figures) >= 1
    for image in dom.images:
        assert not image["src"].startswith(("http:", "https:", "/")), image
        assert (report.directory / image["src"]).is_file(), image
    assert dom.external == []
    assert "55.50" in dumped.stdout and "60.50" in dumped.stdout  # the means, as rendered by the browser
    for run_id in run_ids.values():
        assert f"/runs/{run_id}" in dumped.stdout

    screenshot = tmp_path / "dashboard.png"
    shot = chromium("--window-size=1400,1800", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        grey = numpy.asarray(image.convert("L"), dtype=float)
    assert grey.shape == (1800, 1400)
    assert grey.std() > 10 and len(numpy.unique(grey)) > 50, "the screenshot is blank"


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    ppid = int(handle.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return lines


def test_dashboard_command_serves_the_store_and_stops_cleanly(
        sweep: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path, run_ids = sweep
    report_dir = path.parent / "results" / "report"
    shutil.rmtree(report_dir, ignore_errors=True)  # the command builds what is missing
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "dashboard", str(path), "--port", str(port),
                                "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=tmp_path)
    started: set[int] = set()
    try:
        lines, output = _lines(process), []
        deadline = time.monotonic() + 300
        while not any(line.startswith("press Ctrl-C") for line in output):
            assert time.monotonic() < deadline and process.poll() is None, "".join(output)
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        text = "".join(output)
        assert f"MLflow UI: http://127.0.0.1:{port}" in text and f"report: {report_dir / 'index.html'}" in text
        assert (report_dir / "index.html").is_file()
        started = _descendants(process.pid)
        assert started, "the MLflow UI runs as a child of the command"

        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/health", timeout=10) as answer:
            assert answer.status == 200 and answer.read().strip() == b"OK"
        with urllib.request.urlopen(base + "/", timeout=30) as answer:
            assert answer.status == 200 and b"<html" in answer.read().lower()
        some_run = next(iter(run_ids.values()))
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/runs/get?run_id={some_run}", timeout=30) as answer:
            assert json.load(answer)["run"]["info"]["run_id"] == some_run
        page = (report_dir / "index.html").read_text(encoding="utf-8")
        assert f"{base}/#/experiments/" in page and f"/runs/{some_run}" in page

        # An http:// tracking URI: the same runs through that server, and no second server.
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        remote = write_sweep(tmp_path, tracking_uri=base)
        before = _descendants(os.getpid())
        assert cli_main(["dashboard", str(remote), "--no-browser", "--out", str(tmp_path / "remote")]) == 0
        out = capsys.readouterr().out
        assert f"MLflow UI: {base} (the tracking server; nothing started)" in out
        assert _descendants(os.getpid()) - before - {process.pid} - started == set()
        remote_page = (tmp_path / "remote" / "index.html").read_text(encoding="utf-8")
        assert all(f"{base}/#/experiments/" in remote_page and f"/runs/{run_id}" in remote_page
                   for run_id in run_ids.values())

        started |= _descendants(process.pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
        deadline = time.monotonic() + 30
        while [pid for pid in started if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [pid for pid in started if _alive(pid)] == [], "processes left behind"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{base}/health", timeout=5)
    finally:
        for pid in [process.pid, *started]:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        process.wait(timeout=30)
