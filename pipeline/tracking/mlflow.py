"""MLflow tracking: one run per train job, sweeps grouped under a parent run, safe in parallel.

Store: ``mlflow.tracking_uri`` → ``$MLFLOW_TRACKING_URI`` → ``sqlite:///<project>/mlflow.db``
(absolute). Artifacts of a new experiment go to ``mlflow.artifact_root`` (default
``<project>/mlartifacts``; with a tracking server, the server's artifact store) ``/<study>``.
With a local store, creating/migrating the SQLite schema and creating an experiment happen under
an inter-process file lock, and every client call is retried while SQLite says "database is
locked", so parallel joblib/submitit jobs lose no runs; a tracking server (``http(s)://``)
serializes writes itself and needs no lock. Experiments carry the UI tags of
``pipeline.tracking.ui`` (model-training kind, a shared runs-table view with the key metrics as
columns) and each train run records its prepared data as an MLflow dataset input (name, digest,
source path; the arrays stay on disk).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pipeline.config.paths import PROJECT_ROOT, project_path
from pipeline.core.errors import EXIT_USER_ERROR, ConfigError, CurvlabError
from pipeline.tracking.exits import on_exit
from pipeline.tracking.metrics import Point, history_points
from pipeline.tracking.owner import HOST_TAG, owner_gone, owner_tags
from pipeline.tracking.sweep import (
    announce_parent,
    announce_swept,
    begin_sweep,
    end_sweep,
    failed_jobs,
    parent_run_id_from_env,
)
from pipeline.tracking.ui import experiment_tags

T = TypeVar("T")
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_RUN_NAME = 250  # characters of a run name the UI shows in full (the store keeps more)
DEFAULT_EXPERIMENT_ID = "0"  # the "Default" experiment every new MLflow store starts with
MAX_DATASET_DIGEST = 36  # characters MLflow's store keeps of a dataset digest
_log = logging.getLogger(__name__)
_OPEN_SWEEPS: list[tuple[Tracker, str]] = []  # (tracker, parent run id) of sweeps not ended yet


class TrackingError(CurvlabError):
    """The MLflow store failed while logging (damaged, read-only, unreachable)."""


def _first(err: BaseException) -> str:
    return (" ".join(str(err).split()) or type(err).__name__)[:300]


def tracking_uri(mlflow_cfg: Mapping[str, Any] | None = None) -> str:
    """The store URI: config, then ``$MLFLOW_TRACKING_URI``, then the project's SQLite file."""
    uri = (mlflow_cfg or {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(PROJECT_ROOT / 'mlflow.db').as_posix()}"


def is_server(uri: str) -> bool:
    """True for a tracking server (``http(s)://``): it serializes writes, no local lock needed."""
    return uri.split("://", 1)[0].lower() in ("http", "https")


def artifact_root(mlflow_cfg: Mapping[str, Any] | None = None) -> str | None:
    """Where new experiments keep artifacts: a URI as given, a path made absolute (file URI);
    unset: ``<project>/mlartifacts``, or ``None`` with a tracking server (the server's own
    store)."""
    root = (mlflow_cfg or {}).get("artifact_root")
    if not root:
        if is_server(tracking_uri(mlflow_cfg)):
            return None
        root = str(PROJECT_ROOT / "mlartifacts")
    return root if "://" in root else project_path(root).as_uri()


def with_retry(fn: Callable[[], T], attempts: int = 10) -> T:
    """Call ``fn``; on SQLite "database is locked" wait (exponential back-off) and retry; any
    other failure is a one-line TrackingError."""
    for i in range(attempts):
        try:
            return fn()
        except CurvlabError:
            raise
        except Exception as err:  # MlflowException / sqlalchemy OperationalError / OSError
            if "locked" not in str(err).lower() or i == attempts - 1:
                raise TrackingError(f"MLflow store failed ({_first(err)}); fix mlflow.tracking_uri "
                                    "/ "
                                    "MLFLOW_TRACKING_URI or rerun with "
                                    "mlflow.enabled=false") from err
            time.sleep(min(0.1 * 2**i, 5.0))
    raise AssertionError("unreachable")




def _http_limits(uri: str, mlflow_cfg: Mapping[str, Any] | None) -> None:
    """A tracking server that does not answer fails in seconds, not after MLflow's default
    ~2 min timeout × 7 retries (MLFLOW_HTTP_REQUEST_{TIMEOUT,MAX_RETRIES,BACKOFF_FACTOR}; values the
    user set in the environment win)."""
    if not uri.startswith(("http://", "https://")):
        return
    cfg = mlflow_cfg or {}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(cfg.get("http_timeout_s") or 5)))
    os.environ.setdefault(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(int(cfg.get("http_max_retries") or 2))
    )
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def _store_lock(uri: str) -> Any:
    """An inter-process lock for schema creation (a file in the temp dir, keyed by the URI);
    a no-op for a tracking server."""
    from contextlib import nullcontext

    from filelock import FileLock

    if is_server(uri):
        return nullcontext()
    key = hashlib.sha1(uri.encode()).hexdigest()[:16]
    return FileLock(str(Path(tempfile.gettempdir()) / f"curvlab-mlflow-{key}.lock"), timeout=300)


def _schema_ready(uri: str) -> bool:
    """True when ``uri`` is a SQLite file that already holds MLflow's tables: opening it then only
    reads, and parallel jobs need not queue behind the schema lock (a quick read-only look)."""
    import sqlite3

    if not uri.startswith("sqlite:///"):
        return False
    path = Path(uri[len("sqlite:///"):])
    if not path.is_file():
        return False
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30) as con:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    return {"alembic_version", "experiments", "runs"} <= names


def _local_store(uri: str) -> Path | None:
    """The file (SQLite) or folder (file store) a local tracking URI names; None for a server/DB."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):].split("?", 1)[0])
    if uri.startswith("file:"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return Path(url2pathname(urlparse(uri).path))
    return None if "://" in uri else Path(uri)


def store_exists(mlflow_cfg: Mapping[str, Any] | None = None) -> bool:
    """False for a local store (SQLite file, file store folder) that does not exist yet."""
    path = _local_store(tracking_uri(mlflow_cfg))
    return path is None or path.exists()


def reading_store(mlflow_cfg: Mapping[str, Any] | None = None) -> str:
    """The store URI for a reader (the report), with the same HTTP timeouts/retries as the
    writers; a local store that does not exist or is not an MLflow store is refused with one
    line, so reading never creates or migrates one."""
    uri = tracking_uri(mlflow_cfg)
    _http_limits(uri, mlflow_cfg)
    path = _local_store(uri)
    fix = "fix mlflow.tracking_uri / MLFLOW_TRACKING_URI (a report never creates a store)"
    if path is None or uri == "sqlite://":
        return uri
    if uri.startswith("sqlite:"):
        if not path.is_file():
            raise ConfigError(f"MLflow store {uri} does not exist (no file {path}); {fix}")
        if not _schema_ready(uri):
            raise ConfigError(f"MLflow store {uri} is not a readable MLflow database (damaged, "
                              f"truncated or another program's file); {fix}")
    elif not path.is_dir():
        raise ConfigError(f"MLflow store {uri} does not exist (no folder {path}); {fix}")
    return uri


def git_commit() -> str:
    """``HEAD``'s commit (``+dirty`` when the tree has changes), or ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"optimizer.lr": "0.1", ...}`` (MLflow params are strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = "null" if v is None else str(v)
    return out


def _chunks(items: Sequence[T], n: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Tracker:
    """Thin, retrying wrapper around ``MlflowClient`` for one store."""

    def __init__(self, mlflow_cfg: Mapping[str, Any] | None = None) -> None:
        from mlflow.tracking import MlflowClient

        logging.getLogger("alembic").setLevel(logging.WARNING)
        # "Creating tables" INFO lines, and the traceback MLflow logs before raising a store error
        # (the error itself becomes our one line)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.uri = tracking_uri(mlflow_cfg)
        self.artifact_root = artifact_root(mlflow_cfg)
        _http_limits(self.uri, mlflow_cfg)
        from contextlib import nullcontext

        from filelock import Timeout

        # first use creates the schema: once, under the lock; an existing store is only read
        lock = nullcontext() if _schema_ready(self.uri) else _store_lock(self.uri)
        try:
            with lock:
                try:
                    self.client = MlflowClient(tracking_uri=self.uri)
                    with_retry(lambda: self.client.search_experiments(max_results=1))
                except Exception as err:
                    cause = (
                        err.__cause__ if isinstance(err, TrackingError) and err.__cause__ else err
                    )
                    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
                    raise ConfigError(f"MLflow store {self.uri} is not usable ({first}); fix "
                                      "mlflow.tracking_uri / MLFLOW_TRACKING_URI or run with "
                                      "mlflow.enabled=false") from None
        except Timeout:
            raise ConfigError(f"MLflow store {self.uri} stayed locked by other jobs for 300 s; for "
                              "many "
                              "parallel jobs start a tracking server (`make mlflow-server`) and "
                              "set "
                              "MLFLOW_TRACKING_URI") from None

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created (with our artifact location and the UI tags of
        ``pipeline.tracking.ui``) if missing; an older experiment without them gets them."""
        exp = with_retry(lambda: self.client.get_experiment_by_name(name))
        if exp is None:
            with _store_lock(self.uri):
                exp = with_retry(lambda: self.client.get_experiment_by_name(name))
                if exp is None:
                    return self._create_experiment(name)
        for key, value in experiment_tags().items():
            if key not in exp.tags:
                with_retry(lambda k=key, v=value: self.client.set_experiment_tag(
                    exp.experiment_id, k, v))
        return exp.experiment_id

    def _create_experiment(self, name: str) -> str:
        """Create experiment ``name``; another job creating it first (a server: no lock) is fine."""
        location = (
            None if self.artifact_root is None else f"{self.artifact_root.rstrip('/')}/{name}"
        )
        try:
            exp_id = with_retry(lambda: self.client.create_experiment(
                name, artifact_location=location, tags=experiment_tags()))
            self.hide_empty_default()
            return exp_id
        except Exception as err:
            if "already exist" not in str(err).lower() and "RESOURCE_ALREADY_EXISTS" not in str(
                err
            ):
                raise
            exp = with_retry(lambda: self.client.get_experiment_by_name(name))
            if exp is None:
                raise
            return exp.experiment_id

    def hide_empty_default(self) -> bool:
        """Delete (restorably: ``mlflow experiments restore --experiment-id 0``) the empty
        "Default" experiment a new local store starts with, so the UI lists only the studies;
        a tracking server's, or one with runs, stays. Returns whether it was deleted."""
        from mlflow.entities import ViewType

        if is_server(self.uri):
            return False
        try:
            exp = with_retry(lambda: self.client.get_experiment(DEFAULT_EXPERIMENT_ID))
        except TrackingError:  # no experiment 0 in this store
            return False
        if exp is None or exp.name != "Default" or exp.lifecycle_stage != "active":
            return False
        if with_retry(lambda: self.client.search_runs([DEFAULT_EXPERIMENT_ID], max_results=1,
                                                      run_view_type=ViewType.ALL)):
            return False
        with_retry(lambda: self.client.delete_experiment(DEFAULT_EXPERIMENT_ID))
        return True

    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, str],
                  parent_run_id: str | None = None) -> str:
        """Create a RUNNING run (a child of ``parent_run_id`` when given) owned by this process;
        RUNNING records of ``run_name`` whose process is gone are ended KILLED first. Returns its
        id."""
        exp_id = self.experiment_id(experiment)
        self.end_stale_runs(exp_id, run_name)
        all_tags = {**tags, **owner_tags()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = with_retry(lambda: self.client.create_run(exp_id, tags=all_tags, run_name=run_name))
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """Params in batches of ≤ 100 (values cut to MLflow's 6000 characters)."""
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            with_retry(lambda c=chunk: self.client.log_batch(run_id, params=c))

    def log_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tags in batches of ≤ 100."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in sorted(tags.items())]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            with_retry(lambda c=chunk: self.client.log_batch(run_id, tags=c))

    def log_points(self, run_id: str, points: Sequence[Point]) -> int:
        """Metric points (``pipeline.tracking.metrics.Point``) in batches of ≤ 1000; returns the
        count."""
        from mlflow.entities import Metric

        metrics = [Metric(p.key, p.value, p.timestamp, p.step) for p in points]
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            with_retry(lambda c=chunk: self.client.log_batch(run_id, metrics=c))
        return len(metrics)

    def log_history(self, run_id: str, history: Mapping[str, np.ndarray],
                    start_ms: int | None = None) -> int:
        """Per-iteration metrics (``HISTORY_METRICS``; step = ``history['iteration']``, timestamp =
        ``start_ms`` (default the run's start) + the history's own clock); returns the count."""
        if start_ms is None:
            start_ms = self.start_ms(run_id)
        return self.log_points(run_id, history_points(history, start_ms))

    def start_ms(self, run_id: str) -> int:
        """The run's start time (ms since the epoch)."""
        return int(with_retry(lambda: self.client.get_run(run_id)).info.start_time)

    def metric_points(self, run_id: str, key: str) -> list[Point]:
        """Every logged point of metric ``key`` of the run, by step."""
        found = with_retry(lambda: self.client.get_metric_history(run_id, key))
        return sorted((Point(key, float(m.value), int(m.timestamp), int(m.step)) for m in found),
                      key=lambda p: (p.step, p.timestamp))

    def runs_with_tag(self, key: str, value: str) -> list[Any]:
        """The runs of every active experiment whose tag ``key`` is ``value``."""
        exps = with_retry(lambda: self.client.search_experiments(max_results=1000))
        ids = [e.experiment_id for e in exps]
        if not ids:
            return []
        quoted = value.replace("'", "\\'")
        return list(with_retry(lambda: self.client.search_runs(
            ids, f"tags.`{key}` = '{quoted}'", max_results=10000)))

    def log_metrics(self, run_id: str, values: Mapping[str, Any], step: int = 0) -> None:
        """Final scalar metrics (``None`` and non-numbers skipped)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in values.items()
                 if isinstance(v, int | float | np.number) and not isinstance(v, bool)]
        for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
            with_retry(lambda c=chunk: self.client.log_batch(run_id, metrics=c))

    def log_dataset(self, run_id: str, name: str, sha256: str, source: Path, context: str,
                    profile: Mapping[str, Any] | None = None) -> None:
        """Record a file as the run's dataset input: ``name``, digest = its SHA-256 (cut to MLflow's
        36 characters; the full one is the input tag ``curvlab.sha256``), ``source`` = its path.
        Metadata only (``mlflow.data.meta_dataset.MetaDataset``): the arrays are not loaded."""
        import json

        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        meta = MetaDataset(LocalArtifactDatasetSource(str(source)), name=name,
                           digest=sha256[:MAX_DATASET_DIGEST]).to_dict()
        entity = Dataset(name=meta["name"], digest=meta["digest"], source_type=meta["source_type"],
                         source=meta["source"],
                         profile=json.dumps(dict(profile), sort_keys=True) if profile else None)
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag("curvlab.sha256", sha256)]

        def log() -> None:
            try:
                self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags)])
            except Exception as err:
                if "unique" not in str(err).lower():
                    raise
                # a parallel job of the sweep added the same data set (experiment, name, digest)
                # between MLflow's look-up and its insert (UNIQUE constraint failed: datasets...);
                # the failed transaction was rolled back, and now MLflow finds that row and links it
                self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags)])

        with_retry(log)

    def log_artifacts(self, run_id: str, paths: Iterable[Path]) -> None:
        """Copy files into the run's artifact location."""
        for p in paths:
            if Path(p).exists():
                with_retry(lambda p=p: self.client.log_artifact(run_id, str(p)))

    def end_run(self, run_id: str, status: str) -> None:
        """Mark the run ``FINISHED`` / ``FAILED`` / ``KILLED``."""
        with_retry(lambda: self.client.set_terminated(run_id, status=status))

    def end_stale_runs(self, exp_id: str, run_name: str) -> int:
        """End as KILLED the RUNNING runs named ``run_name`` whose owner process on this host no
        longer exists (an attempt killed by SIGKILL); returns how many."""
        import socket

        host = socket.gethostname().replace("'", "")
        query = f"attributes.status = 'RUNNING' and tags.{HOST_TAG} = '{host}'"
        found = with_retry(lambda: self.client.search_runs([exp_id], query, max_results=1000))
        stale = [r for r in found if r.info.run_name == run_name and owner_gone(r.data.tags)]
        for run in stale:
            self.end_run(run.info.run_id, "KILLED")
        return len(stale)

    def end_running_children(self, parent_run_id: str, status: str) -> int:
        """Mark the still-RUNNING children of a sweep's parent run ``status``; returns how many."""
        run = with_retry(lambda: self.client.get_run(parent_run_id))
        found = with_retry(lambda: self.client.search_runs(
            [run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' "
            "and attributes.status = 'RUNNING'", max_results=1000))
        for child in found:
            self.end_run(child.info.run_id, status)
        return len(found)


def close_open_sweeps(status: str) -> None:
    """End the parent runs of sweeps this process started and did not end (interrupted or
    crashed), and their still-RUNNING children, with ``status`` (``KILLED`` / ``FAILED``)."""
    while _OPEN_SWEEPS:
        tracker, parent = _OPEN_SWEEPS.pop()
        try:
            tracker.end_running_children(parent, "KILLED" if status == "KILLED" else "FAILED")
            tracker.end_run(parent, status)
        except Exception as err:  # noqa: BLE001 - already on the way out with an error
            print(f"warning: MLflow sweep run {parent} not marked {status} "
                  f"({_first(err)})", file=sys.stderr)


def close_orphaned_sweep(mlflow_cfg: Mapping[str, Any] | None) -> None:
    """A sweep job whose launcher process died ends the sweep's parent run KILLED (the launcher
    can no longer do it); every error is a warning, the job is on its way out already."""
    parent = parent_run_id_from_env()
    if not parent or not (mlflow_cfg or {}).get("enabled", True):
        return
    try:
        Tracker(mlflow_cfg).end_run(parent, "KILLED")
    except Exception as err:  # noqa: BLE001 - already on the way out
        print(f"warning: MLflow sweep run {parent} not marked KILLED ({_first(err)})",
              file=sys.stderr)


on_exit(close_open_sweeps)  # a command ending with sweeps open ends them (cli.entry.run_command)


# ------------------------------------------------------------------ Hydra multirun


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra is a hard dependency
    Callback = object  # type: ignore[misc,assignment]


class SweepCallback(Callback):  # type: ignore[misc]
    """Hydra callback: a parent MLflow run per multirun (jobs become its children) and an
    end-of-sweep summary that exits non-zero when any job failed."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.tracker: Tracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Launchers that pickle the callbacks (submitit) ship no MLflow client to the jobs: they
        find the parent through ``pipeline.tracking.sweep`` (environment or the sweep folder's
        file)."""
        return {**self.__dict__, "tracker": None}

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        from pipeline.config.sweeps import check_sweep_settings, sweep_title, swept

        try:  # before the sweep folder, the parent run or an Optuna study exist
            check_sweep_settings(config.hydra)
        except ConfigError as err:
            print(f"{config.hydra.job.name}: error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
        sweep_dir = project_path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        begin_sweep(sweep_dir)
        mlflow_cfg = OmegaConf.select(config, "mlflow")
        if mlflow_cfg is None or not mlflow_cfg.get("enabled", True) or "study" not in config:
            return
        if str(config.hydra.job.name) != "train":  # evaluate logs onto the train runs: no parent
            return
        settings = OmegaConf.to_container(mlflow_cfg, resolve=True)
        self.tracker = Tracker(settings)  # type: ignore[arg-type]
        overrides = [str(o) for o in config.hydra.overrides.task]
        sweeps = swept(overrides, OmegaConf.select(config, "hydra.sweeper.params"))
        self.parent_run_id = self.tracker.start_run(
            str(config.study),
            sweep_title(str(config.study), sweeps)[:MAX_RUN_NAME],
            {
                "curvlab.kind": "sweep",
                "curvlab.overrides": " ".join(overrides),
                "curvlab.sweep_dir": str(sweep_dir),
                "mlflow.source.git.commit": git_commit(),
                "curvlab.app": str(config.hydra.job.name),
            },
        )
        self.tracker.log_params(self.parent_run_id, sweeps)
        announce_swept(list(sweeps))
        _OPEN_SWEEPS.append((self.tracker, self.parent_run_id))
        announce_parent(sweep_dir, self.parent_run_id)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep = end_sweep()
        jobs = failed_jobs(sweep)
        if self.tracker is not None and self.parent_run_id is not None:
            with contextlib.suppress(ValueError):
                _OPEN_SWEEPS.remove((self.tracker, self.parent_run_id))
            self.tracker.end_running_children(self.parent_run_id, "FAILED")  # jobs that crashed
            self.tracker.end_run(self.parent_run_id, "FAILED" if jobs else "FINISHED")
        if jobs:
            nums = ", ".join(str(j["job"]) for j in jobs)
            prog = str(config.hydra.job.name)
            print(f"{prog}: error: {len(jobs)} sweep job(s) failed (job {nums}); see the messages "
                  f"above and {sweep}/failed/", file=sys.stderr)
            sys.exit(2)
