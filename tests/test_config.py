"""The experiment file (orchestrator.config): every error class names file, line and key, exits 2
through the CLI and writes nothing; valid files resolve to the documented defaults."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.cli import main as cli_main
from orchestrator.config import LineNumberLoader, load_experiment
from orchestrator.errors import ConfigError

VALID = """\
name: unit
matrix:
  dataset: [redundant_shapes]
  backbone: [resnet18]
  attention: [none, sna]
  rank_k: [1]
  placement: [stem]
  seed: [0]
train:
  epochs: 1
"""


def write(directory: Path, text: str, name: str = "exp.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


# (id, file text, line of the error, key path in the message, words the message must contain)
ERRORS = [
    ("yaml-syntax", VALID.replace("  seed: [0]", "  seed: [0"), 9, None, ["YAML syntax error"]),
    ("unknown-top-level-key", VALID + "trian: {epochs: 1}\n", 11, "trian", ["unknown key 'trian'", "Did you mean 'train'?"]),
    ("unknown-axis", VALID.replace("  seed: [0]", "  seeds: [0]"), 8, "matrix.seeds", ["unknown key 'seeds'", "Did you mean 'seed'?"]),
    ("unknown-attention", VALID.replace("[none, sna]", "[none,\n    sn]"), 6, "matrix.attention[1]", ["unknown attention 'sn'", "Did you mean 'sna'?", "Known: ", "eca"]),
    ("unknown-backbone", VALID.replace("[resnet18]", "[resnet19]"), 4, "matrix.backbone[0]", ["unknown backbone 'resnet19'", "Did you mean 'resnet18'?", "densenet121"]),
    ("unknown-dataset", VALID.replace("[redundant_shapes]", "[redundant_shape]"), 3, "matrix.dataset[0]", ["unknown dataset 'redundant_shape'", "Did you mean 'redundant_shapes'?"]),
    ("unknown-placement", VALID.replace("[stem]", "[stems]"), 7, "matrix.placement[0]", ["unknown placement 'stems'", "Did you mean 'stem'?", "stem+blocks"]),
    ("rank-k-zero", VALID.replace("rank_k: [1]", "rank_k: [1, 0]"), 6, "matrix.rank_k[1]", ["must be an integer >= 1, got 0"]),
    ("seed-not-int", VALID.replace("seed: [0]", "seed: [0, 1.5]"), 8, "matrix.seed[1]", ["must be an integer", "1.5"]),
    ("seed-bool", VALID.replace("seed: [0]", "seed: [true]"), 8, "matrix.seed[0]", ["must be an integer", "True"]),
    ("empty-axis", VALID.replace("attention: [none, sna]", "attention: []"), 5, "matrix.attention", ["must be a non-empty list"]),
    ("missing-axis", VALID.replace("  backbone: [resnet18]\n", ""), 2, "matrix", ["needs the axis 'backbone'"]),
    ("negative-epochs", VALID.replace("epochs: 1", "epochs: -3"), 10, "train.epochs", ["must be an integer >= 1, got -3"]),
    ("lr-zero", VALID + "  lr: 0\n", 11, "train.lr", ["must be a number > 0"]),
    ("lr-string", VALID + "  lr: fast\n", 11, "train.lr", ["must be a number", "'fast'"]),
    ("mode-invalid", VALID + "  mode: maximise\n", 11, "train.mode", ["unknown mode 'maximise'", "Known: min, max"]),
    ("unknown-train-key", VALID + "  learning_rate: 0.1\n", 11, "train.learning_rate", ["Did you mean 'lr'?"]),
    ("override-unknown-dataset", VALID + "  overrides:\n    cifar: {lr: 0.1}\n", 12, "train.overrides.cifar", ["unknown dataset 'cifar'"]),
    ("schedule-milestones", VALID + "  schedule: {name: multistep, milestones: [5, 2]}\n", 11, "train.schedule.milestones", ["must increase strictly"]),
    ("schedule-unknown", VALID + "  schedule: cosin\n", 11, "train.schedule", ["unknown schedule 'cosin'", "Did you mean 'cosine'?"]),
    ("resources-workers", VALID + "resources: {num_workers: 0}\n", 11, "resources.num_workers", ["must be an integer >= 1, got 0"]),
    ("tracking-no-scheme", VALID + "tracking: {uri: runs/}\n", 11, "tracking.uri", ["not a usable MLflow store"]),
    ("search-bounds", VALID + "search:\n  space:\n    lr: {type: float, low: 0.1, high: 0.01}\n", 13, "search.space.lr.high", ["must be greater than low"]),
    ("search-unknown-param", VALID + "search:\n  space:\n    dropout: {type: float, low: 0, high: 1}\n", 13, "search.space.dropout", ["unknown key 'dropout'", "lr"]),
    ("search-log-with-step", VALID + "search:\n  space:\n    lr: {type: float, low: 0.001, high: 0.1, log: true, step: 0.01}\n", 13, "search.space.lr.step", ["takes no step"]),
    ("dataset-kwargs-not-json", VALID + "datasets:\n  redundant_shapes:\n    kwargs: {since: 2022-09-09}\n", 13, "datasets.redundant_shapes.kwargs", ["plain JSON values"]),
    ("dataset-task-not-served", VALID + "datasets:\n  redundant_shapes: {task: detection}\n", 12, "datasets.redundant_shapes.task", ["cannot serve task 'detection'", "classification"]),
    ("metric-not-for-task", VALID + "  metric: auroc\n", 11, "train.metric", ["sna_core.tasks refuses the trial", "'auroc'", "top1"]),
    ("override-metric-not-for-task", VALID + "  overrides:\n    redundant_shapes: {metric: ap50}\n", 12, "train.overrides.redundant_shapes.metric", ["'ap50'", "top5"]),
    ("gamma-above-one", VALID + "  schedule: {name: step, step_size: 10, gamma: 2}\n", 11, "train.schedule.gamma", ["must be in (0, 1], got 2.0"]),
    ("exclude-unknown-name", VALID + "exclude:\n  - {attention: sea}\n", 12, "exclude[0].attention", ["unknown attention 'sea'", "Did you mean 'se'?"]),
    ("exclude-unknown-key", VALID + "exclude:\n  - {atention: se}\n", 12, "exclude[0].atention", ["Did you mean 'attention'?"]),
    (
        "include-contradicts-exclude",
        VALID + "exclude:\n  - {attention: sna, rank_k: 4}\ninclude:\n  - {attention: sna, rank_k: [2, 4]}\n",
        14, "include[0]", ["contradicts exclude[0] (line 12)", "rank_k: 4"],
    ),
    (
        "grid-ends-empty",
        VALID + "exclude:\n  - {backbone: resnet18}\n",
        2, "matrix", ["ends empty", "exclude[0] (line 12)"],
    ),
    ("include-adds-nothing", VALID + "include:\n  - {task: detection}\n", 12, "include[0]", ["adds no cell"]),
    ("rank-k-without-sna", VALID + "include:\n  - {attention: se, rank_k: 2}\n", 12, "include[0].rank_k", ["rank_k applies only to sna"]),
    ("python-tag", VALID.replace("name: unit", "name: !!python/object/apply:os.system ['touch pwned']"), 1, "name", ["!!python/object/apply:os.system", "refused", "safe loader"]),
    ("duplicate-key", VALID + "name: again\n", 11, "name", ["duplicate key"]),
    ("missing-train", VALID.replace("train:\n  epochs: 1\n", ""), None, None, ["needs 'train'"]),
    ("grids-and-matrix", VALID + "grids: []\n", 11, "grids", ["either 'matrix'", "or 'grids'"]),
    ("grid-name-twice", VALID.split("matrix:")[0] + "grids:\n  - {name: a, matrix: {dataset: [redundant_shapes], backbone: [resnet18], attention: [se]}}\n  - {name: a, matrix: {dataset: [redundant_shapes], backbone: [resnet18], attention: [eca]}}\ntrain: {epochs: 1}\n", 4, "grids[1].name", ["already used by grids[0]"]),
    ("not-a-mapping", "- just\n- a list\n", None, None, ["must be a mapping"]),
    ("empty-file", "", None, None, ["the file is empty"]),
]


@pytest.mark.parametrize("text, line, key, words", [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_config_error_names_file_line_and_key_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int | None, key: str | None, words: list[str]) -> None:
    path = write(tmp_path, text, name="my_experiment.yaml")
    before = sorted(os.listdir(tmp_path))

    code = cli_main(["plan", str(path), "--no-estimate"])

    err = capsys.readouterr().err
    assert code == 2, err
    location = f"{path}:{line}: " if line is not None else f"{path}: "
    assert location in err, err
    if key is not None:
        assert f"{location}{key}: " in err, err
    for word in words:
        assert word in err, err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written: no mlflow.db, no results


def test_python_tag_is_never_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, VALID + f"description: !!python/object/apply:os.system ['touch {marker}']\n")
    assert cli_main(["plan", str(path), "--no-estimate"]) == 2
    assert not marker.exists()
    assert "refused" in capsys.readouterr().err


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the experiment file"):
        load_experiment(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "text, line_of",
    [
        ("a: 1\nb:\n  c: [x, y]\n  d: {e: 2}\n", {"a": 1, "b": 2, "b.c": 3, "b.c[1]": 3, "b.d": 4, "b.d.e": 4}),
        ("list:\n  - one: 1\n    two: 2\n  - three\n", {"list": 1, "list[0]": 2, "list[0].one": 2, "list[0].two": 3, "list[1]": 4}),
    ],
)
def test_loader_records_the_line_of_every_key_path(text: str, line_of: dict[str, int]) -> None:
    loader = LineNumberLoader(text)
    try:
        _, lines = loader.load_with_lines()
    finally:
        loader.dispose()
    for key, line in line_of.items():
        assert lines[key] == line, key


@pytest.mark.parametrize("written, expected", [("1e-4", 1e-4), ("1.0e-4", 1e-4), ("5E-4", 5e-4), ("0.1", 0.1), ("3", 3)])
def test_exponent_without_a_dot_is_a_number(tmp_path: Path, written: str, expected: float) -> None:
    experiment = load_experiment(write(tmp_path, VALID + f"  lr: {written}\n"))
    assert experiment.train["lr"] == pytest.approx(expected)
    assert isinstance(experiment.train["lr"], float)  # 3 and 3.0 must hash alike


def test_defaults_resolve_next_to_the_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment = load_experiment(write(tmp_path, VALID))
    assert experiment.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert experiment.storage_path == str(tmp_path / "sna_results")
    assert experiment.resources.num_workers == 1 and experiment.resources.max_concurrent is None
    assert experiment.search is None
    assert experiment.train == {"epochs": 1}  # as written; each cell's config gets the defaults
    assert len(experiment.file_hash) == 64
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sna_results").exists()


@pytest.mark.parametrize(
    "env, tracking, expected",
    [
        (None, "tracking: {uri: sqlite:///runs/m.db}\n", "sqlite:///{yaml_dir}/runs/m.db"),
        (None, "tracking: {uri: 'sqlite:////abs/m.db'}\n", "sqlite:////abs/m.db"),
        (None, "tracking: {uri: 'http://127.0.0.1:5000'}\n", "http://127.0.0.1:5000"),
        ("http://mlflow.example:5000", "tracking: {uri: sqlite:///runs/m.db}\n", "http://mlflow.example:5000"),
        ("sqlite:///from_env.db", "", "sqlite:///{cwd}/from_env.db"),
    ],
)
def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, tracking: str, expected: str) -> None:
    yaml_dir = tmp_path / "exp"
    yaml_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    if env is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    experiment = load_experiment(write(yaml_dir, VALID + tracking))
    assert experiment.tracking_uri == expected.format(yaml_dir=yaml_dir, cwd=tmp_path)


def test_sections_are_read(tmp_path: Path) -> None:
    experiment = load_experiment(write(tmp_path, VALID + textwrap.dedent("""\
          optimizer: adam
          schedule: {name: multistep, milestones: [2, 4]}
          overrides:
            redundant_shapes: {lr: 0.01, epochs: 3}
        resources: {num_workers: 2, cpus_per_worker: 0.5, gpus_per_worker: 1, max_concurrent: 4, max_failures: -1}
        storage: ../results
        search:
          space:
            lr: {type: float, low: 1e-4, high: 0.1, log: true}
            batch_size: {type: categorical, choices: [16, 32]}
          n_trials: 6
          mode: max
          seed: 7
        datasets:
          redundant_shapes: {image_size: 16, kwargs: {redundancy: 0.5}}
        """)))
    assert experiment.train["schedule"] == {"name": "multistep", "milestones": [2, 4]}  # defaults: per cell
    assert experiment.train_overrides == {"redundant_shapes": {"lr": 0.01, "epochs": 3}}
    assert experiment.resources.num_workers == 2 and experiment.resources.cpus_per_worker == 0.5
    assert experiment.resources.max_failures == -1
    assert experiment.storage_path == str(tmp_path.parent / "results")
    assert experiment.search is not None and experiment.search.n_trials == 6 and experiment.search.seed == 7
    assert experiment.search.space["lr"] == {"type": "float", "low": 1e-4, "high": 0.1, "log": True}
    assert experiment.search.space["batch_size"] == {"type": "categorical", "choices": [16, 32]}
    assert experiment.datasets["redundant_shapes"]["image_size"] == 16
    assert experiment.datasets["redundant_shapes"]["kwargs"] == {"redundancy": 0.5}


def test_a_relative_root_is_resolved_for_workers(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "datasets:\n  redundant_shapes: {root: data/shapes}\n")
    experiment = load_experiment(path)
    assert experiment.datasets["redundant_shapes"]["root"] == str(tmp_path / "data" / "shapes")
    assert experiment.roots_as_written["redundant_shapes"] == "data/shapes"


@pytest.mark.parametrize(
    "attention, code, words",
    [
        ("gentle_block", 0, ["gentle_block"]),
        ("broken_block", 2, ["matrix.attention[0]: attention plugin 'broken_block' failed to load", "ModuleNotFoundError"]),
    ],
)
def test_plugin_attention_names_are_accepted_and_broken_ones_explained(tmp_path: Path, attention: str, code: int, words: list[str]) -> None:
    # A real entry-point plugin: a distribution's metadata on sys.path, as `pip install` leaves it.
    site = tmp_path / "site"
    dist_info = site / "sna_test_plugin-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: sna-test-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[sna_core.attention]\ngentle_block = gentle_block:GentleBlock\nbroken_block = no_such_module_here:Block\n"
    )
    (site / "gentle_block.py").write_text("from torch import nn\n\nclass GentleBlock(nn.Identity):\n    def __init__(self, channels=0, **kwargs):\n        super().__init__()\n")
    path = write(tmp_path, VALID.replace("[none, sna]", f"[{attention}]"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "plan", str(path), "--json", "--no-estimate"],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == code, result.stderr
    for word in words:
        assert word in result.stdout + result.stderr
