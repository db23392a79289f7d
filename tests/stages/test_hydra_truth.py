"""Hydra that tells the truth: ``--cfg job`` prints what runs (preset budgets included), ``--help``
lists no schema configs, every stage that reads a preset's data takes ``experiment=<preset>``, and
every "run X first" message names a command that works."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.compose import compose_app
from support.project import paths, quiet
from support.snapshots import one_error_line

# run in a scratch folder with short relative paths: the messages quote the overrides in full
HERE = ["paths.prepared_dir=p", "paths.experiments_dir=e", "paths.reference_dir=r",
        "mlflow.enabled=false"]
TSYN = ["data=synthetic_regression", "data.id=tsyn", "data.n_samples=300", "data.n_features=5",
        "model=linear"]


@pytest.fixture
def cli(stage_cli: Any) -> Any:
    """``cli(prog, *args)``: ``python -m pipeline.<prog> args`` in-process."""
    return quiet(stage_cli)


@pytest.mark.parametrize("optimizer, want", [
    ("gd", {"max_iter": 100, "line_search": False}),
    ("newton_cg", {"max_iter": 50, "tol": 1.0e-8, "line_search": True}),
])
def test_cfg_job_prints_the_presets_budget(stage_cli: Any, optimizer: str,
                                           want: dict[str, Any]) -> None:
    code, out, err = stage_cli("train", "experiment=default_softmax", f"optimizer={optimizer}",
                               "--cfg", "job")
    assert code == 0, err
    printed = yaml.safe_load(out)["optimizer"]
    assert {k: printed[k] for k in want} == want


@pytest.mark.parametrize("stage", ["prepare", "train", "evaluate", "reference", "analytic",
                                   "report"])
def test_help_lists_no_schema_configs(stage_cli: Any, stage: str) -> None:
    code, out, _ = stage_cli(stage, "--help")
    assert code == 0 and "== Configuration groups ==" in out
    assert "_schema" not in out


@pytest.mark.parametrize("stage", ["prepare", "reference", "evaluate", "train"])
@pytest.mark.parametrize("preset, data_id", [("hw3_sgd", "mnist-val"),
                                             ("claim5_newton_vs_gd", "mnist-5k"),
                                             ("default_linear", "synth-kappa100")])
def test_every_stage_that_reads_a_presets_data_takes_the_preset(stage: str, preset: str,
                                                                data_id: str) -> None:
    cfg = compose_app(stage, [f"experiment={preset}"])
    assert cfg.data.id == data_id
    if preset == "hw3_sgd":
        assert cfg.data.val_fraction == pytest.approx(0.1)


def _tiny_preset(tmp_path: Path) -> Path:
    """A search path holding ``experiment=tinysweep``: TSYN swept over preprocess none,whiten,
    with a retrain on ``tsyn-all`` (like hw3_sgd's)."""
    folder = tmp_path / "conf" / "experiment"
    folder.mkdir(parents=True)
    (folder / "tinysweep.yaml").write_text("""# @package _global_
defaults:
  - override /data: synthetic_regression
  - override /model: linear
study: tinysweep
data: {id: tsyn, n_samples: 300, n_features: 5, val_fraction: 0.2}
hydra:
  sweeper:
    params:
      preprocess: none,whiten
      optimizer: gd,newton
  callbacks:
    retrain: {_target_: pipeline.tuning.RetrainBest, data_id: tsyn-all}
""")
    return tmp_path / "conf"


def test_prepare_with_a_preset_makes_every_file_its_sweep_reads(cli: Any,
                                                                tmp_path: Path) -> None:
    conf = _tiny_preset(tmp_path)
    code, out, err = cli("prepare", "experiment=tinysweep", f"hydra.searchpath=[file://{conf}]",
                         *paths(tmp_path)[:1])
    assert code == 0, err
    made = sorted(p.name for p in (tmp_path / "prepared").glob("*.npz"))
    assert made == ["tsyn-all-none.npz", "tsyn-all-whiten.npz", "tsyn-none.npz",
                    "tsyn-whiten.npz"]
    assert out.count("prepared ") == 4


def _command(line: str, prog: str) -> list[str]:
    """The arguments of the first `python -m pipeline.<prog> ...` command a message names."""
    found = re.search(rf"`python -m pipeline\.{prog} ([^`]*)`", line)
    assert found, line
    return shlex.split(found.group(1))


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch folder as the current directory (HERE's relative paths point into it)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_names_the_prepare_command_that_makes_its_data(cli: Any, here: Path) -> None:
    run = [*TSYN, "data.val_fraction=0.2", "optimizer=gd", "study=t", *HERE]
    code, _, err = cli("train", *run)
    line = one_error_line(err, "train")
    assert code == 2 and "tsyn-none.npz not found" in line
    # the message asks for the run's paths.* overrides too
    code, _, err = cli("prepare", *_command(line, "prepare"), "paths.prepared_dir=p")
    assert code == 0, err
    code, _, err = cli("train", *run)
    assert code == 0, err  # the named command made exactly what the run reads


def test_reference_names_the_prepare_command_of_its_other_coordinates(
    cli: Any, here: Path
) -> None:
    code, _, err = cli("prepare", *TSYN, "preprocess=none", "paths.prepared_dir=p")
    assert code == 0, err
    ref = [*TSYN, "preprocess=none", "reference.kappa_in=[whiten]", *HERE]
    code, _, err = cli("reference", *ref)
    line = one_error_line(err, "reference")
    assert code == 2 and "tsyn-whiten.json not found" in line
    args = _command(line, "prepare")
    assert "preprocess=whiten" in args and "data.id=tsyn" in args and "paths.prepared_dir=p" in args
    code, _, err = cli("prepare", *args)
    assert code == 0, err
    code, _, err = cli("reference", *ref)
    assert code == 0, err


def test_evaluate_names_the_train_command_of_its_run(cli: Any, here: Path) -> None:
    run = [*TSYN, "optimizer=gd", "study=t", *HERE]
    assert cli("prepare", *TSYN, "paths.prepared_dir=p")[0] == 0
    code, _, err = cli("evaluate", *run)
    line = one_error_line(err, "evaluate")
    assert code == 2 and "weights.npz not found" in line
    code, _, err = cli("train", *_command(line, "train"))
    assert code == 0, err
    code, _, err = cli("evaluate", *run)
    assert code == 0, err
