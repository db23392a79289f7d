"""Seaborn/matplotlib (Agg) figures of the report; each function writes one PNG and returns its
path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
DPI = 90  # the widest figures still fill the page's 1180 px


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def spans_decades(values: np.ndarray, decades: float = 1.5) -> bool:
    """Whether the positive finite values span more than ``decades`` powers of ten."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and float(np.log10(v.max() / v.min())) > decades


def convergence(curves: pd.DataFrame, title: str, path: Path) -> Path:
    """2×3: f − f* and ‖∇f‖ (log) against iterations, passes over the data and wall time;
    colour = optimizer, line style = preprocess; x log-scaled where it spans decades; the legend
    to the right of the panels."""
    axes_x = [("iteration", "iteration"), ("passes", "passes over the data"),
              ("time_s", "wall time [s]")]
    axes_x = [a for a in axes_x if a[0] in curves.columns and curves[a[0]].notna().any()]
    fig, axes = plt.subplots(2, len(axes_x), figsize=(4.6 * len(axes_x) + 2.2, 7.6),
                             squeeze=False)
    colours = dict(
        zip(sorted(curves["optimizer"].unique()), sns.color_palette(n_colors=8), strict=False)
    )
    styles = dict(
        zip(
            sorted(curves["preprocess"].unique()),
            ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3))],
            strict=False,
        )
    )
    for row, (y, ylab) in enumerate([("subopt", "f − f*"), ("grad_norm", "‖∇f‖")]):
        for col, (x, xlab) in enumerate(axes_x):
            ax = axes[row, col]
            for (_, opt, pre), run in curves.groupby(["run", "optimizer", "preprocess"], sort=True):
                ok = np.isfinite(run[y].to_numpy()) & (run[y].to_numpy() > 0)
                ax.step(
                    run[x].to_numpy()[ok],
                    run[y].to_numpy()[ok],
                    where="post",
                    color=colours.get(opt),
                    linestyle=styles.get(pre, "-"),
                    linewidth=1.4,
                )
            ax.set_yscale("log")
            log_x = spans_decades(curves[x].to_numpy())
            if log_x:
                ax.set_xscale("symlog", linthresh=1.0 if x != "time_s" else 0.01)
                ax.set_xlim(left=0.0)
            ax.set_xlabel(xlab + (" (log scale)" if log_x else ""))
            ax.set_ylabel(ylab + " (log scale)")
            ax.set_title(f"{ylab} vs {xlab.split(' [')[0]}")
    handles = [plt.Line2D([], [], color=c, label=o) for o, c in colours.items()]
    handles += [plt.Line2D([], [], color="0.3", linestyle=st, label=p) for p, st in styles.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.86, 0.5), fontsize="small",
               title="optimizer / inputs")
    fig.suptitle(title)
    # fixed: a layout engine would draw it twice more
    fig.subplots_adjust(wspace=0.32, hspace=0.35, top=0.91, right=0.84)
    return _save(fig, path)


def loss_curves(curves: pd.DataFrame, title: str, path: Path, hue: str = "model") -> Path:
    """Training loss and ‖∇f‖ (log) against iteration, one line per run (for objectives without
    f*); the legend right of the panels."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for ax, (y, lab) in zip(axes, [("loss", "training loss"), ("grad_norm", "‖∇f‖")], strict=True):
        data = curves[np.isfinite(curves[y]) & (curves[y] > 0)]
        sns.lineplot(data=data, x="iteration", y=y, hue=hue, style="preprocess", units="run",
                     estimator=None, ax=ax, legend=(ax is axes[1]))
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(lab + " (log scale)")
        ax.set_title(f"{lab} vs iteration")
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1.0))  # outside the data
    fig.suptitle(title)
    return _save(fig, path)


def confusion(
    matrix: np.ndarray, title: str, path: Path, labels: Sequence[str] | None = None
) -> Path:
    """Heatmap of a c×c confusion matrix (rows = true class, columns = predicted), axes named by
    ``labels``."""
    c = matrix.shape[0]
    names = list(labels) if labels is not None and len(labels) == c else [str(k) for k in range(c)]
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", cbar_kws={"label": "count"}, ax=ax,
                annot_kws={"fontsize": 7}, xticklabels=names, yticklabels=names)
    if max(len(n) for n in names) > 2:
        ax.tick_params(axis="x", labelrotation=45)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
        ax.tick_params(axis="y", labelrotation=0)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _save(fig, path)


def weight_images(W: np.ndarray, title: str, path: Path, shape: Sequence[int] = (28, 28),
                  names: Sequence[str] | None = None) -> Path:
    """The columns of W (d×c, d = h·w) as h×w images titled by class name, blue < 0 < red, symmetric
    scale."""
    c = W.shape[1]
    if names is None or len(names) != c:
        names = [f"class {k}" for k in range(c)]
    names = list(names)
    cols = min(c, 5)
    rows = int(np.ceil(c / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= c:
            continue
        img = W[:, k].reshape(tuple(shape))
        vmax = float(np.max(np.abs(img))) or 1.0
        ax.imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(names[k], fontsize="medium")
    fig.suptitle(title)
    return _save(fig, path)


def spectra(spec: dict[str, np.ndarray], conds: dict[str, float], title: str, path: Path,
            ylabel: str = "λ_i of (1/n) X̃ᵀX̃ (log scale)") -> Path:
    """Eigenvalues (descending, log scale) per labelled matrix, κ in the legend (outside)."""
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for label, ev in spec.items():
        ev = np.asarray(ev, dtype=np.float64)
        ev = ev[ev > ev.max() * 1.0e-13]  # numerically zero eigenvalues are not drawn
        k = conds.get(label)
        lab = f"{label} (κ = {k:.3g})" if k is not None and np.isfinite(k) else label
        ax.plot(np.arange(1, ev.size + 1), ev, label=lab)
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index i (descending)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _save(fig, path)


def gd_paths(f_grid: tuple[np.ndarray, np.ndarray, np.ndarray],
             paths: Sequence[tuple[str, np.ndarray]], title: str, path: Path) -> Path:
    """Level sets of a 2-D function with GD iterates (one panel per learning rate)."""
    X, Y, Z = f_grid
    fig, axes = plt.subplots(1, len(paths), figsize=(5 * len(paths), 4.8), squeeze=False)
    levels = np.quantile(Z, np.linspace(0.0, 0.9, 14))
    for ax, (label, pts) in zip(axes[0], paths, strict=True):
        ax.contour(X, Y, Z, levels=np.unique(levels), cmap="viridis", linewidths=0.8)
        shown = pts[np.all(np.isfinite(pts), axis=1)]
        inside = (np.abs(shown[:, 0]) <= np.abs(X).max() * 1.5) & (
            np.abs(shown[:, 1]) <= np.abs(Y).max() * 1.5
        )
        shown = shown[np.cumprod(inside).astype(bool)]
        ax.plot(shown[:, 0], shown[:, 1], "o-", color="tab:red", ms=3, lw=1)
        ax.plot(shown[:1, 0], shown[:1, 1], "s", color="black", ms=6, label="start")
        ax.set_xlim(X.min(), X.max())
        ax.set_ylim(Y.min(), Y.max())
        ax.set_aspect("equal")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(label, fontsize="medium")
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def iterations_vs_kappa(df: pd.DataFrame, title: str, path: Path) -> Path:
    """Iterations to tolerance against κ (log–log), hue = preprocessing."""
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.lineplot(data=df, x="kappa_raw", y="iterations", hue="preprocess", style="preprocess",
                 markers=True, dashes=False, ax=ax, markersize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("condition number κ of the raw data's (1/n) X̃ᵀX̃ (log scale)")
    ax.set_ylabel("GD iterations to tolerance (log scale)")
    ax.set_title(title)
    return _save(fig, path)


def iterations_vs_kappa_methods(tables: dict[str, pd.DataFrame], title: str, path: Path) -> Path:
    """Iterations to tolerance against κ (log–log), one line per method, with grey guides ∝ κ and
    ∝ √κ through the first method's largest-κ point."""
    fig, ax = plt.subplots(figsize=(8, 5))
    marks = ["o", "s", "^", "D", "v", "P", "X"]
    anchor = None
    for (name, df), mark in zip(tables.items(), marks * 3, strict=False):
        d = df.sort_values("kappa")
        ok = np.isfinite(d["iterations"].to_numpy(np.float64))
        k = d["kappa"].to_numpy(np.float64)[ok]
        it = np.clip(d["iterations"].to_numpy(np.float64)[ok], 1.0, None)
        if k.size == 0:
            continue
        ax.plot(k, it, marker=mark, label=name, linewidth=1.6, markersize=7)
        anchor = anchor or (float(k[-1]), float(it[-1]))
    if anchor is not None:
        lo = min(float(t["kappa"].min()) for t in tables.values())
        hi = max(float(t["kappa"].max()) for t in tables.values())
        xs = np.geomspace(max(lo, 1.0), hi, 20)
        for p, style, lab in ((1.0, "--", "∝ κ (slope 1)"), (0.5, ":", "∝ √κ (slope ½)")):
            ax.plot(xs, anchor[1] * (xs / anchor[0]) ** p, color="0.55", linestyle=style,
                    linewidth=1.0, label=lab)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("condition number κ = L/μ (log scale)")
    ax.set_ylabel("iterations to tolerance (log scale)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", title="method")
    return _save(fig, path)


def adam_vs_newton_scatter(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str,
                           path: Path) -> Path:
    """One log–log panel per (label, Adam's step, 1/diag ∇²f): a point per coordinate."""
    n = max(len(pairs), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 4.2), squeeze=False)
    for ax, (label, step, inv_h) in zip(axes[0], pairs, strict=False):
        ok = np.isfinite(step) & np.isfinite(inv_h) & (step > 0) & (inv_h > 0)
        many = int(ok.sum()) > 500
        ax.scatter(inv_h[ok], step[ok], s=4 if many else 28, alpha=0.35 if many else 0.85,
                   edgecolors="none")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("1 / diag ∇²f (log scale)")
        ax.set_ylabel("Adam's step η/(√v̂ + δ) (log scale)")
        ax.set_title(label, fontsize="medium")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def loss_panels(curves: pd.DataFrame, y: str, ylab: str, title: str, path: Path) -> Path:
    """``y`` (log) against iterations and against passes over the data, one line per optimizer;
    the legend right of the panels."""
    xs = [x for x in ("iteration", "passes") if x in curves and curves[x].notna().any()]
    fig, axes = plt.subplots(1, len(xs), figsize=(5.2 * len(xs) + 1.6, 4.4), squeeze=False)
    colours = dict(zip(sorted(curves["optimizer"].unique()), sns.color_palette(n_colors=8),
                       strict=False))
    for ax, x in zip(axes[0], xs, strict=True):
        for opt, run in curves.groupby("optimizer", sort=True):
            v = run[y].to_numpy(np.float64)
            ok = np.isfinite(v) & (v > 0)
            ax.step(run[x].to_numpy()[ok], v[ok], where="post", color=colours[opt], label=opt,
                    linewidth=1.5)
        ax.set_yscale("log")
        if spans_decades(curves[x].to_numpy()):
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(left=0.0)
        ax.set_xlabel("iteration" if x == "iteration" else "passes over the data")
        ax.set_ylabel(ylab + " (log scale)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                       title="optimizer")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def min_eig_maps(maps: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], title: str,
                 path: Path) -> Path:
    """λ_min of the Hessian over a grid, one panel per function (≥ 0 everywhere ⇔ convex there)."""
    fig, axes = plt.subplots(1, len(maps), figsize=(5.8 * len(maps), 4.6), squeeze=False,
                             layout="constrained")
    vmax = max([float(np.max(np.abs(m[3]))) for m in maps] + [1.0e-3])
    for ax, (label, X, Y, L) in zip(axes[0], maps, strict=True):
        im = ax.pcolormesh(X, Y, L, cmap="RdBu", vmin=-vmax, vmax=vmax, shading="auto")
        fig.colorbar(im, ax=ax, label="λ_min(∇²f)")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(label, fontsize="medium")
    fig.suptitle(title)
    return _save(fig, path)


def inflation(image: np.ndarray, curvature: np.ndarray, data_spectrum: np.ndarray, title: str,
              path: Path) -> Path:
    """Left: a per-pixel map (log colour) of the penalty curvature λ s_j²; right: those values
    sorted (descending) beside the data term's eigenvalues, both on a log scale."""
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [1, 1.6]})
    shown = np.log10(np.maximum(image, 1.0e-12))
    im = a0.imshow(shown, cmap="magma", interpolation="nearest")
    fig.colorbar(im, ax=a0, label="log₁₀ λ s_j²")
    a0.set_title("penalty curvature per pixel", fontsize="medium")
    a0.axis("off")
    ev = np.sort(np.asarray(data_spectrum, dtype=np.float64))[::-1]
    ev = ev[ev > ev.max() * 1.0e-13]
    cv = np.sort(np.asarray(curvature, dtype=np.float64))[::-1]
    a1.plot(np.arange(1, cv.size + 1), cv, label="λ s_j² (penalty, per pixel)")
    a1.plot(np.arange(1, ev.size + 1), ev, label="eigenvalues of (1/n) Z̃ᵀZ̃ (data)")
    a1.set_yscale("log")
    a1.set_xscale("log")
    a1.set_xlabel("index, descending (log scale)")
    a1.set_ylabel("curvature (log scale)")
    a1.set_title("which term sets L", fontsize="medium")
    a1.legend(loc="lower left", fontsize="small")
    fig.suptitle(title)
    fig.subplots_adjust(wspace=0.25, top=0.86)
    return _save(fig, path)
