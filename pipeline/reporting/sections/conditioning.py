"""Conditioning of the configured data set: the spectrum of (1/n) X̃ᵀX̃ raw, z-scored, whitened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.reporting import figures
from pipeline.reporting.context import Context
from pipeline.reporting.render import Section, sig
from pipeline.spec import prepared_stem
from pipeline.store.prepared import load_spectra, prepared_path, read_facts
from pipeline.store.reading import DataError  # the store's read error

KEY = "conditioning"
NEEDS = "conditioning"
INTRO = """The eigenvalues of the uncentered auto-covariance C = (1/n) X̃ᵀX̃ set GD's speed:
κ = λ_max/λ_min. Z-scoring divides each pixel by its standard deviation; ridge whitening
T = (C + λI)^-1/2 maps the regularized matrix C + λI to the identity."""
WHITENED = """The figure draws the matrices the text names. Ridge whitening (λ = {ridge}) maps
C + λI (κ = {before_ridge}) to I exactly (κ = {after_ridge}; the flat line at 1); the
unregularized whitened matrix (1/n) Z̃ᵀZ̃ = C(C + λI)⁻¹ is not I: its eigenvalues λ_i/(λ_i + λ)
are ≈ 1 where λ_i ≫ λ and fall to ≈ λ_i/λ (down to {low}) in the directions where λ_i ≪ λ."""
FACT_KEYS = ("n_train", "n_features_in", "n_features_out", "n_kept", "cond_before",
             "cond_after", "cond_before_nonzero", "cond_after_nonzero", "cond_before_ridge",
             "cond_after_ridge")


def cond(ev: np.ndarray) -> float:
    """κ = λ_max / λ_min (inf when λ_min ≤ 0)."""
    ev = np.asarray(ev, dtype=np.float64)
    return float(ev.max() / ev.min()) if ev.size and ev.min() > 0 else float("inf")


def prepared_facts(ctx: Context, preprocess: str) -> tuple[Path, dict[str, Any]] | None:
    """(json path, facts) of ``<conditioning.data>-<preprocess>``; None when not prepared."""
    js = prepared_path(Path(ctx.paths["prepared_dir"]),
                       prepared_stem(str(ctx.rep["conditioning"]["data"]), preprocess))
    js = js.with_suffix(".json")
    try:
        return js, read_facts(js)
    except DataError:
        return None


def _spectra(ctx: Context) -> tuple[dict[str, np.ndarray], dict[str, float], str]:
    """The spectra to draw (labelled by the matrix), their κ, and the whitening sentence."""
    spec: dict[str, np.ndarray] = {}
    text = ""
    for pre in ctx.rep["conditioning"]["prepared"]:
        got = prepared_facts(ctx, str(pre))
        if got is None or not got[0].with_suffix(".npz").exists():
            continue
        js, facts = got
        sp = {k: np.sort(v)[::-1] for k, v in load_spectra(js.with_suffix(".npz")).items()}
        if "raw: C" not in spec and "spectrum_before" in sp:
            spec["raw: C"] = sp["spectrum_before"]
        if pre == "none" or "spectrum_after" not in sp:
            continue
        ridge = (facts.get("preprocess_config") or {}).get("ridge")
        if pre == "whiten" and ridge and "spectrum_before" in sp:
            after = sp["spectrum_after"]
            spec["whiten: (1/n) Z̃ᵀZ̃ = C(C + λI)⁻¹"] = after
            spec["whiten: T(C + λI)T = I"] = after + ridge / (sp["spectrum_before"] + ridge)
            low = after[after > after.max() * 1.0e-13].min()
            text = " ".join(WHITENED.split()).format(
                ridge=f"{ridge:g}", before_ridge=sig(float(facts.get("cond_before_ridge") or 0)),
                after_ridge=f"{float(facts.get('cond_after_ridge') or 0):.6f}",
                low=f"{low:.1e}")
        else:
            spec[f"{pre}: (1/n) Z̃ᵀZ̃"] = sp["spectrum_after"]
    conds = {k: cond(v[v > v.max() * 1.0e-13]) for k, v in spec.items()}
    return spec, conds, text


def section(ctx: Context) -> list[Section]:
    """The spectra figure, the condition-number table and what the whitened spectrum is."""
    c = ctx.rep["conditioning"]
    s = Section(KEY, f"Conditioning of {c['data']}: raw, z-scored and whitened",
                " ".join(INTRO.split()))
    rows = []
    for pre in c["prepared"]:
        got = prepared_facts(ctx, str(pre))
        if got is not None:
            rows.append({"prepared": got[0].stem, "preprocess": pre,
                         **{k: got[1].get(k) for k in FACT_KEYS}})
    if not rows:
        return []
    spec, conds, text = _spectra(ctx)
    if spec:
        path, rel = ctx.figure(f"conditioning-{c['data']}")
        figures.spectra(spec, conds, f"Spectra on {c['data']} (κ on the non-zero part)", path,
                        ylabel="eigenvalue λ_i (log scale)")
        s.figure(rel, "Eigenvalues in descending order (log scale); numerically zero eigenvalues "
                      "(always-black pixels) are not drawn — they make the raw κ in the table "
                      "infinite; the non-zero columns give κ on the non-zero part.")
    if text:
        s.text(text)
    table = pd.DataFrame(rows).dropna(axis=1, how="all")
    s.table(table, ctx.save_table(pd.DataFrame(rows), f"conditioning-{c['data']}"),
            "Condition numbers before / after each preprocessing (a column left out is infinite "
            "everywhere: a singular matrix); ridge: of the regularized matrix C + λI, which ridge "
            "whitening maps to I")
    return [s]
