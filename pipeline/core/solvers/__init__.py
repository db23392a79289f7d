"""First- and second-order minimizers on one shared iteration loop: gradient descent, heavy ball,
Nesterov, Adam, AdaGrad, exact Newton, diagonal Newton, Newton-CG, closed form, minibatch SGD,
L-BFGS.

``minimize(objective, w0, method, **options) -> OptimizeResult`` (see docs/architecture.md).
``METHODS`` is the registry: method name → its ``Method`` class or factory (one module each:
``gd``, ``heavy_ball``, ``nesterov``, ``adaptive`` (adam, adagrad), ``newton``, ``diag_newton``,
``newton_cg``, ``closed_form``, ``sgd``, ``lbfgs``); ``METHOD_DEFAULTS`` the options only some
methods take; ``loop.iterate`` is the one loop they all run on (stopping, divergence, history,
clock, the ``passes`` cost axis); ``protocols`` says what a method asks of the objective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.core.errors import ConfigError, worded
from pipeline.core.solvers.adaptive import (
    ADAGRAD_DEFAULTS,
    ADAM_DEFAULTS,
    adagrad,
    adam,
    check_adaptive_options,
)
from pipeline.core.solvers.arrays import start_point
from pipeline.core.solvers.closed_form import ClosedForm
from pipeline.core.solvers.diag_newton import DiagNewton
from pipeline.core.solvers.gd import GradientDescent
from pipeline.core.solvers.heavy_ball import HEAVY_BALL_DEFAULTS, HeavyBall, check_momentum
from pipeline.core.solvers.lbfgs import LBFGS, LBFGS_DEFAULTS, LBFGS_KEYS
from pipeline.core.solvers.loop import (
    HISTORY_KEYS,
    Callback,
    Method,
    MethodOptions,
    OptimizeResult,
    iterate,
)
from pipeline.core.solvers.nesterov import NESTEROV_DEFAULTS, RESTARTS, Nesterov, check_restart
from pipeline.core.solvers.newton import Newton, damped_newton_step
from pipeline.core.solvers.newton_cg import NewtonCG, pcg
from pipeline.core.solvers.options import PRECONDITIONERS, check_options
from pipeline.core.solvers.protocols import Objective
from pipeline.core.solvers.sgd import (
    SGD,
    SGD_DEFAULTS,
    SGD_KEYS,
    check_sgd_options,
    minibatch_smoothness,
    sgd_rate,
)

__all__ = [
    "HISTORY_KEYS",
    "LBFGS_DEFAULTS",
    "LBFGS_KEYS",
    "METHODS",
    "METHOD_DEFAULTS",
    "PRECONDITIONERS",
    "RESTARTS",
    "SGD_DEFAULTS",
    "SGD_KEYS",
    "Objective",
    "OptimizeResult",
    "check_method_options",
    "check_sgd_options",
    "damped_newton_step",
    "minibatch_smoothness",
    "minimize",
    "pcg",
    "sgd_rate",
]

METHODS: dict[str, Callable[[Objective, MethodOptions], Method]] = {
    "gd": GradientDescent,
    "heavy_ball": HeavyBall,
    "nesterov": Nesterov,
    "adam": adam,
    "adagrad": adagrad,
    "newton": Newton,
    "diag_newton": DiagNewton,
    "newton_cg": NewtonCG,
    "closed_form": ClosedForm,
    "sgd": SGD,
    "lbfgs": LBFGS,
}
# options only some methods take: method → their defaults (``seed``: the caller's run seed)
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": SGD_DEFAULTS, "heavy_ball": HEAVY_BALL_DEFAULTS, "nesterov": NESTEROV_DEFAULTS,
    "adam": ADAM_DEFAULTS, "adagrad": ADAGRAD_DEFAULTS, "lbfgs": LBFGS_DEFAULTS,
}


def check_method_options(method: str, opts: dict[str, Any]) -> None:
    """Raise a one-line ConfigError naming the first of ``method``'s own options out of range
    (``opts``: its ``METHOD_DEFAULTS`` keys; the others are checked by ``minimize``)."""
    if method == "sgd":
        check_sgd_options({**SGD_DEFAULTS, **opts})
    elif method == "heavy_ball":
        check_momentum(opts.get("momentum", "auto"))
    elif method == "nesterov":
        check_restart(opts.get("restart", "none"))
    elif method in ("adam", "adagrad"):
        check_adaptive_options(opts)
    # lbfgs: its options are checked when the method is built, against the run's armijo_c (c1)


# keys of OptimizerConfig that describe the start point, not the method (the caller uses them)
_IGNORED = ("init", "init_scale", "name")


def minimize(objective: Objective, w0: Any, method: str, *, lr: float | str = "auto",
             max_iter: int = 100, tol: float = 1.0e-6, time_budget_s: float | None = None,
             line_search: bool = False, armijo_c: float = 1.0e-4, backtrack: float = 0.5,
             cg_max_iter: int = 250, callback: Callback | None = None, preconditioner: str = "auto",
             hvp_precision: str = "auto", divergence_factor: float = 1.0e12,
             max_backtracks: int = 60, **ignored: Any) -> OptimizeResult:
    """Minimize ``objective`` from ``w0`` with ``method`` ∈ ``METHODS``.

    gd: w ← w − ε ∇f (ε = lr, 'auto' = 1/L; Armijo backtracking from ε if ``line_search``).
    newton: w ← w − t (H + τI)⁻¹ ∇f, Cholesky; τ = 0 unless H is not positive definite.
    diag_newton: w ← w − t D⁻¹∇f, D = diag ∇²f(w) (t = lr, 'auto' = 1; Armijo if
    ``line_search``).
    newton_cg: the Newton system solved inexactly by preconditioned conjugate gradients on
    Hessian-vector products to ‖r‖ ≤ max(η‖∇f‖, tol/2), η = min(0.5, √‖∇f‖) (Hessian-free); for
    linear models the products run in float32 (gradient and line search stay in the objective's
    dtype) and ``preconditioner='auto'`` uses the class-diagonal Hessian blocks once CG gets
    expensive (numpy; no preconditioner on other array libraries, ``NewtonCG``).
    closed_form: the exact minimizer of linear regression (reference optimum).
    sgd: minibatch SGD (options ``SGD_DEFAULTS``: batch_size, epochs, schedule, tau, step_epochs,
    step_factor, momentum, log_every, seed; lr 'auto' = 1/L_B, ``minibatch_smoothness``);
    ``max_iter`` and ``line_search`` do not apply, ``tol`` is tested at the logged points.
    heavy_ball: w ← w − ε∇f + β(w − w_prev) (``momentum`` β; 'auto': ``heavy_ball_parameters``).
    nesterov: accelerated gradient with ε = lr (1/L), ``restart`` none | function | gradient.
    adam, adagrad: bias-corrected Adam (beta1, beta2, delta) / AdaGrad (delta), full batch
    (``batch_size`` null) or minibatch with SGD's epochs and schedules.
    lbfgs: w ← w + t d, d = −H∇f by the two-loop recursion (options ``LBFGS_DEFAULTS``: memory,
    wolfe_c2, wolfe_max_evals), t from a strong Wolfe search (c1 = armijo_c); lr is the first
    step's trial ('auto' = min(1, 1/‖∇f₀‖)); ``line_search`` does not apply (it always searches).

    Any array API library: w0 is copied once into the objective's namespace, dtype and device
    (``objective.xp``, numpy's without one; ``objective.device`` if it has one, else w0's device
    when w0 is already of that namespace); every vector stays there, the history holds Python
    floats and ``OptimizeResult.w`` is of the objective's namespace.
    """
    own = METHOD_DEFAULTS.get(method, {})
    own_opts = {k: ignored.pop(k) for k in list(ignored) if k in own}
    foreign = sorted(k for k in ignored if any(k in d for d in METHOD_DEFAULTS.values()))
    if foreign:
        owners = "/".join(m for m, d in METHOD_DEFAULTS.items() if foreign[0] in d)
        raise ConfigError(worded("option(s) {keys} apply only to {solver}={owners}, not "
                                 "{method!r}; drop them", keys=foreign, owners=owners,
                                 method=method))
    unknown = sorted(set(ignored) - set(_IGNORED))
    if unknown:
        raise ConfigError(f"unknown optimizer option(s) {unknown}; valid: lr, max_iter, tol, "
                          "time_budget_s, line_search, armijo_c, backtrack, cg_max_iter")
    opts = check_options(method, tuple(METHODS), lr=lr, max_iter=max_iter, tol=tol,
                         time_budget_s=time_budget_s, armijo_c=armijo_c, backtrack=backtrack,
                         cg_max_iter=cg_max_iter, line_search=line_search,
                         max_backtracks=max_backtracks, preconditioner=preconditioner,
                         hvp_precision=hvp_precision,
                         sgd=own_opts if method != "lbfgs" else {},
                         lbfgs=own_opts if method == "lbfgs" else None)
    if not isinstance(objective, Objective):
        raise TypeError(f"{type(objective).__name__} is not an Objective (n_params, dtype, value, "
                        "value_grad)")
    w = start_point(objective, w0)
    m = METHODS[method](objective, opts)
    return iterate(m, w, max_iter=m.max_iter(int(max_iter)), tol=opts.tol, budget=time_budget_s,
                   callback=callback, div=float(divergence_factor))
