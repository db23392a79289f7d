"""A hostile file system and concurrent writers: each fault ends in one line, earlier results kept.

One case per class: a mount point in a swapped folder, the replaced folder's mode/owner/ACL, a FIFO
in a run folder or reports/, the temporaries of a SIGKILLed writer, reserved folder names, an
evaluation of other weights, and two writers of one run folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.repo_copy import REPO_ROOT, env_for
from support.snapshots import snapshot

from pipeline.core.errors import DataError
from pipeline.store import locks, tree, writer
from pipeline.store.reading import read_file

SYNTH = ["data=synthetic_regression", "data.n_samples=200", "data.n_features=4", "model=linear",
         "preprocess=none", "optimizer=newton", "study=t", "progress=false", "mlflow.enabled=false"]
RUN = "synth-kappa100-none-linear-newton,data.n_features=4,data.n_samples=200"


def paths(tmp: Path) -> list[str]:
    return [f"paths.prepared_dir={tmp / 'prepared'}", f"paths.experiments_dir={tmp / 'exp'}"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic data set and one trained, evaluated run (via the CLIs)."""
    tmp = tmp_path_factory.mktemp("hostile")
    for prog in ("prepare", "train", "evaluate"):
        args = [a for a in [*SYNTH, *paths(tmp)] if prog != "prepare" or not a.startswith(
            ("optimizer", "study", "mlflow", "progress", "paths.exp"))]
        proc = cli(prog, args, tmp)
        assert proc.returncode == 0, proc.stderr
    return tmp


def cli(prog: str, args: list[str], cwd: Path,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", f"pipeline.{prog}", *args], cwd=cwd,
                          env=env_for(REPO_ROOT), text=True, capture_output=True, timeout=timeout)


def report_cli(tmp: Path, reports: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline.report`` over the runs of ``tmp`` into ``reports`` (no MLflow)."""
    return cli("report", [f"paths.experiments_dir={tmp / 'exp'}", f"paths.reports_dir={reports}",
                          f"paths.reference_dir={tmp / 'ref'}", f"paths.analytic_dir={tmp / 'an'}"],
               tmp, timeout=90)


def run_folder(tmp: Path) -> Path:
    return tmp / "exp" / "t" / RUN


# ------------------------------------------------------------------ mount points


@contextlib.contextmanager
def mounted(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tmpfs at ``path`` (as root); else a simulated mount point (``os.path.ismount`` patched)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(path)], capture_output=True)
    real = mount.returncode == 0
    if not real:
        ismount = os.path.ismount
        monkeypatch.setattr(tree.os.path, "ismount", lambda p: Path(p) == path or ismount(p))
    try:
        yield "tmpfs" if real else "simulated"
    finally:
        if real:
            subprocess.run(["umount", str(path)], check=True)


def test_a_swap_never_crosses_a_mount_point(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "index.html").write_text("old report")
    with mounted(reports / "public", monkeypatch) as how:
        (reports / "public" / "page.html").write_text("x")
        before = snapshot(reports)
        if how == "tmpfs":  # the stage itself (a simulated mount point is not seen by a child)
            proc = report_cli(tmp_path, reports)
            assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert f"{reports / 'public'} is a mount point" in proc.stderr
            assert snapshot(reports) == before
        new = {"index.html": lambda p: p.write_text("new")}
        for attempt in (lambda: writer.check_writable(reports),
                        lambda: writer.update_dir(reports, new)):
            with pytest.raises(tree.TreeError) as err:
                attempt()
            msg = str(err.value)
            assert "\n" not in msg and f"{reports / 'public'} is a mount point" in msg, msg
            assert snapshot(reports) == before  # the mounted file included
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no sibling left
    with mounted(reports, monkeypatch):  # the folder itself a mount point
        (reports / "page.html").write_text("y")
        with pytest.raises(tree.TreeError, match="it is a mount point"):
            writer.check_writable(reports)
        assert (reports / "page.html").read_text() == "y"


def test_remove_tree_leaves_a_mounted_file_system_alone(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "old"
    (old / "sub").mkdir(parents=True)
    (old / "a").write_text("a")
    with mounted(old / "mnt", monkeypatch) as how:
        (old / "mnt" / "keep").write_text("k")
        tree.remove_tree(old)
        assert (old / "mnt" / "keep").read_text() == "k", how
        assert not (old / "a").exists() and not (old / "sub").exists()


# ------------------------------------------------------------------ mode, owner, ACL


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A POSIX ACL as the kernel stores it in ``system.posix_acl_access`` (version 2)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_the_swap_keeps_mode_owner_and_acl(tmp_path: Path) -> None:
    dest = tmp_path / "reports"
    dest.mkdir()
    (dest / "keep.txt").write_text("kept")
    os.chmod(dest, 0o700)
    anyone = 0xFFFFFFFF
    acl = _acl([(0x01, 7, anyone), (0x02, 5, 4242), (0x04, 0, anyone), (0x10, 5, anyone),
                (0x20, 0, anyone)])  # user::rwx user:4242:r-x group::--- mask::r-x other::---
    xattrs = {"user.curvlab": b"tag"}
    for name, value in [("system.posix_acl_access", acl), *xattrs.items()]:
        with contextlib.suppress(OSError):  # a file system without ACLs / user xattrs: mode only
            os.setxattr(dest, name, value)
            xattrs[name] = os.getxattr(dest, name)
    before = {n: os.getxattr(dest, n) for n in os.listxattr(dest)}
    mode, owner = stat.S_IMODE(dest.stat().st_mode), (dest.stat().st_uid, dest.stat().st_gid)
    writer.update_dir(dest, {"new.txt": lambda p: p.write_text("new")})
    st = dest.stat()
    assert stat.S_IMODE(st.st_mode) == mode and (st.st_uid, st.st_gid) == owner
    assert {n: os.getxattr(dest, n) for n in os.listxattr(dest)} == before
    assert (dest / "keep.txt").read_text() == "kept" and (dest / "new.txt").read_text() == "new"


# ------------------------------------------------------------------ FIFOs, sockets, devices


def test_a_fifo_in_a_run_folder_or_reports_never_hangs_a_stage(project: Path) -> None:
    run = run_folder(project)
    fifo = run / "pipe"
    os.mkfifo(fifo)
    try:
        before = snapshot(run)
        t0 = time.monotonic()
        proc = cli("evaluate", [*SYNTH, *paths(project)], project, timeout=90)
        assert time.monotonic() - t0 < 90
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert f"{fifo} is a FIFO" in proc.stderr
        assert snapshot(run) == before
    finally:
        fifo.unlink()
    reports = project / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "index.html").write_text("old report")
    os.mkfifo(reports / "pipe")
    before = snapshot(reports)
    proc = report_cli(project, reports)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{reports / 'pipe'} is a FIFO, not a regular file" in proc.stderr
    assert snapshot(reports) == before and stat.S_ISFIFO((reports / "pipe").lstat().st_mode)
    with pytest.raises(DataError, match="is a FIFO, not a regular file"):
        read_file(reports / "pipe", lambda p: p.read_bytes(), "unreadable", "fix")  # never opened


# ------------------------------------------------------------------ stale temporaries


def test_a_sigkilled_writer_leaves_nothing_the_next_stage_keeps(project: Path) -> None:
    target = project / "prepared" / "victim.npz"
    code = ("import sys,time; from pipeline.store import writer\n"
            "def w(t):\n"
            "    t.write_bytes(b'x' * 4096); print('ready', flush=True); time.sleep(60)\n"
            f"writer.write_atomic({str(target)!r}, w)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env_for(REPO_ROOT), text=True,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stale = [p for p in target.parent.iterdir() if p.name.startswith(".victim.npz.")]
    assert len(stale) == 1 and stale[0].name.startswith(f".victim.npz.{proc.pid}-"), stale
    live = target.parent / f".other.npz.{os.getpid()}-abc.tmp"  # a writer still at work
    live.write_bytes(b"busy")
    runs = snapshot(project / "exp")
    before = snapshot(project / "prepared")
    del before[str(stale[0].relative_to(project / "prepared"))]
    args = [a for a in [*SYNTH, *paths(project)]
            if a.startswith(("data", "model", "preprocess", "paths.prep"))]
    out = cli("prepare", args, project)
    assert out.returncode == 0, out.stderr
    assert not stale[0].exists() and live.exists()
    after = snapshot(project / "prepared")
    for name in ("synth-kappa100-none.json", "synth-kappa100-none.npz"):  # rewritten as a pair
        before.pop(name), after.pop(name)  # (the facts hold the prepare's seconds)
    assert after == before and snapshot(project / "exp") == runs
    live.unlink()


# ------------------------------------------------------------------ reserved folders


@pytest.mark.parametrize("args, key", [
    (["study=analytic"], "study=analytic"),
    (["study=reference"], "study=reference"),
    (["paths.experiments_dir=experiments/analytic"], "paths.experiments_dir"),
    (["paths.prepared_dir=experiments/reference/p"], "paths.prepared_dir"),
])
def test_reserved_folders_are_refused_at_the_config_boundary(project: Path, args: list[str],
                                                             key: str) -> None:
    before = snapshot(project)
    proc = cli("train", [*[a for a in SYNTH if a != "study=t"], *paths(project), *args], project)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert key in proc.stderr and ("reserved" in proc.stderr or "owns" in proc.stderr)
    assert snapshot(project) == before and not (project / "experiments").exists()


def test_the_reserved_list_covers_every_folder_a_stage_owns_whole() -> None:
    import yaml

    from pipeline.config.paths import RESERVED_DIRS

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    writers_of_runs = ("pipeline.train", "pipeline.evaluate")
    owned = {str(o).split("/")[1] for s in stages.values()
             if not any(w in str(s.get("cmd")) for w in writers_of_runs)
             for o in s.get("outs", []) if str(o).startswith("experiments/")}
    assert owned == set(RESERVED_DIRS)


# ------------------------------------------------------------------ evaluations bound to weights


def test_an_evaluation_of_other_weights_is_skipped_by_the_report(project: Path) -> None:
    from pipeline.reporting.gather import gather_dirs

    run = run_folder(project)
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["weights_sha256"] == hashlib.sha256((run / "weights.npz").read_bytes()).hexdigest()
    other = run.with_name(RUN + ",copy")
    files = {n: (run / n).read_bytes() for n in os.listdir(run)}
    writer.update_dir(other, {n: (lambda p, b=b: p.write_bytes(b)) for n, b in files.items()})
    with np.load(other / "weights.npz") as z:  # a retrain's weights beside the old evaluation
        arrays = {k: z[k] + 1.0 for k in z.files}
    writer.write_npz(other / "weights.npz", arrays)
    before = snapshot(project / "exp")
    runs = gather_dirs(project / "exp")
    assert list(runs.runs.index) == [f"t/{RUN}"]
    [(rid, why)] = runs.skipped
    assert rid == f"t/{other.name}" and "scored other weights" in why and "\n" not in why
    assert snapshot(project / "exp") == before
    writer.remove_tree(other)


# ------------------------------------------------------------------ one writer per run folder


def test_writers_of_one_run_folder_are_serialized_by_a_lock(
        project: Path, stage_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_folder(project)
    code = ("import time; from pathlib import Path; from pipeline.store.locks import folder_lock\n"
            f"with folder_lock(Path({str(run)!r}), 'holder'):\n"
            "    print('locked', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], env=env_for(REPO_ROOT), text=True,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        monkeypatch.setattr(locks, "LOCK_TIMEOUT_S", 0.5)
        code, _, err = stage_cli("evaluate", *SYNTH, *paths(project))
        lines = err.strip().splitlines()
        waiting = f"evaluate: waiting for pid {holder.pid} to finish writing {run}"
        assert code == 2 and lines[0] == waiting
        assert len(lines) == 2 and f"being written by pid {holder.pid}" in lines[1], err
        assert snapshot(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops a dead holder's lock
        holder.wait()
    with locks.folder_lock(run, "evaluate", timeout_s=5):
        assert locks.lock_path(run).read_text().strip() == str(os.getpid())
    assert not locks.lock_path(run).exists()  # no lock file outlives its writer
    proc = cli("evaluate", [*SYNTH, *paths(project)], project)
    assert proc.returncode == 0, proc.stderr
