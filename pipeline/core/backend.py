"""Array backends: the array API namespace of an array, the library a run computes with
(numpy, torch, cupy) and its device, and moving arrays there and back.

The numerical core is written once against the Python array API standard: a function takes the
namespace of its inputs (``namespace(X)``, array-api-compat's ``array_namespace``, as SciPy and
scikit-learn do) and computes with it, so numpy arrays stay numpy (bit for bit what numpy gives)
and torch or cupy arrays stay on their device. Operations the standard lacks live in
``pipeline.core.linalg``, one small function each per backend.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from pipeline.core.errors import ConfigError
from pipeline.core.rows import AffineRows

BACKENDS = ("numpy", "torch", "cupy")
DEVICES = ("cpu", "cuda", "cuda:N")
# what to install for a backend that is missing: the project's optional extras
INSTALL = {"torch": "pip install -e '.[torch]'", "cupy": "pip install -e '.[cupy]'"}


def namespace(*arrays: Any) -> Any:
    """The array API namespace of ``arrays`` (array-api-compat's wrapper for numpy, torch, cupy)."""
    return array_api_compat.array_namespace(*arrays)


NUMPY_XP = namespace(np.zeros(0))  # numpy's array API namespace (array-api-compat's wrapper)


def is_numpy(xp: Any) -> bool:
    """True for numpy's namespace (the default backend, whose code paths stay numpy's own)."""
    return bool(array_api_compat.is_numpy_namespace(xp)) or xp is np


def to_numpy(x: Any) -> np.ndarray:
    """A host numpy copy (a view for numpy input) of an array of any backend."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_array_api_obj(x):  # another library: through its default (host) device
        x = x.to_device(namespace(x).__array_namespace_info__().default_device())
    return np.asarray(x)


def to_float(x: Any) -> float:
    """A Python float from a 0-d array of any backend (synchronizes a GPU stream)."""
    return float(x)


@dataclass(frozen=True)
class Backend:
    """The array library and device a run computes on."""

    name: str  # numpy | torch | cupy
    xp: Any  # its array API namespace
    device: Any  # the library's device object (None for numpy)
    device_name: str  # what the run records: 'cpu', 'cuda:0 (NVIDIA H200)'
    versions: dict[str, str]  # library → version

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` as an array of this backend on its device (one copy, host → device); numpy keeps
        streamed rows (``core.rows.AffineRows``) as they are."""
        if self.name == "numpy":
            return x if isinstance(x, AffineRows) and dtype is None else np.asarray(x, dtype=dtype)
        dt = None if dtype is None else getattr(self.xp, np.dtype(dtype).name)
        return self.xp.asarray(np.ascontiguousarray(x), dtype=dt, device=self.device)

    def sync(self) -> None:
        """Wait for the device's queued work (before reading a clock)."""
        if self.name == "torch" and str(self.device).startswith("cuda"):
            importlib.import_module("torch").cuda.synchronize(self.device)
        elif self.name == "cupy":
            importlib.import_module("cupy").cuda.get_current_stream().synchronize()


def _check_device_word(device: str) -> None:
    ok = device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    if not ok:
        raise ConfigError(f"device={device!r} is not a device; use cpu, cuda or cuda:N")


def load_backend(name: str, device: str = "cpu") -> Backend:
    """The backend ``name`` on ``device``; a ConfigError naming the key and the fix when the
    library is not installed or the device does not exist."""
    if name not in BACKENDS:
        raise ConfigError(f"backend={name!r} is unknown; use one of {', '.join(BACKENDS)}")
    _check_device_word(device)
    if name == "numpy":
        if device != "cpu":
            raise ConfigError(f"device={device} needs backend=torch or backend=cupy; numpy runs on "
                              "the CPU (device=cpu)")
        return Backend("numpy", NUMPY_XP, None, "cpu", {"numpy": np.__version__})
    try:
        lib = importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"backend={name} needs the {name} package, which is not installed; "
                          f"{INSTALL[name]} or use backend=numpy") from None
    if name == "torch":
        return _torch_backend(lib, device)
    return _cupy_backend(lib, device)


def _torch_backend(torch: Any, device: str) -> Backend:
    versions = {"torch": str(torch.__version__), "numpy": np.__version__}
    if device == "cpu":
        dev = torch.device("cpu")
        return Backend("torch", namespace(torch.zeros(0)), dev, "cpu", versions)
    if not torch.cuda.is_available():
        raise ConfigError(f"device={device}: torch sees no CUDA GPU; use device=cpu or run on a "
                          "machine with a GPU and a CUDA build of torch")
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={device}: torch sees {torch.cuda.device_count()} GPU(s); use "
                          f"device=cuda:0..cuda:{torch.cuda.device_count() - 1}")
    dev = torch.device(f"cuda:{index}")
    versions["cuda"] = str(torch.version.cuda)
    label = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return Backend("torch", namespace(torch.zeros(0, device=dev)), dev, label, versions)


def _cupy_backend(cupy: Any, device: str) -> Backend:
    if device == "cpu":
        raise ConfigError("device=cpu: cupy runs on a GPU only; use device=cuda or backend=numpy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - cupy raises its own runtime error without a driver
        count = 0
    index = int(device[5:]) if ":" in device else 0
    if index >= count:
        raise ConfigError(f"device={device}: cupy sees {count} GPU(s); use backend=numpy or a "
                          "machine with a GPU")
    dev = cupy.cuda.Device(index)
    name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    with dev:
        xp = namespace(cupy.zeros(0))
    versions = {"cupy": str(cupy.__version__), "numpy": np.__version__}
    return Backend("cupy", xp, dev, f"cuda:{index} ({name})", versions)


def foreign_namespace(*arrays: Any) -> Any | None:
    """The array API namespace of the non-numpy arrays among ``arrays``; None when there are none
    (numpy arrays, Python scalars and lists, None: the numpy code path)."""
    foreign = [a for a in arrays if a is not None and array_api_compat.is_array_api_obj(a)
               and not array_api_compat.is_numpy_array(a)]
    return namespace(*foreign) if foreign else None


def to_namespace(a: Any, like: Any) -> Any:
    """``a`` as a float64 array of ``like``'s namespace on ``like``'s device (``a`` itself when it
    already is; ``like`` None: a host numpy array)."""
    if like is None or array_api_compat.is_numpy_array(like):
        return np.asarray(to_numpy(a), dtype=np.float64)
    xp, dev = namespace(like), array_api_compat.device(like)
    if (array_api_compat.is_array_api_obj(a) and not array_api_compat.is_numpy_array(a)
            and namespace(a) is xp and array_api_compat.device(a) == dev and a.dtype == xp.float64):
        return a
    return xp.asarray(np.ascontiguousarray(to_numpy(a), dtype=np.float64), dtype=xp.float64,
                      device=dev)
