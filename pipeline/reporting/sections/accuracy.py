"""Claim 6 — softmax regression on MNIST: accuracy against the published reference points."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.reporting import analysis, figures
from pipeline.reporting.context import Context
from pipeline.reporting.render import Section
from pipeline.reporting.sections.common import pct, with_percent, with_run_cells
from pipeline.store.prepared import read_facts
from pipeline.store.reading import DataError  # the store's read error
from pipeline.store.rundir import class_names, load_confusion, load_input_weights, load_weights

KEY = "claim6"
NEEDS = "trained"
TITLE = "Claim 6 — softmax regression reaches the published accuracy on MNIST"
INTRO = """Accuracy of each trained MNIST classifier on the training and test images (or the
configured subsample), set against published reference points: a linear classifier ≈ 88 % (LeCun
et al. 1998) and multinomial logistic regression ≈ 92–93 %."""
COLUMNS = {"run_id": "run", "model": "model", "l2": "λ", "status": "status",
           "iterations": "iterations", "train_accuracy": "train acc", "test_accuracy": "test acc",
           "train_loss": "train loss", "test_loss": "test loss", "reference": "reference point",
           "test_minus_reference": "test − reference"}
TOLERANCE = 0.01  # a converged run within 1 point below the reference agrees


def table(ctx: Context, data: str | None = None) -> pd.DataFrame:
    """The accuracy table of the configured data set (or ``data``)."""
    if ctx.runs is None:
        return pd.DataFrame()
    return analysis.accuracy_table(ctx.runs, data or str(ctx.rep["conditioning"]["data"]))


def best_row(ctx: Context, acc: pd.DataFrame) -> pd.Series:
    """The most accurate run on exactly the configured data set (else on any data set)."""
    ten = acc[acc["data"] == str(ctx.rep["conditioning"]["data"])]
    return (ten if len(ten) else acc).sort_values("test_accuracy", ascending=False,
                                                  kind="stable").iloc[0]


def verdict(acc: pd.DataFrame) -> str:
    """Converged softmax runs against their reference; budget-capped runs named as such."""
    soft = acc[(acc["model"] == "softmax") & acc["test_minus_reference"].notna()]
    conv = soft[soft["status"] == "converged"]
    capped = soft[soft["status"] != "converged"]
    if conv.empty:
        return "not decided — no converged softmax run with a reference point."
    best = conv.sort_values("test_accuracy", ascending=False).iloc[0]
    gap = float(best["test_minus_reference"])
    word = "agrees" if gap >= -TOLERANCE else "DISAGREES"
    budget = (f" {len(capped)} run(s) stop at the iteration budget their study sets (status "
              f"{', '.join(sorted(set(capped['status'].astype(str))))}); their lower accuracy "
              "is that budget, not a failure." if len(capped) else "")
    return (f"{word} — the best converged softmax run scores {pct(best['test_accuracy'])}, "
            f"{abs(gap) * 100:.2f} points {'above' if gap >= 0 else 'below'} the published "
            f"{best['reference']} (threshold: at most {TOLERANCE * 100:.0f} point below)."
            + budget)


def section(ctx: Context) -> list[Section]:
    """The accuracy table, the best run's confusion matrix and weights, the verdict."""
    acc = table(ctx)
    if acc.empty:
        return []
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    s.table(with_percent(with_run_cells(ctx, acc)), ctx.save_table(acc, "accuracy"),
            "Accuracy and loss per model × optimizer × preprocessing", COLUMNS)
    best = best_row(ctx, acc)
    s.text(f"Best run: `{ctx.label(best['run_id'])}` with test accuracy "
           f"{pct(best['test_accuracy'])}.")
    best_run_details(ctx, s, str(best["run_id"]))
    s.verdict(verdict(acc))
    return [s]


def image_shape(ctx: Context, run_id: str) -> list[int]:
    """The data set's image shape (prepared facts ``meta.image_shape``), else 28×28."""
    js = analysis.prepared_file(ctx.runs, run_id, ctx.paths["prepared_dir"]).with_suffix(".json")
    try:
        shape = read_facts(js).get("meta", {}).get("image_shape")
    except DataError:
        shape = None
    return [int(v) for v in shape] if isinstance(shape, list) and shape else [28, 28]


def input_weights(ctx: Context, run_id: str) -> np.ndarray | None:
    """W_x of a run on the raw inputs: evaluate's input_weights.npz, or the weights themselves
    for raw inputs."""
    run_dir = ctx.runs.dirs.get(run_id)
    if run_dir is None:
        return None
    got = load_input_weights(run_dir)
    if got is None and str(ctx.runs.runs.loc[run_id, "preprocess"]) == "none":
        got = load_weights(run_dir)
    return None if got is None or "coef" not in got else np.asarray(got["coef"], np.float64)


def best_run_details(ctx: Context, s: Section, rid: str) -> None:
    """Confusion matrix, per-class accuracy and weight images of one run, classes by name."""
    run_dir = ctx.runs.dirs.get(rid)
    label = ctx.label(rid)
    cm = load_confusion(run_dir) if run_dir else None
    if cm is not None:
        names = class_names(run_dir, cm.shape[0])
        path, crel = ctx.figure(f"confusion-{rid}")
        figures.confusion(cm, f"Confusion matrix of {label} (test set)", path, names)
        s.figure(crel, f"Confusion matrix of the best run {label}: rows = true class, columns = "
                       "predicted.")
        support = cm.sum(axis=1)
        off = cm.copy()
        np.fill_diagonal(off, -1)  # the most frequent wrong prediction of each true class
        per = pd.DataFrame({"class": names, "test_examples": support, "correct": np.diag(cm),
                            "accuracy": np.diag(cm) / np.maximum(support, 1),
                            "most_confused_with": [names[j] for j in off.argmax(axis=1)]})
        s.table(with_percent(per), ctx.save_table(per, f"per-class-{rid}"),
                f"Per-class test accuracy of {label} (recall of each class)")
    W_x = input_weights(ctx, rid)
    shape = image_shape(ctx, rid)
    if W_x is not None and W_x.ndim == 2 and W_x.shape[0] == int(np.prod(shape)):
        names = class_names(run_dir, W_x.shape[1])
        path, wrel = ctx.figure(f"weights-{rid}")
        figures.weight_images(W_x, f"Softmax weight vectors of {label} as "
                                   f"{'×'.join(map(str, shape))} images", path, shape, names)
        mapped = ("" if str(ctx.runs.runs.loc[rid, "preprocess"]) == "none" else
                  ", mapped back to pixel space by evaluate (W_x = Aᵀ W)")
        s.figure(wrel, f"The {W_x.shape[1]} learned weight vectors w_k, titled by class (red > 0 "
                       f"votes for class k, blue < 0 against){mapped}.")
    elif str(ctx.runs.runs.loc[rid, "preprocess"]) != "none":
        s.note(f"No input-space weights for {label}; rerun `python -m pipeline.evaluate` for it "
               "to draw its weight images.")
