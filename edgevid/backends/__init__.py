"""Backends by name. Modules are imported lazily so a missing optional dependency costs nothing."""

from __future__ import annotations

import importlib

from ..errors import BackendUnavailable, UnknownNameError, suggest
from .base import Backend, BuildRequest, BuildResult, Runner

_MODULES = {
    "torch_eager": "edgevid.backends.torch_eager",
    "onnxruntime": "edgevid.backends.onnxruntime",
    "openvino": "edgevid.backends.openvino",
    "executorch": "edgevid.backends.executorch",
    "tensorrt": "edgevid.backends.tensorrt",
}


def backend_names() -> list[str]:
    return list(_MODULES)


def get_backend(name: str) -> Backend:
    """The backend object; raises a one-line error if it is unknown or not implemented yet."""
    if name not in _MODULES:
        raise UnknownNameError(f"unknown backend {name!r}.{suggest(name, _MODULES)}")
    try:
        module = importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as exc:
        if exc.name == _MODULES[name]:
            raise BackendUnavailable(f"backend {name} is not available yet in this edgevid version") from None
        raise
    return module.BACKEND


def backend_status(name: str) -> str:
    """'installed', 'missing: pip install ...' or 'not available yet' (for `edgevid targets`)."""
    try:
        backend = get_backend(name)
    except BackendUnavailable as exc:
        return str(exc).split(" in this")[0].replace(f"backend {name} is ", "")
    return backend.status()


def open_runner(path, threads: int | None = None, mode: str = "latency", verify: bool = True) -> Runner:
    """Open an artifact folder as a Runner after checking its files against the manifest."""
    from ..artifact import Artifact

    artifact = path if hasattr(path, "manifest") else Artifact(path)
    if verify:
        artifact.verify()
    backend = get_backend(artifact.manifest.backend)
    backend.check_open(artifact)
    return backend.open(artifact, threads=threads, mode=mode)


__all__ = ["open_runner", "Backend", "BuildRequest", "BuildResult", "Runner", "backend_names", "backend_status", "get_backend"]
