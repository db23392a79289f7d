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
from pipeline.store.rundir import read_run_record


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
    softmax = {t[2] for t in trained if t[0] == "train-softmax"}
    assert softmax == {
        f"mnist-{p}-softmax-{o}" for p in ("none", "zscore", "whiten")
        for o in ("gd", "newton_cg", "lbfgs", "nesterov")
    }
    # softmax, sgd, logistic, linear
    assert len([t for t in trained if t[1] == "default"]) == 12 + 1 + 4 + 4
    for st, cfg, ov in jobs:
        run = f"experiments/{cfg.study}/{run_name(cfg, ov)}"
        prepared = f"data/prepared/{cfg.data.id}-{cfg.preprocess.id}"
        assert _covered(f"{prepared}.npz", st.deps) and _covered(f"{prepared}.json", st.deps), (
            st.name,
            run,
        )
        if st.app == "train":
            for f in ("weights.npz", "config.yaml", "metrics.json", "run.json", "history.csv"):
                assert _covered(f"{run}/{f}", st.outs), (st.name, run, f)
            # the clock: not an out, and .dvcignore'd inside a folder out
            assert f"{run}/timing.json" not in st.outs, (st.name, run)
            assert (  # conf files a stage reads whole are deps (any edit reruns it)
                f"conf/optimizer/{cfg.optimizer.id}.yaml" in st.deps
                and f"conf/model/{cfg.model.id}.yaml" in st.deps
            )
        else:  # evaluate reads the run and writes beside it
            assert (str(cfg.study), run.split("/")[-1]) in {(t[1], t[2]) for t in trained}, run
            for f in ("weights.npz", "config.yaml", "metrics.json", "run.json"):
                assert _covered(f"{run}/{f}", st.deps), (st.name, run, f)
            assert _covered(f"{run}/evaluation.json", st.outs), (st.name, run)
    for name in ("train-softmax", "train-logistic", "train-softmax-sgd", "train-linear"):
        spec = stages[name].get("do", stages[name])
        for m in spec["metrics"]:  # cached (DVC's default), so pushed to the DVC remote
            assert isinstance(m, str) or next(iter(m.values())).get("cache", True) is True
            assert str(m if isinstance(m, str) else next(iter(m))).endswith("/metrics.json")
        assert "plots" not in spec  # the runs are compared in the top-level plots
    assert not any("metrics" in stages[n].get("do", stages[n]) for n in stages
                   if n.startswith("evaluate"))  # evaluation.json holds text: an out
    assert {"timing.json", "timing/"} <= set((REPO_ROOT / ".dvcignore").read_text().split())
    for p in {p for st, _, _ in jobs for p in (*st.params, *st.deps) if p.startswith("conf/")}:
        assert (REPO_ROOT / p).is_file(), p
    # not a DVC file
    assert not any("mlflow.db" in p for st, _, _ in jobs for p in (*st.deps, *st.outs))


TINY_DVC = """
stages:
  prepare:
    cmd: python -m pipeline.prepare data=synthetic_regression data.id=tiny data.n_samples=300
      data.n_features=5 preprocess=none
    deps: [pipeline/prepare.py, conf/data/synthetic_regression.yaml]
    outs: [data/prepared/tiny-none.npz, data/prepared/tiny-none.json]
  train:
    matrix:
      optimizer: [gd, newton]
    cmd: python -m pipeline.train experiment=tiny optimizer=${item.optimizer} progress=false
    deps:
      - pipeline/train.py
      - data/prepared/tiny-none.npz
      - conf/experiment/tiny.yaml
      - conf/optimizer/${item.optimizer}.yaml
    params:
      - conf/optimizer/${item.optimizer}.yaml: [max_iter]
    outs:
      - experiments/tiny/tiny-none-linear-${item.optimizer}/weights.npz
      - experiments/tiny/tiny-none-linear-${item.optimizer}/run.json
    metrics:
      - experiments/tiny/tiny-none-linear-${item.optimizer}/metrics.json
  evaluate:
    matrix:
      optimizer: [gd, newton]
    cmd: python -m pipeline.evaluate experiment=tiny optimizer=${item.optimizer}
    deps:
      - pipeline/evaluate.py
      - experiments/tiny/tiny-none-linear-${item.optimizer}/weights.npz
    outs:
      - experiments/tiny/tiny-none-linear-${item.optimizer}/evaluation.json
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
    assert shown.returncode == 0 and "iterations" in shown.stdout and "status" not in shown.stdout
    for opt in ("gd", "newton"):
        m = read_run_record(root / f"experiments/tiny/tiny-none-linear-{opt}/metrics.json")
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


PROBLEMS = ("default-mnist-softmax", "default-mnist-3v8-logistic", "default-synth-kappa100-linear")
RUNS = [("none", "gd"), ("none", "newton_cg"), ("whiten", "gd"), ("whiten", "newton_cg")]


def _convergence_csv(path: Path) -> None:
    """A made-up long-format convergence table as the report writes it: 4 runs, f − f* falling
    geometrically to 0 (a point a log axis cannot show)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["run,optimizer,preprocess,iteration,passes,subopt,rel_subopt"]
    for pre, opt in RUNS:
        rate = 0.5 if opt == "gd" else 1.0e-3
        for it in range(6):
            sub = 0.0 if it == 5 else rate**it
            rows.append(f"mnist · {pre} · {opt},{opt},{pre},{it},{it * 3.0},{sub},{sub / 2}")
    path.write_text("\n".join(rows) + "\n")


def test_top_level_plots_overlay_every_run_of_a_problem_on_a_log_axis(tmp_path: Path) -> None:
    """`dvc plots show --json` on the real dvc.yaml: f − f* of each default-study problem against
    passes and against iterations, one line (colour) per run, log y; zeros dropped; no per-run
    plots."""
    root = copy_repo(tmp_path)
    for problem in PROBLEMS:
        _convergence_csv(root / "reports" / "plots" / f"convergence-{problem}.csv")
    res = run_cmd(["dvc", "plots", "show", "--json"], cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    plots = json.loads(res.stdout)["data"]
    assert set(plots) == {f"{p}-{x}" for p in PROBLEMS for x in ("passes", "iterations")}
    for pid, (plot,) in plots.items():
        spec = plot["content"]
        enc = spec["encoding"]
        assert enc["x"]["field"] == ("passes" if pid.endswith("passes") else "iteration")
        assert enc["y"]["field"] == "subopt" and enc["y"]["scale"]["type"] == "log"
        assert enc["color"]["field"] == "run" and "f − f*" in spec["title"]["text"]
        values = spec["data"]["values"]
        assert {v["run"] for v in values} == {f"mnist · {p} · {o}" for p, o in RUNS}
        assert len(values) == 6 * len(RUNS) and "subopt'] > 0" in spec["transform"][0]["filter"]
    assert (REPO_ROOT / ".gitignore").read_text().count("/dvc_plots/") == 1


def test_a_repo_with_a_dvc_lock_has_a_baseline_and_a_few_dozen_params(tmp_path: Path) -> None:
    """A clone with a committed dvc.lock (here made by `dvc commit` over placeholder outputs):
    `dvc exp show --json` has the baseline commit with every param's value, and a few dozen params;
    dvc.lock is not git-ignored."""
    from support.dvc_stages import expand_stages

    root = copy_repo(tmp_path)
    for stage in expand_stages(root):
        for rel in (*stage.outs, *stage.deps):
            path = root / rel
            if path.exists():
                continue
            if not path.suffix:  # a folder out
                path = path / "placeholder"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("placeholder\n")
    commit = run_cmd(["dvc", "commit", "--force", "--quiet"], cwd=root)
    assert commit.returncode == 0, commit.stderr[-2000:]
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    ignored = run_cmd(["git", "check-ignore", "dvc.lock"], cwd=root)
    assert ignored.returncode == 1, "dvc.lock is git-ignored"
    assert run_cmd([*git, "add", "dvc.lock"], cwd=root).returncode == 0
    assert run_cmd([*git, "commit", "-qm", "lock"], cwd=root).returncode == 0
    res = run_cmd(["dvc", "exp", "show", "--json"], cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout)
    head = run_cmd(["git", "rev-parse", "HEAD"], cwd=root).stdout.strip()
    (base,) = [r for r in rows if r["rev"] == head]
    assert base["error"] is None and base["data"]["params"]
    deps = base["data"]["deps"]  # from the committed dvc.lock: a hash for every dep, no "!"
    assert "pipeline/core" in deps and all(d["hash"] for d in deps.values())

    def leaves(node: Any) -> int:
        return sum(leaves(v) for v in node.values()) if isinstance(node, dict) and node else 1

    n = sum(leaves(f["data"]) for f in base["data"]["params"].values())
    assert 10 <= n <= 48, n
    assert base["data"]["params"]["conf/experiment/default_softmax/gd.yaml"]["data"] == {
        "max_iter": yaml.safe_load(
            (root / "conf/experiment/default_softmax/gd.yaml").read_text())["max_iter"]}
