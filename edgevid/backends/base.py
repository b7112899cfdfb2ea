"""The backend interface. One package per backend (``backends/<name>/``); heavy imports happen inside it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import BackendUnavailable, EdgevidError
from ..stages import BuildStages
from .options import CommonOptions

if TYPE_CHECKING:  # torch stays out of the runtime import graph of runners
    from torch import nn

    from ..artifact import Artifact
    from ..spec import ModelSpec
    from ..targets import Target


@dataclass
class BuildRequest:
    """Everything a backend needs to produce an artifact's model files."""

    model: "nn.Module"
    spec: "ModelSpec"
    target: "Target"
    precision: str
    out_dir: Path
    calib: Sequence[np.ndarray] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: labelled centre clips ``(clip, class index)`` for a backend's own accuracy-aware quantization
    #: (``handles_max_drop``); the build loads them, so no backend reads datasets itself
    validation: Sequence[tuple[np.ndarray, int]] | None = None
    #: where the backend times its stages (export, calibration n/N, lowering ...) for the display and manifest
    stages: BuildStages = field(default_factory=BuildStages)


@dataclass
class BuildResult:
    """What the backend reports back for the manifest."""

    quantization: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    input_name: str = "input"


@dataclass(frozen=True)
class QuantLayer:
    """One quantizable op of a backend's INT8 graph, named as the ``keep_float`` option takes it."""

    name: str  # the backend's own name: ONNX node, OpenVINO op, FX node or module path
    op: str  # op type: Conv, MatMul, Add, Softmax ...
    scope: str = ""  # the PyTorch module it comes from (for people reading the ranking)


class Int8Plan:
    """INT8 builds of one model that differ only in which layers stay in float (``keep_float``).

    This generic plan runs a full ``backend.build`` per variant. A backend overrides
    ``Backend.int8_plan`` to export and calibrate once and only re-quantize per variant (see
    backends/onnxruntime), which is what makes `edgevid sensitivity` and `--max-drop` fast.
    """

    def __init__(self, backend: "Backend", request: BuildRequest):
        self.backend = backend
        self.request = request
        self._layers: list[QuantLayer] | None = None

    @property
    def layers(self) -> list[QuantLayer]:
        if self._layers is None:
            self._layers = self.backend.quantizable_layers(self.request)
        return self._layers

    def build(self, keep_float: Sequence[str], out_dir: Path) -> BuildResult:
        from dataclasses import replace

        options = {**self.request.options, "keep_float": list(keep_float)}
        return self.backend.build(replace(self.request, out_dir=Path(out_dir), options=options))

    def close(self) -> None:
        """Remove whatever the plan cached."""


class Runner(ABC):
    """Runs one artifact: float32 clips (N, C, T, H, W) in, float32 logits (N, classes) out."""

    input_shape: tuple[int, ...]
    description: str = ""
    #: the runtime that actually runs it, with its version (reports name it): "onnxruntime 1.32.0 (CPU)"
    runtime: str = ""

    @abstractmethod
    def __call__(self, clip: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:
        """Release native resources (sessions, contexts)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _importable(module: str) -> bool:
    from ..extras import importable

    return importable(module)


class Backend(ABC):
    """Builds artifacts for targets of one runtime and opens them as Runners."""

    name: str
    #: python module -> pip requirement; what running an artifact needs (checked before open)
    requirements: dict[str, str] = {}
    #: extra that installs the requirements (a device's install)
    extra: str = ""
    #: modules needed only to build (e.g. torch-side exporters), not to run
    build_requirements: dict[str, str] = {}
    #: extra that installs everything a build needs (a host's install)
    build_extra: str = "build"
    precisions: tuple[str, ...] = ("fp32",)
    #: True when the backend meets ``--max-drop`` with its own accuracy-aware quantization (it then gets
    #: ``BuildRequest.validation``); otherwise the harness searches the float layers (``harness.mixed``)
    handles_max_drop: bool = False
    #: the pydantic model of the options this backend reads (``backends/<name>/options.py``, on top of
    #: ``CommonOptions``): targets' YAML and ``--option`` are validated against it before any work
    options_model: type[CommonOptions] = CommonOptions

    def missing(self, for_build: bool = False) -> list[str]:
        reqs = dict(self.requirements)
        if for_build:
            reqs.update(self.build_requirements)
        return [pip for module, pip in reqs.items() if not _importable(module)]

    def available(self, for_build: bool = False) -> bool:
        return not self.missing(for_build)

    def check(self, for_build: bool = False) -> None:
        """Raise a one-line ``BackendUnavailable`` naming the pip command that fixes it."""
        missing = self.missing(for_build)
        if missing:
            extra = self.build_extra if for_build and self.build_extra else self.extra
            raise BackendUnavailable(
                f"backend {self.name} needs {', '.join(missing)}: pip install 'edgevid[{extra}]'"
            )

    def check_open(self, artifact: "Artifact") -> None:
        """Like ``check``, for what opening this particular artifact needs."""
        self.check()

    def status(self) -> str:
        """One line for `edgevid targets`: runs here / builds here, and the pip command for what is missing."""
        run = self.missing()
        build = [m for m in self.missing(for_build=True) if m not in run]
        if not run and not build:
            return "installed"
        if run:
            return f"missing {', '.join(run)}: pip install 'edgevid[{self.extra}]'"
        return f"runs here; to build: pip install 'edgevid[{self.build_extra}]' (missing {', '.join(build)})"

    @abstractmethod
    def build(self, request: BuildRequest) -> BuildResult:
        """Write the model files into ``request.out_dir`` (a staging folder)."""

    @abstractmethod
    def open(self, artifact: "Artifact", threads: int | None = None, mode: str = "latency") -> Runner:
        """Open a verified artifact for inference; ``mode`` is 'latency', 'throughput' or 'stream' (latency
        with other threads of this process working beside the runner, e.g. a decoder: no core pinning)."""

    def check_request(self, target: "Target", options: dict[str, Any], spec: "ModelSpec | None" = None) -> None:
        """Refuse build options this target cannot honour (for the model of ``spec``), before any export or
        calibration."""

    # --- finishing a host-built artifact on the device (TensorRT: Q/DQ ONNX -> engine) -----------
    #: True when ``edgevid build --from-onnx ARTIFACT`` can finish this backend's artifacts here
    finishes_on_device: bool = False

    def check_finish(self, source: "Artifact", model: str | None, target: str | None, precision: str | None,
                     options: dict[str, Any]) -> "Target":
        """The target ``source`` is finished for (one-line errors for anything that does not fit)."""
        raise EdgevidError(f"--from-onnx {source.path}: {self.name} artifacts are complete when built; nothing to finish")

    def finish(self, source: "Artifact", target: "Target", options: dict[str, Any], out_dir: Path,
               final: Path) -> BuildResult:
        """Write the finished model files into ``out_dir`` (a staging folder for ``final``)."""
        raise NotImplementedError

    # --- mixed precision (`edgevid sensitivity`, `edgevid build --max-drop`) --------------------
    # To support them, a backend implements ``quantizable_layers`` and honours
    # ``request.options["keep_float"]`` (a list of QuantLayer.name) in its INT8 build: ONNX
    # Runtime / ModelOpt pass them as ``nodes_to_exclude``, NNCF as
    # ``ignored_scope=nncf.IgnoredScope(names=...)``, XNNPACKQuantizer leaves those modules/nodes
    # unannotated (``set_module_name(name, None)`` or a node filter). Names must be stable
    # between two exports of the same model. Optionally override ``int8_plan`` to cache the
    # export and calibration across variants. The manifest's ``quantization`` should list
    # what was kept in float (``kept_float``).

    def quantizable_layers(self, request: BuildRequest) -> list[QuantLayer]:
        """Every op the INT8 build of ``request`` would quantize, in graph order."""
        raise EdgevidError(
            f"backend {self.name} cannot keep chosen layers in float yet (it needs Backend.quantizable_layers and"
            " the keep_float build option); --max-drop / sensitivity work with onnxruntime targets"
        )

    def int8_plan(self, request: BuildRequest) -> Int8Plan:
        """Variants of one INT8 build that differ in ``keep_float``; close() it when done."""
        return Int8Plan(self, request)
