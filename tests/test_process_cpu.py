"""benchmarks.process_cpu: what a process is, and the CPU a block's processes spent."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks.process_cpu import ProcessCpuSampler, process_kind

WORKER = "/venv/bin/python /venv/lib/python3.11/site-packages/ray/_private/workers/default_worker.py --node-ip-address=1"


@pytest.mark.parametrize(("command_lines", "kind"), [
    ([WORKER, "ray::IDLE", "ray::TrainController.run"], "train_controller"),
    ([WORKER, "ray::IDLE", "ray::RayTrainWorker", "ray::RayTrainWorker.run_train_fn"], "train_worker"),
    (["ray::SynchronizationActor"], "train_sync_actor"),
    (["ray::ImplicitFunc.train"], "tune_trial_actor"),
    (["ray::ResultRelay.take"], "result_relay"),
    ([WORKER, "ray::IDLE"], "ray_idle_worker"),
    ([WORKER], "ray_idle_worker"),
    (["ray::SomeUserActor.method"], "ray_other_actor"),
    (["/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=x"], "ray_system"),
    (["/venv/bin/python -u /venv/lib/python3.11/site-packages/ray/_private/log_monitor.py"], "ray_system"),
    (["/venv/bin/python -u agent.py", "ray::DashboardAgent"], "ray_system"),
    (["ray::_AutoscalingCoordinatorActor"], "ray_system"),
    (["/usr/bin/sleep 5"], "other"),
    ([], "other"),
])
def test_process_kind(command_lines: list[str], kind: str) -> None:
    assert process_kind(command_lines) == kind


BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_sampler_counts_the_cpu_a_child_spends_inside_the_block_only() -> None:
    sampler = ProcessCpuSampler(interval_s=0.05)
    if not sampler.available:
        pytest.skip("no /proc on this system: the sampler reads Linux's per-process CPU times")
    # Alive before the block: it burns 1.5 s there, then 0.3 s inside the block. Both children
    # sleep after burning, so the sampler sees their last CPU before they exit.
    before = subprocess.Popen([sys.executable, "-c", BURN.format(seconds=1.5) + "time.sleep(1.0)\n" + BURN.format(seconds=0.3) + "time.sleep(0.3)\n"])
    try:
        deadline = time.monotonic() + 30
        while _cpu_seconds(before.pid) < 1.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        with sampler:
            inside = subprocess.Popen([sys.executable, "-c", BURN.format(seconds=0.8) + "time.sleep(0.3)\n"])
            inside.wait(timeout=30)
            before.wait(timeout=30)
    finally:
        before.kill()
    # inside: 0.8 s + its interpreter's start-up; before: 0.3 s (its 1.5 s from before the block
    # would make it 1.8 s). Other processes on the machine do not enter these figures.
    assert 0.8 <= sampler.spent(inside.pid) < 1.2
    assert 0.28 <= sampler.spent(before.pid) < 0.8
    assert sampler.by_kind()["other"]["cpu_s"] >= sampler.spent(inside.pid) + sampler.spent(before.pid) - 0.01


def test_sampler_counts_its_own_process_apart() -> None:
    with ProcessCpuSampler(interval_s=0.05) as sampler:
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
    if not sampler.available:
        pytest.skip("no /proc on this system")
    assert sampler.by_kind()["this_process"]["cpu_s"] >= 0.25
