"""``python -m pipeline.train`` refuses bad config values in a subprocess: one line, exit 2, no
traceback, no files (the compositions themselves: tests/unit/test_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.repo_copy import REPO_ROOT, run_cmd


def _no_outputs(cwd: Path) -> None:
    assert sorted(p.name for p in cwd.iterdir()) == [], "a refused run wrote files"


@pytest.mark.parametrize(
    ("override", "rc", "expect"),
    [("optimizer.lr=-1", 2, "train: error: optimizer.lr=-1 is invalid"),
     ("optimizer=rmsprop", 2, "train: error: optimizer=rmsprop: no such optimizer config (choose "
                              "one of"),
     ("model.l2=abc", 2, "train: error: model.l2=abc: Value 'abc' of type 'str' could not be "
                         "converted to Float"),
     # budgets come from the presets' composed files only: no key applied after composition
     ("+budgets.gd.max_iter=3", 2, "train: error: budgets: unknown config key")])
def test_cli_refuses_bad_values_without_traceback_or_files(tmp_path: Path, override: str, rc: int,
                                                          expect: str) -> None:
    res = run_cmd(["python", "-m", "pipeline.train", override], cwd=tmp_path, code_root=REPO_ROOT,
                  extra_env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert res.returncode == rc, res.stderr
    assert expect in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    if rc == 2:
        assert len(res.stderr.strip().splitlines()) == 1
    _no_outputs(tmp_path)


def test_cli_missing_prepared_data_says_how_to_make_it(tmp_path: Path) -> None:
    res = run_cmd(
        [
            "python",
            "-m",
            "pipeline.train",
            "data=mnist_binary",
            "preprocess=whiten",
            "model=logistic",
        ],
        cwd=tmp_path,
        code_root=REPO_ROOT,
        extra_env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    assert res.returncode == 2
    line = res.stderr.strip()
    assert (
        "\n" not in line
        and "python -m pipeline.prepare data=mnist_binary preprocess=whiten" in line
    )
    _no_outputs(tmp_path)
