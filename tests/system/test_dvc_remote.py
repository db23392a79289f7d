"""DVC remote: results pushed from one clone to the shipped local-folder remote are pulled into a
second, fresh clone, which is then up to date (nothing to reproduce)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from support.project import TINY_PREPARE_STAGE, TINY_PRESET
from support.repo_copy import REPO_ROOT, copy_repo, run_cmd

from pipeline.store.rundir import read_run_record

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
RUN = "experiments/tiny/tiny-none-linear-newton"
# prepare -> train -> evaluate on a tiny problem, every output in DVC's cache (MLflow off: fast)
TINY_DVC = f"""
stages:
{TINY_PREPARE_STAGE}  train:
    cmd: python -m pipeline.train experiment=tiny optimizer=newton progress=false
    deps: [pipeline/train.py, conf/experiment/tiny.yaml, data/prepared/tiny-none.npz]
    outs: [{RUN}/weights.npz, {RUN}/config.yaml, {RUN}/history.csv, {RUN}/run.json]
    metrics: [{RUN}/metrics.json]
  evaluate:
    cmd: python -m pipeline.evaluate experiment=tiny optimizer=newton
    deps: [pipeline/evaluate.py, {RUN}/weights.npz, {RUN}/run.json]
    outs: [{RUN}/evaluation.json]
"""


def test_the_shipped_default_remote_is_a_folder_beside_the_project() -> None:
    res = run_cmd(["dvc", "remote", "list"], cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr
    name, url = res.stdout.split()[:2]
    assert Path(url) == REPO_ROOT.parent / "curvlab-dvc-remote"
    assert run_cmd(["dvc", "remote", "default"], cwd=REPO_ROOT).stdout.strip() == name


def _outs(stage: dict) -> list[tuple[str, bool]]:
    """(path, cached) of every output, metric and plot of a stage."""
    found = []
    for kind in ("outs", "metrics", "plots"):
        for o in stage.get(kind) or []:
            path, opts = (next(iter(o.items())) if isinstance(o, dict) else (o, None))
            found.append((path, (opts or {}).get("cache", True)))
    return found


def test_every_pipeline_output_reaches_a_fresh_clone() -> None:
    """An output git ignores must be in DVC's cache, else `dvc push` skips it and a clone that
    pulled still has to rerun its stage."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    uncached = [p for st in stages.values() for p, cached in _outs(st.get("do", st)) if not cached]
    ignored = []
    for path in uncached:
        probe = path.split("${")[0] + "x" if "${" in path else path
        if (
            subprocess.run(
                ["git", "check-ignore", "-q", "--no-index", probe], cwd=REPO_ROOT
            ).returncode
            == 0
        ):
            ignored.append(path)
    assert not ignored, f"git-ignored outputs with cache: false (never pushed): {ignored}"


@pytest.mark.slow
def test_push_from_one_clone_and_pull_into_a_fresh_one(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    first = copy_repo(tmp_path / "first")  # its shipped remote: ../../curvlab-dvc-remote from .dvc/
    preset = TINY_PRESET + "mlflow:\n  enabled: false\n"
    (first / "conf" / "experiment" / "tiny.yaml").write_text(preset)
    (first / "dvc.yaml").write_text(TINY_DVC)
    (first / "dvc.lock").unlink(missing_ok=True)
    res = run_cmd(["dvc", "repro"], cwd=first)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert run_cmd([*GIT, "add", "-A"], cwd=first).returncode == 0
    assert run_cmd([*GIT, "commit", "-qm", "results"], cwd=first).returncode == 0
    pushed = run_cmd(["dvc", "push"], cwd=first)
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    remote = tmp_path / "curvlab-dvc-remote"
    assert remote.is_dir() and any(p.is_file() for p in remote.rglob("*"))

    second = tmp_path / "second"
    assert run_cmd(["git", "clone", "-q", str(first), str(second)], cwd=tmp_path).returncode == 0
    run_dir = Path(RUN)
    assert not (second / run_dir).exists() and not (second / "data" / "prepared").exists()
    pulled = run_cmd(["dvc", "pull"], cwd=second)
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    for rel in (run_dir / "metrics.json", run_dir / "run.json", run_dir / "weights.npz",
                run_dir / "history.csv", run_dir / "evaluation.json",
                Path("data/prepared/tiny-none.npz"), Path("data/prepared/tiny-none.json")):
        assert (second / rel).read_bytes() == (first / rel).read_bytes(), rel
    # the clock stays behind (.dvcignore'd): the pulled run reads back without seconds
    assert (first / run_dir / "timing.json").is_file()
    assert not (second / run_dir / "timing.json").exists()
    pulled_record = read_run_record(second / run_dir / "metrics.json")
    assert pulled_record["train_time_s"] is None
    assert pulled_record["status"] == read_run_record(first / run_dir / "metrics.json")["status"]
    status = run_cmd(["dvc", "status"], cwd=second)
    assert status.returncode == 0 and "Data and pipelines are up to date." in status.stdout, (
        status.stdout
    )
    again = run_cmd(["dvc", "repro"], cwd=second)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout
