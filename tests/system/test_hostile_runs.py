"""Hostile environments for runs, sweeps and the report: every signal the OS can deliver ends the
MLflow run (SIGHUP like SIGTERM), a crashed attempt's RUNNING record is closed by the rerun, sweep
workers die with their launcher, launcher/sweeper counts are checked before anything starts, the
report never creates an MLflow store, skips runs whose files have the wrong types or cannot be
read (naming them) and escapes names in report.md. Each case checks that earlier results are
byte-identical afterwards where it applies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from support.project import paths, wait_running
from support.repo_copy import REPO_ROOT, env_for
from support.snapshots import one_error_line, snapshot

from pipeline.config.schemas import as_kwargs, register_configs

TINY = ["data=synthetic_regression", "data.n_samples=300", "data.n_features=5", "model=linear"]
RUN = "synth-kappa100-none-linear-gd,data.n_features=5,data.n_samples=300"
LONG = ["optimizer.max_iter=100000000", "optimizer.tol=0", "progress=false"]
LONG_RUN = f"{RUN},optimizer.max_iter=100000000,optimizer.tol=0"






def mlflow_runs(db: Path) -> list[tuple[str, str, str]]:
    """(run name, status, run id) of every run in an MLflow SQLite store, oldest first."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        rows = con.execute("select name, status, run_uuid from runs order by start_time").fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]




@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder with the tiny data set prepared (in-process)."""
    from pipeline.prepare import prepare

    register_configs()
    work = tmp_path_factory.mktemp("hostile")
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=TINY[:3])
    prepare(as_kwargs(cfg.data), as_kwargs(cfg.preprocess), 0, work / "prepared")
    return work


@pytest.fixture
def cli(stage_cli: Any) -> Any:
    """``cli(prog, *args)``: ``python -m pipeline.<prog> args`` in-process."""
    return lambda prog, *args: stage_cli(
        prog, *args, *(["progress=false"] if prog in ("train", "evaluate") else [])
    )


@pytest.fixture
def trained(work: Path, cli: Any) -> Path:
    """A trained and evaluated run, tracked in ``work/mlflow.db`` (the earlier result)."""
    out = work / "experiments" / "t" / RUN
    if not (out / "evaluation.json").exists():
        for prog in ("train", "evaluate"):
            code, _, err = cli(prog, *TINY, "study=t", *paths(work))
            assert code == 0, err
    return out


def _popen(args: list[str], work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=work,
        env=env_for(REPO_ROOT),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )



def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[-1].split()[1]) == pid:
                    found.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return found


# ------------------------------------------------------------------ signals


@pytest.mark.slow
def test_sighup_ends_a_run_killed_with_one_line(work: Path, trained: Path, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    before = snapshot(work / "experiments")
    proc = _popen(
        [
            "pipeline.train",
            *TINY,
            "study=t",
            *LONG,
            *paths(work, **{"mlflow.tracking_uri": f"sqlite:///{db}"}),
        ],
        work,
    )
    try:
        wait_running(db)
        time.sleep(0.5)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        _kill_group(proc)
    assert proc.returncode == 129, err
    assert "interrupted by SIGHUP" in one_error_line(err, "train")
    assert [s for _, s, _ in mlflow_runs(db)] == ["KILLED"]
    assert snapshot(work / "experiments") == before


def test_signal_handlers_cover_hangup_and_leave_ignored_signals_ignored() -> None:
    from pipeline.cli import entry

    saved = {
        s: signal.getsignal(s)
        for s in (signal.SIGHUP, signal.SIGUSR1, signal.SIGINT, signal.SIGTERM)
    }
    try:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # as nohup leaves SIGHUP
        entry.install_signal_handlers()
        assert signal.getsignal(signal.SIGHUP) is entry._raise_interrupted
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
        with pytest.raises(entry.Interrupted) as ex:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)
        assert ex.value.signum == signal.SIGHUP
        assert "interrupted by SIGHUP" in entry.interrupted_line("train", signal.SIGHUP)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


# ------------------------------------------------------------------ crashed attempts


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_rerun_closes_only_stale_running_records_of_its_name(tmp_path: Path) -> None:
    from pipeline.tracking.mlflow import Tracker
    from pipeline.tracking.owner import owner_tags

    tracker = Tracker(
        {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}", "artifact_root": str(tmp_path / "a")}
    )
    exp = tracker.experiment_id("s")
    me = owner_tags()
    create = tracker.client.create_run
    stale = create(exp, run_name="r", tags={**me, "curvlab.pid": str(_dead_pid())}).info.run_id
    live = create(
        exp, run_name="r", tags={**me, "curvlab.pid": str(os.getppid()), "curvlab.pid_start": ""}
    ).info.run_id
    unknown = create(exp, run_name="r", tags={}).info.run_id  # no owner recorded: left alone
    away = create(
        exp, run_name="r", tags={**me, "curvlab.host": "elsewhere", "curvlab.pid": str(_dead_pid())}
    ).info.run_id
    other = create(exp, run_name="q", tags={**me, "curvlab.pid": str(_dead_pid())}).info.run_id
    new = tracker.start_run("s", "r", {"curvlab.kind": "train"})
    status = {
        rid: tracker.client.get_run(rid).info.status
        for rid in (stale, live, unknown, away, other, new)
    }
    assert status == {
        stale: "KILLED",
        live: "RUNNING",
        unknown: "RUNNING",
        away: "RUNNING",
        other: "RUNNING",
        new: "RUNNING",
    }
    assert tracker.client.get_run(new).data.tags["curvlab.pid"] == str(os.getpid())


@pytest.mark.slow
def test_sigkill_then_rerun_closes_the_crashed_record(
    work: Path, trained: Path, tmp_path: Path
) -> None:
    db = tmp_path / "mlflow.db"
    exp = tmp_path / "experiments"
    shutil.copytree(work / "experiments", exp)
    before = snapshot(exp)
    args = [
        "pipeline.train",
        *TINY,
        "study=t",
        *LONG,
        *paths(
            work, **{"mlflow.tracking_uri": f"sqlite:///{db}", "paths.experiments_dir": str(exp)}
        ),
    ]
    first = _popen(args, work)
    try:
        wait_running(db)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        _kill_group(first)
    assert [s for _, s, _ in mlflow_runs(db)] == ["RUNNING"]  # what a crash leaves
    second = _popen(args, work)
    try:
        t0 = time.monotonic()
        while len(mlflow_runs(db)) < 2 and time.monotonic() - t0 < 180:
            time.sleep(0.2)
        wait_running(db)
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=60)
    finally:
        _kill_group(second)
    assert second.returncode == 143, err
    assert [(n, s) for n, s, _ in mlflow_runs(db)] == [(LONG_RUN, "KILLED"), (LONG_RUN, "KILLED")]
    assert snapshot(exp) == before


@pytest.mark.slow
def test_sweep_workers_exit_when_the_launcher_is_killed(work: Path, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    proc = _popen(
        [
            "pipeline.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *TINY,
            "study=orphans",
            *LONG,
            "optimizer.lr=0.1,0.2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *paths(
                work,
                **{
                    "mlflow.tracking_uri": f"sqlite:///{db}",
                    "paths.experiments_dir": str(tmp_path / "experiments"),
                },
            ),
        ],
        work,
    )
    try:
        wait_running(db, 3, timeout=240)  # the parent and both jobs
        workers = [p for p in _children(proc.pid) if _alive(p)]
        assert workers
        proc.send_signal(signal.SIGKILL)  # the launcher only, as the OOM killer would
        proc.wait(timeout=30)  # not communicate(): the workers still hold its output pipes
        t0 = time.monotonic()
        while any(_alive(p) for p in workers) and time.monotonic() - t0 < 120:
            time.sleep(0.5)
        left = [p for p in workers if _alive(p)]
    finally:
        _kill_group(proc)
    assert not left, f"workers {left} outlived their launcher"
    runs = mlflow_runs(db)
    assert len(runs) == 3 and {s for _, s, _ in runs} == {"KILLED"}, runs


# ------------------------------------------------------------------ launcher and sweeper settings


@pytest.mark.parametrize(
    "setting,want",
    [
        (
            ["hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
            "hydra.launcher.n_jobs=0 is not allowed",
        ),
        (
            ["experiment=hw3_sgd", "hydra.sweeper.n_trials=0"],
            "hydra.sweeper.n_trials=0 is not allowed",
        ),
        (
            ["experiment=hw3_sgd", "hydra.sweeper.n_jobs=-1"],
            "hydra.sweeper.n_jobs=-1 is not allowed",
        ),
    ],
)
def test_sweep_counts_are_refused_before_anything_starts(
    work: Path, trained: Path, cli: Any, tmp_path: Path, setting: list[str], want: str
) -> None:
    before = snapshot(work)
    db = tmp_path / "mlflow.db"
    sweep = tmp_path / "sweep"
    code, _, err = cli(
        "train",
        "-m",
        *setting,
        *TINY,
        "study=sw",
        "optimizer.lr=0.1,0.2",
        f"hydra.sweep.dir={sweep}",
        *paths(work, **{"mlflow.tracking_uri": f"sqlite:///{db}"}),
    )
    assert code == 2 and want in one_error_line(err, "train")
    assert mlflow_runs(db) == [] and not sweep.exists()
    assert snapshot(work) == before


def test_sweep_settings_check() -> None:
    from omegaconf import OmegaConf

    from pipeline.config.sweeps import check_sweep_settings
    from pipeline.core.errors import ConfigError

    for ok in (
        {"launcher": {"n_jobs": -1}},
        {"launcher": {"n_jobs": None}},
        {"sweeper": {"n_trials": 1}},
        {},
    ):
        check_sweep_settings(OmegaConf.create(ok))
    for bad in (
        {"launcher": {"n_jobs": 0}},
        {"launcher": {"n_jobs": 1.5}},
        {"sweeper": {"n_trials": -3}},
        {"sweeper": {"n_trials": True}},
    ):
        with pytest.raises(ConfigError, match=r"^hydra\.(launcher|sweeper)\.n_"):
            check_sweep_settings(OmegaConf.create(bad))


# ------------------------------------------------------------------ the report's MLflow source


def test_report_never_creates_an_mlflow_store(
    work: Path, trained: Path, cli: Any, tmp_path: Path
) -> None:
    before = snapshot(work)
    typo = tmp_path / "mlfow.db"
    code, _, err = cli(
        "report",
        "report.source=mlflow",
        "report.experiment=t",
        *paths(
            work,
            **{
                "mlflow.tracking_uri": f"sqlite:///{typo}",
                "paths.reports_dir": str(tmp_path / "r"),
            },
        ),
    )
    assert code == 2 and "does not exist" in one_error_line(err, "report")
    assert not typo.exists() and not (tmp_path / "r").exists()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes((work / "mlflow.db").read_bytes()[:3000])
    code, _, err = cli(
        "report",
        "report.source=mlflow",
        "report.experiment=t",
        *paths(
            work,
            **{
                "mlflow.tracking_uri": f"sqlite:///{truncated}",
                "paths.reports_dir": str(tmp_path / "r"),
            },
        ),
    )
    assert code == 2 and "not a readable MLflow database" in one_error_line(err, "report")
    assert truncated.read_bytes() == (work / "mlflow.db").read_bytes()[:3000]
    assert snapshot(work) == before


def test_report_uses_the_writers_http_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tracking.mlflow import reading_store

    for k in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(k, raising=False)
    uri = reading_store(
        {"tracking_uri": "http://127.0.0.1:9", "http_timeout_s": 3, "http_max_retries": 1}
    )
    assert uri == "http://127.0.0.1:9"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"


# ------------------------------------------------------------------ one bad run, unreadable folders


def test_a_run_with_badly_typed_files_is_skipped_and_named(
    work: Path, trained: Path, cli: Any, tmp_path: Path
) -> None:
    exp = tmp_path / "experiments"
    shutil.copytree(work / "experiments", exp)
    bad = exp / "t" / f"{RUN}-typed"
    shutil.copytree(trained, bad)
    metrics = json.loads((bad / "metrics.json").read_text())
    (bad / "metrics.json").write_text(json.dumps({**metrics, "model": ["linear"]}))
    before = snapshot(exp)
    code, _, err = cli(
        "report",
        *paths(
            work, **{"paths.experiments_dir": str(exp), "paths.reports_dir": str(tmp_path / "r")}
        ),
        "mlflow.enabled=false",
    )
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and str(bad / "metrics.json") in warnings[0], err
    assert "'model' is ['linear'], not a text" in warnings[0]
    assert snapshot(exp) == before


def test_an_unreadable_run_folder_is_named(
    work: Path, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.reporting import gather

    exp = tmp_path / "experiments"
    shutil.copytree(work / "experiments", exp)
    locked = exp / "t" / f"{RUN}-locked"
    shutil.copytree(trained, locked)
    real = os.listdir

    def listdir(path: Any) -> list[str]:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(gather.os, "listdir", listdir)  # as mode 000 does for a non-root user
    runs = gather.gather_dirs(exp)
    assert list(runs.runs.index) == [f"t/{RUN}"]
    assert [w for _, w in runs.skipped] == [
        f"{locked}: cannot read this run folder; make it readable (chmod u+rx)"
    ]


# ------------------------------------------------------------------ escaping


def test_report_md_escapes_names_like_index_html() -> None:
    import pandas as pd

    from pipeline.reporting.render import Section, to_html, to_markdown

    name = "<img src=x onerror=alert(1)>"
    sec = Section("runs", f"Runs of {name}", f"The run {name} and `code <kept>`.")
    sec.text(f"text {name}")
    sec.note(f"note {name}")
    sec.table(pd.DataFrame({"run": [name], "loss": [1.0]}), "runs.csv", f"table {name}")
    md = to_markdown(f"Report {name}", f"sub {name}", [sec])
    page = to_html(f"Report {name}", f"sub {name}", [sec])
    assert "<img" not in md and "<img" not in page
    assert md.count("&lt;img src=x onerror=alert(1)&gt;") == 8
    assert "`code <kept>`" in md  # code spans are literal in markdown
