"""DVC-tracked outputs are deterministic: the stages of a small pipeline (train as files and as a
sweep folder, evaluate, reference, analytic) run twice on the same code and data give the same
output hashes in dvc.lock, while the wall-clock seconds and MLflow run ids, which differ,
stay in the .dvcignore'd timing files; `dvc metrics show` lists numbers only; and after
`dvc exp run -S` on one key, `dvc exp show --only-changed` is that key and the metrics it moved."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.project import TINY_PREPARE_STAGE, TINY_PRESET
from support.repo_copy import copy_repo, run_cmd

RUN = "experiments/tiny/tiny-none-linear-gd"
SWEEP = "experiments/tinysweep"
TINY_DVC = f"""
stages:
{TINY_PREPARE_STAGE}  train:
    cmd: python -m pipeline.train experiment=tiny optimizer=gd progress=false
    deps: [pipeline/train.py, conf/optimizer/gd.yaml, data/prepared/tiny-none.npz]
    params:
      - conf/optimizer/gd.yaml: [max_iter]
    outs: [{RUN}/weights.npz, {RUN}/config.yaml, {RUN}/history.csv, {RUN}/run.json]
    metrics: [{RUN}/metrics.json]
  sweep:  # a folder out: the runs' timing.json files are inside it
    cmd: python -m pipeline.train -m hydra/launcher=basic experiment=tiny study=tinysweep
      optimizer=gd,newton progress=false
    deps: [pipeline/train.py, data/prepared/tiny-none.npz]
    outs: [{SWEEP}]
  evaluate:
    cmd: python -m pipeline.evaluate experiment=tiny optimizer=gd
    deps: [pipeline/evaluate.py, {RUN}/weights.npz, {RUN}/run.json]
    outs: [{RUN}/evaluation.json]
  reference:
    cmd: python -m pipeline.reference experiment=tiny preprocess=none
    deps: [pipeline/reference.py, data/prepared/tiny-none.npz]
    outs: [experiments/reference/tiny-linear-l2=0.json]
  analytic:
    cmd: python -m pipeline.analytic 'analytic.studies=[gd_paths]'
    deps: [pipeline/analytic.py]
    outs: [experiments/analytic]
"""
STAGES = {"prepare", "train", "sweep", "evaluate", "reference", "analytic"}
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def _ok(res: Any) -> str:
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return str(res.stdout)


def _out_hashes(root: Path) -> dict[str, str]:
    """path → md5 of every out in dvc.lock."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


def _timings(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text()
            for p in sorted((root / "experiments").rglob("*.json"))
            if p.name == "timing.json" or p.parent.name == "timing"}


@pytest.mark.slow
def test_a_rerun_gives_the_same_output_hashes_and_only_the_timing_files_differ(
    tmp_path: Path,
) -> None:
    root = copy_repo(tmp_path)
    (root / "conf" / "experiment" / "tiny.yaml").write_text(TINY_PRESET)
    (root / "dvc.yaml").write_text(TINY_DVC)
    (root / "dvc.lock").unlink(missing_ok=True)
    first = _ok(run_cmd(["dvc", "repro"], cwd=root))
    assert set(re.findall(r"Running stage '([^']+)'", first)) == STAGES
    hashes, timings = _out_hashes(root), _timings(root)
    assert len(hashes) == 11 and f"{RUN}/metrics.json" in hashes
    # the clock is beside the outputs: each run's timing.json, the reference's and the study's
    assert {f"{RUN}/timing.json", "experiments/reference/timing/tiny-linear-l2=0.json",
            "experiments/analytic/claim1_gd_paths/timing.json"} <= set(timings)
    assert sum(t.startswith(SWEEP) for t in timings) == 2
    run = json.loads((root / RUN / "timing.json").read_text())
    assert run["mlflow_run_id"] and run["train_time_s"] > 0 and len(run["time_s"]) > 1

    # every stage again on the same code and data: the same output hashes
    again_stages = ["prepare", "train", "sweep", "evaluate", "reference", "analytic"]
    _ok(run_cmd(["dvc", "repro", "--force", "--single-item", *again_stages], cwd=root))
    assert _out_hashes(root) == hashes
    again = _timings(root)
    assert set(again) == set(timings)
    # a new MLflow run id each time: were the timing files hashed, dvc.lock would differ
    assert json.loads(again[f"{RUN}/timing.json"])["mlflow_run_id"] != run["mlflow_run_id"]
    assert _ok(run_cmd(["dvc", "status", "--json"], cwd=root)).strip() in ("{}", "")

    # `dvc metrics show`: the run's few numbers, no text
    shown = json.loads(_ok(run_cmd(["dvc", "metrics", "show", "--json"], cwd=root)))
    (numbers,) = next(iter(shown.values()))["data"].values()  # {rev: {data: {file: {data}}}}
    assert set(numbers["data"]) == {"train_loss", "log10_grad_norm", "iterations", "passes"}
    assert all(isinstance(v, (int, float)) for v in numbers["data"].values())

    # an experiment on one key: --only-changed shows it and the metrics it moved, nothing else
    _ok(run_cmd([*GIT, "add", "-A"], cwd=root))
    _ok(run_cmd([*GIT, "commit", "-qm", "baseline"], cwd=root))
    ran = _ok(run_cmd(["dvc", "exp", "run", "-S", "conf/optimizer/gd.yaml:max_iter=7"], cwd=root))
    assert set(re.findall(r"Running stage '([^']+)'", ran)) == {"train", "evaluate"}
    table = json.loads(_ok(run_cmd(["dvc", "exp", "show", "--only-changed", "--json"], cwd=root)))
    base = next(r for r in table if r["rev"] != "workspace")
    (exp,) = [e["revs"][0] for e in base["experiments"]]
    assert exp["data"]["params"]["conf/optimizer/gd.yaml"]["data"]["max_iter"] == 7
    assert base["data"]["params"]["conf/optimizer/gd.yaml"]["data"]["max_iter"] == 500
    moved = {k for k, v in exp["data"]["metrics"][f"{RUN}/metrics.json"]["data"].items()
             if v != base["data"]["metrics"][f"{RUN}/metrics.json"]["data"][k]}
    assert {"iterations", "passes"} <= moved
