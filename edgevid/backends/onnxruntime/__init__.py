"""ONNX Runtime on the CPU: FP32, and INT8 static Q/DQ.

INT8 comes from NNCF's ONNX backend with the recipe OpenVINO builds use (``backends/_nncf.py``:
per-channel symmetric weights, histogram activation ranges, bias correction; transformers keep
their activation-activation MatMuls float), or, with ``quantizer: ort``, from ONNX Runtime's own
``quantize_static`` (symmetric activations and weights, percentile calibration: the Q/DQ form
TensorRT reads). Running needs only numpy + onnxruntime (no torch).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import EdgevidError
from ...stages import BuildStages, Ticking
from .._nncf import RangeRollbacks, quantization_settings
from .._onnx import (  # noqa: F401  (re-exported: the ONNX Runtime backend's runner and Q/DQ tools)
    CalibrationReader, OnnxRuntimeRunner, activation_matmuls, calibrate, calibration_chunk, pre_process, qdq_layer_precisions,
    quantizable_nodes, quantize_qdq, session_options,
)
from ..base import Backend, BuildRequest, BuildResult, Int8Plan, QuantLayer, Runner
from .options import OnnxRuntimeOptions, unread_settings

if TYPE_CHECKING:
    from ...spec import ModelSpec

log = logging.getLogger("edgevid")

MODEL_FILE = "model.onnx"
#: ``quantizer: ort``'s calibrator, percentile (at ``_onnx.PERCENTILE``): on 1,000 val clips, 32 calibration
#: clips, x3d_synth agreement 99.4% against 98.7% for min-max (which ORT's "entropy" at its default bins is)
DEFAULT_CALIBRATION = "percentile"
#: the op types ``quantizer: ort`` quantizes unless ``op_types_to_quantize`` says (null: every type ORT can)
ORT_OP_TYPES = ("Conv", "MatMul", "Gemm")
#: the weighted ops among NNCF's quantized layers: what ``keep_float`` / ``edgevid sensitivity`` name
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _quantizer(options: dict, spec: "ModelSpec") -> str:
    """The ``quantizer`` option, else the family's default: NNCF for convolutional nets (x3d_synth on 1,000 val
    clips: logits SQNR 25.8 vs 17.3 dB, agreement 99.7% vs 99.4%, and 14% faster), ONNX Runtime's own for
    transformers (NNCF's Q/DQ has no Q after a linear or conv output, so ORT runs those as DequantizeLinear +
    float Conv / Gemm: uniformerv2_synth 1.27-1.34x, timesformer_synth 1.34x, tubevit_synth 1.20x slower)."""
    chosen = options.get("quantizer") or ("ort" if spec.transformer else "nncf")
    unread = unread_settings(options, chosen)
    if unread:
        raise EdgevidError(f"--option: {unread} ({spec.name} defaults to quantizer="
                           f"{'ort' if spec.transformer else 'nncf'})")
    return chosen


def _excluded(options: dict) -> list[str]:
    """nodes_to_exclude of the target plus the keep_float layers of a mixed-precision build."""
    return list(dict.fromkeys([*options.get("nodes_to_exclude", ()), *options.get("keep_float", ())]))


def _prepared(exported: Path, folder: Path, options: dict, spec: "ModelSpec") -> Path | None:
    """ORT's pre-processing of the export (into ``folder``), which its own quantizer reads; None when NNCF
    quantizes (it reads the export itself)."""
    return pre_process(exported, folder / "prepared.onnx") if _quantizer(options, spec) == "ort" else None


def _float_activation_matmuls(options: dict, spec: "ModelSpec") -> bool:
    """Target option ``float_activation_matmuls``; by default on for transformers (``spec.transformer``: on the
    trained uniformerv2_synth, INT8 attention products cost agreement: 96.0% with them, vs 97% required)."""
    value = options.get("float_activation_matmuls", spec.transformer)
    if not isinstance(value, bool):
        raise EdgevidError(f"option float_activation_matmuls={value!r}: write true or false")
    return value


def _layers(prepared: Path | None, exported: Path, options: dict, spec: "ModelSpec") -> list[QuantLayer]:
    """The layers the target's quantizer makes INT8 (what ``keep_float`` can name): nodes of the graph it
    quantizes (NNCF: the export; ORT: the export after ORT's pre-processing)."""
    float_products = _float_activation_matmuls(options, spec)
    if _quantizer(options, spec) == "nncf":
        return quantizable_nodes(exported, WEIGHTED_OPS, exported, float_products)
    return quantizable_nodes(prepared, options.get("op_types_to_quantize", ORT_OP_TYPES), exported, float_products)


def quantize_int8(exported: Path, prepared: Path | None, out: Path, request: BuildRequest, options: dict,
                  calibration_cache: Path | None = None) -> dict:
    """INT8 Q/DQ ONNX with the target's quantizer; the manifest's description. NNCF quantizes the export as it
    is (ORT's pre-processing, shape inference and MatMul+Add -> Reshape+Gemm, is what ORT's own quantizer needs;
    on that graph NNCF put the linear layers' Q/DQ before the Reshape), ORT's quantizer ``prepared``.
    ``calibration_cache``: ORT's ranges, kept between the variants of one plan (``quantizer: ort``)."""
    spec, float_products = request.spec, _float_activation_matmuls(options, request.spec)
    if _quantizer(options, spec) == "nncf":
        _check_layer_names(exported, _excluded(options))
        return quantize_nncf(exported, out, request.calib, spec, options, _excluded(options), float_products,
                             request.stages)
    _check_layer_names(prepared, _excluded(options))
    return quantize_qdq(
        prepared, out, request.calib, "input",
        op_types=options.get("op_types_to_quantize", ORT_OP_TYPES),
        calibrate_method=options.get("calibrate_method", DEFAULT_CALIBRATION),
        nodes_to_exclude=_excluded(options), calibration_cache=calibration_cache, pre_processed=True,
        per_channel=bool(options.get("per_channel", True)), float_activation_matmuls=float_products,
        stages=request.stages, percentile=options.get("percentile"), histogram_bins=options.get("histogram_bins"),
    )


def _check_layer_names(graph: Path, names: list[str]) -> None:
    """``keep_float`` / ``nodes_to_exclude`` name nodes of the graph the quantizer reads: a typo is an error,
    not a no-op."""
    if not names:
        return
    import onnx

    from ...errors import suggest

    known = {node.name for node in onnx.load(str(graph), load_external_data=False).graph.node}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise EdgevidError(f"--keep-float {unknown[0]}: no such layer in the exported ONNX graph (`edgevid sensitivity`"
                           f" lists them).{suggest(unknown[0], known)}")


#: NNCF's full bias correction on ONNX graphs failed on a test graph here (NNCF 3.4: KeyError 'node_Conv_29' in
#: bias_correction/onnx_backend.py); the fast one, NNCF's own default, measured the same on x3d_synth (1,000 val
#: clips: agreement 99.7% vs 99.3%, logits SQNR 25.8 vs 25.9 dB), so the ONNX backend uses it for every family
ONNX_BIAS_CORRECTION = {"fast_bias_correction": True}


def quantize_nncf(exported: Path, out: Path, clips, spec: "ModelSpec", options: dict, keep_float: list[str],
                  float_activation_matmuls: bool, stages: BuildStages) -> dict:
    """``nncf.quantize`` on the ONNX graph with the family's NNCF recipe (``_nncf.quantization_settings``, the
    one OpenVINO builds use); ``keep_float`` and, when asked, the activation-activation MatMuls stay float.

    Bias correction is the fast one unless ``fast_bias_correction: false`` (``ONNX_BIAS_CORRECTION``).
    """
    import nncf
    import onnx

    if not clips:
        raise EdgevidError("INT8 needs calibration clips: pass --calib (a folder, a manifest or 'synthetic')")
    options = {**ONNX_BIAS_CORRECTION, **options}
    kwargs, described = quantization_settings(spec, "CPU", options, "nncf.quantize (post-training, ONNX backend)")
    advanced = kwargs.pop("advanced")
    model = onnx.load(str(exported))
    ignored = list(keep_float)
    products = activation_matmuls(model) if float_activation_matmuls else []
    ignored += [name for name in products if name not in ignored]
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored)
    kwargs["subset_size"] = len(clips)
    input_name = model.graph.input[0].name
    items = [{input_name: np.ascontiguousarray(clip, dtype=np.float32)} for clip in clips]
    with stages.stage("calibration", total=len(clips)) as stage, RangeRollbacks():
        try:
            quantized = nncf.quantize(model, nncf.Dataset(Ticking(items, stage)), advanced_parameters=advanced, **kwargs)
        except (nncf.InternalError, nncf.ValidationError, KeyError, ValueError) as exc:
            raise EdgevidError(f"NNCF could not quantize {spec.name} for ONNX Runtime ({type(exc).__name__}: {exc});"
                               " --option quantizer=ort uses ONNX Runtime's own quantizer") from exc
    onnx.save(quantized, str(out))
    int8_layers, float_layers = qdq_layer_precisions(quantized, WEIGHTED_OPS)
    described.update(
        activation_matmuls="float" if float_activation_matmuls else "int8",
        float_activation_matmul_layers=products,
        kept_float=list(keep_float),
        calibration_clips=len(clips),
        layers_int8=len(int8_layers),
        layers_float=float_layers,
    )
    return described


class OrtInt8Plan(Int8Plan):
    """Exports once (and pre-processes for ORT's quantizer); then each variant is one quantization with
    other layers kept float (``quantizer: ort`` calibrates once, into ORT's calibration cache; NNCF
    collects statistics per variant, seconds on the reference models)."""

    def __init__(self, backend: "OnnxRuntimeBackend", request: BuildRequest):
        super().__init__(backend, request)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgevid-ort-plan-")
        self.options = {**request.target.options, **request.options}
        self.exported = backend.export_fp32(request, Path(self._tmp.name) / "fp32.onnx")
        self.prepared = _prepared(self.exported, Path(self._tmp.name), self.options, request.spec)
        self.cache = Path(self._tmp.name) / "calibration.json"

    @property
    def layers(self) -> list[QuantLayer]:
        if self._layers is None:
            self._layers = _layers(self.prepared, self.exported, self.options, self.request.spec)
        return self._layers

    def build(self, keep_float, out_dir: Path) -> BuildResult:
        options = {**self.options, "keep_float": list(keep_float)}
        quant = quantize_int8(self.exported, self.prepared, Path(out_dir) / MODEL_FILE, self.request, options, self.cache)
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
                quant = quantize_int8(fp32, _prepared(fp32, Path(tmp), options, request.spec), out, request, options)
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
            options = {**request.target.options, **request.options}
            return _layers(_prepared(exported, Path(tmp), options, request.spec), exported, options, request.spec)

    def check_request(self, target, options, spec=None) -> None:
        if spec is not None:
            _quantizer({**target.options, **options}, spec)

    def int8_plan(self, request: BuildRequest) -> Int8Plan:
        return OrtInt8Plan(self, request)

    def open(self, artifact, threads=None, mode="latency") -> Runner:
        m = artifact.manifest
        return OnnxRuntimeRunner(artifact.file(MODEL_FILE), threads, f"ONNX Runtime CPU {m.precision.upper()}")


BACKEND = OnnxRuntimeBackend()
