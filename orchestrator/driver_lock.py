"""One driver per sweep: ``<storage>/driver.json`` names the ``sna-orch run`` process driving it.

A second ``run`` of the same sweep on the same host while the first lives is refused (their Tune
experiments and Train runs would share folders). A lock whose process is gone — a SIGKILLed
driver, a closed laptop — is taken over, and so is one written on another host (a preempted head
node is replaced by a new machine; liveness cannot be checked across hosts). ``status`` reads the
lock to tell a trial that is running from one whose driver died (interrupted).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass

from orchestrator.errors import UsageError

LOCK_FILE = "driver.json"


@dataclass(frozen=True)
class DriverInfo:
    pid: int
    host: str
    started: float
    config: str

    @property
    def alive(self) -> bool:
        """True when the process lives on this host; False when gone or on another host."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


def lock_folder(storage_path: str) -> str:
    """Where the lock lives: the storage folder, or for a URI storage (s3://…) a local folder
    named after it (the lock guards this host's drivers; other hosts take it over anyway)."""
    if "://" not in storage_path:
        return storage_path
    digest = hashlib.sha256(storage_path.encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser("~"), ".cache", "sna-orch", "locks", digest)


def lock_path(storage_path: str) -> str:
    return os.path.join(lock_folder(storage_path), LOCK_FILE)


def read_driver(storage_path: str) -> DriverInfo | None:
    """The driver named by the lock, or None (no lock, or an unreadable one)."""
    try:
        with open(lock_path(storage_path), encoding="utf-8") as handle:
            data = json.load(handle)
        return DriverInfo(int(data["pid"]), str(data["host"]), float(data["started"]), str(data.get("config", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class DriverLock:
    """Context manager holding the lock for this process; returns the previous driver, if any."""

    def __init__(self, storage_path: str, config_path: str) -> None:
        self.storage_path = storage_path
        self.config_path = config_path
        self.previous: DriverInfo | None = None

    def __enter__(self) -> DriverLock:  # noqa: PYI034 - not subclassed
        previous = read_driver(self.storage_path)
        if previous is not None and previous.alive and previous.pid != os.getpid():
            raise UsageError(
                f"another sna-orch run (pid {previous.pid}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(previous.started))}, {previous.config}) "
                f"is driving this sweep (lock {lock_path(self.storage_path)}); wait for it, or stop it "
                "(Ctrl-C / kill -TERM) and run again"
            )
        self.previous = previous
        os.makedirs(lock_folder(self.storage_path), exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "config": self.config_path}
        temporary = lock_path(self.storage_path) + f".{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(info, handle)
        os.replace(temporary, lock_path(self.storage_path))
        return self

    def __exit__(self, *exc: object) -> None:
        current = read_driver(self.storage_path)
        if current is not None and current.pid == os.getpid():
            try:
                os.remove(lock_path(self.storage_path))
            except FileNotFoundError:
                pass
