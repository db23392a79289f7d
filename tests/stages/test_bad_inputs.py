"""Bad inputs and faults: every one ends in ONE ``prog: error:`` line with its exit status,
and every earlier result is byte-identical afterwards (snapshot, act, compare).

The commands run in-process through each stage's ``main`` (``pipeline.cli.entry.stage``, the same
path as ``python -m pipeline.<stage>``) on a tiny synthetic regression; signals (8) and the
``python -m`` path itself run as subprocesses in tests/system/test_bad_inputs_signals.py.
Disk-full and read-only file systems use small tmpfs mounts (root only).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.project import TINY, mlflow_runs, paths, prepare_tiny, quiet, trained_tiny
from support.project import TINY_RUN as RUN
from support.repo_copy import REPO_ROOT
from support.snapshots import one_error_line, snapshot

from pipeline.store.rundir import read_run_record


@pytest.fixture(scope="module")
def work(work: Path) -> Path:
    """The module's work folder with the tiny data set prepared (in-process)."""
    prepare_tiny(work / "prepared", ["none"], data=TINY[:3])
    return work


@pytest.fixture
def cli(stage_cli: Any) -> Any:
    """``cli(prog, *args)``: ``python -m pipeline.<prog> args`` in-process (train/evaluate without
    progress bars)."""
    return quiet(stage_cli)


@pytest.fixture
def trained(work: Path, cli: Any) -> Path:
    """A trained and evaluated run (the earlier result the faults must not touch)."""
    return trained_tiny(work, cli)


def _mount(path: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (disk full / read-only file system)")
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    ).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


# ------------------------------------------------------------------ 1. disk full during a retrain


def test_1_retrain_on_a_full_disk_keeps_the_old_run_and_its_evaluation(work: Path, cli: object,
                                                                         tmp_path: Path) -> None:
    mnt = tmp_path / "disk"
    _mount(mnt, "512k")
    try:
        p = paths(work, **{"paths.experiments_dir": str(mnt)})
        for prog in ("train", "evaluate"):
            code, _, err = cli(prog, *TINY, "study=t", *p)
            assert code == 0, err
        assert (mnt / "t" / RUN / "evaluation.json").exists()
        with open(mnt / "filler", "wb", buffering=0) as fh:  # fill the disk
            try:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
            except OSError:
                pass
        before = snapshot(mnt)
        code, _, err = cli("train", *TINY, "study=t", *p)
        assert code == 2
        line = one_error_line(err, "train")
        assert "No space left on device" in line and "nothing was changed" in line
        assert snapshot(mnt) == before
    finally:
        _umount(mnt)


# ------------------------------------------------------------ 2. report from MLflow after a retrain


def test_2_report_source_mlflow_takes_the_latest_run_of_a_name(work: Path, cli: object) -> None:
    from pipeline.reporting.gather import gather_mlflow

    p = paths(work)
    ids = []
    for max_iter in (3, 5):  # the same run name twice: a retrain
        code, _, err = cli("train", *TINY, "study=retrain", f"optimizer.max_iter={max_iter}", *p)
        assert code == 0, err
        ids.append(
            read_run_record(work / "experiments" / "retrain"
                            / f"{RUN},optimizer.max_iter={max_iter}" / "metrics.json")[
                                "mlflow_run_id"]
        )
    code, _, err = cli("train", *TINY, "study=retrain", "optimizer.max_iter=5", *p)
    assert code == 0, err
    latest = read_run_record(work / "experiments" / "retrain" / f"{RUN},optimizer.max_iter=5"
                         / "metrics.json")["mlflow_run_id"]
    runs = gather_mlflow("retrain", f"sqlite:///{work / 'mlflow.db'}", work / "dl")
    assert len(runs) == 2 and runs.runs.index.is_unique
    assert set(runs.runs["mlflow_run_id"]) == {ids[0], latest} and latest != ids[1]


# ---------------------------------------------------------- 3. names that would escape experiments/


@pytest.mark.parametrize("override,key", [
    ("study=..", "study"), ("study=.", "study"), ("study=a/b", "study"),
    ("model.id=../../../../tmp/curvlab-x", "model.id"), ("optimizer.id=../x", "optimizer.id"),
    ("data.id=../x", "data.id"), ("preprocess.id=..", "preprocess.id"), ("study=.hidden", "study"),
])
def test_3_ids_that_become_paths_are_checked(work: Path, cli: object, trained: Path, override: str,
                                             key: str) -> None:
    before, listing = snapshot(work), sorted(os.listdir(work))
    code, _, err = cli("train", *TINY, override, *paths(work))
    assert code == 2
    assert key in one_error_line(err, "train")
    assert snapshot(work) == before and sorted(os.listdir(work)) == listing
    assert not Path("/tmp/curvlab-x").exists()


# ------------------------------------------------------------------ 4. damaged prepared files


@pytest.mark.parametrize(
    "damage",
    ["garbage_npz", "truncated_npz", "facts_not_object", "facts_garbage", "mismatched_pair"],
)
def test_4_damaged_prepared_files_are_one_line(
    work: Path, cli: object, trained: Path, tmp_path: Path, damage: str
) -> None:
    import shutil

    prep = tmp_path / "prepared"
    shutil.copytree(work / "prepared", prep)
    npz = prep / "synth-kappa100-none.npz"
    js = npz.with_suffix(".json")
    if damage == "garbage_npz":
        npz.write_bytes(b"not an npz at all" * 10)
    elif damage == "truncated_npz":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif damage == "facts_not_object":
        js.write_text("[1, 2, 3]\n")
    elif damage == "facts_garbage":
        js.write_bytes(b"\xff\xfe{ not json")
    else:  # a .json from another prepare run beside this .npz
        facts = json.loads(js.read_text())
        js.write_text(json.dumps({**facts, "seconds": 123.0}))
    before = snapshot(work)
    code, _, err = cli("train", *TINY, "study=t", *paths(work, **{"paths.prepared_dir": str(prep)}))
    assert code == 2
    line = one_error_line(err, "train")
    assert str(npz.with_suffix("")) in line and "pipeline.prepare" in line
    assert snapshot(work) == before


def test_4_damaged_prepared_file_in_a_sweep_ends_the_parent_run(
    work: Path, cli: object, trained: Path, tmp_path: Path
) -> None:
    import shutil

    prep = tmp_path / "prepared"
    shutil.copytree(work / "prepared", prep)
    (prep / "synth-kappa100-none.npz").write_bytes(b"garbage")
    db = tmp_path / "mlflow.db"
    before = snapshot(work)
    code, _, err = cli(
        "train",
        "-m",
        "hydra/launcher=basic",
        *TINY,
        "study=sw4",
        "optimizer=gd,newton",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *paths(work, **{"paths.prepared_dir": str(prep), "mlflow.tracking_uri": f"sqlite:///{db}"}),
    )
    assert code == 2
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 3 and "2 sweep job(s) failed" in errors[-1] and "Traceback" not in err
    runs = mlflow_runs(db)
    assert sorted(s for _, s, parent in runs if not parent) == ["FAILED"]  # the parent
    assert "RUNNING" not in {s for _, s, _ in runs}
    assert snapshot(work) == before


# ------------------------------------------------------------------ 5. sweep folders per invocation


def test_5_two_sweeps_in_the_same_second_get_their_own_folders(
    work: Path, cli: object, tmp_path: Path
) -> None:
    root = tmp_path / "exp"
    for lr in ("1.0e9", "0.1"):  # the first sweep has a failing (diverged) job, the second none
        code, _, _ = cli(
            "train",
            "-m",
            "hydra/launcher=basic",
            *TINY,
            "study=sw5",
            "mlflow.enabled=false",
            f"optimizer.lr={lr}",
            "optimizer.max_iter=3",
            *paths(work, **{"paths.experiments_dir": str(root)}),
            f"hydra.sweep.dir={root}/.hydra/same-second-${{curvlab.unique:}}",
        )
        assert code == (2 if lr == "1.0e9" else 0)
    sweeps = sorted((root / ".hydra").iterdir())  # the same time stamp, still two folders
    assert len(sweeps) == 2
    assert sorted(len(list((s / "failed").glob("*.json"))) for s in sweeps) == [0, 1]
    conf = (REPO_ROOT / "conf" / "hydra" / "curvlab.yaml").read_text()
    assert "${curvlab.unique:}" in conf  # the apps' sweep folders use the per-invocation token


# ---------------------------------------------------------------- 6. permissions / read-only places


@pytest.mark.slow
def test_6_read_only_places_are_one_line_and_no_mlflow_run(work: Path, cli: object, trained: Path,
                                                           tmp_path: Path) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    _mount(rw, "16m")
    try:
        code, _, err = cli(
            "train",
            *TINY,
            "study=t",
            *paths(
                work,
                **{
                    "paths.experiments_dir": str(rw / "experiments"),
                    "mlflow.tracking_uri": f"sqlite:///{rw / 'mlflow.db'}",
                },
            ),
        )
        assert code == 0, err
        ro.mkdir()  # a read-only view of the same files: the run folder, experiments/, mlflow.db
        subprocess.run(["mount", "--bind", str(rw), str(ro)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        before, runs_before = snapshot(rw), mlflow_runs(rw / "mlflow.db")
        p = paths(work, **{"paths.experiments_dir": str(ro / "experiments"),
                           "mlflow.tracking_uri": f"sqlite:///{ro / 'mlflow.db'}"})
        code, _, err = cli("train", *TINY, "study=t", *p)
        assert code == 2 and "Read-only file system" in one_error_line(err, "train")
        code, _, err = cli("train", *TINY, "study=t", *paths(work, **{
            "mlflow.tracking_uri": f"sqlite:///{ro / 'mlflow.db'}",
            "paths.experiments_dir": str(tmp_path / "exp")}))
        assert code == 2 and "mlflow" in one_error_line(err, "train").lower()
        code, _, err = cli("prepare", *TINY[:3], f"paths.prepared_dir={ro / 'prepared'}")
        assert code == 2 and "Read-only file system" in one_error_line(err, "prepare")
        code, _, err = cli("report", f"paths.reports_dir={ro / 'reports'}", "mlflow.enabled=false",
                           f"paths.experiments_dir={work / 'experiments'}")
        assert code == 2 and "Read-only file system" in one_error_line(err, "report")
        assert snapshot(rw) == before and mlflow_runs(rw / "mlflow.db") == runs_before
    finally:
        _umount(ro)
        _umount(rw)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the permission bits "
                                              "say")
def test_6_unreadable_and_unwritable_folders_as_a_user(
    work: Path, cli: object, trained: Path
) -> None:
    study = trained.parent
    before = snapshot(work / "experiments")
    study.chmod(0o555)
    try:
        code, _, err = cli("train", *TINY, "study=t", *paths(work))
        assert code == 2 and "Permission denied" in one_error_line(err, "train")
    finally:
        study.chmod(0o755)
    assert snapshot(work / "experiments") == before


# ------------------------------------------------------------------ 7. damaged run files


@pytest.mark.parametrize(
    "name,content",
    [
        ("metrics.json", b"\xff\xfe\x00garbage"),
        ("metrics.json", b'{"status": '),
        ("metrics.json", b"[1]"),
        ("config.yaml", b"data: [unclosed\n  - x: {"),
        ("config.yaml", b"just a string\n"),
        ("weights.npz", None),
    ],
)
def test_7_damaged_run_files_stop_evaluate_with_one_line(
    work: Path, cli: object, trained: Path, tmp_path: Path, name: str, content: bytes | None
) -> None:
    import shutil

    exp = tmp_path / "experiments"
    shutil.copytree(trained.parent.parent, exp)
    run = exp / "t" / RUN
    f = run / name
    f.write_bytes(content if content is not None else f.read_bytes()[:100])
    before = snapshot(exp)
    code, _, err = cli(
        "evaluate", *TINY, "study=t", *paths(work, **{"paths.experiments_dir": str(exp)})
    )
    assert code == 2
    assert str(f) in one_error_line(err, "evaluate")
    assert snapshot(exp) == before


def test_7_report_skips_damaged_runs_and_lists_them(work: Path, trained: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from pipeline.reporting.gather import gather_dirs, warn_skipped

    exp = tmp_path / "experiments"
    shutil.copytree(trained, exp / "t" / RUN)
    good = exp / "t" / RUN
    damages = {"h1": ("history.csv", b"iteration,time_s,loss,grad_norm,step_size\n"),
               "h2": ("history.csv", b"\x00\x01garbage\xff"), "m": ("metrics.json", b"\xff\xfe"),
               "c": ("config.yaml", b"a: [b"), "w": ("weights.npz", b"PK\x03\x04trunc"),
               "e": ("evaluation.json", b"{"), "cm": ("confusion.csv", b"1,2\nx,y\n")}
    for tag, (name, content) in damages.items():
        bad = exp / "t" / f"{RUN}-{tag}"
        shutil.copytree(good, bad)
        (bad / name).write_bytes(content)
    runs = gather_dirs(exp)
    assert list(runs.runs.index) == [f"t/{RUN}"]
    assert len(runs.skipped) == len(damages)
    warn_skipped("report", runs.skipped)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(damages)
    assert all(ln.startswith("report: warning: skipped run: ") for ln in lines)
    for tag, (name, _) in damages.items():
        assert any(str(exp / "t" / f"{RUN}-{tag}" / name) in ln for ln in lines), (tag, lines)


# ---------------------------------------------------------------- 9. +keys the schema does not have


@pytest.mark.parametrize("override,want", [("+optimizer.lrr=0.1", "did you mean optimizer.lr"),
                                           ("+foo=1", "foo: unknown config key"),
                                           ("+model.l3=0", "model.l3: unknown config key")])
def test_9_plus_keys_outside_the_schema_are_refused(work: Path, cli: object, trained: Path,
                                                    override: str, want: str) -> None:
    before = snapshot(work)
    code, _, err = cli("train", *TINY, "study=t", override, *paths(work))
    assert code == 2 and want in one_error_line(err, "train")
    assert snapshot(work) == before


# --------------------------------------------------- 10. a diverged run describes its saved iterate


def test_10_diverged_metrics_describe_the_saved_weights(work: Path, cli: object) -> None:
    from pipeline.spec import RunSpec, run_objective
    from pipeline.store.prepared import load_prepared
    from pipeline.store.rundir import read_run_config, read_weights

    code, _, err = cli(
        "train", *TINY, "study=div", "optimizer.lr=1.0e9", "mlflow.enabled=false", *paths(work)
    )
    assert code == 2 and "diverged" in one_error_line(err, "train")
    run = work / "experiments" / "div" / f"{RUN},optimizer.lr=1.0e9"
    metrics = read_run_record(run / "metrics.json")
    assert metrics["status"] == "diverged"
    ds, tr, _ = load_prepared(work / "prepared" / "synth-kappa100-none.npz")
    obj = run_objective(RunSpec.from_config(read_run_config(run / "config.yaml")).model, ds, tr)
    w = read_weights(run / "weights.npz")
    f, g = obj.value_grad(w)
    assert metrics["train_loss"] == pytest.approx(float(f), rel=1e-12)
    assert metrics["grad_norm"] == pytest.approx(float(np.linalg.norm(g)), rel=1e-12)
    assert metrics["train_loss"] < 1.0e3  # not the loss of the step that blew up


# ------------------------------------------------------------------ 11. MLflow failures


@pytest.mark.slow
def test_11_mlflow_failure_while_logging_marks_the_run_failed(
    work: Path, cli: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    real = MlflowClient.log_batch

    def broken(self: MlflowClient, run_id: str, metrics: object = (), **kw: object) -> object:
        if metrics:  # the store breaks after training, when the history is logged
            raise MlflowException("(sqlite3.DatabaseError) database disk image is malformed")
        return real(self, run_id, metrics=metrics, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(MlflowClient, "log_batch", broken)
    db = tmp_path / "mlflow.db"
    code, _, err = cli(
        "train", *TINY, "study=mlf", *paths(work, **{"mlflow.tracking_uri": f"sqlite:///{db}"})
    )
    assert code == 2
    assert "MLflow" in one_error_line(err, "train") and "malformed" in err
    assert [s for _, s, _ in mlflow_runs(db)] == ["FAILED"]


def test_11_unreachable_tracking_server_fails_within_30_s(work: Path, cli: object, trained: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    for var in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = snapshot(work)
    t0 = time.monotonic()
    code, _, err = cli(
        "train",
        *TINY,
        "study=t",
        *paths(work, **{"mlflow.tracking_uri": f"http://127.0.0.1:{port}"}),
    )
    assert time.monotonic() - t0 < 30.0
    assert code == 2 and f"127.0.0.1:{port}" in one_error_line(err, "train")
    assert snapshot(work) == before


# ------------------------------------------------------------------ 12. Hydra-level errors


@pytest.mark.parametrize("prog,override,want", [
    ("train", "optimizer=rmsprop", "no such optimizer config (choose one of adagrad, adam,"),
    ("train", "optimizer=newton_gc", "(did you mean optimizer=newton_cg?"),
    ("train", "model.l2=abc", "model.l2=abc"),
    ("train", "foo=1", "has no key 'foo'"),
    ("train", "experiment=nonexistent", "choose one of claim4_bad_init"),
    ("train", "optimizer.max_iter=1.5", "optimizer.max_iter=1.5"),
    ("train", "data.id=???", "data.id has no value"),
    ("train", "optimizer.lr=(", "cannot parse the override"),
    ("evaluate", "preprocess=nope", "no such preprocess config"),
    ("prepare", "data.n_samples=many", "data.n_samples=many"),
    ("report", "report.tolerances=abc", "report.tolerances"),
])
def test_12_hydra_errors_are_one_line_exit_2(work: Path, cli: object, prog: str, override: str,
                                             want: str) -> None:
    before = snapshot(work)
    extra = (
        [*TINY, "study=t"]
        if prog in ("train", "evaluate")
        else TINY[:3]
        if prog == "prepare"
        else []
    )
    code, _, err = cli(prog, *extra, override, *(paths(work) if prog != "prepare" else
                                                 [f"paths.prepared_dir={work / 'prepared'}"]))
    assert code == 2
    assert want in one_error_line(err, prog)
    assert snapshot(work) == before


# ------------------------------------------------------------------ 13. overflowing inputs


def test_13_inputs_whose_second_moment_overflows_name_data_scale(work: Path, cli: object,
                                                                 mnist_dir: Path) -> None:
    before = snapshot(work)
    code, _, err = cli(
        "prepare",
        "data=mnist",
        "data.scale=1.0e300",
        "data.n_train=100",
        "data.n_test=10",
        f"data.root={mnist_dir}",
        f"paths.prepared_dir={work / 'prepared'}",
    )
    assert code == 2
    line = one_error_line(err, "prepare")
    assert "data.scale" in line and "overflow" in line and "all zero" not in line
    assert snapshot(work) == before
