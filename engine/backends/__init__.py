"""Backends: one LUV-Net as two fixed-shape callables, ``encode`` and ``head``, verified
against eager fp32 when they load. Choose one with :func:`create_backend`; see
docs/backends.md. Optional dependencies (torch-tensorrt, onnxruntime) are imported only
by the backend that needs them."""

from luvnet.engine.backends.base import Backend, BackendInfo, BackendSpec, Parity, Tolerance
from luvnet.engine.backends.cache import default_cache_dir
from luvnet.engine.backends.factory import BACKEND_NAMES, create_backend
from luvnet.engine.backends.parity import TOLERANCES, ParityError

__all__ = [
    "BACKEND_NAMES",
    "TOLERANCES",
    "Backend",
    "BackendInfo",
    "BackendSpec",
    "Parity",
    "ParityError",
    "Tolerance",
    "create_backend",
    "default_cache_dir",
]
