"""The plan (orchestrator.plan, orchestrator.estimate, `sna-orch plan`): stable trial keys, dedupe,
the rank_k / detector rules, include / exclude semantics, MLflow state, the compute estimate, the
100k-cell path and the two shipped experiment files."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.config import load_experiment
from orchestrator.plan import Cell, canonical_json, expand, identity_config, trial_key

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"

BASE = """\
name: unit
matrix:
  dataset: [redundant_shapes]
  backbone: [resnet18, densenet121]
  attention: [none, se, sna]
  rank_k: [1, 2]
  placement: [stem, blocks]
  seed: [0, 1]
train:
  epochs: 2
  lr: 0.05
"""
BASE_CELLS = 2 * (2 + 2) * 2 * 2  # backbones × (none, se, sna × 2 ranks) × placements × seeds


def write(directory: Path, text: str, name: str = "exp.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def plan(directory: Path, text: str, name: str = "exp.yaml") -> list[Cell]:
    return expand(load_experiment(write(directory, text, name)))


def keys(cells: list[Cell]) -> set[str]:
    return {cell.key for cell in cells}


def plan_json(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> list[dict]:
    assert cli_main(["plan", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------------
# Trial identity


def test_key_is_the_hash_of_the_canonical_resolved_config(tmp_path: Path) -> None:
    for cell in plan(tmp_path, BASE):
        assert len(cell.key) == 16 and int(cell.key, 16) >= 0
        assert cell.key == trial_key(identity_config(cell.config, None))
        assert set(cell.config) == {"seed", "dataset", "model", "train"}
        assert cell.config["seed"] == cell.seed
        assert cell.config["model"]["attention"] == cell.attention
        assert json.loads(canonical_json(cell.config)) == cell.config  # JSON-serialisable as is


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda t: t.replace("[resnet18, densenet121]", "[densenet121, resnet18]").replace("[none, se, sna]", "[sna, none, se]").replace("[0, 1]", "[1, 0]"), id="value-order"),
        pytest.param(lambda t: t.replace("  dataset: [redundant_shapes]\n", "").replace("  seed: [0, 1]\n", "  seed: [0, 1]\n  dataset: [redundant_shapes]\n"), id="axis-order"),
        pytest.param(lambda t: "train:\n  lr: 0.05\n  epochs: 2\n" + t.split("train:")[0], id="section-order"),
        pytest.param(lambda t: t.replace("name: unit", "name: unit\ndescription: same trials, other words"), id="description"),
        pytest.param(lambda t: t.replace("lr: 0.05", "lr: 5e-2"), id="number-spelling"),
        pytest.param(lambda t: t + "datasets:\n  redundant_shapes: {image_size: 32}\n", id="explicit-default"),
        pytest.param(lambda t: t.replace("  seed: [0, 1]\n", "  seed: [0, 1]\n  stem: [auto, cifar]\n"), id="auto-stem-equals-its-value"),
        pytest.param(lambda t: t + "  optimizer: sgd\n  momentum: 0.9\n  metric: top1\n  mode: max\n", id="defaults-written-out"),
    ],
)
def test_key_does_not_depend_on_how_the_file_is_written(tmp_path: Path, variant) -> None:
    assert keys(plan(tmp_path / "a", BASE)) == keys(plan(tmp_path / "b", variant(BASE)))


def test_key_does_not_depend_on_file_name_or_place(tmp_path: Path) -> None:
    reference = keys(plan(tmp_path / "one", BASE, "first.yaml"))
    assert keys(plan(tmp_path / "elsewhere" / "deeper", BASE, "renamed.yml")) == reference
    moved = tmp_path / "moved.yaml"
    shutil.move(str(tmp_path / "one" / "first.yaml"), moved)
    assert keys(expand(load_experiment(moved))) == reference


def test_relative_root_keeps_keys_but_resolves_for_workers(tmp_path: Path) -> None:
    text = BASE + "datasets:\n  redundant_shapes: {root: data/shapes}\n"
    first, second = plan(tmp_path / "a", text), plan(tmp_path / "b", text)
    assert keys(first) == keys(second)
    assert first[0].config["dataset"]["root"] == str(tmp_path / "a" / "data" / "shapes")
    assert keys(first).isdisjoint(keys(plan(tmp_path / "c", BASE)))  # a root the user wrote is identity


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda t: t.replace("lr: 0.05", "lr: 0.01"), id="lr"),
        pytest.param(lambda t: t.replace("epochs: 2", "epochs: 3"), id="epochs"),
        pytest.param(lambda t: t + "  schedule: cosine\n", id="schedule"),
        pytest.param(lambda t: t + "datasets:\n  redundant_shapes: {kwargs: {redundancy: 0.5}}\n", id="dataset-kwargs"),
        pytest.param(lambda t: t + "  overrides:\n    redundant_shapes: {batch_size: 16}\n", id="per-dataset-override"),
    ],
)
def test_key_changes_with_the_trial(tmp_path: Path, change) -> None:
    before, after = plan(tmp_path / "a", BASE), plan(tmp_path / "b", change(BASE))
    assert len(before) == len(after)
    assert keys(before).isdisjoint(keys(after))


def test_key_is_stable_across_processes(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    code = f"from orchestrator.config import load_experiment; from orchestrator.plan import expand; print(sorted(c.key for c in expand(load_experiment({str(path)!r}))))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == str(sorted(keys(expand(load_experiment(path)))))


# ------------------------------------------------------------------------------------------------
# Expansion rules


def test_rank_k_varies_only_for_sna(tmp_path: Path) -> None:
    cells = plan(tmp_path, BASE.replace("rank_k: [1, 2]", "rank_k: [1, 2, 4]"))
    by_attention = {name: [c for c in cells if c.attention == name] for name in ("none", "se", "sna")}
    per_model = 2 * 2 * 2  # backbones × placements × seeds
    assert len(by_attention["none"]) == len(by_attention["se"]) == per_model
    assert len(by_attention["sna"]) == 3 * per_model
    assert {c.rank_k for c in by_attention["se"]} == {None}
    assert {c.rank_k for c in by_attention["sna"]} == {1, 2, 4}
    assert all(c.config["model"]["attention_kwargs"] == {"rank_k": c.rank_k} for c in by_attention["sna"])
    assert all(c.config["model"]["attention_kwargs"] == {} for c in by_attention["none"])
    assert len(cells) == 5 * per_model


@pytest.mark.parametrize(
    "duplicate",
    [
        pytest.param(lambda t: t.replace("seed: [0, 1]", "seed: [0, 1, 0]"), id="value-listed-twice"),
        pytest.param(lambda t: t.replace("  seed: [0, 1]\n", "  seed: [0, 1]\n  stem: [auto, cifar]\n"), id="auto-and-explicit-stem"),
        pytest.param(lambda t: t + "include:\n  - {attention: sna, rank_k: 2, backbone: resnet18}\n", id="include-of-an-existing-cell"),
        pytest.param(lambda t: t.replace("[redundant_shapes]", "[redundant_shapes, shapes_alias]") + "datasets:\n  shapes_alias: {name: redundant_shapes}\n", id="alias-of-the-same-dataset"),
    ],
)
def test_cells_with_the_same_resolved_config_are_one_trial(tmp_path: Path, duplicate) -> None:
    reference = plan(tmp_path / "a", BASE)
    cells = plan(tmp_path / "b", duplicate(BASE))
    assert len(cells) == len(reference) == BASE_CELLS
    assert keys(cells) == keys(reference)


def test_grids_share_cells_and_keep_their_first_grid(tmp_path: Path) -> None:
    cells = plan(tmp_path, """\
        name: grids
        grids:
          - name: table
            matrix: {dataset: [redundant_shapes], backbone: [resnet18], attention: [none, sna], seed: [0, 1]}
          - name: ranks
            matrix: {dataset: [redundant_shapes], backbone: [resnet18], attention: [sna], rank_k: [1, 2, 4], seed: [0, 1]}
            train: {epochs: 1}
          - name: same_ranks_again
            matrix: {dataset: [redundant_shapes], backbone: [resnet18], attention: [sna], rank_k: [1], seed: [0, 1]}
        train: {epochs: 1}
        """)
    by_grid = {name: [c for c in cells if c.grid == name] for name in ("table", "ranks", "same_ranks_again")}
    assert len(by_grid["table"]) == 4
    assert len(by_grid["ranks"]) == 4  # rank 1 already planned by `table` (same config: same trial)
    assert by_grid["same_ranks_again"] == []
    assert len(cells) == 8


def test_grid_train_patch_makes_other_trials(tmp_path: Path) -> None:
    cells = plan(tmp_path, """\
        name: recipes
        grids:
          - name: paper
            matrix: {dataset: [redundant_shapes], backbone: [resnet18], attention: [sna]}
          - name: code
            matrix: {dataset: [redundant_shapes], backbone: [resnet18], attention: [sna]}
            train: {optimizer: sgd, lr: 0.1, schedule: {name: multistep, milestones: [1], gamma: 0.2}}
        train: {epochs: 2, optimizer: adam, lr: 0.1, schedule: {name: step, step_size: 10, gamma: 1.0}}
        """)
    assert [c.grid for c in cells] == ["paper", "code"]
    assert cells[0].config["train"]["optimizer"] == "adam"
    assert cells[1].config["train"]["schedule"] == {"name": "multistep", "milestones": [1], "gamma": 0.2}


@pytest.mark.parametrize(
    "extra, expected",
    [
        pytest.param("exclude:\n  - {backbone: densenet121, attention: se}\n", BASE_CELLS - 4, id="exclude-pair"),
        pytest.param("exclude:\n  - {attention: [none, se], placement: blocks}\n", BASE_CELLS - 8, id="exclude-list-value"),
        pytest.param("exclude:\n  - {attention: sna, rank_k: 2}\n", BASE_CELLS - 8, id="exclude-one-rank"),
        pytest.param("exclude:\n  - {task: classification, seed: 1}\n", BASE_CELLS // 2, id="exclude-by-task"),
        pytest.param("exclude:\n  - {task: detection}\n", BASE_CELLS, id="exclude-other-task"),
        pytest.param("exclude:\n  - {stem: cifar, seed: 0}\n", BASE_CELLS // 2, id="exclude-resolved-stem"),
        pytest.param("include:\n  - {attention: eca}\n", BASE_CELLS + 8, id="include-fills-axes-from-matrix"),
        pytest.param("include:\n  - {attention: eca, backbone: resnet50, placement: stem+blocks, seed: 7}\n", BASE_CELLS + 1, id="include-one-cell"),
        pytest.param("include:\n  - {attention: sna, rank_k: [4, 8], backbone: resnet18, placement: stem}\n", BASE_CELLS + 4, id="include-lists"),
        pytest.param("exclude:\n  - {attention: se}\ninclude:\n  - {backbone: resnet50, placement: stem, seed: 0}\n", BASE_CELLS - 8 + 3, id="include-respects-excludes-it-did-not-name"),
        pytest.param("exclude:\n  - {attention: se}\ninclude:\n  - {attention: eca}\n", BASE_CELLS - 8 + 8, id="exclude-then-include"),
    ],
)
def test_include_and_exclude(tmp_path: Path, extra: str, expected: int) -> None:
    cells = plan(tmp_path, BASE + extra)
    assert len(cells) == expected
    if "exclude-pair" in extra:
        assert not any(c.backbone == "densenet121" and c.attention == "se" for c in cells)


def test_include_with_train_extends_matching_cells(tmp_path: Path) -> None:
    plain = plan(tmp_path / "a", BASE)
    cells = plan(tmp_path / "b", BASE + "include:\n  - {attention: sna, train: {lr: 0.2}}\n")
    assert len(cells) == len(plain)  # extended in place, not added beside
    patched = [c for c in cells if c.attention == "sna"]
    assert patched and all(c.config["train"]["lr"] == 0.2 for c in patched)
    assert all(c.config["train"]["lr"] == 0.05 for c in cells if c.attention != "sna")
    assert keys(cells) & keys(plain) == {c.key for c in plain if c.attention != "sna"}


def test_train_resolution_order(tmp_path: Path) -> None:
    cells = plan(tmp_path, BASE + textwrap.dedent("""\
          batch_size: 8
          overrides:
            redundant_shapes: {lr: 0.3, batch_size: 4}
        include:
          - {attention: se, train: {batch_size: 2}}
        """))
    se = next(c for c in cells if c.attention == "se")
    none = next(c for c in cells if c.attention == "none")
    assert (none.config["train"]["lr"], none.config["train"]["batch_size"]) == (0.3, 4)
    assert (se.config["train"]["lr"], se.config["train"]["batch_size"]) == (0.3, 2)
    assert none.config["train"]["metric"] == "top1"  # the task's default metric


# ------------------------------------------------------------------------------------------------
# `sna-orch plan`


def test_plan_json_lists_every_cell_with_its_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, BASE)
    records = plan_json(capsys, path, "--no-estimate")
    cells = expand(load_experiment(path))
    assert [r["key"] for r in records] == [c.key for c in cells]
    for record, cell in zip(records, cells):
        assert {"key", "state", "dataset", "backbone", "attention", "rank_k", "placement", "seed", "task", "config"} <= set(record)
        assert record["state"] == "new"
        assert record["config"] == cell.config
        assert record["rank_k"] == cell.rank_k and record["seed"] == cell.seed
    assert os.listdir(tmp_path) == ["exp.yaml"]  # planning created no store and no results folder


def test_plan_text_prints_cells_counts_and_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, BASE.replace("[resnet18, densenet121]", "[resnet18]").replace("[none, se, sna]", "[none, sna]").replace("rank_k: [1, 2]", "rank_k: [1]").replace("placement: [stem, blocks]", "placement: [stem]")
                 + "  batch_size: 16\n  limit_train_batches: 2\n  overrides:\n    redundant_shapes: {epochs: 3}\n")
    assert cli_main(["plan", str(path), "--assume-tflops", "0.5"]) == 0
    out = capsys.readouterr().out
    cells = expand(load_experiment(path))
    for cell in cells:
        assert cell.key in out
    assert "total: 4 cells (new 4)" in out
    assert "attention  none: 2, sna: 2" in out
    assert "0.5 TFLOP/s" in out and "forward+backward" in out


def test_estimate_is_flops_times_three_times_images_times_epochs(tmp_path: Path) -> None:
    from orchestrator.estimate import FORWARD_BACKWARD_FACTOR, estimate
    from sna_core.backbones import build_backbone
    from sna_core.profiling import count_flops

    path = write(tmp_path, BASE.replace("[resnet18, densenet121]", "[resnet18]").replace("[none, se, sna]", "[none, se]").replace("placement: [stem, blocks]", "placement: [stem]")
                 + "  batch_size: 16\n  limit_train_batches: 3\ndatasets:\n  redundant_shapes: {image_size: 16}\n")
    cells = expand(load_experiment(path))
    counted: list[str] = []

    def count(signature):
        counted.append(signature.attention)
        return count_flops(build_backbone(signature.backbone, signature.num_classes, stem=signature.stem, attention=signature.attention, placement=signature.placement), (3, 16, 16))

    result = estimate(cells, assume_tflops=2.0, count=count)
    assert sorted(counted) == ["none", "se"]  # once per distinct model, not per seed
    forward = count_flops(build_backbone("resnet18", 10, stem="cifar"), (3, 16, 16))
    none_cell = next(c for c in cells if c.attention == "none")
    assert result.cell_flops[none_cell.key] == forward * FORWARD_BACKWARD_FACTOR * (3 * 16) * 2
    assert result.hours == pytest.approx(result.total_flops / 2e12 / 3600)
    assert result.unknown_cells == 0


def test_estimate_reports_what_it_cannot_count(tmp_path: Path) -> None:
    from orchestrator.estimate import estimate

    cells = plan(tmp_path, BASE)

    def fails(signature):
        raise RuntimeError(f"cannot build {signature.backbone}")

    result = estimate(cells, count=fails)
    assert result.unknown_cells == len(cells) and result.total_flops == 0
    assert all("cannot build" in reason for reason in result.unknown_reasons.values())


@pytest.mark.slow
def test_plan_reads_finished_runs_from_an_existing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import TAG_RUN_TYPE, TAG_TRIAL_KEY

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write(tmp_path, BASE)
    cells = expand(load_experiment(path))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("unit")
    for cell, status in zip(cells, ("FINISHED", "FAILED", "RUNNING")):
        run = client.create_run(experiment_id, tags={TAG_TRIAL_KEY: cell.key, TAG_RUN_TYPE: "trial"})
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)

    records = {r["key"]: r["state"] for r in plan_json(capsys, path, "--no-estimate")}
    assert [records[c.key] for c in cells[:4]] == ["finished", "failed", "running", "new"]
    assert list(records.values()).count("new") == len(cells) - 3


def test_plan_starts_no_ray_and_writes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    code = textwrap.dedent(f"""\
        import sys
        from orchestrator.cli import main
        assert main(["plan", {str(path)!r}, "--no-estimate"]) == 0
        assert main(["plan", {str(path)!r}, "--json", "--no-estimate"]) == 0
        assert "ray" not in sys.modules, "planning imported ray"
        print("no ray", file=sys.stderr)
        """)
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no ray" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["exp.yaml"]


def test_plan_of_a_bad_file_starts_no_ray(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("rank_k: [1, 2]", "rank_k: [0]"))
    code = f"import sys\nfrom orchestrator.cli import main\nrc = main(['plan', {str(path)!r}])\nassert 'ray' not in sys.modules\nsys.exit(rc)"
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"{path}:6: matrix.rank_k[0]: must be an integer >= 1, got 0" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["exp.yaml"]


def test_hundred_thousand_cells_plan_in_seconds(tmp_path: Path) -> None:
    # 3 backbones × (6 plain blocks + sna × 5 ranks) × 4 placements = 132 cells per seed.
    seeds = list(range(758))
    path = write(tmp_path, f"""\
        name: large
        matrix:
          dataset: [redundant_shapes]
          backbone: [resnet18, resnet50, densenet121]
          attention: [none, se, eca, sa, aa, cbam, sna]
          rank_k: [1, 2, 4, 8, 16]
          placement: [none, stem, blocks, stem+blocks]
          seed: {seeds}
        exclude:
          - {{backbone: resnet50, placement: none, seed: 3}}
        train: {{epochs: 1}}
        """)
    out = tmp_path / "plan.json"
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    with out.open("w") as handle:
        result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan", str(path), "--json", "--no-estimate"],
                                check=False, cwd=tmp_path, env=env, stdout=handle, stderr=subprocess.PIPE, text=True, timeout=120)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    assert len(records) == 132 * 758 - 11 == 100_045
    assert len({r["key"] for r in records}) == len(records)
    # The process's own CPU time (imports included): on a machine shared with other jobs the
    # wall time also counts their load, which is not what this test measures.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 10.0, f"planning 100k cells took {cpu:.1f} s of CPU ({wall:.1f} s wall)"


# ------------------------------------------------------------------------------------------------
# The shipped experiment files


def test_quickstart_plans_48_cells(capsys: pytest.CaptureFixture[str]) -> None:
    records = plan_json(capsys, EXPERIMENTS / "quickstart.yaml", "--no-estimate")
    assert len(records) == 48
    assert {r["attention"] for r in records} == {"none", "se", "eca", "sa", "aa", "sna"}
    assert len({r["backbone"] for r in records}) == 2
    assert {r["placement"] for r in records} == {"stem", "blocks"}
    assert {r["seed"] for r in records} == {0, 1}
    assert {r["dataset"] for r in records} == {"redundant_shapes"}


def test_full_paper_plans_every_table_and_figure(capsys: pytest.CaptureFixture[str]) -> None:
    records = plan_json(capsys, EXPERIMENTS / "full_paper.yaml", "--no-estimate")
    by_grid: dict[str, list[dict]] = {}
    for record in records:
        by_grid.setdefault(record["grid"], []).append(record)
    assert {grid: len(rows) for grid, rows in by_grid.items()} == {
        "table1_cifar100": 2 * 6 * 3,
        "fig4_rank_k": 2 * 4 * 3,  # k = 2, 4, 8, 16; k = 1 is Table 1's SNA
        "placement_ablation": 2 * 2 * 3,  # blocks, stem+blocks; stem is Table 1's
        "table2_imagenet": 6,
        "table3_detection": 2 * 2 * 5,  # datasets × detectors × attentions without AA
        "fig5_vindr_classification": 6 * 3,
        "table4_vindr_detection": 2 * 5 * 3 + 2 * 3,  # + SNA before the first stage only
        "code_recipe_cifar100": 2 * 6 * 3,
    }
    assert len(records) == 188
    detection = [r for r in records if r["task"] == "detection"]
    assert detection and not any(r["attention"] == "aa" for r in detection)
    assert all(r["detector"] in ("faster_rcnn", "mask_rcnn") for r in detection)
    assert {r["rank_k"] for r in records if r["attention"] == "sna"} == {1, 2, 4, 8, 16}
    assert {r["config"]["train"]["optimizer"] for r in by_grid["table1_cifar100"]} == {"adam"}
    assert {r["config"]["train"]["optimizer"] for r in by_grid["code_recipe_cifar100"]} == {"sgd"}
    assert {r["config"]["train"]["lr"] for r in records if r["dataset"].startswith("vindr")} == {0.01}


def test_alias_takes_its_registry_names_override_then_its_own(tmp_path: Path) -> None:
    cells = plan(tmp_path, BASE.replace("[redundant_shapes]", "[redundant_shapes, few_shapes]") + textwrap.dedent("""\
          overrides:
            redundant_shapes: {lr: 0.3, batch_size: 4}
            few_shapes: {batch_size: 2}
        datasets:
          few_shapes: {name: redundant_shapes, kwargs: {train_size: 64}}
        """))
    alias = next(c for c in cells if c.dataset == "few_shapes")
    plain = next(c for c in cells if c.dataset == "redundant_shapes")
    assert (alias.config["train"]["lr"], alias.config["train"]["batch_size"]) == (0.3, 2)
    assert (plain.config["train"]["lr"], plain.config["train"]["batch_size"]) == (0.3, 4)
    assert alias.config["dataset"]["name"] == "redundant_shapes" and alias.config["dataset"]["kwargs"] == {"train_size": 64}
