"""Claim 3 — convexity: the smallest Hessian eigenvalue (analytic study)."""

from __future__ import annotations

from pipeline.reporting import figures
from pipeline.reporting.context import Context
from pipeline.reporting.render import Section
from pipeline.reporting.sections.common import analytic_study

KEY = "claim3"
NEEDS = "claim3"
TITLE = "Claim 3 — convexity: the Hessian eigenvalue check"
INTRO = """A twice-differentiable f is convex iff ∇²f ⪰ 0 everywhere, i.e. its smallest eigenvalue
is ≥ 0. For linear, logistic and softmax regression the Hessian is X̃ᵀDX̃ with D ⪰ 0, so they are
convex; we check λ_min numerically at random points on real data, and map λ_min for the lecture's
exercise functions."""
FLAT = """λ_min ≈ 0 (not > 0) on MNIST is expected: always-black border pixels give flat
directions, and softmax is invariant to adding one vector to every class's weights — convex, not
strictly convex; the L2 penalty λ > 0 makes them strictly convex."""
ROUNDING = 1.0e-10  # λ_min above −ROUNDING·λ_max counts as ≥ 0


def section(ctx: Context) -> list[Section]:
    """λ_min maps of the exercise functions, the eigenvalue table and the verdict."""
    s = Section(KEY, TITLE, " ".join(INTRO.split()))
    got = analytic_study(ctx, "claim3", s)
    if got is None:
        return [s]
    meta, table, arrays = got
    f = meta["figures"][0]
    maps = [(label, arrays[f"map{i}/x"], arrays[f"map{i}/y"], arrays[f"map{i}/lambda_min"])
            for i, label in enumerate(f["labels"])]
    path, rel = ctx.figure("claim3-exercise-functions")
    figures.min_eig_maps(maps, f["title"], path)
    s.figure(rel, "Smallest Hessian eigenvalue over the grid: x² + y + 5 has λ_min = 0 everywhere "
                  "(convex, not strictly); x⁴ + xy + x² has det ∇²f = −1 < 0 everywhere (never "
                  "convex).")
    s.table(table, ctx.save_table(table, "claim3-convexity"),
            "Smallest / largest Hessian eigenvalue found (convex ⇔ min ≥ 0 up to rounding)")
    s.text(" ".join(FLAT.split()))
    models = table[table["problem"].astype(str).str.contains(" on ")]
    ok = (models["min_eig_min"] >= -ROUNDING * models["min_eig_max"].abs().clip(lower=1.0)).all()
    worst = float(models["min_eig_min"].min()) if len(models) else float("nan")
    s.verdict(f"{'agrees' if ok else 'DISAGREES'} — the most negative λ_min found on the "
              f"{len(models)} regression problems is {worst:.2g} (threshold: ≥ −1e-10·λ_max, "
              "rounding), and the exercise functions come out as the lecture says (convex / "
              "never convex).")
    return [s]
