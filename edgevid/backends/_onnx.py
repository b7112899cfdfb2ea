"""ONNX pieces shared by the ONNX Runtime and TensorRT backends, written once: the calibration
reader, static Q/DQ quantization, which MatMuls multiply two activations, the quantizable nodes
of a graph named after their PyTorch modules, and the (torch-free) ONNX Runtime runner."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import EdgevidError
from ..stages import BuildStages
from .base import QuantLayer, Runner

log = logging.getLogger("edgevid")


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
        self.runtime = f"onnxruntime {ort.__version__} (CPU)"

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(clip, dtype=np.float32)}
        return self.session.run([self.output_name], feed)[0]


def quantize_qdq(
    fp32_path: Path,
    out_path: Path,
    clips: Sequence[np.ndarray],
    input_name: str,
    op_types: Sequence[str] | None,
    calibrate_method: str = "percentile",
    nodes_to_exclude: Sequence[str] = (),
    calibration_cache: Path | None = None,
    pre_processed: bool = False,
    per_channel: bool = True,
    float_activation_matmuls: bool = False,
    stages: BuildStages | None = None,
    percentile: float | None = None,
    histogram_bins: int | None = None,
) -> dict:
    """Static INT8 Q/DQ with symmetric activations and per-channel symmetric weights.

    ``float_activation_matmuls`` excludes MatMuls of two activations (attention's Q·Kᵀ and A·V):
    their outputs (the pre-softmax scores, the context) stay float; their inputs keep the Q/DQ that
    ORT puts on the outputs of the quantized projections producing them. ``percentile`` /
    ``histogram_bins``: the histogram calibrators' settings (``calibrator_options``).

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
    calibrator = calibrator_options(calibrate_method, percentile, histogram_bins)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(fp32_path) if pre_processed else pre_process(fp32_path, Path(tmp) / "prepared.onnx")
        cache = Path(calibration_cache) if calibration_cache else Path(tmp) / "calibration.json"
        if not cache.is_file():
            calibrate(prepared, clips, input_name, calibrate_method, op_types, cache, Path(tmp), stages, calibrator)
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
        **{k: v for k, v in calibrator.items() if k != "symmetric"},
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


#: ORT's percentile calibrator keeps this share of |x| by default (its own default, 99.999, clipped too
#: little on x3d_synth: 1,000 val clips, 32 calibration clips: agreement 98.6% at 99.999, 99.2% at
#: 99.99, 99.4% at 99.98, 93.8% at 99.9; min-max 98.7%)
PERCENTILE = 99.98


def calibrator_options(method: str, percentile: float | None = None, histogram_bins: int | None = None) -> dict:
    """ORT calibrator ``extra_options`` for ``method``: symmetric ranges, the histogram's bins and the
    percentile (``PERCENTILE`` unless given).

    Entropy keeps ORT's 128 histogram bins unless ``histogram_bins`` says otherwise: with 128 bins for
    its 128 quantized bins the KL search has one candidate, the full range, so ORT's "entropy" is
    min-max (identical scales on x3d_synth); with 2,048 bins (TensorRT's) it picked ranges that cut
    x3d_synth to 33.5% top-1 on 1,000 val clips (ORT's search runs on the signed histogram, where
    ReLU outputs fill only half the bins).
    """
    options: dict = {"symmetric": True}
    if method in ("entropy", "percentile") and histogram_bins:
        options["num_bins"] = histogram_bins
    if method == "percentile":
        options["percentile"] = percentile if percentile is not None else PERCENTILE
    return options


def calibrate(prepared: Path, clips: Sequence[np.ndarray], input_name: str, method: str, op_types: Sequence[str] | None,
              cache: Path, work: Path, stages: BuildStages | None = None, extra_options: dict | None = None) -> None:
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
                                       providers=["CPUExecutionProvider"],
                                       extra_options=extra_options or calibrator_options(method))
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


def qdq_layer_precisions(model, op_types: Sequence[str]) -> tuple[list[str], list[str]]:
    """(INT8, float) nodes of ``op_types`` in a Q/DQ graph: a node runs INT8 when an activation input comes
    through a DequantizeLinear (a weight's DequantizeLinear in front of a float activation does not)."""
    const = _constant_sources(model)
    dequantized = {n.output[0] for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] not in const}
    int8, float_ = [], []
    for node in model.graph.node:
        if node.op_type in op_types:
            (int8 if set(node.input) & dequantized else float_).append(node.name)
    return int8, float_


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
