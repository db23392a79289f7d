"""Minibatch stochastic gradient descent on the shared loop (one loop step = one epoch, or
``log_every`` minibatches): step-size schedules, momentum, the minibatch smoothness L_B."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from array_api_compat import device

from pipeline.core.backend import is_numpy
from pipeline.core.errors import ConfigError, NumericalError, OptionError, worded
from pipeline.core.solvers.arrays import copy
from pipeline.core.solvers.loop import Halt, Method, MethodOptions, Step
from pipeline.core.solvers.protocols import FloatArray, Minibatch, Objective

SCHEDULES = ("constant", "inverse_time", "step")
SGD_DEFAULTS: dict[str, Any] = {"batch_size": 100, "epochs": 5, "schedule": "constant", "tau": 1.0,
                                "step_epochs": 1, "step_factor": 0.5, "momentum": 0.0,
                                "log_every": None, "seed": 0}
SGD_KEYS = tuple(k for k in SGD_DEFAULTS if k != "seed")  # the options only sgd takes, seed aside


def sgd_rate(lr: float, schedule: str, epoch: float, tau: float, step_epochs: int,
             step_factor: float) -> float:
    """Step size after ``epoch`` epochs (fractional): constant lr, lr/(1 + epoch/τ) or
    lr·factor^⌊epoch/step_epochs⌋."""
    if schedule == "inverse_time":
        return lr / (1.0 + epoch / tau)
    if schedule == "step":
        return lr * step_factor ** math.floor(epoch / step_epochs)
    return lr


def minibatch_smoothness(L: float, L_max: float, n: int, batch_size: int) -> float:
    """Expected smoothness of a B-minibatch gradient (Gower et al. 2019, sampling without
    replacement): L_B = n(B−1)/(B(n−1))·L + (n−B)/(B(n−1))·L_max; L_1 = L_max, L_n = L."""
    B = min(batch_size, n)
    if n == 1:
        return L
    return n * (B - 1) / (B * (n - 1)) * L + (n - B) / (B * (n - 1)) * L_max


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _positive(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v) and v > 0


# option → (is it valid, what it must be); checked in this order
_SGD_RULES: dict[str, tuple[Any, str]] = {
    "batch_size": (lambda v: _is_int(v) and v >= 1, "must be an integer ≥ 1"),
    "epochs": (lambda v: _is_int(v) and v >= 0, "must be an integer ≥ 0"),
    "schedule": (lambda v: v in SCHEDULES, f"is unknown; use one of {', '.join(SCHEDULES)}"),
    "tau": (_positive, "must be a positive number of epochs"),
    "step_epochs": (lambda v: _is_int(v) and v >= 1, "must be an integer ≥ 1"),
    "step_factor": (lambda v: isinstance(v, int | float) and 0 < v <= 1, "must lie in (0, 1]"),
    "momentum": (lambda v: isinstance(v, int | float) and 0 <= v < 1, "must lie in [0, 1)"),
    "log_every": (lambda v: v is None or (_is_int(v) and v >= 1),
                  "must be an integer ≥ 1 (minibatches) or null (once per epoch)"),
    "seed": (lambda v: _is_int(v) and v >= 0, "must be an integer ≥ 0"),
}


def check_sgd_options(opts: dict[str, Any]) -> None:
    """Raise a one-line ConfigError naming the first SGD option out of range."""
    for key, (ok, want) in _SGD_RULES.items():
        if not ok(opts[key]):
            raise OptionError("solver", key, opts[key], want)


class SGD(Method):
    """Minibatch SGD: each epoch a fresh permutation (from ``seed``) cut into batches of B rows,
    v ← μv − η_t ∇f_B(w), w ← w + v (μ = momentum, 0: plain SGD), η_t from the schedule.

    One loop step = one epoch (or ``log_every`` minibatches, never across an epoch's end); the
    full f and ∇f at the logged point are for the history and the stopping rule only (off the
    clock, no passes)."""

    obj: Minibatch
    name = "sgd"
    defaults = SGD_DEFAULTS

    def __init__(self, obj: Objective, o: MethodOptions) -> None:
        if o.search.enabled:
            raise ConfigError(worded("{solver.line_search}=true does not apply to {solver}={name}; "
                                     "set it to false", name=self.name))
        opts = {**self.defaults, **o.sgd}
        self.check(opts)
        if not isinstance(obj, Minibatch):
            raise ConfigError(worded("{solver}={name} needs an objective with minibatch gradients "
                                     "(a linear model)", name=self.name))
        super().__init__(obj, o)
        n = int(obj.n)
        self.n, self.B = n, min(int(opts["batch_size"]), n)
        self.n_batches = -(-n // self.B)
        log_every = opts["log_every"]
        self.per_step = self.n_batches if log_every is None else min(int(log_every), self.n_batches)
        self.steps_per_epoch = -(-self.n_batches // self.per_step)
        self.epochs = int(opts["epochs"])
        self.schedule, self.tau = opts["schedule"], opts["tau"]
        self.step_epochs, self.step_factor = opts["step_epochs"], opts["step_factor"]
        self.momentum = float(opts.get("momentum", 0.0))
        self.extra: dict[str, Any] = {"batch_size": self.B, "batches_per_epoch": self.n_batches}
        self.lr = o.lr if o.lr is not None else self._auto_lr(obj)
        self.rng = np.random.default_rng(int(opts["seed"]))
        self.t, self.j, self.rows_read = 0, 0, 0  # updates so far; position in the epoch; rows read
        self.perm = np.arange(0)
        self.v: FloatArray | None = None

    def check(self, opts: dict[str, Any]) -> None:
        """Raise a one-line ConfigError naming the first option out of range."""
        check_sgd_options(opts)

    def _auto_lr(self, obj: Minibatch) -> float:
        """1/L_B, the minibatch smoothness of batches of B rows."""
        L, L_max = float(obj.lipschitz()), float(obj.lipschitz_max())
        L_B = minibatch_smoothness(L, L_max, self.n, self.B)
        if not (np.isfinite(L_B) and L_B > 0):
            raise NumericalError(worded("minibatch smoothness L_B = {L_B} is not positive; set "
                                        "{solver.lr} explicitly", L_B=L_B))
        self.extra.update(L=L, L_max=L_max, L_B=L_B)
        return 1.0 / L_B

    def max_iter(self, max_iter: int) -> int:
        """The epochs are the budget: epochs × loop steps per epoch."""
        return self.epochs * self.steps_per_epoch

    def start(self, w: FloatArray) -> tuple[float, FloatArray]:
        """(f, ∇f) at the start, for the history only (off the clock)."""
        with self.clock.paused():  # logging only: SGD never needs the full gradient
            return self.obj.value_grad(w)

    def step(self, w: FloatArray, f: float, g: FloatArray, gn: float, it: int) -> Step | Halt:
        """The minibatch updates up to the next logged point, and the full f, ∇f there."""
        obj, B = self.obj, self.B
        w = copy(self.xp, w)
        eta = self.lr
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(self.per_step):
                if self.j == 0:
                    self.perm = self._permutation(w)
                rows = self.perm[self.j * B:min((self.j + 1) * B, self.n)]
                eta = sgd_rate(self.lr, self.schedule, self.t / self.n_batches, self.tau,
                               self.step_epochs, self.step_factor)
                self.update(w, obj.batch_grad(w, rows), eta)
                self.rows_read += rows.shape[0]
                self.passes = self.rows_read / self.n  # exact at epoch ends
                self.t += 1
                self.j += 1
                if self.j == self.n_batches:
                    self.j = 0
                    break
            with self.clock.paused():  # logging only
                f_new, g_new = obj.value_grad(w)
        return w, f_new, g_new, eta

    def _permutation(self, w: FloatArray) -> Any:
        """This epoch's row order from numpy's generator (the same on every backend), as an
        index array of w's namespace on w's device (one transfer per epoch)."""
        perm = self.rng.permutation(self.n)
        if is_numpy(self.xp):
            return perm
        return self.xp.asarray(perm, dtype=self.xp.int64, device=device(w))

    def update(self, w: FloatArray, gb: FloatArray, eta: float) -> None:
        """w ← w + v with v ← μv − η g_B (μ = 0: w ← w − η g_B), in place."""
        mu = self.momentum
        if mu:
            if self.v is None:
                self.v = self.xp.zeros_like(w)
            self.v *= mu
            self.v -= eta * gb
            w += self.v
        else:
            w -= eta * gb

    def finish(self, status: str, message: str) -> tuple[str, str]:
        """A run out of epochs says so in their terms."""
        if status == "max_iter":  # the epochs are the budget: say so in their terms
            message = (f"{self.epochs} epoch(s) done ({self.t} minibatch updates of ≤ {self.B} "
                       "rows); " + message.split(" reached with ", 1)[-1])
        return status, message

    def info(self) -> dict[str, Any]:
        """Batch size, batches per epoch, updates, epochs done (L, L_max, L_B for lr = 'auto')."""
        return {**self.extra, "updates": self.t, "epochs": self.t / self.n_batches}
