"""ONNX Runtime on the CPU: FP32, and INT8 static Q/DQ (symmetric, per-channel weights).

The Q/DQ graph is also what TensorRT consumes, so this backend doubles as the CPU-side accuracy
estimate for TensorRT INT8. Running needs only numpy + onnxruntime (no torch).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import EdgevidError
from .._onnx import (  # noqa: F401  (re-exported: the ONNX Runtime backend's runner and Q/DQ tools)
    CalibrationReader, OnnxRuntimeRunner, activation_matmuls, calibrate, calibration_chunk, pre_process, quantizable_nodes,
    quantize_qdq, session_options,
)
from ..base import Backend, BuildRequest, BuildResult, Int8Plan, QuantLayer, Runner
from .options import OnnxRuntimeOptions

if TYPE_CHECKING:
    from ...spec import ModelSpec

log = logging.getLogger("edgevid")

MODEL_FILE = "model.onnx"
#: percentile (at ``_onnx.PERCENTILE``): on 1,000 val clips, 32 calibration clips, x3d_synth agreement
#: 99.4% against 98.7% for min-max (which ORT's "entropy" at its default bins is, see ``_onnx``)
DEFAULT_CALIBRATION = "percentile"


def _excluded(options: dict) -> list[str]:
    """nodes_to_exclude of the target plus the keep_float layers of a mixed-precision build."""
    return list(dict.fromkeys([*options.get("nodes_to_exclude", ()), *options.get("keep_float", ())]))


def _float_activation_matmuls(options: dict, spec: "ModelSpec") -> bool:
    """Target option ``float_activation_matmuls``; by default on for transformers (``spec.transformer``: on the
    trained uniformerv2_synth, INT8 attention products cost agreement: 96.0% with them, vs 97% required)."""
    value = options.get("float_activation_matmuls", spec.transformer)
    if not isinstance(value, bool):
        raise EdgevidError(f"option float_activation_matmuls={value!r}: write true or false")
    return value


class OrtInt8Plan(Int8Plan):
    """Exports and pre-processes once, calibrates once (ORT's calibration cache), then each
    variant is only a quantize_static pass with other ``nodes_to_exclude``."""

    def __init__(self, backend: "OnnxRuntimeBackend", request: BuildRequest):
        super().__init__(backend, request)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgevid-ort-plan-")
        self.options = {**request.target.options, **request.options}
        self.exported = backend.export_fp32(request, Path(self._tmp.name) / "fp32.onnx")
        self.prepared = pre_process(self.exported, Path(self._tmp.name) / "prepared.onnx")
        self.cache = Path(self._tmp.name) / "calibration.json"

    @property
    def layers(self) -> list[QuantLayer]:
        if self._layers is None:
            self._layers = quantizable_nodes(
                self.prepared, self.options.get("op_types_to_quantize"), self.exported,
                _float_activation_matmuls(self.options, self.request.spec))
        return self._layers

    def build(self, keep_float, out_dir: Path) -> BuildResult:
        options = {**self.options, "keep_float": list(keep_float)}
        quant = quantize_qdq(
            self.prepared, Path(out_dir) / MODEL_FILE, self.request.calib, "input",
            op_types=options.get("op_types_to_quantize"),
            calibrate_method=options.get("calibrate_method", DEFAULT_CALIBRATION),
            nodes_to_exclude=_excluded(options), calibration_cache=self.cache, pre_processed=True,
            per_channel=bool(options.get("per_channel", True)),
            float_activation_matmuls=_float_activation_matmuls(options, self.request.spec),
            stages=self.request.stages, percentile=options.get("percentile"), histogram_bins=options.get("histogram_bins"),
        )
        return self.backend.result(quant)

    def close(self) -> None:
        self._tmp.cleanup()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    options_model = OnnxRuntimeOptions
    requirements = {"onnxruntime": "onnxruntime"}
    build_requirements = {"torch": "torch==2.13.0", "onnx": "onnx", "onnxscript": "onnxscript"}
    extra = "onnxruntime"
    build_extra = "build"
    precisions = ("fp32", "int8")

    def build(self, request: BuildRequest) -> BuildResult:
        import onnxruntime
        import torch

        from ...export import INPUT_NAME, export_onnx

        out = request.out_dir / MODEL_FILE
        example = torch.zeros(request.spec.input_shape(request.target.input_shape.batch))
        policy = request.target.input_shape
        dynamic = (policy.min_batch or policy.batch, policy.max_batch) if policy.dynamic else None
        options = {**request.target.options, **request.options}
        if request.precision == "fp32":
            with request.stages.stage("export"):
                export_onnx(request.model, example, out, dynamic_batch=dynamic)
            quant = {"scheme": "none (FP32)"}
        else:
            with tempfile.TemporaryDirectory() as tmp:
                fp32 = Path(tmp) / "fp32.onnx"
                with request.stages.stage("export"):
                    export_onnx(request.model, example, fp32, dynamic_batch=dynamic)
                quant = quantize_qdq(
                    fp32, out, request.calib, INPUT_NAME,
                    op_types=options.get("op_types_to_quantize"),
                    calibrate_method=options.get("calibrate_method", DEFAULT_CALIBRATION),
                    nodes_to_exclude=_excluded(options),
                    per_channel=bool(options.get("per_channel", True)),
                    float_activation_matmuls=_float_activation_matmuls(options, request.spec),
                    stages=request.stages, percentile=options.get("percentile"),
                    histogram_bins=options.get("histogram_bins"),
                )
        import onnx

        return BuildResult(
            quantization=quant,
            versions={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            input_name=INPUT_NAME,
        )

    def export_fp32(self, request: BuildRequest, path: Path) -> Path:
        import torch

        from ...export import export_onnx

        policy = request.target.input_shape
        dynamic = (policy.min_batch or policy.batch, policy.max_batch) if policy.dynamic else None
        return export_onnx(request.model, torch.zeros(request.spec.input_shape(policy.batch)), path, dynamic_batch=dynamic)

    def result(self, quant: dict) -> BuildResult:
        import onnx
        import onnxruntime
        import torch

        versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
        return BuildResult(quantization=quant, versions=versions, input_name="input")

    def quantizable_layers(self, request: BuildRequest) -> list[QuantLayer]:
        with tempfile.TemporaryDirectory() as tmp:
            exported = self.export_fp32(request, Path(tmp) / "fp32.onnx")
            prepared = pre_process(exported, Path(tmp) / "prepared.onnx")
            options = {**request.target.options, **request.options}
            return quantizable_nodes(prepared, options.get("op_types_to_quantize"), exported,
                                     _float_activation_matmuls(options, request.spec))

    def int8_plan(self, request: BuildRequest) -> Int8Plan:
        return OrtInt8Plan(self, request)

    def open(self, artifact, threads=None, mode="latency") -> Runner:
        m = artifact.manifest
        return OnnxRuntimeRunner(artifact.file(MODEL_FILE), threads, f"ONNX Runtime CPU {m.precision.upper()}")


BACKEND = OnnxRuntimeBackend()
