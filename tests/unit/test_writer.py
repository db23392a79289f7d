"""pipeline.store.writer: files and folders change as a whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from support.snapshots import snapshot

from pipeline.store import writer
from pipeline.store.writer import (
    WriteError,
    replace_dir,
    update_dir,
    write_group,
    write_json,
    write_npz,
)


def _old_run(d: Path) -> dict[str, bytes]:
    d.mkdir(parents=True)
    (d / "weights.npz").write_bytes(b"old weights")
    (d / "metrics.json").write_text('{"old": true}\n')
    (d / "evaluation.json").write_text('{"acc": 0.9}\n')
    (d / "sub").mkdir()
    (d / "sub" / "x.txt").write_text("x")
    return snapshot(d)


def test_write_json_is_strict_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "a" / "m.json"
    write_json(p, {"x": float("nan"), "y": np.float32(1.5), "z": np.arange(2)})
    assert json.loads(p.read_text()) == {"x": None, "y": 1.5, "z": [0, 1]}
    assert [q.name for q in p.parent.iterdir()] == ["m.json"]
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~writer._UMASK)


def test_failed_file_write_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "w.npz"
    p.write_bytes(b"old")

    def boom(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError, match=r"cannot write .*w\.npz: No space left on device.*free "
                                         r"some disk"):
        writer.write_atomic(p, boom)
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["w.npz"]


def test_write_group_replaces_nothing_unless_all_were_written(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "a.json"
    a.write_bytes(b"A0")
    b.write_bytes(b"B0")

    def fail(tmp: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError):
        write_group({a: lambda t: t.write_bytes(b"A1"), b: fail})
    assert (a.read_bytes(), b.read_bytes()) == (b"A0", b"B0")
    write_group({a: lambda t: t.write_bytes(b"A1"), b: lambda t: t.write_bytes(b"B1")})
    assert (a.read_bytes(), b.read_bytes()) == (b"A1", b"B1")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.json", "a.npz"]


@pytest.mark.parametrize(
    "err", [OSError(28, "No space left on device"), KeyboardInterrupt(), ValueError("x")]
)
def test_failed_folder_swap_leaves_the_old_folder_byte_identical(
    tmp_path: Path, err: BaseException
) -> None:
    run = tmp_path / "study" / "run"
    before = _old_run(run)
    with pytest.raises(type(err)), replace_dir(run) as new:
        write_npz(new / "weights.npz", {"w": np.ones(3)})
        (new / "metrics.json").write_text("{}")
        raise err
    assert snapshot(run) == before
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]  # no temporary sibling left


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_folder_swap_replaces_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         atomic_exchange: bool) -> None:
    if not atomic_exchange:  # a file system without renameat2(RENAME_EXCHANGE): two renames
        monkeypatch.setattr(writer, "exchange", lambda a, b: False)
    run = tmp_path / "run"
    _old_run(run)
    with replace_dir(run) as new:
        (new / "metrics.json").write_text('{"new": true}\n')
    assert snapshot(run) == {"metrics.json": b'{"new": true}\n'}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_folder_swap_creates_a_missing_folder(tmp_path: Path) -> None:
    with replace_dir(tmp_path / "a" / "b") as new:
        (new / "f").write_text("1")
    assert snapshot(tmp_path / "a") == {"b/f": b"1"}


def test_update_dir_carries_the_rest_and_drops_stale_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    before = _old_run(run)
    (run / "confusion.csv").write_text("stale")
    update_dir(
        run, {"evaluation.json": lambda p: p.write_text('{"acc": 1.0}\n')}, drop=("confusion.csv",)
    )
    after = snapshot(run)
    assert after["evaluation.json"] == b'{"acc": 1.0}\n'
    assert "confusion.csv" not in after
    assert {k: v for k, v in after.items() if k != "evaluation.json"} == {
        k: v for k, v in before.items() if k != "evaluation.json"}


def test_stale_siblings_of_a_killed_process_are_cleaned(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _old_run(run)
    dead = 2**22 + 12345  # above pid_max on typical systems: no such process
    (tmp_path / f".run.new-{dead}-abc").mkdir()
    alive = tmp_path / f".run.new-{os.getpid()}-abc"
    alive.mkdir()
    with replace_dir(run) as new:
        (new / "f").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "run"])


def test_a_swap_cut_between_its_renames_is_restored(tmp_path: Path) -> None:
    dead = 2**22 + 12345
    old = tmp_path / f".run.old-{dead}-abc"
    before = _old_run(old)
    writer.clean_stale(tmp_path / "run")
    assert snapshot(tmp_path / "run") == before


def _tmpfs(path: Path, size: str, ro: bool = False) -> None:
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (disk-full / read-only file system)")
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)]).returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")


def _umount(path: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_leaves_the_old_run_folder_intact(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    _tmpfs(mnt, "256k")
    try:
        run = mnt / "run"
        before = _old_run(run)
        with pytest.raises(WriteError, match="No space left on device"), replace_dir(run) as new:
            write_npz(new / "weights.npz", {"w": np.zeros(200_000)})  # 1.6 MB > 256 kB
        assert snapshot(run) == before
        assert sorted(p.name for p in mnt.iterdir()) == ["run"]
    finally:
        _umount(mnt)


def test_read_only_file_system_is_one_error(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    _tmpfs(mnt, "64k", ro=True)
    try:
        with pytest.raises(WriteError, match=r"Read-only file system.*writable folder"), \
                replace_dir(mnt / "run") as new:
            (new / "f").write_text("1")
    finally:
        _umount(mnt)
