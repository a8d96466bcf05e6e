"""CPU time by kind of process while a block runs: where a sweep's CPU goes (Linux ``/proc``).

The orchestrator benchmark (:mod:`benchmarks.orchestrator_overhead`) runs on a machine whose
cores are busy the whole sweep, so its wall time is its CPU time ÷ cores: every CPU-second that
is not training is wall time lost. :class:`ProcessCpuSampler` attributes that CPU to the
processes that spent it, grouped by what Ray's process titles say they are (a Train controller,
a Train worker, a Tune trial actor, Ray's own daemons, ...).

Context: Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional
learners", Neurocomputing 511 (2022) — the sweeps measured here train such models.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self

# Ray sets a worker's process title to "ray::<ActorClass>" or "ray::<ActorClass>.<method>" while
# it runs; a prestarted worker that has run nothing reads "ray::IDLE".
_RAY_TITLE = re.compile(r"ray::([A-Za-z_][\w]*)")
ACTOR_KINDS = {
    "TrainController": "train_controller",
    "SynchronizationActor": "train_sync_actor",
    "RayTrainWorker": "train_worker",
    "ImplicitFunc": "tune_trial_actor",
    "ResultRelay": "result_relay",
}
# Ray's own per-node and per-cluster processes (their command lines, not titles).
_SYSTEM_MARKERS = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env",
                   "ray::DashboardAgent", "ray::RuntimeEnvAgent", "_AutoscalingCoordinatorActor")
# Kinds that a sweep starts once per trial (the rest live for the whole sweep).
PER_TRIAL_KINDS = ("train_controller", "train_sync_actor", "train_worker")


def process_kind(command_lines: Iterable[str]) -> str:
    """What a process is, from the command lines (titles) it showed over its life.

    A known Ray actor title decides (a worker that became an actor); then Ray's daemons; then any
    other actor; a worker that never left ``IDLE`` is ``ray_idle_worker``; anything else ``other``.
    """
    lines = [line for line in command_lines if line]
    for line in lines:
        for name in _RAY_TITLE.findall(line):
            if name in ACTOR_KINDS:
                return ACTOR_KINDS[name]
    if any(marker in line for line in lines for marker in _SYSTEM_MARKERS):
        return "ray_system"
    titles = {name for line in lines for name in _RAY_TITLE.findall(line)} - {"IDLE"}
    if titles:
        return "ray_other_actor"
    if any("ray::IDLE" in line or "default_worker.py" in line or "setup_worker.py" in line for line in lines):
        return "ray_idle_worker"
    return "other"


@dataclass
class _Seen:
    command_lines: list[str] = field(default_factory=list)
    cpu_at_start: float = 0.0
    cpu_last: float = 0.0


def _read_process(pid: str, tick: float) -> tuple[float, str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command_line = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    # After "(comm) ": state, ppid, ...; utime and stime are fields 14 and 15 of the whole line.
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / tick, command_line[:200]


class ProcessCpuSampler:
    """Samples every process's CPU time (user + system) every ``interval_s`` while the ``with``
    block runs; :meth:`by_kind` then gives the CPU each kind of process spent in the block.

    A process alive when the block starts counts only what it spends after; one that exits
    between two samples loses at most ``interval_s`` of CPU. ``available`` is False where there
    is no ``/proc`` (then every figure is empty).
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.available = os.path.isdir("/proc") and os.path.exists(f"/proc/{os.getpid()}/stat")
        self._tick = float(os.sysconf("SC_CLK_TCK")) if self.available else 1.0
        self._seen: dict[str, _Seen] = {}
        self._own_pid = str(os.getpid())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, first: bool = False) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            read = _read_process(pid, self._tick)
            if read is None:
                continue
            cpu, command_line = read
            seen = self._seen.get(pid)
            if seen is None:
                seen = self._seen[pid] = _Seen(cpu_at_start=cpu if first else 0.0)
            if command_line and (not seen.command_lines or seen.command_lines[-1] != command_line):
                seen.command_lines.append(command_line)
            seen.cpu_last = max(seen.cpu_last, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> Self:
        if self.available:
            self._sample(first=True)
            self._thread = threading.Thread(target=self._run, name="process-cpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()

    def spent(self, pid: int) -> float:
        """CPU-seconds process ``pid`` spent in the block (0.0 if it was never seen)."""
        seen = self._seen.get(str(pid))
        return 0.0 if seen is None else max(0.0, seen.cpu_last - seen.cpu_at_start)

    def by_kind(self) -> dict[str, dict[str, float]]:
        """``{kind: {"cpu_s": CPU-seconds in the block, "processes": how many}}``, largest first;
        processes that spent nothing are left out. ``this_process`` is the sampling process (for
        the benchmark: the sweep's driver, Tune's event loop, and this sampler)."""
        totals: dict[str, list[float]] = {}
        for pid, seen in self._seen.items():
            spent = self.spent(int(pid))
            if spent <= 0:
                continue
            kind = "this_process" if pid == self._own_pid else process_kind(seen.command_lines)
            entry = totals.setdefault(kind, [0.0, 0])
            entry[0] += spent
            entry[1] += 1
        ordered = sorted(totals.items(), key=lambda item: -item[1][0])
        return {kind: {"cpu_s": round(cpu, 2), "processes": int(count)} for kind, (cpu, count) in ordered}
