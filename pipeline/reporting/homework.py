"""Report section "Homework: softmax regression on MNIST with SGD": the tuning trials, the chosen
hyperparameters, the retrained model's test scores against the reference points, and GD vs SGD vs
Newton-CG on one objective against passes over the data and seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline.reporting import figures
from pipeline.reporting.gather import RunSet
from pipeline.reporting.render import Section
from pipeline.store.rundir import read_json

STUDY = "hw3_sgd"
COMPARE_STUDY = "default"  # the same objective (raw MNIST pixels, λ = 1e-4) for gd, sgd, newton_cg
COMPARE = ("gd", "sgd", "newton_cg")
RERUN_TUNING = "rerun the tuning study (python -m pipeline.train -m experiment=hw3_sgd)"
# published MNIST test accuracy of multinomial logistic regression (the homework's yardstick)
PUBLISHED_SOFTMAX = ("multinomial logistic regression, typical", 0.925)


def trials_figure(trials: pd.DataFrame, path: Path) -> Path:
    """Validation accuracy per trial (in order) with the running best."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    acc = trials["val_accuracy"].astype(float).to_numpy()
    x = np.arange(1, len(acc) + 1)
    ax.plot(x, acc, "o", label="trial")
    ax.plot(x, np.fmax.accumulate(np.nan_to_num(acc, nan=-np.inf)), "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.legend()
    ax.set_title("Optuna (TPE) trials of the homework study")
    return figures._save(fig, path)


def cost_figure(
    curves: dict[str, pd.DataFrame], f_min: float, path: Path, label: str = "f − f*"
) -> Path:
    """f − f* (or f − f_min) against passes over the data and against seconds, one line per
    optimizer."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, h in curves.items():
        gap = np.maximum(h["loss"].to_numpy(dtype=float) - f_min, 1e-16)
        axes[0].semilogy(h["passes"], gap, marker=".", label=name)
        axes[1].semilogy(h["time_s"], gap, marker=".", label=name)
    axes[0].set_xlabel("passes over the data")
    axes[1].set_xlabel("seconds")
    for ax in axes:
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("Softmax regression on raw MNIST, λ = 1e-4: one objective, three optimizers")
    return figures._save(fig, path)


def homework(b: Any, runs: RunSet | None, refs: dict[str, Any] | None = None) -> None:
    """Append the homework section to the report builder ``b`` (a note when the study has not
    run)."""
    s = Section("homework", "Homework: softmax regression on MNIST with SGD",
                "Minibatch SGD with learning rate, batch size, epochs and λ chosen on a stratified "
                "validation split (10 % of the training images) by Hydra's Optuna sweeper; the "
                "chosen "
                "configuration is retrained on train + validation and only that model sees the "
                "test set "
                "(`python -m pipeline.train -m experiment=hw3_sgd`).")
    study = Path(b.cfg["paths"]["experiments_dir"]).absolute() / STUDY
    chosen_path, trials_path = study / "chosen.json", study / "trials.csv"
    if not (chosen_path.exists() and trials_path.exists()):
        s.note(f"The tuning study has not run yet ({chosen_path} missing); run `dvc repro`.")
        b.sections.append(s)
        return
    chosen = read_json(chosen_path, fix=RERUN_TUNING)
    trials = pd.read_csv(trials_path)
    rel = b.save_table(trials, "homework-trials")
    params = list(chosen["best_params"])
    s.table(trials, rel, f"The {len(trials)} trials (objective: validation accuracy)",
            {"job": "trial", **{p: p.split(".")[-1] for p in params}, "val_accuracy": "val acc",
             "val_loss": "val loss", "passes": "passes", "train_time_s": "s", "status": "status"})
    path, frel = b.fig_path("homework-trials")
    trials_figure(trials, path)
    s.figure(frel, "Validation accuracy of each trial and the best so far.")
    s.text("Chosen: " + ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`"
                                  for k, v in chosen["best_params"].items())
           + f" (validation accuracy {chosen['best_value']:.2%}).")
    final_path = study / "final" / "metrics.json"
    ref_name, ref_acc = PUBLISHED_SOFTMAX
    conv = _converged_reference(b)
    if final_path.exists():
        final = read_json(final_path, fix=RERUN_TUNING)
        rows = [{"model": "chosen SGD model, retrained on train + validation", "l2": final["l2"],
                 "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"]}]
        if conv is not None:
            rows.append(
                {
                    "model": f"full-batch optimum (Newton-CG, {conv['optimizer']}, λ = "
                    f"{conv['l2']:g})",
                    "l2": conv["l2"],
                    "test_accuracy": conv["test_accuracy"],
                    "test_loss": conv["test_loss"],
                }
            )
        rows.append(
            {
                "model": f"published: {ref_name}",
                "l2": None,
                "test_accuracy": ref_acc,
                "test_loss": None,
            }
        )
        df = pd.DataFrame(rows)
        rel = b.save_table(df, "homework-test")
        s.table(df, rel, "Test accuracy and cross-entropy (mean, without the penalty) of the "
                         "chosen model",
                {"model": "model", "l2": "λ", "test_accuracy": "test acc",
                 "test_loss": "test cross-entropy"})
        verdict = "AGREES" if final["test_accuracy"] >= ref_acc - 0.015 else "DISAGREES"
        s.text(f"Chosen model: test accuracy {final['test_accuracy']:.2%} vs the published ≈ "
               f"{ref_acc:.1%} "
               f"({verdict} within 1.5 points).")
    else:
        s.note(f"{final_path} missing: the chosen configuration was not retrained (a trial "
               "failed?).")
    _compare(b, s, runs, refs or {})
    b.sections.append(s)


def _converged_reference(b: Any) -> dict[str, Any] | None:
    p = (Path(b.cfg["paths"]["experiments_dir"]).absolute() / COMPARE_STUDY
         / "mnist-none-softmax-newton_cg" / "metrics.json")
    return read_json(p) if p.exists() else None


def _compare(b: Any, s: Section, runs: RunSet | None, refs: dict[str, Any]) -> None:
    curves: dict[str, pd.DataFrame] = {}
    rows = []
    for opt in COMPARE:
        rid = f"{COMPARE_STUDY}/mnist-none-softmax-{opt}"
        if runs is None or rid not in runs.histories or "passes" not in runs.histories[rid]:
            continue
        h = runs.histories[rid]
        curves[opt] = h
        m = runs.runs.loc[rid]
        rows.append(
            {
                "optimizer": opt,
                "iterations": int(h["iteration"].iloc[-1]),
                "passes": float(h["passes"].iloc[-1]),
                "seconds": float(h["time_s"].iloc[-1]),
                "train_loss": float(h["loss"].iloc[-1]),
                "test_accuracy": m.get("test_accuracy"),
            }
        )
    if len(curves) < 2:
        s.note("GD vs SGD vs Newton-CG needs the default study's raw-pixel softmax runs "
               "(experiments/default/mnist-none-softmax-{gd,sgd,newton_cg}); run `dvc repro`.")
        return
    ref = refs.get(str(m.get("objective")))  # one objective: the last run's is every run's
    certified = ref is not None and getattr(ref, "certified", False)
    f_min = float(ref.f_star) if certified else min(float(h["loss"].min()) for h in curves.values())
    gap = "f − f*" if certified else "f − f_min"
    df = pd.DataFrame(rows)
    df["gap"] = df["train_loss"] - f_min
    rel = b.save_table(df, "homework-cost")
    s.table(
        df,
        rel,
        "The same objective (raw pixels, λ = 1e-4) by three optimizers: cost to their last iterate",
        {
            "optimizer": "optimizer",
            "iterations": "iterations",
            "passes": "passes",
            "seconds": "s",
            "train_loss": "f",
            "gap": gap,
            "test_accuracy": "test acc",
        },
    )
    path, frel = b.fig_path("homework-cost")
    cost_figure(curves, f_min, path, gap)
    s.figure(frel, (f"{gap} (f* = the reference optimum)" if certified else
                    f"{gap} (f_min = the lowest loss any of "
                    "them reached)") + " against passes over the data "
                   "(one full gradient = 1; SGD 1 per epoch, Newton-CG 1 + 1 per CG step) and "
                   "against seconds.")
