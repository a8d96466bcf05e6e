"""One actor per sweep that carries Train's per-epoch results to the Tune trials.

Ray's own bridge (``ray.tune.integration.ray_train.TuneReportCallback``) starts a
``ray.util.queue.Queue`` actor for every trial: one more Python process, about 1.5 CPU-seconds of
start-up and polling per trial, on the cores the trials train on. Here the Train controller's
callback puts rank 0's metrics into this sweep's relay, keyed by trial key, and the Tune trial
takes them from there and calls ``ray.tune.report`` itself. Same results, one process per sweep.

Part of sna-orch, the sweep orchestrator for reproducing Fang et al., "Combating spatial
redundancy with spectral norm attention in convolutional learners", Neurocomputing 511 (2022).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

# The relay's actor name inside the sweep's Ray namespace (one sweep per driver job).
RELAY_NAME = "sna-orch-result-relay"
# How long one take() waits for a result before the trial checks on its fit() thread again.
TAKE_WAIT_S = 5.0


class ResultRelay:
    """Per-trial mailboxes of reported metrics (an async actor: many trials wait at once)."""

    def __init__(self) -> None:
        self._items: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self._arrived: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._ended: set[str] = set()  # keys whose fit() returned: take() no longer waits

    async def put(self, key: str, metrics: dict[str, Any]) -> None:
        self._items[key].append(metrics)
        self._arrived[key].set()

    async def take(self, key: str, wait_s: float) -> list[dict[str, Any]]:
        """Every result of ``key`` not yet taken, waiting up to ``wait_s`` for the first."""
        if not self._items[key] and key not in self._ended:
            try:
                await asyncio.wait_for(self._arrived[key].wait(), timeout=wait_s)
            except asyncio.TimeoutError:
                pass
        self._arrived[key].clear()
        items = list(self._items[key])
        self._items[key].clear()
        return items

    async def wake(self, key: str) -> None:
        """End a waiting take() of ``key`` now, and later ones at once (its fit() has returned)."""
        self._ended.add(key)
        self._arrived[key].set()

    async def forget(self, key: str) -> None:
        self._items.pop(key, None)
        self._arrived.pop(key, None)
        self._ended.discard(key)


def start_relay() -> Any:
    """This job's relay, created on first use on the caller's node (the driver's, when the
    runner starts it): a zero-CPU actor could otherwise land on a worker node, and a lost worker
    node must cost only the trials on it, which Train restarts elsewhere."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(num_cpus=0, max_restarts=0)(ResultRelay)
    return actor.options(name=RELAY_NAME, get_if_exists=True, scheduling_strategy=here).remote()


def relay_callback(key: str, relay: Any) -> Any:
    """A Train ``UserCallback`` (it runs in the Train controller) that puts rank 0's reported
    metrics into ``relay`` under ``key``: what ``TuneReportCallback`` does, without its actor."""
    from ray.train import UserCallback

    class RelayCallback(UserCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            import ray

            result = dict(metrics[0])
            if checkpoint is not None:
                result["checkpoint_path"] = checkpoint.path
            ray.get(relay.put.remote(key, result))  # delivered before fit() can return

    return RelayCallback()


def fit_reporting(key: str, relay: Any, fit: Callable[[], Any], report: Callable[[dict[str, Any]], None]) -> Any:
    """Run ``fit`` (a Train fit whose controller puts into ``relay``) in a thread and ``report``
    each of trial ``key``'s results from this thread, in order; return fit's result or raise
    its error once every result it produced has been reported."""
    import ray

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fit()
        except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = error
        finally:
            relay.wake.remote(key)

    thread = threading.Thread(target=run, name=f"fit-{key}", daemon=True)
    thread.start()
    try:
        while True:
            done = not thread.is_alive()  # read before taking: a result put before the end is taken
            for result in ray.get(relay.take.remote(key, 0.0 if done else TAKE_WAIT_S)):
                report(result)
            if done:
                break
    finally:
        relay.forget.remote(key)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
