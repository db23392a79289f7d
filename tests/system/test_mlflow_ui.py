"""MLflow's own UI (the installed version, served by ``mlflow server``) in headless Chromium against
a tiny store: a study opens on its runs table, and the study's shared view shows the key
metrics as columns (``pipeline.tracking.ui``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import dump_dom
from support.project import SYNTH, ensure_prepared, make_cfg
from support.repo_copy import BIN
from support.servers import serving

from pipeline.tracking.sweep import JobContext
from pipeline.tracking.ui import study_address
from pipeline.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(server address, experiment id) of a store holding two tiny runs of study ``t``."""
    from mlflow.tracking import MlflowClient

    from pipeline.config.schemas import register_configs

    register_configs()
    work = tmp_path_factory.mktemp("ui")
    for opt in (["optimizer=gd", "optimizer.max_iter=20"], ["optimizer=newton"]):
        cfg = make_cfg(work, [*SYNTH, "preprocess=none", *opt], mlflow=True)
        ensure_prepared(cfg)
        train(cfg, JobContext(overrides=tuple(opt[1:])))
    db = f"sqlite:///{work / 'mlflow.db'}"
    exp_id = MlflowClient(tracking_uri=db).get_experiment_by_name("t").experiment_id
    with serving(lambda port: [str(Path(BIN) / "mlflow"), "server", "--backend-store-uri", db,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                 work / "server.log") as url:
        yield url, exp_id


def _columns(dom: str) -> set[str]:
    return set(re.findall(r'col-id="([^"]+)"', dom))


def _matching(dom: str) -> int | None:
    """The runs table's "<n> matching runs" count (None: no runs table)."""
    found = re.search(r"<strong>(\d+)</strong> matching runs", dom)
    return None if found is None else int(found.group(1))


def test_the_study_address_opens_its_runs_table_with_metric_columns(
    served: tuple[str, str], chromium: str, tmp_path: Path
) -> None:
    url, exp_id = served
    dom = dump_dom(chromium, study_address(url, exp_id), tmp_path / "profile")
    cols = _columns(dom)
    assert "attributes.`Run Name`" in cols, dom[-2000:]  # the runs table, not a GenAI overview
    assert {"metrics.`objective`", "metrics.`grad_norm`", "params.`optimizer.id`"} <= cols
    assert "synth-kappa100-none-linear-newton" in dom and _matching(dom) == 2
    assert "viewing a shared view" in dom


def test_model_training_mode_opens_a_study_on_its_runs_table(
    served: tuple[str, str], chromium: str, tmp_path: Path
) -> None:
    url, exp_id = served
    dom = dump_dom(chromium, f"{url}/#/experiments/{exp_id}?workflowType=machine_learning",
                   tmp_path / "profile")
    assert "attributes.`Run Name`" in _columns(dom) and _matching(dom) == 2
    assert "Tool calls" not in dom  # not the GenAI overview (Usage, Quality, Tool calls)
