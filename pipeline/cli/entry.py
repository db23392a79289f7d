"""The stage wrapper: ``main = stage("train", TrainConfig)(body)``; every way a command can end
badly is ONE line on stderr.

``stage(prog, schema)(body)`` makes ``main``: it registers the schemas, lets Hydra compose
``conf/<prog>.yaml`` and runs ``body(cfg, ctx)`` as the job. Hydra's ``run_and_report`` prints
composition errors over several lines (or a traceback) and exits 1; with ``HYDRA_FULL_ERROR=1`` it
re-raises them instead, so we set it, catch the exception here and print
``prog: error: <what> (<how to fix>)`` with exit status 2:

- a config group option that does not exist (``optimizer=adamw``): the options there are;
- a value of the wrong type (``model.l2=abc``, ``optimizer.max_iter=1.5``), an unknown key
  (``foo=1``), an unparsable override, a mandatory value left ``???``: the key and the fix;
- a ``CurvlabError`` raised by a stage: its message;
- an ``OSError`` (permissions, disk full, a file vanished): the path and the reason.

In a sweep whose end is summarized (``SweepCallback``), a failed job is one line and a record in
``<sweep dir>/failed/``, and the other jobs go on; elsewhere the job's error ends the command.

SIGINT, SIGTERM and SIGHUP (and SIGQUIT, SIGUSR1/2, SIGALRM, SIGXCPU, SIGVTALRM, SIGPROF where
they have their default action, i.e. would end the process) raise ``Interrupted`` (a
``KeyboardInterrupt``) in the main thread, so every ``try``/``with`` unwinds: MLflow runs are
marked KILLED, temporary folders removed, nothing is half-written; the command prints one line and
exits 128 + signal (130, 143, 129). A sweep's parent MLflow run and its still-running children are
marked KILLED (or FAILED) here too. A sweep job in a worker process (joblib/loky, submitit) whose
launcher process dies (even by SIGKILL) ends KILLED and its worker exits (``pipeline.cli.orphans``).

``CURVLAB_TRACEBACK=1`` (or ``HYDRA_FULL_ERROR=1`` set by the user) re-raises everything with
its traceback, for debugging.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from pipeline.cli.orphans import LAUNCHER_ENV, busy, orphaned, watch_launcher
from pipeline.core.errors import EXIT_USER_ERROR, CurvlabError
from pipeline.tracking.exits import run_exit_hooks
from pipeline.tracking.sweep import JobContext, job_context, record_sweep_failure

Body = Callable[[Any, JobContext], Any]  # (the composed config, the Hydra job) -> the job's value
SWEEP_SUMMARY = "pipeline.tracking.mlflow.SweepCallback"  # reads the failure records at the end

EXIT_INTERNAL = 1


class Interrupted(KeyboardInterrupt):
    """A terminating signal (SIGINT, SIGTERM, SIGHUP, ...) received (``signum``); raised where
    the main thread is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


_default_unraisable = sys.unraisablehook


def _unraisable(hook: Any) -> None:
    """A signal that lands in a finalizer or weakref callback (e.g. a garbage collection inside
    SQLAlchemy) raises ``Interrupted`` where Python swallows it ("Exception ignored in"): deliver
    the signal again, so that it interrupts the code the finalizer ran in."""
    if isinstance(hook.exc_value, Interrupted):  # again once the finalizer is over, not inside it
        threading.Timer(0.05, os.kill, (os.getpid(), hook.exc_value.signum)).start()
        return
    _default_unraisable(hook)


ALWAYS_HANDLED = ("SIGINT", "SIGTERM")  # replaced whatever their disposition
# handled where they would end the process (SIG_DFL); ignored ones (nohup: SIGHUP) stay ignored
HANDLED_IF_DEFAULT = ("SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU", "SIGVTALRM",
                      "SIGPROF")


def install_signal_handlers() -> None:
    """Terminating signals → ``Interrupted`` in this process's main thread (no-op elsewhere), also
    when one first lands in a finalizer (``_unraisable``)."""
    if threading.current_thread() is threading.main_thread():
        sys.unraisablehook = _unraisable
    for name in ALWAYS_HANDLED + HANDLED_IF_DEFAULT:
        sig = getattr(signal, name, None)
        if sig is None:  # not on this platform
            continue
        try:
            current = signal.getsignal(sig)
            if name in ALWAYS_HANDLED or current in (signal.SIG_DFL, _raise_interrupted):
                signal.signal(sig, _raise_interrupted)
        except (ValueError, OSError):  # not the main thread
            return


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace; cut very long messages."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _first_line(err: BaseException) -> str:
    msg = getattr(err, "msg", None) or str(err)
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def _override_of(err: BaseException) -> str | None:
    """The command-line override an error is about, when Hydra's message names one."""
    text = str(err)
    markers = ("Error merging override ", "Could not override '",
               "Could not append to config. An item is already at '",
               "Could not delete from config. ")
    for marker in markers:
        if marker in text:
            rest = text.split(marker, 1)[1]
            return rest.split("'")[0].split()[0].rstrip(".") if rest else None
    return None


def schema_fields(schema: type | None, path: str) -> list[str]:
    """The keys a structured schema (dataclass) defines at ``path`` ('' = top); [] if unknown."""
    import dataclasses
    import typing

    tp: Any = schema
    for part in filter(None, path.split(".")):
        if not dataclasses.is_dataclass(tp):
            return []
        tp = typing.get_type_hints(tp).get(part)
    return [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else []


def hydra_error_message(err: BaseException, prog: str, schema: type | None = None) -> str:
    """``<what> (<how to fix>)`` for an exception from Hydra's composition or OmegaConf."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        InterpolationResolutionError,
        MissingMandatoryValue,
        OmegaConfBaseException,
    )

    help_cmd = f"`python -m pipeline.{prog} --help` lists them"
    if isinstance(err, MissingConfigException):
        missing = str(err.missing_cfg_file or "")
        options = sorted(str(o) for o in err.options or [])
        if "/" in missing and options:
            group, _, name = missing.rpartition("/")
            close = difflib.get_close_matches(name, options, n=1)
            hint = f"did you mean {group}={close[0]}? " if close else ""
            return (
                f"{group}={name}: no such {group} config ({hint}choose one of {', '.join(options)})"
            )
        return f"{one_line(_first_line(err))} (check the config name; {help_cmd})"
    if isinstance(err, OverrideParseException):
        why = one_line(re.split(r"\s+See http", err.message)[0], 200)
        return (f"cannot parse the override {err.override!r}: {why} "
                "(write key=value or group=option; quote values with spaces or special characters)")
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else None
    inner = cause or (err if isinstance(err, OmegaConfBaseException) else None)
    override = _override_of(err)
    key = getattr(inner, "full_key", None) or (
        override.split("=")[0].lstrip("+~") if override else None
    )
    if isinstance(inner, MissingMandatoryValue):
        return (f"{key} has no value (???) (set it on the command line, e.g. {key}=<value>, "
                "or in conf/)")
    if isinstance(inner, ConfigKeyError | ConfigAttributeError) or "is not in struct" in str(err):
        name = (key or "").rpartition(".")[2]
        parent = (key or "").rpartition(".")[0]
        known = schema_fields(schema, parent)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {(parent + '.') if parent else ''}{close[0]}? " if close else ""
        where = f"'{parent}'" if parent else "the config"
        shown = f"{override}: " if override else ""
        return (f"{shown}{where} has no key {name!r} ({hint}check the spelling; "
                f"`python -m pipeline.{prog} --cfg job` prints every key)")
    if isinstance(inner, InterpolationResolutionError):
        return (
            f"{key or 'config'}: {one_line(_first_line(inner), 200)} (fix the ${{...}} reference)"
        )
    if inner is not None:
        shown = override or key or "config"
        return (f"{shown}: {one_line(_first_line(inner), 200)} "
                f"(give {key or 'it'} a value of the right type; `python -m pipeline.{prog} --cfg "
                "job` shows the defaults)")
    return f"{one_line(_first_line(err))} (check the command-line overrides; {help_cmd})"


def _os_error_message(err: OSError) -> str:
    where = err.filename or ""
    reason = err.strerror or one_line(str(err), 200)
    return (f"{where + ': ' if where else ''}{reason} "
            "(check that the path exists and is readable/writable, then rerun)")


def _traceback_wanted(user_full_error: bool) -> bool:
    return user_full_error or os.environ.get("CURVLAB_TRACEBACK") == "1"


def describe(ex: Exception, prog: str, schema: type | None = None) -> tuple[int, str]:
    """(exit status, ``<what> (<how to fix>)``) for an exception that ends a command."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(ex, CurvlabError):
        return EXIT_USER_ERROR, one_line(str(ex), 600)
    if isinstance(ex, HydraException | OmegaConfBaseException):
        return EXIT_USER_ERROR, hydra_error_message(ex, prog, schema)
    if isinstance(ex, OSError):
        return EXIT_USER_ERROR, _os_error_message(ex)
    if type(ex).__module__.startswith("mlflow"):
        return EXIT_USER_ERROR, (f"MLflow failed ({one_line(_first_line(ex), 300)}); fix "
                                 "mlflow.tracking_uri / "
                                 "MLFLOW_TRACKING_URI or rerun with mlflow.enabled=false")
    return EXIT_INTERNAL, (f"internal error {type(ex).__name__}: {one_line(str(ex), 300)} "
                           "(rerun with CURVLAB_TRACEBACK=1 for the traceback and report it)")


def exit_with(ex: Exception, prog: str, schema: type | None = None) -> NoReturn:
    """Print ``prog: error: ...`` for ``ex`` and exit (inside a Hydra job: Hydra then adds
    nothing)."""
    if os.environ.get("CURVLAB_TRACEBACK") == "1":
        raise ex
    code, what = describe(ex, prog, schema)
    print(f"{prog}: error: {what}", file=sys.stderr, flush=True)
    sys.exit(code)


def interrupted_line(prog: str, signum: int) -> str:
    """The one line printed when a signal (SIGINT, SIGTERM, SIGHUP, ...) ends a command."""
    return (f"{prog}: error: interrupted by {signal.Signals(signum).name}; unfinished MLflow runs "
            "are "
            "marked KILLED and no result folder is half-written (rerun the command)")


def run_command(prog: str, hydra_main: Callable[[], Any], schema: type | None = None) -> NoReturn:
    """Run a Hydra app; end with exit 0, or ONE stderr line and 2 (bad input), 128 + signal,
    1 (bug)."""
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # run_and_report re-raises instead of printing/exit(1)
    os.environ[LAUNCHER_ENV] = str(os.getpid())  # sweep workers watch it (cli.orphans)
    install_signal_handlers()
    code, line = 0, None
    try:
        hydra_main()
    except SystemExit as ex:  # --help, or a job that already printed its one line
        code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
        run_exit_hooks("FAILED" if code else "FINISHED")
        raise
    except KeyboardInterrupt as ex:  # Interrupted (a signal) or a plain Ctrl-C
        run_exit_hooks("KILLED")
        signum = ex.signum if isinstance(ex, Interrupted) else int(signal.SIGINT)
        code, line = 128 + signum, interrupted_line(prog, signum)
    except Exception as ex:  # noqa: BLE001 - every way out is one line
        if _traceback_wanted(user_full_error):
            raise
        run_exit_hooks("FAILED")
        code, what = describe(ex, prog, schema)
        line = f"{prog}: error: {what}"
    if line:
        print(line, file=sys.stderr, flush=True)
    sys.exit(code)


def _sweep_summarized() -> bool:
    """Whether this sweep ends with ``SweepCallback``'s summary of the failed jobs."""
    from hydra.core.hydra_config import HydraConfig

    callbacks = HydraConfig.get().get("callbacks") or {}
    return any(str(c.get("_target_")) == SWEEP_SUMMARY for c in callbacks.values())


def run_job(prog: str, body: Body, cfg: Any) -> Any:
    """Run ``body(cfg, ctx)`` as one Hydra job and return its value. Its error ends the command
    with one line (exit 2: Hydra would add its own lines), except in a summarized sweep: there it
    is one line and a record for ``SweepCallback``, the job returns None (a failed trial for a
    sweeper) and the other jobs go on. Signals raise ``Interrupted`` here too (sweep workers are
    separate processes), so runs end KILLED and nothing is half-written; a worker whose launcher
    died ends its job KILLED, the sweep's parent run too, and exits (``pipeline.cli.orphans``)."""
    install_signal_handlers()
    ctx = job_context()
    if ctx.multirun:
        watch_launcher()
    try:
        with busy():
            return body(cfg, ctx)
    except KeyboardInterrupt as ex:
        if not orphaned():
            raise
        _exit_orphaned(prog, ctx, cfg, ex)
    except Exception as err:  # noqa: BLE001 - a failed sweep job is a line, not a dead sweep
        if not (ctx.multirun and _sweep_summarized()):
            exit_with(err, prog)
        _code, msg = describe(err, prog)
        print(f"{prog}: error: job {ctx.job_num} ({' '.join(ctx.overrides)}): "
              f"{msg}", file=sys.stderr)
        record_sweep_failure(ctx, msg)
        return None


def _exit_orphaned(prog: str, ctx: JobContext, cfg: Any, ex: KeyboardInterrupt) -> NoReturn:
    """A sweep job interrupted because its launcher died: the sweep's parent run ends KILLED, one
    line, and the worker process exits (its pool has no one to report to)."""
    from omegaconf import DictConfig, OmegaConf

    from pipeline.tracking.mlflow import close_orphaned_sweep

    node = OmegaConf.select(cfg, "mlflow") if isinstance(cfg, DictConfig) else None
    if isinstance(node, DictConfig):
        close_orphaned_sweep(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    signum = ex.signum if isinstance(ex, Interrupted) else int(signal.SIGTERM)
    print(f"{prog}: error: job {ctx.job_num} ({' '.join(ctx.overrides)}): the sweep's launcher "
          "process died; this run is marked KILLED and the worker exits (rerun the sweep)",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(128 + signum)


@dataclass(frozen=True)
class Stage:
    """A stage command: ``main()`` runs ``python -m pipeline.<prog>`` on ``sys.argv`` and exits."""

    prog: str
    schema: type
    hydra_main: Callable[[], Any]

    def __call__(self) -> NoReturn:
        from pipeline.config.schemas import register_configs

        register_configs()
        run_command(self.prog, self.hydra_main, self.schema)


def stage(prog: str, schema: type) -> Callable[[Body], Stage]:
    """``main = stage(prog, schema)(body)``: ``conf/<prog>.yaml`` composed by Hydra, ``body(cfg,
    ctx)`` run as the job (``run_job``), every way out one line (``run_command``)."""
    import hydra

    def wrap(body: Body) -> Stage:
        @functools.wraps(body)  # Hydra finds conf/ and names the job from the body's module
        def job(cfg: Any) -> Any:
            return run_job(prog, body, cfg)

        main = hydra.main(version_base="1.3", config_path="../conf", config_name=prog)(job)
        return Stage(prog, schema, main)

    return wrap
