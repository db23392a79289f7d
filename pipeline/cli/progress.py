"""A tqdm progress bar over optimizer iterations: shown on a terminal, silent in CI and logs."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tqdm.auto import tqdm


def show_progress(setting: bool | None) -> bool:
    """``setting`` if given; otherwise a bar only when stderr is a TTY and not under CI."""
    if setting is not None:
        return bool(setting)
    return sys.stderr.isatty() and not os.environ.get("CI")


class IterationBar:
    """Context manager giving an optimizer ``callback(iteration, record)`` that advances a bar."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._bar = tqdm(total=total, desc=desc, unit="it", disable=not enabled, leave=False,
                         dynamic_ncols=True)

    def callback(self, iteration: int, record: Mapping[str, Any]) -> None:
        """Move to ``iteration`` and show the current loss and gradient norm."""
        self._bar.update(max(0, int(iteration) - self._bar.n))
        loss, g = record.get("loss"), record.get("grad_norm")
        if loss is not None and g is not None and math.isfinite(float(loss)):
            self._bar.set_postfix(loss=f"{float(loss):.4g}", grad=f"{float(g):.2e}", refresh=False)

    def __enter__(self) -> Callable[[int, Mapping[str, Any]], None]:
        return self.callback

    def __exit__(self, *exc: object) -> None:
        self._bar.close()
