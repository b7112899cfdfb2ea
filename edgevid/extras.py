"""Which pip extra brings which module, so a command run without it fails with one line naming it.

The core install (numpy, pydantic, PyYAML, typer, rich, filelock, cryptography) runs golden packs
on a device; everything else comes from an extra (see pyproject.toml).
"""

from __future__ import annotations

import importlib.util

from .errors import BackendUnavailable

#: top-level module -> (pip requirement, the extra that installs it)
EXTRA_OF: dict[str, tuple[str, str]] = {
    "torch": ("torch==2.13.0", "build"),
    "av": ("av (PyAV)", "video"),
    "onnx": ("onnx", "build"),
    "onnxscript": ("onnxscript", "build"),
    "onnxruntime": ("onnxruntime", "onnxruntime"),
    "openvino": ("openvino", "openvino"),
    "nncf": ("nncf", "build-openvino"),
    "executorch": ("executorch==1.4.1", "executorch"),
    "torchao": ("torchao", "build-executorch"),
    "modelopt": ("nvidia-modelopt", "build-tensorrt"),
    "onnx_graphsurgeon": ("onnx-graphsurgeon", "build-tensorrt"),
    "pycuda": ("pycuda", "tensorrt"),
    "gradio": ("gradio", "demo"),
    "matplotlib": ("matplotlib", "report"),
    "ray": ("ray", "ray"),
}


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module blocked in sys.modules
        return False


def missing_line(module: str, what: str) -> str:
    """'{what} needs torch==2.13.0, which is not installed: pip install 'edgevid[build]''."""
    root = module.split(".")[0]
    pip, extra = EXTRA_OF.get(root, (root, "all"))
    return f"{what} needs {pip}, which is not installed here: pip install 'edgevid[{extra}]'"


def require(modules, what: str, hint: str = "") -> None:
    """Raise ``BackendUnavailable`` (one line, exit 3) for the first of ``modules`` not installed."""
    for module in [modules] if isinstance(modules, str) else modules:
        if not importable(module):
            raise BackendUnavailable(missing_line(module, what) + (f" ({hint})" if hint else ""))


def from_import_error(exc: ModuleNotFoundError, what: str) -> BackendUnavailable | None:
    """The one-line error for an optional module that an import found missing (None: not ours)."""
    root = (exc.name or "").split(".")[0]
    if root not in EXTRA_OF:
        return None
    return BackendUnavailable(missing_line(root, what))
