"""Signals become ``Interrupted`` in the main code, even when one first lands in a finalizer (where
Python swallows exceptions): the handler's exception is re-delivered, so a run still ends KILLED."""

from __future__ import annotations

import gc
import signal
import sys
import time

import pytest

from pipeline.cli import entry


class _Finalized:
    """An object whose finalizer raises what the signal handler would raise there."""

    def __del__(self) -> None:
        raise entry.Interrupted(signal.SIGTERM)


def test_a_signal_swallowed_by_a_finalizer_is_delivered_again() -> None:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    try:
        entry.install_signal_handlers()
        with pytest.raises(entry.Interrupted) as ex:
            obj = _Finalized()
            del obj  # "Exception ignored in": swallowed by Python, handed to sys.unraisablehook
            gc.collect()
            for _ in range(100):  # the re-delivered signal interrupts this loop
                time.sleep(0.01)
        assert ex.value.signum == signal.SIGTERM
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        sys.unraisablehook = hook


def test_other_unraisable_exceptions_are_reported_as_before() -> None:
    hook = sys.unraisablehook
    seen: list[BaseException] = []
    try:
        entry._default_unraisable = lambda h: seen.append(h.exc_value)  # type: ignore[assignment]
        sys.unraisablehook = entry._unraisable

        class Broken:
            def __del__(self) -> None:
                raise ValueError("boom")

        Broken()
        gc.collect()
    finally:
        sys.unraisablehook = hook
        entry._default_unraisable = sys.__unraisablehook__
    assert [str(e) for e in seen] == ["boom"]
