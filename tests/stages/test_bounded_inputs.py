"""Bounded reads and bad data: every data file is read no further than its IDX header declares and
never beyond ``limits.memory_gb``; downloads stop at that size; allocation estimates are checked
before the work; bad data is refused at prepare time with one line; a loss that ends far above its
start is ``diverged``. Each case fails fast, with bounded memory, and leaves earlier results
byte-identical."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.repo_copy import REPO_ROOT

from pipeline.core.errors import DataError
from pipeline.core.solvers import minimize
from pipeline.core.solvers.loop import ENDED_ABOVE
from pipeline.data import catalog, idxsets
from pipeline.data.idx import parse_idx, read_idx

MiB = 1 << 20
GiB = 1 << 30


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path → bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def one_error_line(err: str, prog: str) -> str:
    lines = [
        ln for ln in err.splitlines() if ln.strip() and " INFO " not in ln and "[HYDRA]" not in ln
    ]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ") and "Traceback" not in err, err
    return lines[0]


def idx_header(shape: tuple[int, ...], type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return idx_header(a.shape) + a.tobytes()


def bomb(head: bytes, n_mib: int) -> bytes:
    """A gzip file of ``head`` followed by ``n_mib`` MiB of zeros, built from one compressed MiB
    repeated (full flushes make each block independent); about 1 KiB per MiB. Its CRC is bogus:
    a reader must stop long before it."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        + first
        + block * n_mib
        + c.flush()
        + (0).to_bytes(4, "little")
        + ((len(head) + n_mib * MiB) % 2**32).to_bytes(4, "little")
    )


def bounded(fn: Callable[[], Any], max_mib: float = 64, max_s: float = 20) -> BaseException:
    """Run ``fn``, which must raise, with its Python allocations under ``max_mib``, fast."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(Exception) as ei:  # noqa: PT011 - the caller checks what it is
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < max_mib * MiB, f"peak {peak / MiB:.1f} MiB"
    assert time.perf_counter() - t0 < max_s
    return ei.value


# ------------------------------------------------------------------ IDX reads


def test_the_bomb_helper_is_what_it_says() -> None:
    data = gzip.GzipFile(fileobj=io.BytesIO(bomb(b"abc", 3))).read(3 + 3 * MiB)  # bogus CRC after
    assert data == b"abc" + bytes(3 * MiB)


@pytest.mark.parametrize(
    "head",
    [idx_header((10,)), idx_header((65536, 65536)), b""],
    ids=["small-header-then-zeros", "header-of-4GiB", "zeros-only"],
)
def test_a_gzip_bomb_stops_at_its_header_with_bounded_memory(tmp_path: Path, head: bytes) -> None:
    """~4 MB of gzip that expands to 4 GiB: refused after at most the declared size + 1 byte."""
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    p.write_bytes(bomb(head, 4096))
    assert p.stat().st_size < 8 * MiB
    err = bounded(lambda: read_idx(p))
    msg = str(err)
    assert isinstance(err, DataError) and "\n" not in msg and str(p) in msg
    assert {
        b"": "bad IDX magic",
        idx_header((10,)): "trailing bytes",
        idx_header((65536, 65536)): "limits.memory_gb",
    }[head] in msg


@pytest.mark.parametrize("declared", [(16,), (2**31, 3)], ids=["header-smaller", "header-6GiB"])
def test_a_sparse_huge_file_is_refused_from_its_size_without_reading_it(
    tmp_path: Path, declared: tuple[int, ...]
) -> None:
    p = tmp_path / "train-labels-idx1-ubyte"
    with open(p, "wb") as fh:
        fh.write(idx_header(declared))
        fh.truncate(5 * GiB)  # sparse: no disk used
    msg = str(bounded(lambda: read_idx(p), max_mib=4, max_s=5))
    assert str(p) in msg and (
        "has trailing bytes" in msg if declared == (16,) else "limits.memory_gb" in msg
    )


def test_an_idx_header_whose_dimensions_multiply_to_2_64_is_refused(tmp_path: Path) -> None:
    head = idx_header((65536, 65536, 65536, 65536))  # ∏ = 2**64: 0 in int64 arithmetic
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(head)
    msg = str(bounded(lambda: read_idx(p), max_mib=4, max_s=5))
    assert str(2**64 + len(head)) in msg and "limits.memory_gb" in msg
    with pytest.raises(DataError, match="truncated"):
        parse_idx(head)  # in memory: the header needs 2**64 more bytes than it has


# ------------------------------------------------------------------ downloads


def endless(kind: str) -> Iterator[bytes]:
    """An endless body: gzip'd IDX header of 60000 labels, then gzip'd zeros; or random bytes."""
    if kind == "garbage":
        rng = np.random.default_rng(0)
        while True:
            yield rng.bytes(1 << 16)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + c.compress(idx_header((60000,)))
    yield c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    while True:
        yield block


class _Mirror(http.server.BaseHTTPRequestHandler):
    """/endless/<f>.gz: a valid IDX labels header for 60000 labels, then gzip'd zeros forever;
    /garbage/<f>.gz: random bytes forever; /huge/<f>.gz: announces 100 GiB, sends /endless."""

    sent: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        kind = self.path.split("/")[1]
        self.send_response(200)
        if kind == "huge":
            self.send_header("Content-Length", str(100 * GiB))
        self.end_headers()
        sent = 0
        try:
            for chunk in endless(kind):
                if sent > 256 * MiB:  # a client that never stops: the test fails on the count
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            self.sent[kind] = sent

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("CURVLAB_OFFLINE", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["endless", "garbage", "huge"])
def test_a_download_stops_at_the_size_its_header_declares(
    tmp_path: Path, mirror: str, kind: str
) -> None:
    spec = idxsets.IdxSpec.from_config(catalog.data_config("mnist"))
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "train-images-idx3-ubyte.gz").write_bytes(b"an earlier download")
    before = snapshot(dest)
    msg = str(
        bounded(lambda: idxsets.download(spec, dest, mirrors=(f"{mirror}/{kind}/",)), max_s=30)
    )
    assert "could not download train-labels-idx1-ubyte.gz" in msg and "\n" not in msg
    want = {"endless": "sent more than", "garbage": "bad IDX magic", "huge": "announces"}[kind]
    assert want in msg, msg
    assert snapshot(dest) == before  # no partial file left, the earlier one untouched
    time.sleep(0.2)
    # the client hung up at the cap: 60008 bytes + gzip slack, plus what the socket buffers held
    assert _Mirror.sent.get(kind, 0) < 16 * MiB


# ------------------------------------------------------------------ allocation estimates


@pytest.fixture
def earlier(tmp_path: Path) -> Path:
    """A prepared folder holding an earlier result (tiny synthetic least squares)."""
    from pipeline.prepare import prepare

    prepare(
        {"name": "synthetic_regression", "id": "synth", "n_samples": 300, "n_features": 5},
        {"name": "none"},
        0,
        tmp_path / "prepared",
    )
    return tmp_path / "prepared"


def test_synthetic_data_beyond_the_memory_budget_is_refused_up_front(
    earlier: Path, stage_cli: Any
) -> None:
    before = snapshot(earlier)
    t0 = time.perf_counter()
    code, _, err = stage_cli(
        "prepare",
        "data=synthetic_regression",
        "data.n_features=50000",
        "data.n_samples=100000",
        f"paths.prepared_dir={earlier}",
    )
    line = one_error_line(err, "prepare")
    assert code == 2 and "data.n_features=50000" in line and "limits.memory_gb=4" in line, line
    assert time.perf_counter() - t0 < 30 and snapshot(earlier) == before
    # the same data set under a budget that fits: prepared
    code, _, err = stage_cli(
        "prepare",
        "data=synthetic_regression",
        "data.n_features=50",
        "limits.memory_gb=0.5",
        f"paths.prepared_dir={earlier}",
    )
    assert code == 0, err
    code, _, err = stage_cli(
        "prepare",
        "data=synthetic_regression",
        "limits.memory_gb=-1",
        f"paths.prepared_dir={earlier}",
    )
    assert code == 2 and "limits.memory_gb=-1" in one_error_line(err, "prepare")


def test_an_analytic_study_beyond_the_memory_budget_is_refused_before_any_study(
    tmp_path: Path, stage_cli: Any
) -> None:
    out = tmp_path / "analytic"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier result")
    code, _, err = stage_cli(
        "analytic",
        "analytic.kappa_sweep.data.n_features=20000",
        f"paths.analytic_dir={out}",
        "mlflow.enabled=false",
    )
    line = one_error_line(err, "analytic")
    assert code == 2 and "analytic.kappa_sweep" in line and "limits.memory_gb" in line
    assert snapshot(out) == {"earlier.txt": b"an earlier result"}


# ------------------------------------------------------------------ bad data at prepare time


def tiny_set(folder: Path, n_train: int = 30, side: int = 3, n_labels: int = 3) -> dict[str, str]:
    """Four gzip'd IDX files of n_train / 12 images side × side, labels 0..n_labels-1; digests."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for split, n in (("train", n_train), ("test", 12)):
        arrays = {
            "images": rng.integers(0, 256, (n, side, side)),
            "labels": np.arange(n) % n_labels,
        }
        for kind, a in arrays.items():
            payload = idx_bytes(a)
            (folder / f"tiny-{split}_{kind}.gz").write_bytes(gzip.compress(payload))
            digests[f"{split}_{kind}"] = hashlib.sha256(payload).hexdigest()
    return digests


def tiny_yaml(conf: Path, digests: dict[str, str], root: Path, names: list[str]) -> None:
    files = "\n".join(f"  {k}: {{name: tiny-{k}, sha256: {d}}}" for k, d in digests.items())
    (conf / "data").mkdir(parents=True, exist_ok=True)
    (conf / "data" / "tiny.yaml").write_text(
        f"name: tiny\nid: tiny\nformat: idx\ntitle: Tiny\n"
        f"root: {root}\nfiles:\n{files}\nclass_names: [{', '.join(names)}]\n"
    )


@pytest.mark.parametrize("case", ["extra_class_names", "zero_training_rows", "zero_pixels"])
def test_bad_data_is_refused_at_prepare_time_in_one_line(
    tmp_path: Path, earlier: Path, stage_cli: Any, case: str
) -> None:
    idxsets._CACHE.clear()
    kw = {"zero_training_rows": {"n_train": 0}, "zero_pixels": {"side": 0}}.get(case, {})
    digests = tiny_set(tmp_path / "raw", **kw)
    names = ["a", "b", "c", "d", "e"] if case == "extra_class_names" else ["a", "b", "c"]
    tiny_yaml(tmp_path / "conf", digests, tmp_path / "raw", names)
    before = snapshot(earlier)
    code, _, err = stage_cli(
        "prepare",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "data=tiny",
        f"paths.prepared_dir={earlier}",
    )
    line = one_error_line(err, "prepare")
    want = {
        "extra_class_names": "data.class_names lists 5 names but Tiny's labels take the values",
        "zero_training_rows": "Tiny has no training rows",
        "zero_pixels": "without a pixel",
    }[case]
    assert code == 2 and want in line, line
    assert snapshot(earlier) == before


def test_a_class_without_training_examples_is_refused(tmp_path: Path) -> None:
    from pipeline.data.datasets import load_dataset

    idxsets._CACHE.clear()
    digests = tiny_set(tmp_path / "raw")
    cfg = catalog.data_config("mnist") | {
        "name": "tiny",
        "title": "Tiny",
        "root": str(tmp_path / "raw"),
        "class_names": ["a", "b", "c"],
        "files": {k: {"name": f"tiny-{k}", "sha256": d} for k, d in digests.items()},
        "classes": [0, 1, 7],
        "reference_accuracy": None,
    }
    with pytest.raises(DataError, match=r"class 2 \(7\) has no training example"):
        load_dataset({**cfg, "class_names": [str(i) for i in range(8)]}, seed=0)
    with pytest.raises(
        DataError, match="the 1 training rows of data.n_train=1 hold a single class"
    ):
        load_dataset({**cfg, "classes": [], "n_train": 1}, seed=0)


def test_a_loss_that_ends_far_above_its_start_is_diverged() -> None:
    class Quadratic:  # f = w²/2: GD with lr = 2.5 multiplies f by 2.25 a step
        n_params = 1
        dtype = np.float64

        def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
            return float(w[0] ** 2 / 2), w.copy()

        def value(self, w: np.ndarray) -> float:
            return float(w[0] ** 2 / 2)

    res = minimize(Quadratic(), np.array([1.0]), "gd", lr=2.5, max_iter=12, tol=1e-9)
    f = res.history["loss"]
    assert f[-1] - f[0] > ENDED_ABOVE * max(1.0, abs(f[0])) and np.isfinite(f).all()
    assert res.status == "diverged" and "far above its start" in res.message and res.n_iter == 12
    short = minimize(Quadratic(), np.array([1.0]), "gd", lr=2.5, max_iter=4, tol=1e-9)
    assert short.status == "max_iter"  # grown, but not 1e3 × max(1, |f₀|) above the start


# ------------------------------------------------------------------ one data-set YAML per data set


def test_a_broken_sibling_yaml_does_not_change_another_data_sets_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.data.datasets import load_dataset

    idxsets._CACHE.clear()
    conf = tmp_path / "conf" / "data"
    conf.mkdir(parents=True)
    for p in (REPO_ROOT / "conf" / "data").glob("*.yaml"):
        (conf / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(catalog, "conf_data_dir", lambda: conf)
    digests = tiny_set(tmp_path / "raw")
    good = {k: {"name": f"tiny-{k}", "sha256": d} for k, d in digests.items()}
    cfg = catalog.data_config("mnist") | {
        "name": "tiny",
        "title": "Tiny",
        "root": str(tmp_path / "raw"),
        "class_names": ["a", "b", "c"],
        "reference_accuracy": None,
        "files": {**good, "test_labels": {**good["test_labels"], "sha256": "0" * 64}},
    }
    before = snapshot(tmp_path / "raw")
    for broken in (
        "name: [unclosed\n",
        "- a list\n",
        "name: x\nid: ${nowhere}\nformat: idx\n",
        "defaults:\n  - broken\nname: loop\n",
    ):
        (conf / "broken.yaml").write_text(broken)
        with pytest.raises(DataError) as ei:
            load_dataset(cfg, seed=0)
        assert "SHA-256 mismatch" in str(ei.value) and "tiny-test_labels" in str(ei.value), broken
        assert {t for t, _, _ in catalog.known_files().values()} == {"MNIST", "Fashion-MNIST"}
    assert snapshot(tmp_path / "raw") == before
