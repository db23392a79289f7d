"""What the methods ask of an objective, as structural types: every method needs ``Objective``;
the others are capabilities a method uses when the objective has them (``isinstance`` checks).

An objective may compute with any array API library: its attribute ``xp`` (optional; numpy's
namespace without it) is the namespace of every array it takes and returns, and an optional
``device`` is where ``minimize`` puts w0; values f (and L, μ) are Python floats. Index arrays
given to ``Minibatch.batch_grad`` are integer arrays of that namespace, on that device."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating[Any]]  # numpy's; an array of the objective's namespace in general


@runtime_checkable
class Objective(Protocol):
    """f: R^p → R with p = ``n_params`` parameters in ``dtype``: f(w) and (f(w), ∇f(w))."""

    n_params: int
    dtype: Any

    def value(self, w: FloatArray) -> float: ...

    def value_grad(self, w: FloatArray) -> tuple[float, FloatArray]: ...


@runtime_checkable
class Smooth(Protocol):
    """An L-smooth f: ‖∇f(v) − ∇f(w)‖ ≤ L‖v − w‖ (GD's lr = 1/L)."""

    def lipschitz(self) -> float: ...


@runtime_checkable
class StronglyConvex(Protocol):
    """A μ-strongly convex f: ∇²f ⪰ μI (heavy ball's and Nesterov's momentum from κ = L/μ)."""

    def strong_convexity(self) -> float: ...


@runtime_checkable
class DenseHessian(Objective, Protocol):
    """The dense Hessian ∇²f(w), shape (p, p) (exact Newton)."""

    def hessian(self, w: FloatArray) -> FloatArray: ...


@runtime_checkable
class HessianVector(Objective, Protocol):
    """The product ∇²f(w) v (Newton-CG without margins)."""

    def hvp(self, w: FloatArray, v: FloatArray) -> FloatArray: ...


@runtime_checkable
class Gauged(Protocol):
    """Exact flat directions: orthonormal rows U with f(w + Uᵀa) = f(w) (softmax's bias shift)."""

    def gauge_directions(self) -> FloatArray: ...


@runtime_checkable
class HessianProduct(Protocol):
    """v ↦ ∇²f(w) v at a fixed w."""

    def matvec(self, v: FloatArray) -> FloatArray: ...


@runtime_checkable
class Diagonal(Protocol):
    """diag ∇²f(w) (Jacobi preconditioner)."""

    def diagonal(self) -> FloatArray: ...


@runtime_checkable
class BlockSolver(Protocol):
    """v ↦ B⁻¹v for the class-diagonal blocks B of ∇²f(w), from at most ``max_rows`` rows."""

    def class_block_solver(self, max_rows: int | None = None) -> Any: ...


@runtime_checkable
class Margins(Protocol):
    """A linear model on Z = X̃w: f and ∇f from Z (line searches along s need only X̃s) and the
    Hessian as an operator; ``n`` examples, ``n_rows`` = rows of X̃ᵀ (features + intercept)."""

    n: int
    n_rows: int

    def margins(self, w: FloatArray) -> FloatArray: ...

    def value_from_margins(self, w: FloatArray, Z: FloatArray) -> float: ...

    def value_grad_from_margins(self, w: FloatArray, Z: FloatArray) -> tuple[float, FloatArray]: ...

    def hess_operator(self, w: FloatArray, Z: FloatArray | None = None,
                      precision: str | None = None) -> HessianProduct: ...


@runtime_checkable
class LeastSquares(Protocol):
    """Least squares: its exact minimizer from the normal equations."""

    def closed_form(self) -> FloatArray: ...


@runtime_checkable
class Named(Protocol):
    """An objective that names its model (for messages)."""

    model: str


@runtime_checkable
class Minibatch(Protocol):
    """f = (1/n) Σ f_i: the gradient of a batch of rows and the smoothness of the worst f_i."""

    n: int

    def batch_grad(self, w: FloatArray, rows: NDArray[np.intp]) -> FloatArray: ...

    def lipschitz(self) -> float: ...

    def lipschitz_max(self) -> float: ...
