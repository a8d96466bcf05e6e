"""FLOPs in the paper's units for the report's models (torchstat's count at 3×244×244).

Fang et al., "Combating spatial redundancy with spectral norm attention in convolutional learners"
(Neurocomputing 511, 2022) print "FLOPs" as torchstat's Total Flops of a 3×244×244 input (a typo
for 224) in G; the trials log FLOPs in correct units at the trained input size instead. This
module rebuilds each distinct classification model of the grid once (from a cell's resolved
config, untrained: the count depends only on the architecture) and counts it with
:func:`sna_core.profiling.paper_flops` — on PyTorch's meta device where the model allows (shapes
only: instant, no memory), else on the CPU (SNA's iteration stops on a data-dependent test). Detection models are not counted (the paper's Tables 3–4
print no FLOPs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from orchestrator.report.aggregate import Group

__all__ = ["COUNTED_TASKS", "paper_flops_of_groups"]

COUNTED_TASKS = ("classification", "multilabel")


def _architecture(config: dict) -> str:
    """What determines the count: the model section, classes and input channels (not the seed)."""
    dataset = config["dataset"]
    return json.dumps({"model": config["model"], "num_classes": dataset["num_classes"],
                       "in_channels": dataset.get("kwargs", {}).get("in_channels")}, sort_keys=True, default=str)


def paper_flops_of_groups(groups: Sequence[Group], log: Callable[[str], None] = print) -> tuple[dict[str, float], list[str]]:
    """group id → the paper's "FLOPs" in G, and one line per model that could not be counted."""
    from sna_core.profiling import paper_flops
    from sna_core.tasks import build_task

    by_architecture: dict[str, list[Group]] = {}
    for group in groups:
        if group.axes["task"] in COUNTED_TASKS and group.config is not None:
            by_architecture.setdefault(_architecture(dict(group.config)), []).append(group)
    values: dict[str, float] = {}
    problems: list[str] = []
    if by_architecture:
        log(f"[report] counting paper-unit FLOPs (torchstat at 3×244×244) of {len(by_architecture)} models")
    for members in by_architecture.values():
        config = members[0].config
        try:
            task = build_task(json.loads(json.dumps(config)))  # a private copy: cell configs share sub-dicts
            try:
                # Shapes are all torchstat needs: on the meta device nothing is computed or allocated
                # (a non-local block on a 244×244 CIFAR-stem map would need a 59,536² matrix).
                value = paper_flops(task.build_model().to("meta"), task.in_channels)
            except Exception:  # noqa: BLE001 - data-dependent control flow (SNA's power iteration stops on convergence)
                value = paper_flops(task.build_model(), task.in_channels)
        except Exception as error:  # noqa: BLE001 - one model that cannot be built leaves a "—", not a crash
            problems.append(f"paper-unit FLOPs not counted for {members[0].method(with_rank=True)} "
                            f"{members[0].axes['backbone']}: {type(error).__name__}: {error}")
            continue
        for group in members:
            values[group.id] = value
    return values, problems
