"""A local HTTP server for system tests: a free port, started in its own session, waited for on
``/health``, always stopped (the whole process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(cmd: Callable[[int], Sequence[str]], log_path: Path, timeout: float = 180.0,
            **popen: object) -> Iterator[str]:
    """Run ``cmd(port)`` (its output in ``log_path``) until ``<url>/health`` answers 200; yields
    the url; the server and its workers are stopped on exit (SIGTERM, then SIGKILL)."""
    port = free_port()
    log = log_path.open("w")
    proc = subprocess.Popen(list(cmd(port)), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, **popen)  # type: ignore[call-overload]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
