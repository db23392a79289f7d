"""The homework: softmax regression on MNIST with minibatch SGD tuned by Optuna, then GD vs SGD vs
Newton-CG on one objective."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline.reporting import figures
from pipeline.reporting.context import Context
from pipeline.reporting.render import Section
from pipeline.reporting.sections.common import pct, with_percent
from pipeline.store.rundir import read_json, read_run_record

KEY = "homework"
NEEDS = "trained"
TITLE = "Homework — minibatch SGD tuned on a validation split"
INTRO = """Minibatch SGD with learning rate, batch size, epochs and λ chosen on a stratified
validation split (10 % of the training images) by Hydra's Optuna sweeper; the chosen
configuration is retrained on train + validation and only that model sees the test set (`python
-m pipeline.train -m experiment=hw3_sgd`)."""
STUDY = "hw3_sgd"
COMPARE_STUDY = "default"  # the same objective (raw MNIST pixels, λ = 1e-4) for gd, sgd, newton_cg
COMPARE = ("gd", "sgd", "newton_cg")
RERUN_TUNING = "rerun the tuning study (python -m pipeline.train -m experiment=hw3_sgd)"
# published MNIST test accuracy of multinomial logistic regression (the homework's yardstick)
PUBLISHED_SOFTMAX = ("multinomial logistic regression, typical", 0.925)
TOLERANCE = 0.015  # the chosen model agrees within 1.5 points of the published accuracy


def trials_figure(trials: pd.DataFrame, path: Path) -> Path:
    """Validation accuracy per trial (numbered as in the table) with the running best."""
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    acc = trials["val_accuracy"].astype(float).to_numpy()
    x = trials["job"].to_numpy() if "job" in trials else np.arange(len(acc))
    ax.plot(x, acc, "o", label="trial")
    ax.plot(x, np.fmax.accumulate(np.nan_to_num(acc, nan=-np.inf)), "-", label="best so far")
    ax.set_xticks(x)
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Optuna (TPE) trials of the homework study")
    return figures._save(fig, path)


def cost_figure(curves: dict[str, pd.DataFrame], f_min: float, path: Path,
                label: str = "f − f*") -> Path:
    """f − f* against passes over the data and against seconds (log–log), one line per
    optimizer, the legend outside."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for name, h in curves.items():
        gap = np.maximum(h["loss"].to_numpy(dtype=float) - f_min, 1e-16)
        axes[0].loglog(h["passes"], gap, marker=".", label=name)
        axes[1].loglog(h["time_s"], gap, marker=".", label=name)
    axes[0].set_xlabel("passes over the data (log scale)")
    axes[1].set_xlabel("seconds (log scale)")
    for ax in axes:
        ax.set_ylabel(label + " (log scale)")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Softmax regression on raw MNIST, λ = 1e-4: one objective, three optimizers")
    fig.subplots_adjust(wspace=0.3, right=0.86, top=0.86)
    return figures._save(fig, path)


def test_table(ctx: Context, final: dict) -> pd.DataFrame:
    """The chosen model, the full-batch optimum of the same data and the published point."""
    ref_name, ref_acc = PUBLISHED_SOFTMAX
    rows = [{"model": "chosen SGD model, retrained on train + validation", "l2": final["l2"],
             "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"]}]
    rid = f"{COMPARE_STUDY}/mnist-none-softmax-newton_cg"
    if ctx.runs is not None and rid in ctx.runs.runs.index:
        conv = ctx.runs.runs.loc[rid]
        rows.append({"model": f"full-batch optimum (Newton-CG, λ = {conv['l2']:g})",
                     "l2": conv["l2"], "test_accuracy": conv["test_accuracy"],
                     "test_loss": conv["test_loss"]})
    rows.append({"model": f"published: {ref_name}", "l2": None, "test_accuracy": ref_acc,
                 "test_loss": None})
    return pd.DataFrame(rows)


def section(ctx: Context) -> list[Section]:
    """Trials, the chosen configuration, its test scores and verdict, GD vs SGD vs Newton-CG."""
    study = Path(ctx.paths["experiments_dir"]).absolute() / STUDY
    chosen_path, trials_path = study / "chosen.json", study / "trials.csv"
    if not (chosen_path.exists() and trials_path.exists()):
        return []
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    chosen = read_json(chosen_path, fix=RERUN_TUNING)
    trials = pd.read_csv(trials_path)
    params = list(chosen["best_params"])
    s.table(with_percent(trials), ctx.save_table(trials, "homework-trials"),
            f"The {len(trials)} trials (objective: validation accuracy)",
            {"job": "trial", **{p: p.split(".")[-1] for p in params}, "val_accuracy": "val acc",
             "val_loss": "val loss", "passes": "passes", "train_time_s": "s", "status": "status"})
    path, frel = ctx.figure("homework-trials")
    trials_figure(trials, path)
    s.figure(frel, "Validation accuracy of each trial and the best so far.")
    s.text("Chosen: " + ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`"
                                  for k, v in chosen["best_params"].items())
           + f" (validation accuracy {pct(chosen['best_value'])}).")
    final_path = study / "final" / "metrics.json"
    if final_path.exists():
        final = read_run_record(final_path, fix=RERUN_TUNING)
        df = test_table(ctx, final)
        s.table(with_percent(df), ctx.save_table(df, "homework-test"),
                "Test accuracy and cross-entropy (mean, without the penalty) of the chosen model",
                {"model": "model", "l2": "λ", "test_accuracy": "test acc",
                 "test_loss": "test cross-entropy"})
    compare(ctx, s)
    if final_path.exists():
        ref_acc = PUBLISHED_SOFTMAX[1]
        gap = float(final["test_accuracy"]) - ref_acc
        word = "agrees" if gap >= -TOLERANCE else "DISAGREES"
        s.verdict(f"{word} — the chosen SGD model scores {pct(final['test_accuracy'])} against "
                  f"the published ≈ {pct(ref_acc)} ({abs(gap) * 100:.2f} points "
                  f"{'above' if gap >= 0 else 'below'}; threshold: at most "
                  f"{TOLERANCE * 100:.1f} points below).")
    else:
        s.note(f"{final_path} missing: the chosen configuration was not retrained (a trial "
               "failed?).")
    return [s]


def compare(ctx: Context, s: Section) -> None:
    """GD vs SGD vs Newton-CG on the default study's raw-pixel softmax objective."""
    curves: dict[str, pd.DataFrame] = {}
    rows = []
    runs = ctx.runs
    oid = None
    for opt in COMPARE:
        rid = f"{COMPARE_STUDY}/mnist-none-softmax-{opt}"
        if runs is None or rid not in runs.histories or "passes" not in runs.histories[rid]:
            continue
        h = runs.histories[rid]
        curves[opt] = h
        m = runs.runs.loc[rid]
        oid = m.get("objective")
        rows.append({"optimizer": opt, "iterations": int(h["iteration"].iloc[-1]),
                     "passes": float(h["passes"].iloc[-1]), "seconds": float(h["time_s"].iloc[-1]),
                     "train_loss": float(h["loss"].iloc[-1]),
                     "test_accuracy": m.get("test_accuracy")})
    if len(curves) < 2:
        return
    ref = ctx.refs.get(str(oid))
    certified = ref is not None and ref.certified
    f_min = float(ref.f_star) if certified else min(float(h["loss"].min())
                                                    for h in curves.values())
    gap = "f − f*" if certified else "f − f_min"
    df = pd.DataFrame(rows)
    df["gap"] = df["train_loss"] - f_min
    s.table(with_percent(df), ctx.save_table(df, "homework-cost"),
            "The same objective (raw pixels, λ = 1e-4) by three optimizers: cost to their last "
            "iterate", {"optimizer": "optimizer", "iterations": "iterations", "passes": "passes",
                        "seconds": "s", "train_loss": "f", "gap": gap,
                        "test_accuracy": "test acc"})
    path, frel = ctx.figure("homework-cost")
    cost_figure(curves, f_min, path, gap)
    s.figure(frel, (f"{gap} (f* = the reference optimum)" if certified else
                    f"{gap} (f_min = the lowest loss any of them reached)")
             + " against passes over the data (one full gradient = 1; SGD 1 per epoch, "
               "Newton-CG 1 + 1 per CG step) and against seconds.")
