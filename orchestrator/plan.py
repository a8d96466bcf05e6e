"""The plan: an experiment's grid expanded into cells, each one trial with a stable key.

A cell is one training run of the programme of Fang et al., "Combating spatial redundancy with
spectral norm attention in convolutional learners", Neurocomputing 511 (2022) 105-116 (a dataset,
backbone, attention block, SNA rank-k, placement and seed). Its key is the first 16 hex digits of
the sha256 of the canonical JSON of its *resolved trial config* (the schema of
``sna_core.tasks``), so it does not depend on axis order, the file's name or place, or time, and
two cells that resolve to the same config are one trial.

Expansion order per grid: the matrix's product, minus ``exclude`` matches, plus ``include``
cells. An include's unnamed axes take the matrix's values; its cells that an exclude drops only
because of those filled-in values are dropped quietly, but an include whose *own* values an
exclude removes is a contradiction and an error.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator.config import (
    RANKED_ATTENTIONS,
    ExperimentConfig,
    Grid,
    PartialCell,
)

# The per-cell fields `sna-orch plan` prints and `--json` emits (besides key, state and config).
CELL_FIELDS = ("dataset", "backbone", "attention", "rank_k", "placement", "seed", "task", "stem", "detector", "grid")
# Axes counted in the plan's summary.
SUMMARY_AXES = ("dataset", "task", "backbone", "stem", "detector", "attention", "rank_k", "placement", "seed", "grid")


@dataclass(frozen=True, slots=True)
class Cell:
    """One trial. ``config`` is the resolved trial config handed to ``sna_core.tasks.build_task``;
    it shares sub-dicts with other cells, so treat it as read-only (copy before changing)."""

    key: str
    dataset: str  # the experiment's dataset entry name (a registry name unless aliased)
    backbone: str
    attention: str
    rank_k: int | None  # None unless the attention takes a rank (sna)
    placement: str
    seed: int
    task: str
    stem: str  # resolved: "auto" became the dataset's recommended stem
    detector: str | None  # None unless task == "detection"
    grid: str  # the (first) grid that produced it
    config: dict

    def fields(self) -> dict[str, Any]:
        """The cell's axes as a flat dict (for tables, MLflow tags and --json)."""
        return {name: getattr(self, name) for name in CELL_FIELDS}


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value`` that trial keys hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def trial_key(identity_config: dict) -> str:
    """16 hex digits of sha256 over the canonical JSON of a trial's identity config."""
    return hashlib.sha256(canonical_json(identity_config).encode()).hexdigest()[:16]


def identity_config(config: dict, root_as_written: str | None) -> dict:
    """``config`` as hashed: the dataset root as the user wrote it (relative roots are resolved
    against the YAML's folder for the workers, but that folder must not change the key)."""
    return {**config, "dataset": {**config["dataset"], "root": root_as_written}}


# Trial-config model keys and the matrix axes they come from (to point errors at a line).
_MODEL_AXIS = {"backbone": "backbone", "stem": "stem", "attention": "attention", "placement": "placement", "attention_kwargs": "rank_k", "detector": "detector"}


class _Resolver:
    """Resolves the trial config of each distinct (dataset, model, train) once — not once per cell:
    the 100k-cell path — through ``sna_core.tasks.validate_config``, so a cell's config has every
    default filled in exactly as the task layer will read it, and its key hashes all of it."""

    def __init__(self, experiment: ExperimentConfig) -> None:
        from sna_core.data import dataset_info

        self.experiment = experiment
        self.default_stem = {entry: dataset_info(spec["name"]).stem for entry, spec in experiment.datasets.items()}
        self._resolved: dict[tuple, tuple[dict, dict, dict, str, str]] = {}

    def resolve(self, combo: tuple, grid: Grid, patches: tuple[PartialCell, ...]) -> tuple[dict, dict, dict, str, str]:
        """(dataset, model, train, JSON before the seed, JSON after it) for ``combo``; the cell's
        canonical identity JSON is ``before + str(seed) + after``."""
        dataset, detector, backbone, stem, attention, rank_k, placement, _ = combo
        signature = (dataset, detector, backbone, stem, attention, rank_k, placement, grid.name, patches)
        resolved = self._resolved.get(signature)
        if resolved is None:
            resolved = self._resolved[signature] = self._resolve(signature, grid, patches)
        return resolved

    def _train(self, entry: str, grid: Grid, patches: tuple[PartialCell, ...]) -> dict[str, Any]:
        train = dict(self.experiment.train)
        overrides = self.experiment.train_overrides
        registry_name = self.experiment.datasets[entry]["name"]
        if registry_name != entry:  # an alias: its registry name's override first, then its own
            train.update(overrides.get(registry_name, {}))
        train.update(overrides.get(entry, {}))
        train.update(grid.train)
        for patch in patches:
            train.update(patch.train or {})
        return train

    def _resolve(self, signature: tuple, grid: Grid, patches: tuple[PartialCell, ...]) -> tuple[dict, dict, dict, str, str]:
        from sna_core.tasks import TrialConfigError, validate_config

        entry, detector, backbone, stem, attention, rank_k, placement = signature[:7]
        model = {
            "backbone": backbone, "stem": stem, "attention": attention, "placement": placement,
            "attention_kwargs": {} if rank_k is None else {"rank_k": rank_k},
        }
        if detector is not None:  # detection cells only: sna_core.tasks requires it there
            model["detector"] = detector
        try:
            config = validate_config({"seed": 0, "dataset": self.experiment.datasets[entry], "model": model,
                                      "train": self._train(entry, grid, patches)})
        except TrialConfigError as error:
            raise self.experiment.error(self._origin(error.key, entry, grid, patches), f"sna_core.tasks refuses the trial: {error}") from None
        identity = {**config["dataset"], "root": self.experiment.roots_as_written.get(entry)}
        before = f'{{"dataset":{canonical_json(identity)},"model":{canonical_json(config["model"])},"seed":'
        after = f',"train":{canonical_json(config["train"])}}}'
        return config["dataset"], config["model"], config["train"], before, after

    def _origin(self, key: str, entry: str, grid: Grid, patches: tuple[PartialCell, ...]) -> str:
        """The file's key that set the trial-config entry ``key`` (for the error's line)."""
        section, _, rest = key.partition(".")
        name = rest.split(".")[0].split("[")[0]
        if section == "train":
            for patch in reversed(patches):
                if name in (patch.train or {}):
                    return f"{patch.key}.train.{name}"
            if name in grid.train:
                return f"{grid.key}.train.{name}"
            for override in (entry, self.experiment.datasets[entry]["name"]):
                if name in self.experiment.train_overrides.get(override, {}):
                    return f"train.overrides.{override}.{name}"
            return f"train.{name}" if name in self.experiment.train else "train"
        if section == "dataset":
            return f"datasets.{entry}.{name}" if f"datasets.{entry}.{name}" in self.experiment.lines else f"{grid.matrix_key}.dataset"
        if section == "model" and name in _MODEL_AXIS:
            return f"{grid.matrix_key}.{_MODEL_AXIS[name]}"
        return grid.matrix_key


# A cell before resolution: the axis values, in this order.
_AXIS_ORDER = ("dataset", "detector", "backbone", "stem", "attention", "rank_k", "placement", "seed")


def _combinations(resolver: _Resolver, values: dict[str, tuple[Any, ...]], tasks: tuple[str, ...] | None) -> Iterable[tuple]:
    """The product of ``values`` with three rules: rank_k varies only for ranked attentions and
    detector only for detection datasets (the others get None, one cell), and stem "auto" becomes
    the dataset's recommended stem."""
    datasets = resolver.experiment.datasets
    attention_rank = [
        (attention, rank_k)
        for attention in values["attention"]
        for rank_k in (values["rank_k"] if attention in RANKED_ATTENTIONS else (None,))
    ]
    for dataset in values["dataset"]:
        task = datasets[dataset]["task"]
        if tasks is not None and task not in tasks:
            continue
        detectors = values["detector"] if task == "detection" else (None,)
        stems = tuple(dict.fromkeys(resolver.default_stem[dataset] if s == "auto" else s for s in values["stem"]))
        for detector, backbone, stem, (attention, rank_k), placement, seed in itertools.product(
            detectors, values["backbone"], stems, attention_rank, values["placement"], values["seed"]
        ):
            yield (dataset, detector, backbone, stem, attention, rank_k, placement, seed)


def _matcher(experiment: ExperimentConfig, partial: PartialCell) -> Callable[[tuple], bool]:
    """``partial.matches`` compiled for combination tuples (the 100k-cell path): the task test
    becomes a test on the dataset."""
    tests = [(_AXIS_ORDER.index(axis), frozenset(values)) for axis, values in partial.values.items() if axis != "task"]
    if "task" in partial.values:
        tasks = partial.values["task"]
        datasets = frozenset(name for name, spec in experiment.datasets.items() if spec["task"] in tasks)
        tests.append((0, datasets))
    return lambda combo: all(combo[index] in accepted for index, accepted in tests)


def _view(experiment: ExperimentConfig, combo: tuple) -> dict[str, Any]:
    """The combination as a partial-cell matcher sees it (its dataset's task added)."""
    view = dict(zip(_AXIS_ORDER, combo))
    view["task"] = experiment.datasets[view["dataset"]]["task"]
    return view


def _expand_grid(experiment: ExperimentConfig, resolver: _Resolver, grid: Grid) -> dict[tuple, tuple[PartialCell, ...]]:
    """Combination -> the include patches that apply to it, for one grid (ordered)."""
    if grid.exclude:
        excluded = [_matcher(experiment, e) for e in grid.exclude]
        combos = {
            combo: ()
            for combo in _combinations(resolver, grid.matrix, None)
            if not any(test(combo) for test in excluded)
        }
    else:
        combos = dict.fromkeys(_combinations(resolver, grid.matrix, None), ())
    for include in grid.include:
        _apply_include(experiment, resolver, grid, include, combos)
    if not combos:
        excludes = ", ".join(f"{e.key} (line {e.line})" for e in grid.exclude)
        raise experiment.error(grid.key, f"grid {grid.name!r} ends empty: every cell of its matrix is excluded by {excludes}")
    return combos


def _apply_include(experiment: ExperimentConfig, resolver: _Resolver, grid: Grid, include: PartialCell, combos: dict[tuple, tuple[PartialCell, ...]]) -> None:
    given = include.values
    values = {axis: given.get(axis, grid.matrix[axis]) for axis in _AXIS_ORDER}
    if "rank_k" in given and not any(a in RANKED_ATTENTIONS for a in values["attention"]):
        raise experiment.error(f"{include.key}.rank_k", f"rank_k applies only to {', '.join(sorted(RANKED_ATTENTIONS))}; this include's attentions are {', '.join(values['attention'])}")
    explicit = set(given) | ({"task"} if "dataset" in given else set())
    added = 0
    for combo in _combinations(resolver, values, given.get("task")):
        view = _view(experiment, combo)
        blocker = next((e for e in grid.exclude if e.matches(view)), None)
        if blocker is not None:
            if set(blocker.values) <= explicit:
                raise experiment.error(
                    include.key,
                    f"contradicts {blocker.key} (line {blocker.line}): the include adds "
                    f"{_describe_view(view, blocker.values)}, which that exclude removes again; "
                    "drop one of them or narrow the include",
                )
            continue  # an excluded value the include did not name itself: stays excluded
        combos[combo] = combos.get(combo, ()) + ((include,) if include.train else ())
        added += 1
    if not added:
        raise experiment.error(include.key, "adds no cell: its values select nothing (check task, dataset and the excludes)")


def _describe_view(view: dict[str, Any], keys: Iterable[str]) -> str:
    return "{" + ", ".join(f"{k}: {view[k]}" for k in keys) + "}"


def expand(experiment: ExperimentConfig) -> list[Cell]:
    """Every distinct trial of ``experiment``, in file order (grids, then their product order).
    Pure: reads no files, starts nothing. Raises ConfigError for an empty grid, a contradiction or
    a config the task layer refuses."""
    resolver = _Resolver(experiment)
    cells: dict[str, Cell] = {}
    for grid in experiment.grids:
        for combo, patches in _expand_grid(experiment, resolver, grid).items():
            dataset, model, train, before, after = resolver.resolve(combo, grid, patches)
            seed = combo[-1]
            key = hashlib.sha256(f"{before}{seed}{after}".encode()).hexdigest()[:16]
            if key in cells:
                continue
            cells[key] = Cell(
                key=key, dataset=combo[0], backbone=model["backbone"], attention=model["attention"],
                rank_k=combo[5], placement=model["placement"], seed=seed, task=dataset["task"],
                stem=model["stem"], detector=combo[1], grid=grid.name,
                config={"seed": seed, "dataset": dataset, "model": model, "train": train},
            )
    return list(cells.values())


def axis_counts(cells: Iterable[Cell]) -> dict[str, Counter]:
    """How many cells take each value of each summary axis."""
    counts: dict[str, Counter] = {axis: Counter() for axis in SUMMARY_AXES}
    for cell in cells:
        for axis in SUMMARY_AXES:
            counts[axis][getattr(cell, axis)] += 1
    return counts
