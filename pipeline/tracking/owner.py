"""Which process owns an MLflow run: host, pid and the pid's start time, recorded as run tags, so a
RUNNING record left by a process that no longer exists (SIGKILL, power loss) can be told apart
from a run still in progress."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

HOST_TAG = "curvlab.host"
PID_TAG = "curvlab.pid"
PID_START_TAG = "curvlab.pid_start"  # the process's start time (clock ticks since boot), Linux


def process_start(pid: int) -> str:
    """Field 22 of ``/proc/<pid>/stat`` (start time since boot), '' where unknown."""
    try:
        stat = open(f"/proc/{pid}/stat", encoding="ascii", errors="replace").read()  # noqa: SIM115
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and ')'
    return fields[19] if len(fields) > 19 else ""


def owner_tags() -> dict[str, str]:
    """The tags naming this process as the owner of a run it starts."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: process_start(pid)}


def owner_gone(tags: Mapping[str, str]) -> bool:
    """True only when the run's owner was a process on this host that no longer exists (its pid is
    free, or now belongs to a process started at another time); unknown owners count as alive."""
    if tags.get(HOST_TAG) != socket.gethostname() or not str(tags.get(PID_TAG, "")).isdigit():
        return False
    pid = int(tags[PID_TAG])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        pass
    started = tags.get(PID_START_TAG) or ""
    now = process_start(pid)
    return bool(started and now and started != now)
