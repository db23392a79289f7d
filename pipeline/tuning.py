"""After a tuning sweep (Hydra's Optuna sweeper, ``experiment=hw3_sgd``): write the trials and the
chosen configuration, retrain it on train + validation, and score only that model on the test set.

``RetrainBest`` is a Hydra callback (configured in the study preset). At the end of the multirun it
reads the sweeper's ``optimization_results.yaml`` and the trial records the jobs left in
``<sweep dir>/trials/`` and writes, in ``<experiments_dir>/<study>/``:
``trials.csv`` (one row per trial: its swept values and validation metrics), ``chosen.json``
(best parameters, best validation accuracy, the resolved config of the final model; the sweep's
folder is the MLflow parent run's ``curvlab.sweep_dir`` tag) and the final
run ``final/`` (trained on the prepared data ``data_id`` — the training split without a
validation split — with ``score_test=true``), an MLflow child of the sweep's parent run.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.cli.entry import exit_with
from pipeline.config.paths import project_path
from pipeline.core.errors import DataError
from pipeline.store.writer import write_csv, write_json
from pipeline.tracking.sweep import JobContext, any_failed, parent_run_id_from_env, read_trials

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra is a hard dependency
    Callback = object  # type: ignore[misc,assignment]

TRIAL_METRICS = (
    "val_accuracy",
    "val_loss",
    "train_loss",
    "train_accuracy",
    "passes",
    "status",
)  # no seconds or run ids: trials.csv is the same on every rerun (each trial's are in its run
# folder's timing.json, pipeline.store.rundir)


def trial_rows(trials: list[dict[str, Any]], params: list[str]) -> dict[str, list[Any]]:
    """Columns of the trials table: job, each swept parameter, the trial metrics."""
    cols: dict[str, list[Any]] = {"job": [t["job"] for t in trials]}
    for p in params:
        vals = []
        for t in trials:
            ov = dict(o.split("=", 1) for o in t["overrides"] if "=" in o)
            vals.append(ov.get(p, ""))
        cols[p] = vals
    for k in TRIAL_METRICS:
        cols[k] = [t["metrics"].get(k) for t in trials]
    return cols


def final_config(config: DictConfig, best_params: dict[str, Any], data_id: str) -> DictConfig:
    """The sweep's config without ``hydra``, with the best parameters, on train + validation."""
    cfg = copy.deepcopy(config)
    with open_dict(cfg):
        cfg.pop("hydra", None)
        for key, value in best_params.items():
            OmegaConf.update(cfg, key, value, merge=False)
        cfg.data.id = data_id
        cfg.data.val_fraction = 0.0
        cfg.score_test = True
        cfg.sweep_metric = None
    return cfg


class RetrainBest(Callback):  # type: ignore[misc]
    """Hydra callback: the end-of-study summary and the retrained chosen model (module
    docstring)."""

    def __init__(self, data_id: str, final_name: str = "final") -> None:
        self.data_id, self.final_name = str(data_id), str(final_name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # Hydra turns a callback's exception into a warning: end the command here
            self._finish(config)
        except Exception as err:  # noqa: BLE001 - one line, as for the stage's own errors
            exit_with(err, "train")

    def _finish(self, config: DictConfig) -> None:
        from pipeline.train import train

        sweep = project_path(str(config.hydra.sweep.dir))
        if any_failed(sweep):
            print("train: some trials failed; the chosen configuration is not "
                  "retrained", file=sys.stderr)
            return
        results = sweep / "optimization_results.yaml"
        if not results.exists():
            raise DataError(f"{results} not found: the sweep did not finish; rerun it (-m) with "
                            "hydra/sweeper=optuna")
        best = OmegaConf.to_container(OmegaConf.load(results), resolve=True)
        best_params = dict(best["best_params"])  # type: ignore[index]
        trials = read_trials(sweep)
        study_dir = project_path(str(config.paths.experiments_dir)) / str(config.study)
        params = sorted(best_params)
        write_csv(study_dir / "trials.csv", trial_rows(trials, params))
        cfg = final_config(config, best_params, self.data_id)
        best_value = best["best_value"]  # type: ignore[index]
        chosen = {"study": str(config.study), "n_trials": len(trials),
                  "objective": str(config.sweep_metric), "best_value": best_value,
                  "best_params": best_params,
                  "retrain": {"data.id": self.data_id, "data.val_fraction": 0.0},
                  "config": OmegaConf.to_container(cfg, resolve=True)}
        write_json(study_dir / "chosen.json", chosen)
        print(f"train: {len(trials)} trials; best {chosen['objective']} = "
              f"{chosen['best_value']:.4f} "
              f"with {' '.join(f'{k}={v}' for k, v in best_params.items())} -> "
              f"{study_dir / 'chosen.json'}",
              flush=True)
        ctx = JobContext(parent_run_id=parent_run_id_from_env())
        metrics = train(cfg, ctx, out_dir=study_dir / self.final_name)
        if metrics.get("status") == "diverged":
            print("train: error: the chosen configuration diverged on train + "
                  "validation", file=sys.stderr)
            sys.exit(2)


__all__ = ["RetrainBest", "final_config", "trial_rows"]
