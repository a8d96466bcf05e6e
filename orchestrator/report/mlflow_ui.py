"""The MLflow UI process behind ``sna-orch dashboard``: started on 127.0.0.1, stopped with nothing left.

The dashboard of a sweep reproducing Fang et al., "Combating spatial redundancy with spectral norm
attention in convolutional learners" (Neurocomputing 511, 2022) links every cell to its MLflow
run; for a sqlite store those links need a local MLflow UI. ``mlflow server`` starts a uvicorn
master, its workers and (unless disabled) a job runner with huey consumers; SIGINT to the parent
alone lets the consumers outlive it for a while. So the server runs in its own process group (a
new session), with one worker and job execution off, and :meth:`MlflowUI.stop` signals the whole
group (SIGTERM, then SIGKILL after a grace period) and waits until no member is left.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from orchestrator.errors import UsageError

__all__ = ["MlflowUI", "free_port", "port_in_use"]

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _group_members(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (from /proc; Linux)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # After "(comm)": state ppid pgrp ...; a zombie has already exited.
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


class MlflowUI:
    """``mlflow server --backend-store-uri URI --host 127.0.0.1 --port N`` as a managed child."""

    def __init__(self, tracking_uri: str, port: int, *, log_path: str | os.PathLike[str] | None = None,
                 workdir: str | os.PathLike[str] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.port = port
        self.log_path = Path(log_path) if log_path else None
        self.workdir = Path(workdir) if workdir else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.tracking_uri,
                "--host", HOST, "--port", str(self.port), "--workers", "1"]

    def start(self) -> None:
        if port_in_use(self.port):
            raise UsageError(f"port {self.port} on {HOST} is in use; choose another with --port (0: any free port)")
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            self.process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, cwd=self.workdir,
                                            start_new_session=True)
        finally:
            if output is not subprocess.DEVNULL:
                output.close()

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Until ``/health`` answers OK; RuntimeError if the server exits or the time runs out."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the MLflow UI exited with code {self.process.returncode} before answering"
                                   + (f"; its log: {self.log_path}" if self.log_path else ""))
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the MLflow UI did not answer on {self.url}/health within {timeout_s:.0f} s")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        """Every live process of the server's group (the server, its workers, their children)."""
        return [] if self.process is None else _group_members(self.process.pid)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the whole process group, SIGKILL what is left after ``grace_s``; then reap."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the server leads its own group
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if self.process.poll() is not None and not _group_members(pgid):
                    break
                time.sleep(0.2)
            else:
                continue
            break
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
