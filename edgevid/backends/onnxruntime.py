"""ONNX Runtime on the CPU: FP32, and INT8 static Q/DQ (symmetric, per-channel weights).

The Q/DQ graph is also what TensorRT consumes, so this backend doubles as the CPU-side accuracy
estimate for TensorRT INT8. Running needs only numpy + onnxruntime (no torch).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Backend, BuildRequest, BuildResult, Runner

log = logging.getLogger("edgevid")

MODEL_FILE = "model.onnx"


class CalibrationReader:
    """Feeds preprocessed calibration clips (each [1, C, T, H, W]) to ORT's calibrator."""

    def __init__(self, clips: Sequence[np.ndarray], input_name: str):
        self._clips = clips
        self._input_name = input_name
        self._index = 0

    def get_next(self):
        if self._index >= len(self._clips):
            return None
        clip = self._clips[self._index]
        self._index += 1
        return {self._input_name: np.ascontiguousarray(clip, dtype=np.float32)}

    def rewind(self):
        self._index = 0


def session_options(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


class OnnxRuntimeRunner(Runner):
    def __init__(self, path: Path, threads: int | None = None, description: str = "ONNX Runtime CPU"):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
        self.output_name = self.session.get_outputs()[0].name
        self.description = description

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(clip, dtype=np.float32)}
        return self.session.run([self.output_name], feed)[0]


def quantize_qdq(
    fp32_path: Path,
    out_path: Path,
    clips: Sequence[np.ndarray],
    input_name: str,
    op_types: Sequence[str] | None,
    calibrate_method: str = "entropy",
    nodes_to_exclude: Sequence[str] = (),
) -> dict:
    """Static INT8 Q/DQ with symmetric activations and per-channel symmetric weights.

    Symmetric everything is what TensorRT's explicit quantization needs; ORT runs it as well.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            CalibrationReader(clips, input_name),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude),
            calibrate_method=methods[calibrate_method],
            calibration_providers=["CPUExecutionProvider"],
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibTensorRangeSymmetric": True},
        )
    return {
        "scheme": "static INT8 Q/DQ, symmetric activations, per-channel symmetric weights",
        "calibrate_method": calibrate_method,
        "op_types": list(op_types) if op_types else "all supported",
        "nodes_kept_float": list(nodes_to_exclude),
    }


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    requirements = {"onnxruntime": "onnxruntime"}
    build_requirements = {"onnx": "onnx", "onnxscript": "onnxscript"}
    extra = "onnx"
    precisions = ("fp32", "int8")

    def build(self, request: BuildRequest) -> BuildResult:
        import onnxruntime
        import torch

        from ..export import INPUT_NAME, export_onnx

        out = request.out_dir / MODEL_FILE
        example = torch.zeros(request.spec.input_shape(request.target.input_shape.batch))
        policy = request.target.input_shape
        dynamic = (policy.min_batch or policy.batch, policy.max_batch) if policy.dynamic else None
        options = {**request.target.options, **request.options}
        if request.precision == "fp32":
            export_onnx(request.model, example, out, dynamic_batch=dynamic)
            quant = {"scheme": "none (FP32)"}
        else:
            with tempfile.TemporaryDirectory() as tmp:
                fp32 = Path(tmp) / "fp32.onnx"
                export_onnx(request.model, example, fp32, dynamic_batch=dynamic)
                quant = quantize_qdq(
                    fp32, out, request.calib, INPUT_NAME,
                    op_types=options.get("op_types_to_quantize"),
                    calibrate_method=options.get("calibrate_method", "entropy"),
                    nodes_to_exclude=options.get("nodes_to_exclude", ()),
                )
        import onnx

        return BuildResult(
            quantization=quant,
            versions={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            input_name=INPUT_NAME,
        )

    def open(self, artifact, threads=None, mode="latency") -> Runner:
        m = artifact.manifest
        return OnnxRuntimeRunner(artifact.file(MODEL_FILE), threads, f"ONNX Runtime CPU {m.precision.upper()}")


BACKEND = OnnxRuntimeBackend()
