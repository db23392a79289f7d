"""DVC: the real dvc.yaml is consistent with the apps; a tiny pipeline in a repo copy reproduces,
is a no-op the second time, and a changed conf value reruns only the stages that use it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from repo_copy import REPO_ROOT, copy_repo, run_cmd

from pipeline.config import register_configs
from pipeline.runs import run_name


def _dvc_yaml() -> dict:
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())


def _expand(stage: dict) -> list[dict[str, str]]:
    """The matrix items of a stage (or one empty item)."""
    items: list[dict[str, str]] = [{}]
    for key, values in (stage.get("matrix") or {}).items():
        items = [{**it, key: v} for it in items for v in values]
    return items


def _sub(text: str, item: dict[str, str]) -> str:
    return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)


def test_real_pipeline_outputs_are_where_the_apps_write() -> None:
    register_configs()
    stages = _dvc_yaml()["stages"]
    train_stages = [stages[n] for n in ("train-softmax", "train-logistic", "train-linear")]
    assert {"prepare", "train-softmax", "evaluate-softmax", "train-logistic", "train-linear"} <= set(stages)
    assert {(i["preprocess"], i["optimizer"]) for i in _expand(stages["train-softmax"])} == {
        (p, o) for p in ("none", "zscore", "whiten") for o in ("gd", "newton_cg")}
    prepared = set()
    for key in _dvc_yaml()["vars"][0]["prepared"]:
        prepared.add(f"data/prepared/{key}.npz")
    for stage in train_stages:
        for item in _expand(stage):
            argv = shlex.split(_sub(stage["cmd"], item))
            assert argv[:3] == ["python", "-m", "pipeline.train"]
            with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
                cfg = compose(config_name="train", overrides=argv[3:])
            run = f"experiments/{cfg.study}/{run_name(cfg)}"
            outs = [_sub(next(iter(o)) if isinstance(o, dict) else o, item) for o in stage["outs"]]
            assert f"{run}/weights.npz" in outs
            metrics = stage["metrics"][0]
            assert _sub(next(iter(metrics)), item) == f"{run}/metrics.json"
            assert next(iter(metrics.values()))["cache"] is True  # pushed to the DVC remote
            plots = stage["plots"][0]
            assert _sub(next(iter(plots)), item) == f"{run}/history.csv"
            deps = [_sub(d, item) for d in stage["deps"]]
            assert f"data/prepared/{cfg.data.id}-{cfg.preprocess.id}.npz" in deps
            assert f"data/prepared/{cfg.data.id}-{cfg.preprocess.id}.npz" in prepared
            assert "pipeline/train.py" in deps and "pipeline/optimizers.py" in deps
            params = [_sub(next(iter(p)), item) for p in stage["params"]]
            assert f"conf/optimizer/{cfg.optimizer.id}.yaml" in params
            assert f"conf/model/{cfg.model.id}.yaml" in params
            for p in params:
                assert (REPO_ROOT / p).is_file(), p
    assert "mlflow.db" not in (REPO_ROOT / "dvc.yaml").read_text().split("# ====")[0].split("stages:")[1]


TINY_PRESET = """# @package _global_
defaults:
  - override /data: synthetic_regression
  - override /model: linear
study: tiny
data:
  id: tiny
  n_samples: 300
  n_features: 5
"""

TINY_DVC = """
stages:
  prepare:
    cmd: python -m pipeline.prepare data=synthetic_regression data.id=tiny data.n_samples=300 data.n_features=5 preprocess=none
    deps: [pipeline/prepare.py]
    params:
      - conf/data/synthetic_regression.yaml:
    outs: [data/prepared/tiny-none.npz, data/prepared/tiny-none.json]
  train:
    matrix:
      optimizer: [gd, newton]
    cmd: python -m pipeline.train experiment=tiny optimizer=${item.optimizer} progress=false
    deps:
      - pipeline/train.py
      - data/prepared/tiny-none.npz
    params:
      - conf/experiment/tiny.yaml:
      - conf/optimizer/${item.optimizer}.yaml:
    outs:
      - experiments/tiny/tiny-none-linear-${item.optimizer}/weights.npz
    metrics:
      - experiments/tiny/tiny-none-linear-${item.optimizer}/metrics.json:
          cache: false
    plots:
      - experiments/tiny/tiny-none-linear-${item.optimizer}/history.csv:
          cache: false
          x: iteration
          y: loss
  evaluate:
    matrix:
      optimizer: [gd, newton]
    cmd: python -m pipeline.evaluate experiment=tiny optimizer=${item.optimizer}
    deps:
      - pipeline/evaluate.py
      - experiments/tiny/tiny-none-linear-${item.optimizer}/weights.npz
    metrics:
      - experiments/tiny/tiny-none-linear-${item.optimizer}/evaluation.json:
          cache: false
"""


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.mark.slow
def test_tiny_pipeline_repro_noop_and_selective_rerun(tmp_path: Path) -> None:
    root = copy_repo(tmp_path)
    (root / "conf" / "experiment" / "tiny.yaml").write_text(TINY_PRESET)
    (root / "dvc.yaml").write_text(TINY_DVC)
    (root / "dvc.lock").unlink(missing_ok=True)

    first = run_cmd(["dvc", "repro"], cwd=root)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert _ran(first.stdout) == {"prepare", "train@gd", "train@newton", "evaluate@gd", "evaluate@newton"}
    shown = run_cmd(["dvc", "metrics", "show", "--json"], cwd=root)
    assert shown.returncode == 0 and "test_loss" in shown.stdout and "iterations" in shown.stdout
    for opt in ("gd", "newton"):
        m = json.loads((root / f"experiments/tiny/tiny-none-linear-{opt}/metrics.json").read_text())
        assert m["status"] in ("converged", "max_iter") and m["mlflow_run_id"]
    assert (root / "mlflow.db").exists()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    assert run_cmd([*git, "add", "-A"], cwd=root).returncode == 0
    assert run_cmd([*git, "commit", "-qm", "repro"], cwd=root).returncode == 0

    second = run_cmd(["dvc", "repro"], cwd=root)
    assert second.returncode == 0 and _ran(second.stdout) == set()
    assert "up to date" in second.stdout

    gd = root / "conf" / "optimizer" / "gd.yaml"
    gd.write_text(gd.read_text().replace("max_iter: 500", "max_iter: 400"))
    diff = run_cmd(["dvc", "params", "diff", "--json"], cwd=root)
    changed = json.loads(diff.stdout)
    assert list(changed) == ["conf/optimizer/gd.yaml"] and list(changed["conf/optimizer/gd.yaml"]) == ["max_iter"]
    assert changed["conf/optimizer/gd.yaml"]["max_iter"]["old"] == 500
    assert changed["conf/optimizer/gd.yaml"]["max_iter"]["new"] == 400
    third = run_cmd(["dvc", "repro"], cwd=root)
    assert third.returncode == 0, third.stderr[-2000:]
    ran = _ran(third.stdout)
    assert "train@gd" in ran and ran <= {"train@gd", "evaluate@gd"}  # not prepare, not train@newton


def _objective_of(cfg) -> str:
    """The objective id of a composed run config (the transform's part of it from the preprocess config)."""
    from types import SimpleNamespace

    from pipeline.objective import objective_id

    pre = cfg.preprocess
    stand_in = SimpleNamespace(kind=pre.name, penalty_space=pre.penalty_space,
                               absorbs_bias=pre.name == "whiten" and bool(pre.augment))
    return objective_id(cfg, stand_in)


def _stage_items(name: str) -> list[tuple[dict, dict]]:
    """(stage spec, item) for every instance of a foreach stage over a vars dict."""
    doc = _dvc_yaml()
    stage = doc["stages"][name]
    var = stage["foreach"].strip("${}")
    items = next(v[var] for v in doc["vars"] if var in v)
    return [(stage["do"], {**item, "key": key}) for key, item in items.items()]


def test_every_reference_stage_writes_the_file_of_its_objective_and_every_run_has_one() -> None:
    """The reference stages' outputs are named by the objective their command solves, and every
    default-study and claim run of a convex model minimizes one of those objectives."""
    register_configs()
    solved = set()
    for name in ("reference", "reference-dense"):
        for spec, item in _stage_items(name):
            argv = shlex.split(_sub(spec["cmd"], item))
            assert argv[:3] == ["python", "-m", "pipeline.reference"]
            with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
                cfg = compose(config_name="reference", overrides=argv[3:])
            oid = _objective_of(cfg)
            assert oid == item["objective"], (name, item["key"])
            assert f"experiments/reference/{oid}.json" in [_sub(next(iter(o)), item) for o in spec["outs"]]
            solved.add(oid)
    stages = _dvc_yaml()["stages"]
    for name in ("train-softmax", "train-logistic", "train-linear", "train-softmax-sgd"):
        for item in _expand(stages[name]):
            argv = shlex.split(_sub(stages[name]["cmd"], item))
            with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
                cfg = compose(config_name="train", overrides=argv[3:])
            assert _objective_of(cfg) in solved, (name, item)
    for preset, sweep in (("claim4_bad_init", {"model": ["logistic"]}),
                          ("claim5_newton_vs_gd", {"preprocess": ["none", "whiten", "whiten_transformed"]})):
        for group, choices in sweep.items():
            for choice in choices:
                with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
                    cfg = compose(config_name="train", overrides=[f"experiment={preset}", f"{group}={choice}"])
                assert _objective_of(cfg) in solved, (preset, choice)
