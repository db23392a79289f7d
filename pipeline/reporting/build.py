"""Assemble the report's sections from files: runs, reference optima, analytic studies, prepared
facts.

Nothing here solves or trains: the stages before the report computed everything (``reference``,
``analytic``, ``train``, ``evaluate``); the ``Builder`` reads their files, computes tables from them
(``pipeline.reporting.analysis``), draws figures (``figures``) and lays out ``Section``s
(``render``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.schemas import PreprocessConfig
from pipeline.core.errors import DataError
from pipeline.reporting import analysis, figures
from pipeline.reporting.gather import RunSet
from pipeline.reporting.homework import homework
from pipeline.reporting.render import Section
from pipeline.spec import prepared_stem
from pipeline.store.prepared import load_spectra, load_transform, prepared_path, read_facts
from pipeline.store.references import Reference, load_references, reference_table
from pipeline.store.rundir import class_names, load_confusion, load_weights
from pipeline.store.studies import read_study

_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def slug(*parts: Any) -> str:
    """A file-name-safe name from parts."""
    return _SAFE.sub("_", "-".join(str(p) for p in parts)).strip("_")


PLOT_POINTS = 400  # rows of a history drawn per curve (the first, the last, and log-spaced between)


def _thin(hist: pd.DataFrame, n: int = PLOT_POINTS) -> pd.DataFrame:
    """At most ``n`` rows of a history for drawing: log-spaced in the row index, first and last
    kept."""
    if len(hist) <= n:
        return hist
    idx = np.unique(np.concatenate([[0, len(hist) - 1],
                                    np.geomspace(1, len(hist) - 1, n - 2).astype(np.int64)]))
    return hist.iloc[idx]


def _tol(tol: float) -> str:
    """A tolerance as a reader writes it: 1e-4, 1e-8."""
    exp = math.log10(tol)
    return f"1e{int(round(exp))}" if abs(exp - round(exp)) < 1e-9 else f"{tol:g}"


def _cell(value: Any, basis: str) -> Any:
    """A measured number as is; a projected one as '≈ n'; 'never' where the fitted rate does not
    converge."""
    if basis == "never":
        return "never (rate ≥ 1)"
    if basis == "stochastic":
        return "– (SGD: no linear rate)"
    if basis == "projected" and value is not None and math.isfinite(float(value)):
        return f"≈ {float(value):.3g}"
    return value


def speed_display(df: pd.DataFrame, tols: Sequence[float],
                  kinds: Sequence[str] = ("iters", "passes", "seconds")) -> pd.DataFrame:
    """The typed ``<kind>_to_<tol>`` columns as shown on the page: projections marked '≈',
    never-reached
    spelled out (by the row's ``basis_<tol>``)."""
    out = df.copy()
    for tol in tols:
        t = analysis.tol_key(tol)
        basis = f"basis_{t}"
        for kind in kinds:
            col = f"{kind}_to_{t}"
            if col in out and basis in out:
                out[col] = [_cell(v, b) for v, b in zip(out[col], out[basis], strict=True)]
    return out


@dataclass
class Built:
    sections: list[Section]
    timings: dict[str, float]


class Builder:
    """Writes figures/ and tables/ under ``out`` and collects sections."""

    def __init__(self, out: Path, cfg: Mapping[str, Any]) -> None:
        self.out = out
        self.cfg = cfg
        self.rep = cfg["report"]
        self.sections: list[Section] = []
        self.timings: dict[str, float] = {}

    # -- helpers -----------------------------------------------------------------------------
    def fig_path(self, name: str) -> tuple[Path, str]:
        rel = f"figures/{slug(name)}.png"
        return self.out / rel, rel

    def save_table(self, df: pd.DataFrame, name: str) -> str:
        rel = f"tables/{slug(name)}.csv"
        (self.out / "tables").mkdir(parents=True, exist_ok=True)
        df.to_csv(self.out / rel, index=False)
        return rel

    def timed(self, key: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def study_files(
        self, key: str, s: Section
    ) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]] | None:
        """(study.json, table.csv, arrays.npz) of an analytic study (``report.analytic.<key>``);
        None,
        with section ``s`` appended saying what is missing, when the study has not been computed."""
        name = str(self.rep["analytic"][key])
        folder = Path(self.cfg["paths"]["analytic_dir"]) / name
        try:
            return read_study(folder)
        except DataError as err:
            s.note(f"Not computed yet ({err}).")
            self.sections.append(s)
            return None

    # -- analytic studies (python -m pipeline.analytic) ---------------------------------------
    def claim1(self) -> None:
        s = Section("claim1", "Claim 1 — the learning rate: too small, about right, above 2/L",
                    "Gradient descent w ← w − ε∇f on a quadratic converges for 0 < ε < 2/L; small "
                    "ε crawls, "
                    "ε near 2/(L+μ) is fastest, ε between 1/L and 2/L overshoots and oscillates "
                    "along the "
                    "steep axis, and ε > 2/L diverges. Each panel shows the level sets and the GD "
                    "path.")
        got = self.study_files("claim1", s)
        if got is None:
            return
        meta, table, arrays = got
        for f in meta["figures"]:
            key = f["key"]
            path, rel = self.fig_path(f"claim1-{key}")
            paths = [(label, arrays[f"{key}/path{i}"]) for i, label in enumerate(f["labels"])]
            figures.gd_paths(
                (arrays[f"{key}/x"], arrays[f"{key}/y"], arrays[f"{key}/f"]),
                paths,
                f["title"],
                path,
            )
            s.figure(rel, f["title"] + " — one panel per learning rate ε; the black square is the "
                                       "start.")
        s.table(table, self.save_table(table, "claim1-gd-paths"),
                "Predicted behaviour (from |1 − εL| and |1 − εμ|) and measured f − f* after the "
                "steps")
        bad = table[table["predicted"].astype(str).str.contains("disagrees")]
        if len(bad):
            s.note(f"{len(bad)} path(s) DISAGREE with the prediction; see the table.")
        self.sections.append(s)

    def claim2(self) -> None:
        s = Section("claim2", "Claim 2 — spherical vs ellipsoidal level sets (condition number κ)",
                    "On least squares the Hessian is (1/n) X̃ᵀX̃; GD with ε = 1/L needs about "
                    "κ·log(1/tol) "
                    "iterations, so elongated (ellipsoidal) level sets slow it down linearly in κ. "
                    "Whitening "
                    "makes the Hessian the identity — spherical level sets — and one step with ε = "
                    "1 lands "
                    "on the minimum.")
        got = self.study_files("claim2", s)
        if got is None:
            return
        meta, table, _ = got
        path, rel = self.fig_path("claim2-iterations-vs-kappa")
        figures.iterations_vs_kappa(table, meta["figures"][0]["title"], path)
        s.figure(rel, "Iterations to tolerance against the κ of the raw data (raw inputs: GD with "
                      "ε = 1/L; "
                      "whitened inputs: their κ is 1 whatever the raw κ, and ε as configured).")
        s.table(table, self.save_table(table, "claim2-kappa-sweep"),
                "GD iterations per requested κ and preprocessing (predicted ≈ κ·ln(‖∇f₀‖/tol))")
        m = meta["metrics"]
        slope = m.get("loglog_slope_iterations_vs_kappa")
        if slope is not None:
            verdict = ("agrees with the linear-in-κ prediction" if 0.7 <= slope <= 1.3
                       else "DISAGREES with the linear-in-κ prediction (max_iter reached or κ too "
                            "small?)")
            s.text(f"Log–log slope of iterations against κ for raw inputs: {slope:.2f} — "
                   f"{verdict}.")
        n_white = m.get("whitened_max_iterations")
        if n_white is not None:
            s.text(f"Whitened inputs: κ ≤ {m.get('whitened_max_kappa', float('nan')):.3g} and at "
                   "most "
                   f"{int(n_white)} iteration(s) whatever the raw κ"
                   + (" — the one-step claim holds." if int(n_white) == 1 else
                      " — the one-step claim DISAGREES (check the whitening's rel_threshold / "
                      "lr)."))
        self.sections.append(s)

    def claim3(self) -> None:
        s = Section("claim3", "Claim 3 — convexity: the Hessian eigenvalue check",
                    "A twice-differentiable f is convex iff ∇²f ⪰ 0 everywhere, i.e. its smallest "
                    "eigenvalue "
                    "is ≥ 0. For linear, logistic and softmax regression the Hessian is X̃ᵀDX̃ "
                    "with D ⪰ 0, so "
                    "they are convex; we check λ_min numerically at random points on real data, "
                    "and map "
                    "λ_min for the lecture's exercise functions.")
        got = self.study_files("claim3", s)
        if got is None:
            return
        meta, table, arrays = got
        f = meta["figures"][0]
        maps = [(label, arrays[f"map{i}/x"], arrays[f"map{i}/y"], arrays[f"map{i}/lambda_min"])
                for i, label in enumerate(f["labels"])]
        path, rel = self.fig_path("claim3-exercise-functions")
        figures.min_eig_maps(maps, f["title"], path)
        s.figure(rel, "Smallest Hessian eigenvalue over the grid: x² + y + 5 has λ_min = 0 "
                      "everywhere (convex, "
                      "not strictly); x⁴ + xy + x² has det ∇²f = −1 < 0 everywhere (never convex).")
        s.table(table, self.save_table(table, "claim3-convexity"),
                "Smallest / largest Hessian eigenvalue found (convex ⇔ min ≥ 0 up to rounding)")
        s.text("λ_min ≈ 0 (not > 0) on MNIST is expected: always-black border pixels give flat "
               "directions, "
               "and softmax is invariant to adding one vector to every class's weights — convex, "
               "not strictly "
               "convex; the L2 penalty λ > 0 makes them strictly convex.")
        self.sections.append(s)

    def conditioning(self) -> None:
        c = self.rep["conditioning"]
        s = Section("conditioning", "Conditioning of MNIST: raw, z-scored and whitened",
                    "The eigenvalues of the uncentered auto-covariance (1/n) X̃ᵀX̃ set GD's speed: "
                    "κ = λ_max/λ_min. Z-scoring equalizes the pixel scales; whitening T = Λ^-1/2 "
                    "Φᵀ maps "
                    "every kept direction to eigenvalue 1.")
        pdir = Path(self.cfg["paths"]["prepared_dir"])
        rows, spec, conds = [], {}, {}
        for pre in c["prepared"]:
            js = prepared_path(pdir, prepared_stem(str(c["data"]), str(pre))).with_suffix(".json")
            try:
                facts = read_facts(js)
            except DataError:
                continue
            rows.append(
                {
                    "prepared": js.stem,
                    "preprocess": pre,
                    **{
                        k: facts.get(k)
                        for k in (
                            "n_train",
                            "n_features_in",
                            "n_features_out",
                            "n_kept",
                            "cond_before",
                            "cond_after",
                            "cond_before_nonzero",
                            "cond_after_nonzero",
                            "cond_before_ridge",
                            "cond_after_ridge",
                        )
                    },
                }
            )
            npz = js.with_suffix(".npz")
            if npz.exists():
                spectra = load_spectra(npz)
                if "raw" not in spec and "spectrum_before" in spectra:
                    spec["raw"] = spectra["spectrum_before"]
                    conds["raw"] = _cond(spec["raw"])
                if pre != "none" and "spectrum_after" in spectra:
                    spec[pre] = spectra["spectrum_after"]
                    conds[pre] = _cond(spec[pre])
        if not rows:
            s.note("No prepared files "
                   f"{pdir}/{c['data']}-{{{','.join(map(str, c['prepared']))}}}.json; "
                   "run `dvc repro` (prepare) first.")
            self.sections.append(s)
            return
        table = pd.DataFrame(rows)
        if spec:
            path, rel = self.fig_path(f"conditioning-{c['data']}")
            figures.spectra(spec, conds, f"Spectrum of (1/n) X̃ᵀX̃ on {c['data']}", path)
            s.figure(rel, "Eigenvalues in descending order (log scale); numerically zero "
                          "eigenvalues "
                          "(always-black pixels) are not drawn — they make the raw κ in the table "
                          "infinite; "
                          "cond_*_nonzero is κ on the non-zero part.")
        s.table(table, self.save_table(table, f"conditioning-{c['data']}"),
                "Condition numbers before / after each preprocessing (null = infinite: a singular "
                "matrix); "
                "cond_*_ridge: of the regularized least-squares Hessian (1/n) X̃ᵀX̃ + λ·I_W, which "
                "ridge "
                "whitening maps to I")
        self.sections.append(s)

    # -- trained runs --------------------------------------------------------------------------
    def references(
        self, runs: RunSet
    ) -> tuple[dict[str, Reference], dict[str, Reference], list[str]]:
        """(every reference optimum file, those matched to the runs' objectives, notes for the
        page)."""
        refs, notes = load_references(self.cfg["paths"]["reference_dir"])
        matched, more = analysis.match_references(runs, refs)
        return refs, matched, notes + more

    def headline(self, speed: pd.DataFrame) -> None:
        """First section: per problem, optimizer × preprocessing → cost to each tolerance, test
        accuracy."""
        study = str(self.rep["headline_study"])
        tols = [float(t) for t in self.rep["tolerances"]]
        s = Section("headline", "Headline — how fast each optimizer reaches the optimum",
                    f"Study `{study}`: per problem, every optimizer × preprocessing on the same "
                    "objective "
                    "(the L2 penalty acts on the input-space weights, so each problem has one f*, "
                    "from the "
                    "reference stage). Cost to a relative suboptimality (f − f*)/|f*| ≤ tol in "
                    "iterations, "
                    "passes over the data (one full gradient = 1) and seconds (each run's own "
                    "clock; `dvc repro` "
                    "trains the three full-MNIST runs of an optimizer at once, one BLAS thread "
                    "each): measured "
                    "where the run got there; otherwise projected from the run's measured linear "
                    "rate (≈, an "
                    "extrapolation); 'never' where the measured rate does not converge.")
        tab = analysis.headline_table(speed, study, tols)
        if tab.empty:
            s.note(f"No runs of study {study!r} with a converged reference optimum; run `dvc "
                   "repro`.")
            self.sections.insert(0, s)
            return
        rel = self.save_table(tab, "headline")
        cols = {
            "data": "data",
            "model": "model",
            "optimizer": "optimizer",
            "preprocess": "preprocess",
            "status": "status",
            "iterations": "iters run",
        }
        for tol in tols:
            t = analysis.tol_key(tol)
            cols |= {f"iters_to_{t}": "iters to "
                                      f"{_tol(tol)}", f"passes_to_{t}": f"passes to {_tol(tol)}",
                     f"seconds_to_{t}": f"s to {_tol(tol)}"}
        cols["test_accuracy"] = "test acc"
        s.table(speed_display(tab, tols), rel, "Cost to each tolerance (≈ projected at the run's "
                                               "measured "
                "linear rate — an extrapolation, optimistic for GD, whose rate slows as the "
                "flattest "
                "directions take over; 'never': the measured rate does not converge; 'stochastic': "
                "SGD's "
                "error levels off at its step size's noise, no linear rate to project)", cols)
        t_last = analysis.tol_key(tols[-1])
        second = tab[tab["optimizer"].isin(["newton", "newton_cg"])]
        if len(second):
            ok = second[f"basis_{t_last}"].eq("measured")
            s.text(f"Second-order runs reaching {_tol(tols[-1])}: {int(ok.sum())} of {len(second)}"
                   + ("." if ok.all() else " — DISAGREES with running them to their tolerance: "
                      + ", ".join(second.loc[~ok, "run_id"]) + "."))
        fac = analysis.coordinates_factors(speed, study, tols[-1])
        if len(fac):
            rel = self.save_table(fac, "whitening-factors")
            s.table(
                fac,
                rel,
                f"One objective, other coordinates: cost to {_tol(tols[-1])} of each "
                "preprocessing "
                "and its ratio to raw pixels (< 1: faster)",
                {
                    "data": "data",
                    "model": "model",
                    "optimizer": "optimizer",
                    "preprocess": "preprocess",
                    "basis": "basis",
                    f"iterations_to_{t_last}": "iterations",
                    "cg_iterations": "CG iterations",
                    f"passes_to_{t_last}": "passes",
                    "iterations_vs_raw": "iterations / raw",
                    "passes_vs_raw": "passes / raw",
                    "kappa": "κ of ∇²f(w*)",
                },
            )
            for line in factor_lines(fac, _tol(tols[-1])):
                s.text(line)
            s.text("Exact Newton is affine invariant: on one objective its steps do not depend on "
                   "the "
                   "coordinates. GD's iterations follow the conditioning of ∇²f in the coordinates "
                   "it runs "
                   "in; Newton-CG's inner CG iterations too, unless a preconditioner already "
                   "absorbs it.")
        self.sections.insert(0, s)

    def curves(self, runs: RunSet, rids: list[str], refs: dict[str, Reference]) -> pd.DataFrame:
        parts = []
        for rid in rids:
            h = runs.histories.get(rid)
            oid = analysis.objective_of(runs, rid)
            ref = refs.get(oid) if oid else None
            if h is None or len(h) == 0:
                continue
            h = analysis.suboptimality(h, ref.f_star) if ref else h.assign(subopt=np.nan)
            h = _thin(h)
            r = runs.runs.loc[rid]
            lab_pre = str(r["preprocess"]) + ("" if len({runs.runs.loc[x, "l2"] for x in rids}) == 1
                                              else f", λ={r['l2']:g}")
            parts.append(h.assign(run=rid, optimizer=str(r["optimizer"]), preprocess=lab_pre,
                                  model=str(r["model"])))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def convergence(
        self, runs: RunSet, refs: dict[str, Reference], notes: list[str]
    ) -> pd.DataFrame:
        s = Section("convergence", "Convergence of every trained run",
                    "Suboptimality f − f* (log scale) against iterations, passes over the data and "
                    "wall time, "
                    "and the gradient norm, one line per optimizer × preprocessing. A straight "
                    "line on the log "
                    "scale is linear convergence (GD, rate ≈ 1 − 1/κ); a curve that bends down "
                    "ever faster is "
                    "Newton's quadratic convergence. f* comes from the reference stage (see the "
                    "last section).")
        df = runs.runs
        for key, grp in df.groupby(["study", "data", "model"], sort=True):
            rids = list(grp.index)
            if str(key[2]) in analysis.NONCONVEX:
                continue  # no certified f*: shown as loss curves in claim 4
            oids = {analysis.objective_of(runs, r) for r in rids}
            if not any(oid in refs and refs[oid].certified for oid in oids):
                # no reference f* (e.g. tuning trials, each its own λ): nothing to converge to
                continue
            cur = self.curves(runs, rids, refs)
            if cur.empty:
                continue
            path, rel = self.fig_path(f"convergence-{key[0]}-{key[1]}-{key[2]}")
            figures.convergence(cur, f"{key[2]} on {key[1]} (study {key[0]})", path)
            s.figure(rel, f"Study {key[0]}: {key[2]} regression on {key[1]} — f − f* and ‖∇f‖ "
                          "against "
                          "iteration, passes over the data and wall time.")
            if len(oids) > 1:
                s.note(f"Study {key[0]}, {key[2]} on {key[1]}: {len(oids)} objectives "
                       f"({', '.join(sorted(str(o) for o in oids))}) — the penalty acts on other "
                       "coordinates (preprocess.penalty_space=transformed) or λ differs, so these "
                       "runs "
                       "have different f*; compare rates, not loss values.")
        for n in notes:
            s.note(n)
        tols = [float(t) for t in self.rep["tolerances"]]
        speed = analysis.speed_table(runs, refs, tols)
        if speed.empty:
            s.note("No run has a converged reference optimum yet: no speed table (run `dvc "
                   "repro`).")
            self.sections.append(s)
            return speed
        rel = self.save_table(speed, "speed")
        cols = {"run_id": "run", "optimizer": "optimizer", "preprocess": "preprocess",
                "status": "status", "iterations": "iterations"}
        for tol in tols:
            t = analysis.tol_key(tol)
            cols |= {f"iters_to_{t}": f"iters to {_tol(tol)}",
                     f"projected_iters_to_{t}": f"iters to {_tol(tol)}, ≈ projected",
                     f"seconds_to_{t}": f"s to {_tol(tol)}"}
        cols.update({"kappa": "κ of ∇²f(w*)", "kappa_gd": "κ for GD = 1/(εμ)",
                     "rate_measured": "rate measured", "rate_predicted": "1 − 1/κ = 1 − εμ",
                     "rate_check": "theory check"})
        caption = ("Speed: iterations and seconds to relative suboptimality (f − f*)/|f*| ≤ tol "
                   "(– = not reached; ≈ = projected at the run's measured rate; the CSV has passes "
                   "too, and a reached/projected column per tolerance)")
        s.table(speed_display(speed, tols, kinds=("projected_iters",)), rel, caption, cols)
        dis = speed[speed["rate_check"].str.startswith("DISAGREES")]
        if len(dis):
            s.note(f"{len(dis)} GD run(s) DISAGREE with the bound f − f* ≤ (1 − 1/κ)ᵏ(f₀ − f*): "
                   + ", ".join(dis["run_id"]) + ". Possible causes: f* not tight, ε ≠ 1/L with L "
                                                "the "
                   "local curvature, or the run stopped before the asymptotic regime.")
        ok = speed[speed["rate_check"].str.startswith("agrees")]
        if len(ok):
            s.text(f"{len(ok)} GD run(s) converge at least as fast as the predicted 1 − 1/κ per "
                   "iteration. "
                   "Here κ = L/μ with μ = λ_min(∇²f(w*)) in the run's coordinates and L = 1/ε the "
                   "smoothness "
                   "constant GD used: with ε = 1/L from a global bound (for logistic losses "
                   "L ≤ λ_max(X̃ᵀX̃)/(4n)) this κ exceeds the local κ of ∇²f(w*), and on a "
                   "quadratic the "
                   "asymptotic rate is (1 − 1/κ)² — so a measured rate below the bound is "
                   "expected, not a "
                   "contradiction.")
        self.sections.append(s)
        return speed

    def claim4(self, runs: RunSet) -> None:
        name = str(self.rep["trained_studies"]["bad_init"])
        s = Section("claim4", "Claim 4 — bad initialization and the attenuated gradient",
                    "With a sigmoid output and the squared loss, ∂f/∂z = (σ(z) − y)·σ(z)(1 − "
                    "σ(z)): from a "
                    "saturated start σ′ ≈ 0, the gradient vanishes and GD barely moves. The "
                    "log-loss gradient "
                    "σ(z) − y has no σ′ factor and recovers at once.")
        df = runs.runs[runs.runs["study"] == name]
        if df.empty:
            s.note(f"No runs of study {name!r}; run `dvc repro` (or `python -m pipeline.train -m "
                   f"experiment={name}`).")
            self.sections.append(s)
            return
        cur = self.curves(runs, list(df.index), {})
        if not cur.empty:
            path, rel = self.fig_path(f"claim4-{name}")
            figures.loss_curves(cur, "Saturated start: squared loss vs "
                                     f"log-loss (study {name})", path, hue="model")
            s.figure(rel, "Training loss and gradient norm from the same saturated initialization.")
        tab = df[
            [
                "run_id",
                "model",
                "optimizer",
                "preprocess",
                "iterations",
                "status",
                "train_loss",
                "grad_norm",
                "train_accuracy",
                "test_accuracy",
            ]
        ].copy()
        tab.insert(
            5,
            "grad_norm_start",
            [
                float(runs.histories[r]["grad_norm"].iloc[0]) if r in runs.histories else np.nan
                for r in tab["run_id"]
            ],
        )
        tab.insert(6, "loss_start", [float(runs.histories[r]["loss"].iloc[0])
                                     if r in runs.histories else np.nan for r in tab["run_id"]])
        s.table(tab, self.save_table(tab, f"claim4-{name}"), "Start and end of each run")
        acc = tab.set_index("model")["test_accuracy"]
        if {"logistic", "logistic_mse"} <= set(acc.index):
            a_ce, a_mse = float(acc["logistic"].max()), float(acc["logistic_mse"].max())
            s.text(f"Test accuracy after the same budget: log-loss {a_ce:.1%}, squared loss "
                   f"{a_mse:.1%} — "
                   + ("as the lecture predicts, the squared loss is "
                      "stuck." if a_ce > a_mse + 0.05 else
                      "the gap the lecture predicts is NOT visible here (DISAGREES; check "
                      "init_scale)."))
        self.sections.append(s)

    def claim5(self, runs: RunSet, speed: pd.DataFrame) -> None:
        names = [str(n) for n in self.rep["trained_studies"]["newton_vs_gd"]]
        name = ", ".join(names)
        s = Section("claim5", "Claim 5 — Newton vs gradient descent",
                    "Newton's step w ← w − H⁻¹∇f uses the curvature, so near w* the error squares "
                    "each "
                    "iteration (quadratic convergence, independent of κ), while GD's shrinks by a "
                    "constant "
                    "factor (linear convergence). Each Newton step costs more; the table weighs "
                    "iterations "
                    "against wall time, on raw and whitened inputs.")
        sp = speed[speed["study"].isin(names)] if len(speed) else speed
        if sp is None or len(sp) == 0:
            s.note(f"No runs of studies {name}; run `dvc repro` (or `python -m pipeline.train -m "
                   f"experiment={names[0]}`).")
            self.sections.append(s)
            return
        for key in sorted(
            {(st, d, m) for st, d, m in zip(sp["study"], sp["data"], sp["model"], strict=True)}
        ):
            rel = f"figures/{slug(f'convergence-{key[0]}-{key[1]}-{key[2]}')}.png"
            if (self.out / rel).exists():
                s.figure(rel, f"{key[2]} regression on {key[1]} (study {key[0]}): Newton vs GD, "
                              "raw vs preprocessed inputs.")
        tols = [float(t) for t in self.rep["tolerances"]]
        cols = (
            ["run_id", "model", "optimizer", "preprocess", "iterations", "status", "train_time_s"]
            + [
                f"{k}_to_{analysis.tol_key(t)}"
                for t in tols
                for k in ("iters", "passes", "seconds")
            ]
            + ["rate_measured"]
        )
        tab = sp[cols]
        s.table(tab, self.save_table(tab, "claim5-newton-vs-gd"),
                "Iterations, passes over the data and seconds to each tolerance (– = not reached)")
        contrast = penalty_contrast(runs, names)
        if len(contrast):
            s.text("Where the L2 penalty acts: with preprocess.penalty_space=input (the default) "
                   "every "
                   "preprocessing minimizes the raw pixels' objective λ/2‖W_x‖² — same f*, same "
                   "accuracy, "
                   "only the conditioning changes; `*_transformed` penalizes the transformed "
                   "weights "
                   "λ/2‖W_z‖² instead, another objective with its own f* and accuracy.")
            s.table(contrast, self.save_table(contrast, "claim5-penalty-space"),
                    "Same objective vs penalty on the transformed weights (final f ≈ f* for "
                    "converged runs)")
        self.sections.append(s)

    def claim6(self, runs: RunSet) -> None:
        s = Section("claim6", "Claim 6 — softmax regression on MNIST (the homework)",
                    "Accuracy of each trained MNIST classifier on the 60 000 training and 10 000 "
                    "test images "
                    "(or the configured subsample), set against published reference points: a "
                    "linear "
                    "classifier ≈ 88 % (LeCun et al. 1998) and multinomial logistic regression ≈ "
                    "92–93 %.")
        acc = analysis.accuracy_table(runs, str(self.rep["conditioning"]["data"]))
        if acc.empty:
            s.note("No evaluated MNIST classification runs yet; run `dvc repro`.")
            self.sections.append(s)
            return
        rel = self.save_table(acc, "accuracy")
        s.table(
            acc,
            rel,
            "Accuracy and loss per model × optimizer × preprocessing",
            {
                "run_id": "run",
                "model": "model",
                "optimizer": "optimizer",
                "preprocess": "preprocess",
                "l2": "λ",
                "iterations": "iterations",
                "train_accuracy": "train acc",
                "test_accuracy": "test acc",
                "train_loss": "train loss",
                "test_loss": "test loss",
                "reference": "reference point",
                "test_minus_reference": "test − reference",
            },
        )
        ten = acc[acc["data"] == str(self.rep["conditioning"]["data"])]
        best = (ten if len(ten) else acc).sort_values("test_accuracy", ascending=False).iloc[0]
        rid = str(best["run_id"])
        s.text(f"Best run: `{rid}` with test accuracy {best['test_accuracy']:.2%}.")
        low = ten[(ten["model"] == "softmax") & (ten["test_accuracy"] < 0.90)]
        if len(low):
            s.note(f"{len(low)} softmax run(s) stay below 90 % test accuracy (DISAGREES with the ≈ "
                   "92 % "
                   "reference — too few iterations or a subsample?): " + ", ".join(low["run_id"]))
        self._best_run_details(s, runs, rid)
        self.sections.append(s)

    def data_set_accuracy(self, runs: RunSet, data_id: str) -> None:
        """Claim 6 on another IDX data set (report.accuracy_data): accuracy against its published
        baseline."""
        acc = analysis.accuracy_table(runs, data_id)
        acc = acc[acc["data"] == data_id]
        rid0 = str(acc["run_id"].iloc[0]) if len(acc) else None
        data = runs.configs.get(rid0, {}).get("data", {}) if rid0 else {}
        title = str(data.get("title") or data_id) if isinstance(data, dict) else data_id
        s = Section(f"accuracy-{slug(data_id)}", f"Softmax regression on {title}",
                    f"The homework on {title}: test accuracy of each classifier against the data "
                    "set's published "
                    "linear baseline (its data YAML's reference_accuracy), with the best run's "
                    "confusion matrix, "
                    "per-class accuracy and weight images, classes named as in the data set's "
                    "YAML.")
        if acc.empty:
            s.note(f"No evaluated runs on data {data_id!r}; run its study (README: Data and "
                   "preprocessing).")
            self.sections.append(s)
            return
        rel = self.save_table(acc, f"accuracy-{data_id}")
        s.table(
            acc,
            rel,
            f"Accuracy and loss on {title} per model × optimizer × preprocessing",
            {
                "run_id": "run",
                "model": "model",
                "optimizer": "optimizer",
                "preprocess": "preprocess",
                "l2": "λ",
                "iterations": "iterations",
                "train_accuracy": "train acc",
                "test_accuracy": "test acc",
                "reference": "reference point",
                "test_minus_reference": "test − reference",
            },
        )
        best = acc.sort_values("test_accuracy", ascending=False).iloc[0]
        rid = str(best["run_id"])
        gap = best["test_minus_reference"]
        verdict = (
            ""
            if not np.isfinite(gap)
            else f" — {abs(gap) * 100:.1f} points {'above' if gap >= 0 else 'below'} the "
            "published "
            f"{best['reference']}"
            + (" (agrees)" if gap >= -0.01 else " (DISAGREES: too few iterations or a subsample?)")
        )
        s.text(f"Best run: `{rid}` with test accuracy {best['test_accuracy']:.2%}{verdict}.")
        self._best_run_details(s, runs, rid)
        self.sections.append(s)

    def _best_run_details(self, s: Section, runs: RunSet, rid: str) -> None:
        """Confusion matrix, per-class accuracy and weight images of one run, classes by name."""
        run_dir = runs.dirs.get(rid)
        cm = load_confusion(run_dir) if run_dir else None
        if cm is not None:
            names = class_names(run_dir, cm.shape[0])
            path, crel = self.fig_path(f"confusion-{rid}")
            figures.confusion(cm, f"Confusion matrix of {rid} (test set)", path, names)
            s.figure(crel, f"Confusion matrix of the best run {rid}: rows = true class, columns = "
                           "predicted.")
            support = cm.sum(axis=1)
            off = cm.copy()
            np.fill_diagonal(off, -1)  # the most frequent wrong prediction of each true class
            per = pd.DataFrame({"class": names, "test_examples": support, "correct": np.diag(cm),
                                "accuracy": np.diag(cm) / np.maximum(support, 1),
                                "most_confused_with": [names[j] for j in off.argmax(axis=1)]})
            s.table(per, self.save_table(per, f"per-class-{rid}"),
                    f"Per-class test accuracy of {rid} (recall of each class)")
        wts = load_weights(run_dir) if run_dir else None
        if wts is not None and "coef" in wts:
            W = np.asarray(wts["coef"], dtype=np.float64)
            b = wts.get("intercept", np.zeros(W.shape[1] if W.ndim == 2 else 1))
            W_x, how = self._input_weights(runs, rid, W, b)
            shape = self._image_shape(runs, rid)
            if W_x is not None and W_x.ndim == 2 and shape and W_x.shape[0] == int(np.prod(shape)):
                names = class_names(run_dir, W_x.shape[1])
                path, wrel = self.fig_path(f"weights-{rid}")
                figures.weight_images(W_x, f"Softmax weight vectors of {rid} as "
                                           f"{'×'.join(map(str, shape))} images",
                                      path, shape, names)
                s.figure(wrel, f"The {W_x.shape[1]} learned weight vectors w_k, titled by class "
                               "(red > 0 votes "
                               f"for class k, blue < 0 against){how}.")

    def _image_shape(self, runs: RunSet, rid: str) -> list[int] | None:
        """The data set's image shape (prepared facts ``meta.image_shape``), else 28×28 for 784
        pixels."""
        js = analysis.prepared_file(runs, rid, self.cfg["paths"]["prepared_dir"]).with_suffix(
            ".json"
        )
        try:
            shape = read_facts(js).get("meta", {}).get("image_shape")
        except DataError:
            shape = None
        return [int(v) for v in shape] if isinstance(shape, list) and shape else [28, 28]

    def _input_weights(
        self, runs: RunSet, rid: str, W: np.ndarray, b: Any
    ) -> tuple[np.ndarray | None, str]:
        """Weights mapped back to pixel space through the run's transform (A^T W)."""
        if str(runs.runs.loc[rid, "preprocess"]) == "none":
            return W, ""
        npz = analysis.prepared_file(runs, rid, self.cfg["paths"]["prepared_dir"])
        if not npz.exists():
            return None, ""
        W_x, _ = load_transform(npz).input_weights(W, b)
        return np.asarray(W_x), ", mapped back to pixel space through the transform (W_x = Aᵀ W)"

    def reference_section(self, refs: dict[str, Reference]) -> None:
        s = Section("reference", "Reference optima f*",
                    "Each objective has its own minimum f*, computed once by the reference stage "
                    "(`python -m pipeline.reference`): damped Newton (or Newton-CG) to ‖∇f‖ ≤ "
                    "reference.tol, "
                    "stopped on that tolerance and an iteration cap only. With "
                    "preprocess.penalty_space=input "
                    "every preprocessing of a data set minimizes the same objective, so one solve "
                    "serves all of "
                    "them; where the Hessian fits densely w* is mapped into each coordinate system "
                    "(f_here: f "
                    "there, the same f*) and κ = λ_max/λ_min of the regularized ∇²f(w*) is given "
                    "per coordinates.")
        tab = reference_table(refs)
        if tab.empty:
            s.note(f"No reference optima under {self.cfg['paths']['reference_dir']}; run `dvc "
                   "repro`.")
        else:
            s.table(
                tab,
                self.save_table(tab, "reference-optima"),
                "f* per objective, κ per coordinates",
                {
                    "objective": "objective",
                    "coordinates": "coordinates",
                    "method": "method",
                    "status": "status",
                    "iterations": "steps",
                    "f_star": "f*",
                    "grad_norm": "‖∇f‖",
                    "f_here": "f here",
                    "mu": "μ",
                    "L_local": "L at w*",
                    "kappa": "κ",
                    "L_bound": "L bound",
                    "seconds": "s",
                },
            )
            bad = tab[tab["status"] != "converged"]
            if len(bad):
                s.note(f"{bad['objective'].nunique()} reference solve(s) did not converge "
                       "(DISAGREES with a "
                       "certified f*): " + ", ".join(sorted(set(bad["objective"]))))
        self.sections.append(s)


def factor_lines(fac: pd.DataFrame, t: str) -> list[str]:
    """One sentence per problem: what each preprocessing changes against raw inputs, from the
    factors table."""
    lines = []
    for (data, model), grp in fac.groupby(["data", "model"], sort=True):
        parts = []
        for opt, g in grp.groupby("optimizer", sort=True):
            other = g[g["preprocess"] != "none"]
            base = g[g["preprocess"] == "none"].iloc[0]
            its = ", ".join(f"×{r['iterations_vs_raw']:.3g} "
                            f"{r['preprocess']}" for _, r in other.iterrows())
            proj = " (projected)" if (g["basis"] == "projected").any() else ""
            text = f"{opt}: iterations{proj} {its}"
            if g["cg_iterations"].notna().all():
                cgs = ", ".join(f"{int(r['cg_iterations'])} "
                                f"{r['preprocess']}" for _, r in other.iterrows())
                pas = ", ".join(f"×{r['passes_vs_raw']:.3g}" for _, r in other.iterrows())
                text += f"; CG iterations {int(base['cg_iterations'])} raw vs {cgs}; passes {pas}"
            parts.append(text)
        lines.append(f"{model} on {data}, against raw inputs: " + "; ".join(parts) + f" (to {t}).")
    return lines


def _cond(ev: np.ndarray) -> float:
    ev = np.asarray(ev, dtype=np.float64)
    return float(ev.max() / ev.min()) if ev.size and ev.min() > 0 else float("inf")


def build(out: Path, cfg: Mapping[str, Any], runs: RunSet | None) -> Built:
    """Every section in reading order (the headline first); trained-run sections only when there are
    runs."""
    b = Builder(out, cfg)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    enabled = set(cfg["report"]["sections"])
    for key in ("claim1", "claim2", "conditioning", "claim3"):
        if key in enabled:
            b.timed(key, getattr(b, key))
    if runs is not None and len(runs):
        t0 = time.perf_counter()
        all_refs, refs, notes = b.references(runs)
        speed = b.convergence(runs, refs, notes)
        conv = b.sections.pop()  # keep the overview of every run after the claims
        b.claim4(runs)
        b.claim5(runs, speed)
        b.claim6(runs)
        for data_id in cfg["report"].get("accuracy_data") or []:
            b.data_set_accuracy(runs, str(data_id))
        homework(b, runs, refs)
        b.sections.append(conv)
        b.reference_section(all_refs)
        b.headline(speed)
        b.timings["trained_runs"] = time.perf_counter() - t0
    return Built(b.sections, b.timings)


def penalty_contrast(runs: RunSet, studies: list[str]) -> pd.DataFrame:
    """One row per run of ``studies``: preprocess, penalty space, optimizer, final f, test accuracy,
    iterations."""
    rows = []
    for rid in runs.runs.index:
        r = runs.runs.loc[rid]
        if str(r.get("study")) not in studies:
            continue
        pre_cfg = runs.configs.get(rid, {}).get("preprocess", {})
        space = (
            pre_cfg.get("penalty_space", PreprocessConfig.penalty_space)
            if isinstance(pre_cfg, dict)
            else "?"
        )
        rows.append(
            {
                "study": r.get("study"),
                "preprocess": r.get("preprocess"),
                "penalty_space": space,
                "optimizer": r.get("optimizer"),
                "objective": r.get("objective"),
                "status": r.get("status"),
                "final_f": r.get("train_loss"),
                "test_accuracy": r.get("test_accuracy"),
                "iterations": r.get("iterations"),
            }
        )
    df = pd.DataFrame(rows)
    if len(df) == 0 or "transformed" not in set(df["penalty_space"]):
        return pd.DataFrame()
    return df.sort_values(["study", "optimizer", "penalty_space", "preprocess"]).reset_index(
        drop=True
    )
