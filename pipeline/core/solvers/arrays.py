"""The solvers' vectors in the objective's array namespace: the namespace itself, the start point
moved there once, and the few reductions the methods read back as Python floats.

numpy keeps its own spellings (``np.linalg.norm``, ``ndarray.astype``) so its results stay bit for
bit what they were; any other array API namespace (torch, cupy, array_api_strict) uses the
standard's. Only scalars that steer a method (f, ‖∇f‖, slopes, step sizes) cross to the host.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

from pipeline.core.backend import NUMPY_XP, is_numpy, namespace, to_numpy
from pipeline.core.errors import ConfigError


def solver_namespace(obj: Any) -> Any:
    """The objective's array namespace (its ``xp``; numpy's for an objective without one)."""
    xp = getattr(obj, "xp", None)
    return NUMPY_XP if xp is None else xp


def float_dtype(xp: Any, dtype: Any) -> Any:
    """``dtype`` (a numpy dtype-like or one of ``xp``'s float dtypes) as ``xp``'s dtype."""
    try:
        return getattr(xp, np.dtype(dtype).name)
    except TypeError:  # not numpy's: already a dtype of xp
        return dtype


def dtype_name(dtype: Any) -> str:
    """'float64', 'float32', … for a dtype of any array library."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).rsplit(".", 1)[-1]


def start_point(obj: Any, w0: Any) -> Any:
    """w0 as a flat, finite copy in the objective's namespace, dtype and device (one transfer);
    a ConfigError when its size or values do not fit."""
    xp = solver_namespace(obj)
    if is_numpy(xp):
        w = np.array(w0, dtype=obj.dtype, copy=True).ravel()
        size = w.size
    else:
        native = array_api_compat.is_array_api_obj(w0) and _same(namespace(w0), xp)
        device = getattr(obj, "device", None)
        if device is None and native:
            device = array_api_compat.device(w0)
        host = w0 if native else np.ascontiguousarray(to_numpy(w0))
        w = xp.reshape(xp.asarray(host, dtype=float_dtype(xp, obj.dtype), device=device,
                                  copy=True), (-1,))
        size = w.shape[0]
    if tuple(w.shape) != (obj.n_params,):
        raise ConfigError(f"w0 has {size} entries, the objective has {obj.n_params} parameters")
    if not all_finite(xp, w):
        raise ConfigError("w0 contains NaN or infinite values; start from a finite point "
                          "(init=zeros)")
    return w


def _same(a: Any, b: Any) -> bool:
    return a is b or getattr(a, "__name__", a) == getattr(b, "__name__", b)


def norm(xp: Any, v: Any) -> float:
    """‖v‖₂ as a Python float."""
    if is_numpy(xp):
        return float(np.linalg.norm(v))
    return float(xp.linalg.vector_norm(v))


def all_finite(xp: Any, v: Any) -> bool:
    """Every entry of v is finite."""
    if is_numpy(xp):
        return bool(np.all(np.isfinite(v)))
    return bool(xp.all(xp.isfinite(v)))


def norm_if_finite(xp: Any, v: Any) -> tuple[float, bool]:
    """(‖v‖₂, every entry finite), one read-back where ‖v‖ is finite (a finite norm implies
    finite entries; only an infinite or NaN norm needs the entries checked)."""
    gn = norm(xp, v)
    return gn, math.isfinite(gn) or all_finite(xp, v)


def as_float64(xp: Any, v: Any) -> Any:
    """v in float64 (numpy: ``np.asarray``, a view when it already is)."""
    if is_numpy(xp):
        return np.asarray(v, dtype=np.float64)
    return v if v.dtype == xp.float64 else xp.astype(v, xp.float64)


def cast_like(xp: Any, v: Any, w: Any) -> Any:
    """v in w's dtype (no copy when it already is)."""
    if is_numpy(xp):
        return v.astype(w.dtype, copy=False)
    return v if v.dtype == w.dtype else xp.astype(v, w.dtype)


def copy(xp: Any, v: Any) -> Any:
    """A copy of v."""
    if is_numpy(xp):
        return v.copy()
    return xp.asarray(v, copy=True)


def diagonal(xp: Any, M: Any) -> Any:
    """diag M of a square matrix, as a vector (numpy: a copy)."""
    if is_numpy(xp):
        return np.diag(M).copy()
    return xp.linalg.diagonal(M)
