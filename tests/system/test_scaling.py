"""Scaling out with existing engines, in a copy of the repo on tiny synthetic data: Hydra's submitit
launcher (one process per job), a real ``mlflow server`` (REST API) and the SLURM launcher
config."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.compose import compose_app
from support.project import TINY, sweep_runs
from support.repo_copy import BIN, env_for, run_cmd
from support.servers import serving

from pipeline.store.rundir import read_run_record

SIX = [*TINY, "preprocess=none,whiten", "optimizer=gd,newton,closed_form", "optimizer.max_iter=200"]



@pytest.mark.slow
def test_submitit_local_sweep_runs_six_jobs_as_children_of_one_parent(repo: Path) -> None:
    res = run_cmd(["python", "-m", "pipeline.train", "-m", "hydra/launcher=submitit_local", *SIX,
                   "study=submitit"], cwd=repo)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in res.stderr + res.stdout
    parent, children = sweep_runs(repo, "submitit")
    assert parent.info.status == "FINISHED"
    assert len(children) == 6 and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    (sweep,) = (repo / "experiments" / ".hydra" / "multirun").iterdir()
    jobs = [d for d in (sweep / ".submitit").iterdir() if list(d.glob("*_result.pkl"))]
    assert len(jobs) == 6  # six submitit jobs, each its own process (job id = its pid)
    logs = "".join(p.read_text() for d in jobs for p in d.glob("*_log.out"))
    assert logs.count("train: synth-kappa100-") == 6
    ids = {read_run_record(d / "metrics.json")["mlflow_run_id"]
           for d in (repo / "experiments" / "submitit").iterdir()}
    assert ids == {c.info.run_id for c in children}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_a_failing_job_is_counted_under_every_launcher(repo: Path, launcher: str) -> None:
    study = f"failing-{launcher}"
    res = run_cmd(
        [
            "python",
            "-m",
            "pipeline.train",
            "-m",
            f"hydra/launcher={launcher}",
            *TINY,
            "preprocess=none",
            "optimizer=gd",
            "optimizer.lr=auto,50.0",
            f"study={study}",
        ],
        cwd=repo,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "train: error: 1 sweep job(s) failed (job 1)" in res.stderr
    parent, children = sweep_runs(repo, study)
    assert parent.info.status == "FAILED"
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}


def test_a_job_finds_the_parent_in_the_sweep_folder_without_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tracking.sweep import sweep_parent_run_id

    monkeypatch.delenv("CURVLAB_MLFLOW_PARENT_RUN_ID", raising=False)
    assert sweep_parent_run_id(str(tmp_path)) is None
    (tmp_path / "mlflow_parent_run_id").write_text("abc123\n")
    assert sweep_parent_run_id(str(tmp_path)) == "abc123"  # e.g. SLURM --export=NONE
    monkeypatch.setenv("CURVLAB_MLFLOW_PARENT_RUN_ID", "fromenv")
    assert sweep_parent_run_id(str(tmp_path)) == "fromenv"


def test_slurm_launcher_config_becomes_the_sbatch_options_a_user_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """conf/hydra/launcher/slurm.yaml, handed to submitit as hydra-submitit-launcher hands it, gives
    these sbatch lines (no cluster needed: submitit writes the script before calling sbatch)."""
    import submitit
    from hydra.core.global_hydra import GlobalHydra
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import _make_sbatch_string

    GlobalHydra.instance().clear()
    cfg = compose_app("train", return_hydra_config=True, overrides=[
        "hydra/launcher=slurm", "hydra.launcher.partition=cpu", "hydra.launcher.timeout_min=30",
        "hydra.launcher.array_parallelism=4", "hydra.job.name=train"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert {
        k: launcher[k]
        for k in ("partition", "timeout_min", "cpus_per_task", "mem_gb", "array_parallelism")
    } == {
        "partition": "cpu",
        "timeout_min": 30,
        "cpus_per_task": 2,
        "mem_gb": 8,
        "array_parallelism": 4,
    }
    # BaseSubmititLauncher.launch: generic keys as they are, the others prefixed with the cluster
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k if k in base else f"slurm_{k}": v for k, v in launcher.items()
              if k not in ("_target_", "submitit_folder", "max_num_timeout", "name")}
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that srun exists
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path)
    executor.update_parameters(name="train", **params)
    script = _make_sbatch_string(command="python -m x", folder=tmp_path, map_count=6,
                                 **executor._executor.parameters)
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=30", "#SBATCH --cpus-per-task=2",
                 "#SBATCH --mem=8GB", "#SBATCH --array=0-5%4"):
        assert line in script.splitlines(), script


# ---------------------------------------------------------------- a real MLflow tracking server


def rest(url: str, path: str, **query: str) -> dict[str, Any]:
    """GET ``<url>/api/2.0/mlflow/<path>?query`` as JSON."""
    q = urllib.parse.urlencode(query)
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/{path}?{q}", timeout=30) as resp:
        return json.loads(resp.read())


def rest_post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[str]:
    """``make mlflow-server`` in the repo copy on a free 127.0.0.1 port; always stopped."""
    stamp = repo / ".venv" / ".installed-stamp"  # the copy uses this venv: no install step
    stamp.parent.mkdir(exist_ok=True)
    stamp.touch()
    with serving(lambda port: ["make", "--no-print-directory", "mlflow-server",
                               f"MLFLOW_PORT={port}", f"BIN={BIN}", "MLFLOW_WORKERS=1"],
                 repo / "mlflow-server.log", timeout=300, cwd=repo, env=env_for(repo)) as url:
        yield url  # make, mlflow server and its workers: stopped as one process group


@pytest.fixture(scope="module")
def server_sweep(repo: Path, server: str) -> dict[str, Any]:
    """A parallel sweep of six jobs (joblib, 2 workers) plus one evaluate, all logging to the
    server."""
    from pipeline.tracking.mlflow import _store_lock

    lock = Path(_store_lock(f"sqlite:///{repo / 'mlflow.db'}").lock_file)
    lock.unlink(missing_ok=True)  # left by the SQLite sweeps above (filelock keeps the file)
    extra = {"MLFLOW_TRACKING_URI": server}
    res = run_cmd(
        [
            "python",
            "-m",
            "pipeline.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *SIX,
            "study=served",
        ],
        cwd=repo,
        extra_env=extra,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ev = run_cmd(
        [
            "python",
            "-m",
            "pipeline.evaluate",
            *TINY,
            "preprocess=whiten",
            "optimizer=newton",
            "optimizer.max_iter=200",
            "study=served",
        ],
        cwd=repo,
        extra_env=extra,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    return {"url": server, "lock": lock}


@pytest.mark.slow
def test_a_parallel_sweep_against_a_tracking_server_loses_no_run(
    repo: Path, server_sweep: dict[str, Any]
) -> None:
    url = server_sweep["url"]
    exp = rest(url, "experiments/get-by-name", experiment_name="served")["experiment"]
    runs = rest_post(
        url, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}
    )["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags, strict=True) if t.get("curvlab.kind") == "sweep"]
    children = [(r, t) for r, t in zip(runs, tags, strict=True) if t.get("curvlab.kind") == "train"]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    assert len(children) == 6 and {r["info"]["status"] for r, _ in children} == {"FINISHED"}
    assert {t["mlflow.parentRunId"] for _, t in children} == {parents[0]["info"]["run_id"]}
    # every run directory's run id is one the server holds
    ids = {read_run_record(d / "metrics.json")["mlflow_run_id"]
           for d in (repo / "experiments" / "served").iterdir()}
    assert ids == {r["info"]["run_id"] for r, _ in children}
    assert not server_sweep["lock"].exists()  # the server serializes writes: no SQLite file lock
    # artifacts went through the server into the project's artifact folder
    rid = children[0][0]["info"]["run_id"]
    files = {f["path"] for f in rest(url, "artifacts/list", run_id=rid).get("files", [])}
    assert {"metrics.json", "config.yaml", "history.csv"} <= files
    assert list((repo / "mlartifacts").rglob(f"{rid}/artifacts/metrics.json"))
    # evaluate logged onto its train run through the same server
    evaluated = [
        r
        for r, _ in children
        if "data_loss" in {m["key"] for m in r["data"].get("metrics", [])}
    ]
    assert len(evaluated) == 1


@pytest.mark.slow
def test_rest_api_shows_the_experiment_kind_and_the_dataset_input(
    repo: Path, server_sweep: dict[str, Any]
) -> None:
    url = server_sweep["url"]
    exp = rest(url, "experiments/get-by-name", experiment_name="served")["experiment"]
    assert {t["key"]: t["value"] for t in exp["tags"]}[
        "mlflow.experimentKind"
    ] == "custom_model_development"
    run_dir = next((repo / "experiments" / "served").glob("synth-kappa100-whiten-linear-newton,*"))
    run_id = read_run_record(run_dir / "metrics.json")["mlflow_run_id"]
    run = rest(url, "runs/get", run_id=run_id)["run"]
    (inp,) = run["inputs"]["dataset_inputs"]
    prepared = repo / "data" / "prepared" / "synth-kappa100-whiten.npz"
    digest = hashlib.sha256(prepared.read_bytes()).hexdigest()
    ds = inp["dataset"]
    assert ds["name"] == "synth-kappa100-whiten" and ds["digest"] == digest[:36]
    assert ds["source_type"] == "local" and json.loads(ds["source"])["uri"] == str(prepared)
    assert {t["key"]: t["value"] for t in inp["tags"]} == {
        "mlflow.data.context": "train",
        "curvlab.sha256": digest,
    }
