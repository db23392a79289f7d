"""Adam and AdaGrad, full-batch (``batch_size`` null: one full gradient per iteration, ``max_iter``
and ``tol`` apply) or minibatch (SGD's batching, epochs and step-size schedules)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.core.errors import OptionError
from pipeline.core.solvers.arrays import copy
from pipeline.core.solvers.first_order import refuse_line_search, step_too_large_msg
from pipeline.core.solvers.loop import GRADIENT, Halt, Method, MethodOptions, Step
from pipeline.core.solvers.protocols import FloatArray, Minibatch, Objective
from pipeline.core.solvers.sgd import _SGD_RULES, SGD, sgd_rate

# lr 'auto': the customary defaults (Kingma & Ba 2015 for Adam; 0.01 for AdaGrad)
AUTO_LR = {"adam": 1.0e-3, "adagrad": 1.0e-2}
_BATCHING: dict[str, Any] = {"batch_size": None, "epochs": 5, "schedule": "constant", "tau": 1.0,
                             "step_epochs": 1, "step_factor": 0.5, "log_every": None, "seed": 0}
ADAM_DEFAULTS: dict[str, Any] = {"beta1": 0.9, "beta2": 0.999, "delta": 1.0e-8, **_BATCHING}
ADAGRAD_DEFAULTS: dict[str, Any] = {"delta": 1.0e-8, **_BATCHING}


def _unit(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1


_RULES: dict[str, tuple[Any, str]] = {
    "beta1": (_unit, "must lie in [0, 1)"),
    "beta2": (_unit, "must lie in [0, 1)"),
    "delta": (lambda v: isinstance(v, int | float) and math.isfinite(v) and v > 0,
              "must be a positive number"),
    "batch_size": (lambda v: v is None or _SGD_RULES["batch_size"][0](v),
                   "must be an integer ≥ 1 or null (full batch)"),
    **{k: _SGD_RULES[k] for k in ("epochs", "schedule", "tau", "step_epochs", "step_factor",
                                  "log_every", "seed")},
}


def check_adaptive_options(opts: dict[str, Any]) -> None:
    """Raise a one-line ConfigError naming the first Adam/AdaGrad option out of range."""
    for key, (ok, want) in _RULES.items():
        if key in opts and not ok(opts[key]):
            raise OptionError("solver", key, opts[key], want)


class AdamRule:
    """Bias-corrected Adam: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², t ← t + 1,
    w ← w − η m̂/(√v̂ + δ) with m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ)."""

    def __init__(self, opts: dict[str, Any], xp: Any = np) -> None:
        self.xp = xp  # the namespace of w and g
        self.b1, self.b2, self.delta = float(opts["beta1"]), float(opts["beta2"]), opts["delta"]
        self.m: FloatArray | None = None
        self.v: FloatArray | None = None
        self.t = 0

    def __call__(self, w: FloatArray, g: FloatArray, eta: float) -> None:
        """One update of w (of any array namespace), in place."""
        xp = self.xp
        if self.m is None or self.v is None:
            self.m, self.v = xp.zeros_like(w), xp.zeros_like(w)
        self.t += 1
        self.m = self.b1 * self.m + (1.0 - self.b1) * g
        self.v = self.b2 * self.v + (1.0 - self.b2) * (g * g)
        m_hat = self.m / (1.0 - self.b1 ** self.t)
        v_hat = self.v / (1.0 - self.b2 ** self.t)
        w -= eta * m_hat / (xp.sqrt(v_hat) + self.delta)


class AdagradRule:
    """AdaGrad (Duchi et al. 2011): G ← G + g², w ← w − η g/(√G + δ)."""

    def __init__(self, opts: dict[str, Any], xp: Any = np) -> None:
        self.xp = xp  # the namespace of w and g
        self.delta = float(opts["delta"])
        self.G: FloatArray | None = None

    def __call__(self, w: FloatArray, g: FloatArray, eta: float) -> None:
        """One update of w (of any array namespace), in place."""
        self.G = g * g if self.G is None else self.G + g * g
        w -= eta * g / (self.xp.sqrt(self.G) + self.delta)


RULES = {"adam": (AdamRule, ADAM_DEFAULTS), "adagrad": (AdagradRule, ADAGRAD_DEFAULTS)}


class FullBatch(Method):
    """The rule on the full gradient, one pass per iteration; η_k from the schedule with one
    iteration = one epoch."""

    def __init__(self, obj: Objective, o: MethodOptions, name: str) -> None:
        refuse_line_search(o, name)
        super().__init__(obj, o)
        rule, defaults = RULES[name]
        self.opts = {**defaults, **o.sgd}
        check_adaptive_options(self.opts)
        self.rule = rule(self.opts, self.xp)
        self.lr = o.lr if o.lr is not None else AUTO_LR[name]

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """One adaptive step on ∇f."""
        o = self.opts
        eta = sgd_rate(self.lr, o["schedule"], it, o["tau"], o["step_epochs"], o["step_factor"])
        w_new = copy(self.xp, w)
        with np.errstate(over="ignore", invalid="ignore"):
            self.rule(w_new, g, eta)
        self.passes += GRADIENT
        f_new, g_new = self.obj.value_grad(w_new)
        return w_new, f_new, g_new, eta

    def diverged_message(self, it: int, f: float, f0: float) -> str:
        """Too large a step, in this method's terms."""
        return step_too_large_msg(it, f, f0)


class Minibatched(SGD):
    """The rule on minibatch gradients, batched and scheduled as ``SGD`` (lr 'auto': AUTO_LR)."""

    def __init__(self, obj: Objective, o: MethodOptions, name: str) -> None:
        self.name = name
        rule, self.defaults = RULES[name]
        super().__init__(obj, o)
        self.rule = rule({**self.defaults, **o.sgd}, self.xp)

    def check(self, opts: dict[str, Any]) -> None:
        """Raise a one-line ConfigError naming the first option out of range."""
        check_adaptive_options(opts)

    def _auto_lr(self, obj: Minibatch) -> float:
        return AUTO_LR[self.name]

    def update(self, w: FloatArray, gb: FloatArray, eta: float) -> None:
        """One adaptive step on the minibatch gradient, in place."""
        self.rule(w, gb, eta)

    def diverged_message(self, it: int, f: float, f0: float) -> str:
        """Too large a step, in this method's terms."""
        return step_too_large_msg(it, f, f0)


def _adaptive(name: str, obj: Objective, o: MethodOptions) -> Method:
    if o.sgd.get("batch_size", RULES[name][1]["batch_size"]) is None:
        return FullBatch(obj, o, name)
    return Minibatched(obj, o, name)


def adam(obj: Objective, o: MethodOptions) -> Method:
    """Adam (``AdamRule``), full-batch or minibatch by ``batch_size``."""
    return _adaptive("adam", obj, o)


def adagrad(obj: Objective, o: MethodOptions) -> Method:
    """AdaGrad (``AdagradRule``), full-batch or minibatch by ``batch_size``."""
    return _adaptive("adagrad", obj, o)
