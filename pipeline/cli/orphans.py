"""Sweep workers that outlive their launcher: a worker process (joblib/loky, submitit) whose
parent dies, even by SIGKILL, interrupts its job (SIGTERM to itself: the run ends KILLED) and
exits; an idle worker exits at once. Polling ``os.getppid()`` works on every POSIX system and
with loky's tree (workers are the launcher's children), unlike ``PR_SET_PDEATHSIG``, which fires
when the *thread* that forked the worker ends."""

from __future__ import annotations

import os
import signal
import threading
import time

LAUNCHER_ENV = "CURVLAB_LAUNCHER_PID"  # set by the command's process; its workers inherit it
POLL_S = 0.5
GRACE_S = 60.0  # a job interrupted this long ago and still running: the worker exits anyway

_orphaned = threading.Event()
_busy = threading.Event()
_started: list[int] = []  # the pid that started the watch (a forked child watches anew)


def orphaned() -> bool:
    """Whether this worker's launcher process has died."""
    return _orphaned.is_set()


def _watch(ppid: int) -> None:
    while os.getppid() == ppid:
        time.sleep(POLL_S)
    _orphaned.set()
    code = 128 + int(signal.SIGTERM)
    if not _busy.is_set():
        os._exit(code)
    os.kill(os.getpid(), signal.SIGTERM)  # Interrupted in the job: its MLflow run ends KILLED
    time.sleep(GRACE_S)
    os._exit(code)


def watch_launcher() -> None:
    """In a worker process of a sweep (not the launcher itself), exit when the launcher dies."""
    launcher = os.environ.get(LAUNCHER_ENV, "")
    pid = os.getpid()
    if not launcher.isdigit() or int(launcher) == pid or pid in _started:
        return
    _started.append(pid)
    threading.Thread(target=_watch, args=(os.getppid(),), name="curvlab-orphan-watch",
                     daemon=True).start()


class busy:
    """``with busy():`` marks a job running (an orphaned worker then interrupts it, not exits)."""

    def __enter__(self) -> None:
        _busy.set()

    def __exit__(self, *exc: object) -> None:
        _busy.clear()
