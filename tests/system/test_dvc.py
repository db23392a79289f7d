"""DVC: the real dvc.yaml is consistent with the apps; a tiny pipeline in a repo copy reproduces,
is a no-op the second time, and a changed conf value reruns only the stages that use it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose
from support.compose import hydra_conf
from support.project import TINY_PRESET
from support.repo_copy import REPO_ROOT, copy_repo, run_cmd

from pipeline.spec import run_name


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


def _jobs(apps: tuple[str, ...]) -> list[tuple[Any, Any, list[str]]]:
    """(stage, composed config, overrides) for every job of every dvc.yaml stage of these apps
    (a ``-m`` stage has one job per combination of its sweeps, as Hydra's basic sweeper runs
    them)."""
    from support.dvc_stages import Composer, expand_stages, job_overrides

    for app in apps:
        __import__(f"pipeline.{app}")
    out = []
    with hydra_conf():
        comp = Composer()
        for st in expand_stages():
            if st.app in apps:
                for ov in job_overrides(comp, st):
                    out.append((st, compose(config_name=st.app, overrides=ov), ov))
    return out


def _covered(path: str, entries: tuple[str, ...]) -> bool:
    return any(path == e or path.startswith(e.rstrip("/") + "/") for e in entries)


def test_real_pipeline_outputs_are_where_the_apps_write() -> None:
    stages = _dvc_yaml()["stages"]
    assert {"prepare", "reference-mnist", "analytic", "train-softmax", "train-softmax-sgd",
            "evaluate-softmax", "train-logistic", "train-linear", "report"} <= set(stages)
    jobs = _jobs(("train", "evaluate"))
    trained = {
        (st.name, str(cfg.study), run_name(cfg, ov)) for st, cfg, ov in jobs if st.app == "train"
    }
    softmax = {t[2] for t in trained if t[0].startswith("train-softmax@")}
    assert softmax == {
        f"mnist-{p}-softmax-{o}" for p in ("none", "zscore", "whiten") for o in ("gd", "newton_cg")
    }
    # softmax, sgd, logistic, linear
    assert len([t for t in trained if t[1] == "default"]) == 6 + 1 + 4 + 4
    for st, cfg, ov in jobs:
        run = f"experiments/{cfg.study}/{run_name(cfg, ov)}"
        prepared = f"data/prepared/{cfg.data.id}-{cfg.preprocess.id}"
        assert _covered(f"{prepared}.npz", st.deps) and _covered(f"{prepared}.json", st.deps), (
            st.name,
            run,
        )
        if st.app == "train":
            for f in ("weights.npz", "config.yaml", "metrics.json", "history.csv"):
                assert _covered(f"{run}/{f}", st.outs), (st.name, run, f)
            assert (
                f"conf/optimizer/{cfg.optimizer.id}.yaml" in st.params
                and f"conf/model/{cfg.model.id}.yaml" in st.params
            )
        else:  # evaluate reads the run and writes beside it
            assert (str(cfg.study), run.split("/")[-1]) in {(t[1], t[2]) for t in trained}, run
            for f in ("weights.npz", "config.yaml", "metrics.json"):
                assert _covered(f"{run}/{f}", st.deps), (st.name, run, f)
            assert _covered(f"{run}/evaluation.json", st.outs), (st.name, run)
    for name in ("train-softmax", "train-logistic", "train-softmax-sgd"):
        spec = stages[name].get("do", stages[name])
        for m in spec["metrics"]:  # cached (DVC's default), so pushed to the DVC remote
            assert isinstance(m, str) or next(iter(m.values())).get("cache", True) is True
        assert spec["plots"]
    for p in {p for st, _, _ in jobs for p in st.params}:
        assert (REPO_ROOT / p).is_file(), p
    # not a DVC file
    assert not any("mlflow.db" in p for st, _, _ in jobs for p in (*st.deps, *st.outs))


TINY_DVC = """
stages:
  prepare:
    cmd: python -m pipeline.prepare data=synthetic_regression data.id=tiny data.n_samples=300
      data.n_features=5 preprocess=none
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
    assert _ran(first.stdout) == {
        "prepare",
        "train@gd",
        "train@newton",
        "evaluate@gd",
        "evaluate@newton",
    }
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
    assert list(changed) == ["conf/optimizer/gd.yaml"] and list(
        changed["conf/optimizer/gd.yaml"]
    ) == ["max_iter"]
    assert changed["conf/optimizer/gd.yaml"]["max_iter"]["old"] == 500
    assert changed["conf/optimizer/gd.yaml"]["max_iter"]["new"] == 400
    third = run_cmd(["dvc", "repro"], cwd=root)
    assert third.returncode == 0, third.stderr[-2000:]
    ran = _ran(third.stdout)
    assert "train@gd" in ran and ran <= {"train@gd", "evaluate@gd"}  # not prepare, not train@newton
    # .dvc/config links outputs from the cache instead of copying them; the rerun replaced its
    # linked outputs and wrote nothing through a link: every cached object still has its digest
    cached = [p for p in (root / ".dvc" / "cache" / "files" / "md5").rglob("*") if p.is_file()]
    assert cached and all(_md5_name(p) for p in cached)
    prepared = next((root / "data" / "prepared").glob("*.npz"))
    inodes = {p.stat().st_ino for p in cached}
    # a hard link here (a reflink on copy-on-write file systems shares blocks, not the inode)
    assert prepared.is_symlink() or prepared.stat().st_ino in inodes or _cow(root)


def _cow(root: Path) -> bool:
    """The file system clones files (btrfs, XFS with reflink): DVC links by reflink there."""
    return subprocess.run(["cp", "--reflink=always", str(root / "dvc.yaml"),
                           str(root / ".reflink-probe")], capture_output=True).returncode == 0


def _md5_name(path: Path) -> bool:
    """A DVC 3 cache object ``md5/ab/cdef…`` holds bytes whose MD5 is ``abcdef…`` (a ``.dir``
    object: the MD5 of its JSON listing, as written)."""
    import hashlib

    name = path.parent.name + path.name.removesuffix(".dir")
    return hashlib.md5(path.read_bytes()).hexdigest() == name


def _objective_of(cfg: Any) -> str:
    """The objective id of a composed run config (the transform's part of it from the preprocess
    config)."""
    from types import SimpleNamespace

    from pipeline.spec import RunSpec, objective_id

    pre = cfg.preprocess
    stand_in = SimpleNamespace(kind=pre.name, penalty_space=pre.penalty_space,
                               absorbs_bias=pre.name == "whiten" and bool(pre.augment))
    return objective_id(RunSpec.from_config(cfg), stand_in)


def test_every_reference_stage_writes_the_file_of_its_objective_and_every_run_has_one() -> None:
    """The reference stages' outputs are named by the objective their jobs solve (one job, one
    file),
    and every run of a convex model outside the tuning study minimizes one of those objectives."""
    jobs = _jobs(("reference", "train"))
    solved: dict[str, str] = {}
    for st, cfg, _ in jobs:
        if st.app != "reference":
            continue
        oid = _objective_of(cfg)
        assert f"experiments/reference/{oid}.json" in st.outs, (st.name, oid)
        assert oid not in solved, f"{oid} solved by {solved[oid]} and {st.name}"
        solved[oid] = st.name
    outs = {o for st, _, _ in jobs if st.app == "reference" for o in st.outs}
    assert outs == {f"experiments/reference/{oid}.json" for oid in solved}  # no out without its job
    for st, cfg, _ in jobs:
        if st.app == "train" and cfg.model.name != "logistic_mse" and not cfg.get("sweep_metric"):
            assert _objective_of(cfg) in solved, (st.name, _objective_of(cfg))
