"""The ``prepare`` stage: load a data set, fit the preprocessing on its training split, save both
splits.

    python -m pipeline.prepare data=mnist preprocess=whiten

Writes ``<paths.prepared_dir>/<data.id>-<preprocess.id>.npz`` + ``.json`` (see
``pipeline/store/prepared.py``) atomically and prints one summary line. Bad input: one line on
stderr,
exit status 2, nothing written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline.cli.entry import stage
from pipeline.config.checks import check_boundary, check_name, config_keys
from pipeline.config.schemas import PrepareConfig, as_kwargs
from pipeline.core.errors import ConfigError
from pipeline.core.memory import MEMORY_GB, check_memory, check_memory_gb, prepare_bytes
from pipeline.core.rows import STREAM_ROWS, AffineRows, streams
from pipeline.core.transforms import Transform, fit_preprocess, validate_preprocess_config
from pipeline.core.whitening import (
    condition_number,
    condition_number_nonzero,
    numerical_rank,
    second_moment,
    spectrum,
)
from pipeline.data.catalog import complete
from pipeline.data.datasets import load_inputs, scale_inputs, validate_data_config
from pipeline.data.split import check_val_fraction, validation_split
from pipeline.spec import group_id, prepared_stem
from pipeline.store.prepared import prepared_path, save_prepared
from pipeline.store.writer import check_writable
from pipeline.tracking.sweep import JobContext


def hessian_after(transform: Transform, C_aug: np.ndarray) -> np.ndarray:
    """MSE Hessian of the transformed problem from C = (1/n) X̃ᵀX̃: M C Mᵀ with [z; 1] = M [x; 1].

    ``absorbs_bias``: M = [A c] (the constant is inside z, no intercept), else M = [[A, c], [0, 1]].
    Equal to (1/n) Z̃ᵀZ̃ computed from the transformed rows, at O(d³) instead of O(n d²).
    """
    A, c = transform.A, transform.c
    M = np.hstack([A, c[:, None]])
    if not transform.absorbs_bias:
        last = np.zeros((1, M.shape[1]))
        last[0, -1] = 1.0
        M = np.vstack([M, last])
    H = M @ C_aug @ M.T
    return (H + H.T) / 2.0


def _cond(lam: np.ndarray) -> float | None:
    k = condition_number(lam)
    return k if np.isfinite(k) else None


@config_keys()
def prepare(
    data_cfg: Mapping[str, Any],
    preprocess_cfg: Mapping[str, Any],
    seed: int,
    prepared_dir: str | Path,
    memory_gb: float = MEMORY_GB,
    compress: bool = True,
) -> dict[str, Any]:
    """Run the stage on plain dicts; returns the facts written to the ``.json``."""
    # a partial dict: from conf/data/<name>.yaml (facts record it all)
    data_cfg = complete(data_cfg)
    validate_data_config(data_cfg)
    validate_preprocess_config(preprocess_cfg)
    val_fraction = check_val_fraction(data_cfg.get("val_fraction"))
    data_id = check_name("data.id", data_cfg.get("id"))
    pre_id = check_name("preprocess.id", group_id(preprocess_cfg))
    out = prepared_path(prepared_dir, prepared_stem(data_id, pre_id))
    check_writable(out)  # a read-only folder fails now, not after the work
    memory_gb = check_memory_gb(memory_gb)
    inputs, scale = load_inputs(data_cfg, seed, memory_gb)
    n_rows, d = inputs.X_train.shape[0] + inputs.X_test.shape[0], inputs.n_features
    streamed = streams(inputs.X_train.shape[0], d, scale)
    need = prepare_bytes(n_rows, d, inputs.X_train.dtype.itemsize,
                         STREAM_ROWS if streamed else None)
    check_memory(need, f"preprocessing {n_rows} rows × {d} features", memory_gb,
                 "use fewer rows or features (data.n_train, data.n_features)")
    rows, val_rows = None, None
    if val_fraction > 0:  # held out before anything is fitted on the training rows
        rows, val_rows = validation_split(inputs.y_train, val_fraction, seed,
                                          inputs.task != "regression")
    # the float64 training inputs the transform is fitted on (past core.rows.streams's size: made
    # block by block from the stored ones); stored are the inputs as read
    P_fit = inputs.X_train if rows is None else inputs.X_train[rows]
    if streamed:
        X_fit = AffineRows(np.ascontiguousarray(P_fit), scale,
                           Transform(kind="none", offset=np.zeros(d)))
    else:
        X_fit = scale_inputs(P_fit, scale)
    del P_fit
    C_aug = checked_second_moment(X_fit, data_cfg.get("scale"))
    transform = fit_preprocess(preprocess_cfg, X_fit, second_moment_aug=C_aug)
    del X_fit
    lam_before = spectrum(C_aug)
    # (1/n) Z̃ᵀZ̃ via M C Mᵀ: O(d³) instead of another O(n d²) product (tests check it against
    # Z̃ᵀZ̃)
    lam_after = spectrum(hessian_after(transform, C_aug))
    facts = _facts(data_cfg, preprocess_cfg, seed, inputs, transform, (rows, val_rows),
                   (lam_before, lam_after, C_aug))
    save_prepared(out, inputs, transform, lam_before, lam_after, facts, scale=scale,
                  val_rows=val_rows, compress=compress)
    return facts


def _facts(data_cfg: Mapping[str, Any], preprocess_cfg: Mapping[str, Any], seed: int, ds: Any,
           transform: Transform, split: tuple[np.ndarray | None, np.ndarray | None],
           spectra: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Any]:
    """The facts of a prepared pair (its ``.json``): sizes, conditioning, provenance (no clock
    times: the same inputs give the same bytes)."""
    lam_before, lam_after, C_aug = spectra
    rows, val_rows = split
    pre_id = group_id(preprocess_cfg)
    return {
        "data": str(data_cfg["id"]),
        "preprocess": pre_id,
        "task": ds.task,
        "n_classes": ds.n_classes,
        "n_train": int(ds.X_train.shape[0] if rows is None else rows.shape[0]),
        "n_test": int(ds.X_test.shape[0]),
        "n_val": 0 if val_rows is None else int(val_rows.shape[0]),
        "n_features_in": int(ds.X_train.shape[1]),
        "n_features_out": transform.n_features_out,
        "n_kept": int(
            transform.n_kept if transform.n_kept is not None else transform.n_features_out
        ),
        "absorbs_bias": bool(transform.absorbs_bias),
        **conditioning_facts(lam_before, lam_after, ridge_facts(preprocess_cfg, transform, C_aug)),
        "sha256": dict(ds.meta.get("sha256", {})),
        "data_name": ds.name,
        "seed": int(seed),
        "data_config": dict(data_cfg),
        "preprocess_config": dict(preprocess_cfg),
        "meta": {k: v for k, v in ds.meta.items() if k != "sha256"},
    }


def checked_second_moment(X_train: np.ndarray | AffineRows, scale: Any) -> np.ndarray:
    """(1/n) X̃ᵀX̃ of the training inputs (X̃ = [X, 1]); a ConfigError when it overflows float64."""
    with np.errstate(over="ignore", invalid="ignore"):
        C_aug = second_moment(X_train, augment=True)
    if not np.isfinite(C_aug).all():  # huge inputs: (1/n) XᵀX overflows float64
        if isinstance(X_train, AffineRows):
            big = X_train.abs_max()
        else:
            big = float(np.max(np.abs(X_train))) if np.isfinite(X_train).all() else float("inf")
        raise ConfigError(
            f"data.scale={scale}: the training inputs (largest |x| = {big:.3g}) make "
            "the second moment (1/n) XᵀX overflow float64; use a smaller data.scale, e.g. "
            "3.9215686e-3 (1/255)")
    return C_aug


def ridge_facts(
    preprocess_cfg: Mapping[str, Any], transform: Transform, C_aug: np.ndarray
) -> dict[str, Any]:
    """κ of the regularized least-squares Hessian C + λ I_W before and after (= 1); {} without
    ridge."""
    ridge = float(preprocess_cfg.get("ridge") or 0.0)
    if not ridge > 0:
        return {}
    C_reg = C_aug.copy()
    dw = C_aug.shape[0] - 1
    C_reg[np.arange(dw), np.arange(dw)] += ridge
    return {"cond_before_ridge": _cond(spectrum(C_reg)),
            "cond_after_ridge": _cond(spectrum(hessian_after(transform, C_reg)))}


def conditioning_facts(lam_before: np.ndarray, lam_after: np.ndarray,
                       ridge: dict[str, Any]) -> dict[str, Any]:
    """κ (null: singular), κ on the range, rank and size of the Hessian spectra before / after."""
    return {
        "cond_before": _cond(lam_before),  # null: singular (κ = ∞)
        "cond_after": _cond(lam_after),
        "cond_before_nonzero": condition_number_nonzero(lam_before),  # over the nonzero eigenvalues
        "cond_after_nonzero": condition_number_nonzero(lam_after),
        **ridge,
        "rank_before": numerical_rank(lam_before),
        "rank_after": numerical_rank(lam_after),
        "hessian_dim_before": int(lam_before.size),
        "hessian_dim_after": int(lam_after.size),
    }


def _fmt_cond(k: float | None) -> str:
    return "inf" if k is None else f"{k:.4g}"


def summary(facts: Mapping[str, Any], path: Path, seconds: float) -> str:
    """One line: shapes, kept directions, conditioning before/after, seconds with writing."""
    return (
        f"prepared {path}: train {facts['n_train']}x{facts['n_features_out']}, "
        f"test {facts['n_test']}x{facts['n_features_out']} (from {facts['n_features_in']} "
        "features, "
        f"kept {facts['n_kept']}{', bias absorbed' if facts['absorbs_bias'] else ''}); "
        f"Hessian cond {_fmt_cond(facts['cond_before'])} "
        f"(rank {facts['rank_before']}/{facts['hessian_dim_before']}, "
        f"{facts['cond_before_nonzero']:.3g} on its range) "
        f"-> {_fmt_cond(facts['cond_after'])} "
        f"(rank {facts['rank_after']}/{facts['hessian_dim_after']}, "
        f"{facts['cond_after_nonzero']:.3g} on its range); "
        f"{seconds:.2f} s"
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """The stage on a Hydra config (validated, then ``prepare``), printing the summary line."""
    t0 = time.perf_counter()
    check_boundary(cfg)
    data_cfg, pre_cfg = as_kwargs(cfg.data), as_kwargs(cfg.preprocess)
    facts = prepare(data_cfg, pre_cfg, int(cfg.seed), cfg.paths.prepared_dir, cfg.limits.memory_gb,
                    bool(cfg.compress))
    path = prepared_path(
        cfg.paths.prepared_dir, prepared_stem(str(data_cfg["id"]), group_id(pre_cfg))
    )
    print(summary(facts, path, time.perf_counter() - t0), flush=True)
    return facts


def preset_variants(ctx: JobContext) -> list[list[str]]:
    """The extra overrides of each prepared file a train preset's sweep reads (its
    ``hydra.sweeper.params`` over data/preprocess, a retrain callback's ``data_id``); ``[[]]``
    outside a single Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    from pipeline.config.sweeps import prepared_variants

    if ctx.multirun or not HydraConfig.initialized():
        return [[]]
    hc = HydraConfig.get()
    params = hc.sweeper.get("params") if "sweeper" in hc else None
    retrains = [str(cb["data_id"]) for cb in (hc.get("callbacks") or {}).values()
                if cb is not None and cb.get("data_id")]
    return prepared_variants(ctx.overrides, params, retrains)


def job(cfg: DictConfig, ctx: JobContext) -> None:
    """Hydra job: ``python -m pipeline.prepare data=<name> preprocess=<name>``; with a train preset
    (``experiment=<preset>``) every prepared file its sweep reads."""
    variants = preset_variants(ctx)
    if variants == [[]]:
        run(cfg)
        return
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    # where the preset was found (a config folder added on the command line) is searched again
    found_by = [str(o) for o in HydraConfig.get().overrides.hydra
                if str(o).startswith("hydra.searchpath")]
    for extra in variants:
        run(compose(config_name="prepare", overrides=[*ctx.overrides, *found_by, *extra]))


main = stage("prepare", PrepareConfig)(job)

if __name__ == "__main__":
    main()
