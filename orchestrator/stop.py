"""Graceful stop of a sweep: SIGINT / SIGTERM → no new trials, running trials stop after their next
epoch checkpoint, and ``sna-orch run`` resumes the rest later.

The driver and the Train workers of a sweep (reproducing Fang et al., "Combating spatial
redundancy with spectral norm attention in convolutional learners", Neurocomputing 2022) share
one channel: a file, ``<storage>/STOP``, beside the Train checkpoints, which every node can read
already (Ray needs the storage shared for checkpoints; a URI such as ``s3://`` works through
pyarrow's filesystems, as for the checkpoints). The driver writes it on the first signal;
rank 0 of each trial reads it after each epoch's checkpoint and the ranks agree on it in one
all-reduce, so no rank enters an epoch that the others skip. A second signal stops at once: the
trials lose the epoch they are in, and resume from their last checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_FILE = "STOP"
_TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"
# Exit codes of a run stopped by a signal: 128 + the signal number, as shells report it.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def stop_file(storage_path: str) -> str:
    return storage_path.rstrip("/") + "/" + STOP_FILE


def _filesystem(storage_path: str):
    """pyarrow's filesystem for the storage (a local/shared path or a URI such as s3://), as
    Ray Train reads it for checkpoints."""
    import pyarrow.fs

    if "://" not in storage_path:
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(storage_path)
    return pyarrow.fs.FileSystem.from_uri(storage_path)


def stop_requested(storage_path: str) -> bool:
    """Whether the driver asked this sweep's trials to stop (read by the Train workers)."""
    import pyarrow.fs

    filesystem, root = _filesystem(storage_path)
    return filesystem.get_file_info(stop_file(root)).type != pyarrow.fs.FileType.NotFound


class StopRequest:
    """The driver's side: counts signals, writes and removes the stop file.

    ``requested`` turns true on the first SIGINT/SIGTERM; the second raises
    :class:`KeyboardInterrupt` in the main thread (stop now).
    """

    def __init__(self, storage_path: str, *, announce=print) -> None:
        self.storage_path = storage_path
        self.signal: signal.Signals | None = None
        self.count = 0
        self._announce = announce
        self._event = threading.Event()

    def __getstate__(self) -> dict:
        # Tune pickles searchers (which hold this) to save its state: keep the data, not the
        # stream or the event.
        return {"storage_path": self.storage_path, "signal": self.signal, "count": self.count}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["storage_path"])
        self.signal, self.count = state["signal"], state["count"]
        if self.signal is not None:
            self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    @property
    def exit_code(self) -> int | None:
        return None if self.signal is None else EXIT_CODES.get(self.signal, 128 + int(self.signal))

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask running trials to stop after their next checkpoint (also what a signal does)."""
        self.count += 1
        if self.signal is None:
            self.signal = signal.Signals(signum)
        if self.count == 1:
            filesystem, root = _filesystem(self.storage_path)
            filesystem.create_dir(root, recursive=True)
            with filesystem.open_output_stream(stop_file(root)) as handle:
                handle.write(f"{self.signal.name} pid {os.getpid()}\n".encode())
            self._event.set()
            self._announce(f"sna-orch run: {self.signal.name}: starting no new trials; running trials stop after "
                           "their current epoch's checkpoint (send it again to stop now)")
            return
        self._announce(f"sna-orch run: {signal.Signals(signum).name} again: stopping now; interrupted trials "
                       "resume from their last checkpoint")
        raise KeyboardInterrupt

    def clear(self) -> None:
        filesystem, root = _filesystem(self.storage_path)
        try:
            filesystem.delete_file(stop_file(root))
        except (FileNotFoundError, OSError):
            pass  # not there

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.request(signum)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle SIGINT and SIGTERM while the block runs (main thread only; elsewhere, e.g. a
        test running a sweep in a thread, signals keep their handlers and :meth:`request` still
        works). Removes a stale stop file first and the stop file after."""
        self.clear()
        previous = {}
        tune_handler = os.environ.get(_TUNE_SIGINT_ENV)
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                previous[signum] = signal.signal(signum, self._handle)
            os.environ[_TUNE_SIGINT_ENV] = "1"  # Tune would replace our SIGINT handler in fit()
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if previous:
                if tune_handler is None:
                    os.environ.pop(_TUNE_SIGINT_ENV, None)
                else:
                    os.environ[_TUNE_SIGINT_ENV] = tune_handler
            self.clear()
