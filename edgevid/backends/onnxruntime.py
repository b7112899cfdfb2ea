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

from ..errors import EdgevidError
from ..stages import BuildStages
from .base import TRANSFORMER_FAMILIES, Backend, BuildRequest, BuildResult, Int8Plan, QuantLayer, Runner

log = logging.getLogger("edgevid")

MODEL_FILE = "model.onnx"


class CalibrationReader:
    """Feeds preprocessed calibration clips (each [1, C, T, H, W]) to ORT's calibrator; ``on_clip``
    is called for every clip handed out (the build's calibration n/N)."""

    def __init__(self, clips: Sequence[np.ndarray], input_name: str, on_clip=None):
        self._clips = clips
        self._input_name = input_name
        self._index = 0
        self._on_clip = on_clip

    def get_next(self):
        if self._index >= len(self._clips):
            return None
        clip = self._clips[self._index]
        self._index += 1
        if self._on_clip is not None:
            self._on_clip()
        return {self._input_name: np.ascontiguousarray(clip, dtype=np.float32)}

    def rewind(self):
        self._index = 0

    def __len__(self) -> int:
        return len(self._clips)


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
    calibration_cache: Path | None = None,
    pre_processed: bool = False,
    per_channel: bool = True,
    float_activation_matmuls: bool = False,
    stages: BuildStages | None = None,
) -> dict:
    """Static INT8 Q/DQ with symmetric activations and per-channel symmetric weights.

    ``float_activation_matmuls`` excludes MatMuls of two activations (attention's Q·Kᵀ and A·V):
    their outputs (the pre-softmax scores, the context) stay float; their inputs keep the Q/DQ that
    ORT puts on the outputs of the quantized projections producing them.

    Symmetric everything is what TensorRT's explicit quantization needs; ORT runs it as well.
    Calibration runs here (``calibrate``: in chunks that fit in memory) and writes ORT's
    calibration cache, which ``quantize_static`` then reads; a given ``calibration_cache`` that
    exists lets later variants of the same model skip calibration. ``pre_processed`` skips shape
    inference when ``fp32_path`` had it.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    stages = stages or BuildStages()
    method = _calibration_method(calibrate_method)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(fp32_path) if pre_processed else pre_process(fp32_path, Path(tmp) / "prepared.onnx")
        cache = Path(calibration_cache) if calibration_cache else Path(tmp) / "calibration.json"
        if not cache.is_file():
            calibrate(prepared, clips, input_name, calibrate_method, op_types, cache, Path(tmp), stages)
        if float_activation_matmuls:
            attention = activation_matmuls(onnx.load(str(prepared), load_external_data=False))
            nodes_to_exclude = list(dict.fromkeys([*nodes_to_exclude, *attention]))
        with stages.stage("quantize"):
            quantize_static(
                str(prepared),
                str(out_path),
                None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(op_types) if op_types else None,
                per_channel=per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(nodes_to_exclude),
                calibrate_method=method,
                calibration_providers=["CPUExecutionProvider"],
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibTensorRangeSymmetric": True},
                calibration_cache_path=str(cache),
            )
    return {
        "scheme": "static INT8 Q/DQ, symmetric activations, "
                  + ("per-channel" if per_channel else "per-tensor") + " symmetric weights",
        "calibrate_method": calibrate_method,
        "op_types": list(op_types) if op_types else "all supported",
        "activation_matmuls": "float" if float_activation_matmuls else "int8",
        "kept_float": list(nodes_to_exclude),
    }


def _calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    if name not in methods:
        raise EdgevidError(f"calibrate_method {name!r}: choose {', '.join(methods)}")
    return methods[name]


def calibrate(prepared: Path, clips: Sequence[np.ndarray], input_name: str, method: str, op_types: Sequence[str] | None,
              cache: Path, work: Path, stages: BuildStages | None = None) -> None:
    """ORT's calibrator over ``clips``, symmetric ranges written to ``cache`` (what ``quantize_static``'s
    ``calibration_cache_path`` reads).

    The histogram calibrators (entropy, percentile) hold every intermediate tensor of every clip they
    are given before they histogram it, so the clips go in chunks that fit in memory (histograms merge
    across chunks); min-max keeps only per-tensor ranges and takes them all at once. Not
    ``CalibMaxIntermediateOutputs``: in ORT 1.32 ``MinMaxCalibrater.collect_data`` drops each full chunk
    without merging its ranges.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if not clips:
        raise EdgevidError("INT8 needs calibration clips: pass --calib (a folder, a manifest or 'synthetic')")
    stages = stages or BuildStages()
    chunk = len(clips) if method == "minmax" else calibration_chunk(prepared, len(clips), method)
    with stages.stage("calibration", total=len(clips)) as stage:
        calibrator = create_calibrator(prepared, list(op_types) if op_types else None,
                                       augmented_model_path=str(work / "augmented.onnx"),
                                       calibrate_method=_calibration_method(method),
                                       providers=["CPUExecutionProvider"], extra_options={"symmetric": True})
        for start in range(0, len(clips), chunk):
            calibrator.collect_data(CalibrationReader(clips[start:start + chunk], input_name, stage.advance))
        ranges = calibrator.compute_data()
        save_tensors_data(ranges, cache)
        del calibrator
    log.info("calibrated %d clips (%s, chunks of %d)", len(clips), method, chunk)


def _constant_sources(model) -> set[str]:
    """Tensors that are compile-time constants (initializers, Constant outputs and views of them)."""
    const = {init.name for init in model.graph.initializer}
    passthrough = {"Transpose", "Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze", "QuantizeLinear", "DequantizeLinear"}
    changed = True
    while changed:
        changed = False
        for node in model.graph.node:
            if any(o in const for o in node.output):
                continue
            if node.op_type == "Constant" or (node.op_type in passthrough and node.input and node.input[0] in const):
                const.update(node.output)
                changed = True
    return const


def activation_matmuls(model) -> list[str]:
    """MatMuls whose both operands are activations: Q@K^T and attention@V in attention blocks."""
    const = _constant_sources(model)
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) == 2 and not (set(n.input) & const)]


def activation_bytes(path: Path) -> int:
    """Bytes of every float32 intermediate tensor of one inference (shapes from shape inference)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    total = 0
    for info in graph.value_info:
        tensor = info.type.tensor_type
        dims = [d.dim_value for d in tensor.shape.dim]
        if tensor.elem_type == onnx.TensorProto.FLOAT and dims and all(d > 0 for d in dims):
            total += 4 * int(np.prod(dims))
    return total


def calibration_chunk(prepared: Path, clips: int, method: str) -> int:
    """How many clips a histogram calibrator can hold at once: their intermediate tensors in at most
    half the free memory (at least 1; a single clip that cannot fit is a one-line error)."""
    import os

    per_clip = max(activation_bytes(prepared), 1)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return clips
    fits = int(0.5 * available // per_clip)
    if fits < 1:
        raise EdgevidError(
            f"{method} calibration holds {per_clip / 2**30:.1f} GB of activations per clip"
            f" ({available / 2**30:.1f} GB free): free memory, or pass --option calibrate_method=minmax")
    return max(1, min(clips, fits))


def pre_process(fp32_path: Path, out_path: Path) -> Path:
    """ORT's quantization pre-processing (shape inference, graph cleanup): quantize this graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    return Path(out_path)


def _module_scopes(path: Path) -> dict[str, str]:
    """ONNX node name -> the PyTorch module it was exported from (the dynamo exporter's metadata)."""
    import ast

    import onnx

    scopes = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        try:
            names = [s for s in ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]")) if s]
        except (ValueError, SyntaxError):
            names = []
        if len(names) >= 2:  # [..., module path, op name]
            scopes[node.name] = names[-2]
    return scopes


def quantizable_nodes(path: Path, op_types: Sequence[str] | None, exported: Path | None = None,
                      float_activation_matmuls: bool = False) -> list[QuantLayer]:
    """Nodes of ``path`` that quantize_static would quantize (``op_types`` or every supported type).

    ``exported``: the graph before ORT's pre-processing, which still carries the module names.
    ``float_activation_matmuls``: leave out the attention products, which that recipe never quantizes.
    """
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    types = set(op_types) if op_types else set(QDQRegistry) | set(QLinearOpsRegistry)
    scopes = _module_scopes(exported) if exported else {}
    model = onnx.load(str(path), load_external_data=False)
    always_float = set(activation_matmuls(model)) if float_activation_matmuls else set()
    return [
        QuantLayer(name=node.name, op=node.op_type, scope=scopes.get(node.name.split("/")[0], ""))
        for node in model.graph.node
        if node.op_type in types and node.name not in always_float
    ]


def _excluded(options: dict) -> list[str]:
    """nodes_to_exclude of the target plus the keep_float layers of a mixed-precision build."""
    return list(dict.fromkeys([*options.get("nodes_to_exclude", ()), *options.get("keep_float", ())]))


def _float_activation_matmuls(options: dict, family: str) -> bool:
    """Target option ``float_activation_matmuls``; by default on for the attention families (on the trained
    uniformerv2_synth, INT8 attention products cost agreement: 96.0% with them, vs 97% required)."""
    value = options.get("float_activation_matmuls", family in TRANSFORMER_FAMILIES)
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
                _float_activation_matmuls(self.options, self.request.spec.family))
        return self._layers

    def build(self, keep_float, out_dir: Path) -> BuildResult:
        options = {**self.options, "keep_float": list(keep_float)}
        quant = quantize_qdq(
            self.prepared, Path(out_dir) / MODEL_FILE, self.request.calib, "input",
            op_types=options.get("op_types_to_quantize"),
            calibrate_method=options.get("calibrate_method", "entropy"),
            nodes_to_exclude=_excluded(options), calibration_cache=self.cache, pre_processed=True,
            per_channel=bool(options.get("per_channel", True)),
            float_activation_matmuls=_float_activation_matmuls(options, self.request.spec.family),
            stages=self.request.stages,
        )
        return self.backend.result(quant)

    def close(self) -> None:
        self._tmp.cleanup()


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
                    calibrate_method=options.get("calibrate_method", "entropy"),
                    nodes_to_exclude=_excluded(options),
                    per_channel=bool(options.get("per_channel", True)),
                    float_activation_matmuls=_float_activation_matmuls(options, request.spec.family),
                    stages=request.stages,
                )
        import onnx

        return BuildResult(
            quantization=quant,
            versions={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            input_name=INPUT_NAME,
        )

    def export_fp32(self, request: BuildRequest, path: Path) -> Path:
        import torch

        from ..export import export_onnx

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
                                     _float_activation_matmuls(options, request.spec.family))

    def int8_plan(self, request: BuildRequest) -> Int8Plan:
        return OrtInt8Plan(self, request)

    def open(self, artifact, threads=None, mode="latency") -> Runner:
        m = artifact.manifest
        return OnnxRuntimeRunner(artifact.file(MODEL_FILE), threads, f"ONNX Runtime CPU {m.precision.upper()}")


BACKEND = OnnxRuntimeBackend()
