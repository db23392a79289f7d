"""curvlab's Optuna sweeper for Hydra (lives in the ``hydra_plugins`` namespace, as Hydra requires).

hydra-optuna-sweeper's ``OptunaSweeper``, except that a study in which no trial finished ends with
one ``train: error:`` line (exit 2, the sweep's MLflow parent run marked FAILED) instead of the
plugin's traceback, and counts out of range (``hydra.sweeper.n_trials=0``) are one line before the
study is created. Selected by ``conf/experiment/hw3_sgd.yaml``
(``hydra.sweeper._target_: hydra_plugins.curvlab_sweeper.OptunaSweeper``).
"""

from __future__ import annotations

import sys

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _OptunaSweeper
from omegaconf import OmegaConf


class OptunaSweeper(_OptunaSweeper):
    """The plugin's sweeper with a one-line error when every trial failed."""

    def sweep(self, arguments: list[str]) -> None:
        from pipeline.config.sweeps import check_sweep_settings
        from pipeline.core.errors import ConfigError

        config = getattr(self.sweeper, "config", None)
        try:
            if config is not None:
                check_sweep_settings(config.hydra)
        except ConfigError as err:
            print(f"train: error: {err}", file=sys.stderr)
            sys.exit(2)
        try:
            super().sweep(arguments)
        except ValueError as err:
            if "No trials are completed" not in str(err):
                raise
            from pipeline.tracking.sweep import parent_run_id_from_env

            parent = parent_run_id_from_env()
            if parent and config is not None and config.get("mlflow") is not None:
                from pipeline.tracking.mlflow import Tracker

                Tracker(OmegaConf.to_container(config.mlflow, resolve=True)).end_run(
                    parent, "FAILED"
                )
            print("train: error: no trial of the study finished (every job failed, see the "
                  "messages "
                  "above); fix the configuration and rerun", file=sys.stderr)
            sys.exit(2)
