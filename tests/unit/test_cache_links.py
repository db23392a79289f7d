"""Outputs that are links into DVC's cache (``cache.type`` hardlink / symlink, read-only): the
atomic writer replaces the link with a new file and never writes through it into the cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from pipeline.store.writer import check_writable, update_dir, write_group, write_npz, write_text


def _cache_file(tmp_path: Path, text: str) -> Path:
    """A cached object as DVC leaves it: read-only (0444)."""
    cache = tmp_path / "cache" / "ab" / "cdef"
    cache.parent.mkdir(parents=True)
    cache.write_text(text)
    cache.chmod(0o444)
    return cache


def _link(kind: str, cache: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "hardlink":
        os.link(cache, out)
    else:
        out.symlink_to(cache)


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_writing_an_output_replaces_its_cache_link(tmp_path: Path, kind: str) -> None:
    cache = _cache_file(tmp_path, "cached bytes\n")
    out = tmp_path / "work" / "data" / "facts.json"
    _link(kind, cache, out)
    check_writable(out)  # read-only link, writable folder: no error
    write_text(out, "new bytes\n")
    assert cache.read_text() == "cached bytes\n" and stat.S_IMODE(cache.stat().st_mode) == 0o444
    assert not out.is_symlink() and out.read_text() == "new bytes\n"
    assert os.stat(out).st_ino != os.stat(cache).st_ino and os.stat(cache).st_nlink == 1


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_a_group_of_linked_outputs_is_replaced_as_a_pair(tmp_path: Path, kind: str) -> None:
    cache = _cache_file(tmp_path, "old pair\n")
    npz, js = tmp_path / "p" / "a.npz", tmp_path / "p" / "a.json"
    _link(kind, cache, npz)
    _link(kind, cache, js)
    arrays = {"x": np.arange(4)}
    write_group({npz: lambda t: write_npz(t, arrays), js: lambda t: t.write_text("{}\n")})
    assert cache.read_text() == "old pair\n"
    with np.load(npz, allow_pickle=False) as z:
        assert np.array_equal(z["x"], arrays["x"])
    assert js.read_text() == "{}\n" and not npz.is_symlink() and not js.is_symlink()


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_a_run_folder_of_cache_links_is_swapped_without_touching_the_cache(
    tmp_path: Path, kind: str
) -> None:
    kept, old = _cache_file(tmp_path, "metrics\n"), tmp_path / "cache" / "old"
    old.write_text("weights v1\n")
    old.chmod(0o444)
    run = tmp_path / "experiments" / "run"
    _link(kind, kept, run / "metrics.json")
    _link(kind, old, run / "weights.txt")
    update_dir(run, {"weights.txt": lambda p: p.write_text("weights v2\n")})
    assert old.read_text() == "weights v1\n" and kept.read_text() == "metrics\n"
    assert (run / "weights.txt").read_text() == "weights v2\n"
    assert (run / "metrics.json").read_text() == "metrics\n"  # carried over, still the cached bytes
