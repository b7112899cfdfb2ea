"""OpenVINO on Intel CPU / GPU / NPU: an IR converted from a ``torch.export`` program.

Precisions: FP32, FP16 (weights compressed to FP16 in the IR) and INT8 (NNCF post-training
quantization with settings from the model's spec; with ``max_drop``, NNCF's accuracy-control
quantization against a labelled validation split, recording which layers it kept in float).

The artifact carries ``runtime.json`` (device, threads, inference precision) next to
``model.xml/.bin``. Running needs only numpy + openvino: nothing on the run path imports torch.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ...errors import ArtifactError, DataError, EdgevidError
from ...stages import BuildStages, Ticking
from ..base import Backend, BuildRequest, BuildResult, QuantLayer, Runner
from .._nncf import RangeRollbacks, quantization_settings
from .options import OpenVINOOptions

from .runner import (  # noqa: F401  (the run side, re-exported for the build and for callers)
    HINTS, VIRTUAL_DEVICES, DeviceUnavailable, OpenVINORunner, available_devices, default_inference_precision,
    device_present, require_device, runtime_config,
)

if TYPE_CHECKING:
    from ...spec import ModelSpec

log = logging.getLogger("edgevid")

MODEL_XML = "model.xml"
MODEL_BIN = "model.bin"
RUNTIME_FILE = "runtime.json"
OUTPUT_NAME = "logits"
#: ops whose inputs NNCF quantizes: a layer runs INT8 when its activation input is a FakeQuantize
WEIGHTED_OPS = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}
# --- build -------------------------------------------------------------------------------------

def convert(model, spec, policy) -> "Any":
    """``torch.export`` program -> ``ov.Model`` with input ``input`` [N, C, T, H, W], output ``logits``.

    Weighted layers are renamed after their PyTorch modules (``stages.2.0.conv2``), so build logs,
    the manifest and accuracy control speak of layers a reader can find in the model code.
    """
    import openvino as ov
    import torch

    from ...export import INPUT_NAME, export_program

    dynamic = (policy.min_batch or policy.batch, policy.max_batch) if policy.dynamic else None
    program = decompose(export_program(model, torch.zeros(spec.input_shape(policy.batch)), dynamic))
    try:
        ov_model = ov.convert_model(program)
    except Exception as exc:  # the frontend's messages are long; the first line names the op
        text = str(exc).strip().splitlines()
        raise EdgevidError(f"OpenVINO could not convert {spec.name}: {(text[0] if text else type(exc).__name__)[:300]}") from None
    shape = list(spec.input_shape(policy.batch))
    if dynamic:
        shape[0] = ov.Dimension(*dynamic)
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape(shape)})
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    ov_model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    name_layers(ov_model, module_names(program))
    return ov_model


def decompose(program):
    """The decomposition OpenVINO's frontend applies itself (so it is a no-op there), done here so
    that FX node names match the tensor names in the converted model."""
    from openvino.frontend.pytorch.torchdynamo.export_decompositions import ops_to_not_decompose
    from torch.export.decomp_utils import CustomDecompTable

    table = CustomDecompTable()
    for op in ops_to_not_decompose():
        table.pop(op, None)
    return program.run_decompositions(table)


def module_names(program) -> dict[str, str]:
    """FX node name -> PyTorch module path for convolutions, linears and matmuls (a batch-norm's
    output maps to the convolution it is folded into)."""
    import operator

    names: dict[str, str] = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        stack = node.meta.get("nn_module_stack")
        path = list(stack.values())[-1][0] if stack else ""
        target = str(node.target)
        if "convolution" in target or "linear" in target or "addmm" in target:
            names[node.name] = path or node.name
        elif "mm" in target or "matmul" in target:  # activation x activation (attention)
            names[node.name] = f"{path}/{node.name}" if path else node.name
        elif node.target is operator.getitem and node.args and getattr(node.args[0], "args", None):
            source = node.args[0].args[0]
            if getattr(source, "name", None) in names and "batch_norm" in str(node.args[0].target):
                names[node.name] = names[source.name]
    return names


def name_layers(ov_model, names: dict[str, str]) -> None:
    """Rename weighted ops whose output tensor (or bias Add's) carries exactly one known FX name."""
    used: set[str] = set()
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OPS:
            continue
        tensors = set(op.output(0).get_names())
        consumers = [c.get_node() for c in op.output(0).get_target_inputs()]
        if len(consumers) == 1 and consumers[0].get_type_name() == "Add":
            tensors |= consumers[0].output(0).get_names()
        hits = {names[t.split(":")[0]] for t in tensors if t.split(":")[0] in names}
        if len(hits) == 1:
            name = base = hits.pop()
            index = 1
            while name in used:
                index += 1
                name = f"{base}#{index}"
            used.add(name)
            op.set_friendly_name(name)


def _reads_quantized_activation(op) -> bool:
    """True when an input comes through a FakeQuantize of an activation (not of a weight constant):
    what makes an op execute in INT8. Weight-only quantization in front of a float activation
    still runs in float."""
    for port in op.inputs():
        source = port.get_source_output().get_node()
        if source.get_type_name() == "FakeQuantize" and \
                source.input(0).get_source_output().get_node().get_type_name() != "Constant":
            return True
    return False


def layer_precisions(ov_model) -> tuple[list[str], list[str]]:
    """(int8 layers, float layers) among the weighted ops (Conv / GroupConv / MatMul)."""
    int8, float_ = [], []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in WEIGHTED_OPS:
            (int8 if _reads_quantized_activation(op) else float_).append(op.get_friendly_name())
    return int8, float_


def quantized_ops(ov_model) -> set[str]:
    """Every op that reads a quantized activation (weighted ops, and e.g. pooling or adds)."""
    return {op.get_friendly_name() for op in ov_model.get_ordered_ops() if _reads_quantized_activation(op)}


def top1_validator(compiled, items) -> tuple[float, list[float]]:
    """NNCF ``validation_fn``: top-1 over (clip, label) items and one 0/1 value per item."""
    correct = [float(int(np.argmax(compiled(clip)[0][0]) == label)) for clip, label in items]
    return (float(np.mean(correct)) if correct else 0.0), correct


def quantize_int8(ov_model, calib: Sequence[np.ndarray], spec: "ModelSpec", device: str, options: dict[str, Any],
                  validation: Sequence[tuple[np.ndarray, int]] | None = None, max_drop: float | None = None,
                  stages: BuildStages | None = None):
    """INT8 ``ov.Model`` and the manifest's description of it.

    ``max_drop`` (top-1 points) switches to ``nncf.quantize_with_accuracy_control`` on
    ``validation``; the layers it reverts to float are found by comparing its plain-PTQ
    intermediate model with the result.
    """
    import nncf

    kwargs, described = quantization_settings(spec, device, options, "nncf.quantize (post-training, OpenVINO backend)")
    advanced = kwargs.pop("advanced")
    keep_float = keep_float_names(ov_model, options.get("keep_float"))
    ignored = list(keep_float)
    float_products = options.get("float_activation_matmuls", spec.transformer)
    described["activation_matmuls"] = "float" if float_products else "int8"
    if float_products:
        described["float_activation_matmul_layers"] = activation_matmuls(ov_model)
        ignored += [name for name in described["float_activation_matmul_layers"] if name not in ignored]
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored)
    kwargs["subset_size"] = min(kwargs["subset_size"], len(calib))
    stages = stages or BuildStages()
    with RangeRollbacks():
        quantized, reverted, accuracy_control = _nncf_quantize(ov_model, calib, kwargs, advanced, validation, max_drop,
                                                               stages)
    if accuracy_control is not None:
        described["accuracy_control"] = accuracy_control
    int8_layers, float_layers = layer_precisions(quantized)
    described.update(
        kept_float=keep_float,
        calibration_clips=kwargs["subset_size"],
        layers_int8=len(int8_layers),
        layers_float=float_layers,
        kept_float_by_accuracy_control=reverted,
    )
    return quantized, described


def _nncf_quantize(ov_model, calib, kwargs, advanced, validation, max_drop, stages):
    """``nncf.quantize`` on ``calib``, or with ``max_drop`` its accuracy control on ``validation``:
    (INT8 model, the layers accuracy control reverted to float, its summary or None)."""
    import nncf
    import openvino as ov

    if max_drop is None:
        with stages.stage("calibration", total=kwargs["subset_size"]) as stage:
            calib_ds = nncf.Dataset(Ticking(list(calib), stage))
            return nncf.quantize(ov_model, calib_ds, advanced_parameters=advanced, **kwargs), [], None
    calib_ds = nncf.Dataset(list(calib))
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    val_ds = nncf.Dataset(list(validation), lambda item: item[0])
    with tempfile.TemporaryDirectory() as tmp:
        quantized = nncf.quantize_with_accuracy_control(
            ov_model, calib_ds, val_ds, top1_validator, max_drop=max_drop / 100.0,
            drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(intermediate_model_dir=tmp),
            **kwargs,
        )
        plain = quantized_ops(ov.Core().read_model(str(Path(tmp) / "intermediate_model.xml")))
    reverted = sorted(plain - quantized_ops(quantized))
    core = ov.Core()
    fp32_top1, _ = top1_validator(core.compile_model(ov_model, "CPU", _accuracy_config()), validation)
    int8_top1, _ = top1_validator(core.compile_model(quantized, "CPU", _accuracy_config()), validation)
    summary = {
        "tool": "nncf.quantize_with_accuracy_control",
        "max_drop_points": max_drop,
        "validation_clips": len(validation),
        "fp32_top1": round(100 * fp32_top1, 2),
        "int8_top1": round(100 * int8_top1, 2),
        "reached": (fp32_top1 - int8_top1) * 100 <= max_drop + 1e-9,
    }
    return quantized, reverted, summary


def activation_matmuls(ov_model) -> list[str]:
    """MatMuls of two activations (no weight constant on either side), by friendly name: attention's
    score and value products, and an attention pool's. ``ModelType.TRANSFORMER`` leaves the ones in
    NNCF's attention patterns float but not, e.g., TubeViT's attention-pooling product, whose INT8
    cost tubevit_synth 0.7 points (``quantize_int8`` keeps them all float for transformers)."""
    def is_weight(port) -> bool:
        node = port.get_source_output().get_node()
        while node.get_type_name() in ("Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze"):
            node = node.input(0).get_source_output().get_node()
        return node.get_type_name() == "Constant"

    return [op.get_friendly_name() for op in ov_model.get_ordered_ops()
            if op.get_type_name() == "MatMul" and not any(is_weight(port) for port in op.inputs())]


def quantizable_ops(ov_model) -> list[QuantLayer]:
    """The weighted ops (convolutions, matmuls) by friendly name: the names ``keep_float`` takes."""
    kinds = {"Convolution": "Conv", "GroupConvolution": "Conv", "MatMul": "MatMul"}
    return [QuantLayer(name=op.get_friendly_name(), op=kinds.get(op.get_type_name(), op.get_type_name()),
                       scope=op.get_friendly_name().split("#")[0].rsplit("/", 1)[0])
            for op in ov_model.get_ordered_ops() if op.get_type_name() in WEIGHTED_OPS]


def keep_float_names(ov_model, value) -> list[str]:
    """The ``keep_float`` option (a list or comma-separated names) checked against the model's ops."""
    if not value:
        return []
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if str(n).strip()]
    known = {layer.name for layer in quantizable_ops(ov_model)}
    unknown = [n for n in names if n not in known]
    if unknown:
        from ...errors import suggest

        raise EdgevidError(f"--keep-float {unknown[0]}: no such layer in the OpenVINO model (`edgevid sensitivity`"
                           f" lists them).{suggest(unknown[0], known)}")
    return names


def _accuracy_config() -> dict[str, str]:
    return {"INFERENCE_PRECISION_HINT": "f32"}


class OpenVINOBackend(Backend):
    name = "openvino"
    options_model = OpenVINOOptions
    requirements = {"openvino": "openvino"}
    build_requirements = {"torch": "torch==2.13.0", "nncf": "nncf"}
    extra = "openvino"
    build_extra = "build-openvino"
    precisions = ("fp32", "fp16", "int8")
    handles_max_drop = True  # NNCF's accuracy control searches the float layers itself

    def build(self, request: BuildRequest) -> BuildResult:
        import nncf
        import openvino as ov
        import torch

        target, spec = request.target, request.spec
        options = {**target.options, **request.options}
        if request.precision not in self.precisions:
            raise EdgevidError(f"--precision {request.precision}: OpenVINO builds {', '.join(self.precisions)}")
        device = options.get("device") or target.device
        if options.get("device"):
            require_device(device, "--device")
        max_drop = options.get("max_drop")
        if max_drop is not None:
            max_drop = float(max_drop)
            if request.precision != "int8":
                raise EdgevidError("--max-drop applies to INT8 builds only; drop it or pass --precision int8")
            if not 0 < max_drop < 100:
                raise EdgevidError(f"--max-drop {max_drop}: give the allowed top-1 drop in points, e.g. 1.0")
        if request.precision == "int8" and not request.calib:
            raise DataError("INT8 needs calibration clips and none were given; pass --calib (videos) or use fp32/fp16")

        with request.stages.stage("export"):
            ov_model = convert(request.model, spec, target.input_shape)
        log.info("converted %s from torch.export to OpenVINO IR (%d ops)", spec.name, len(ov_model.get_ops()))
        notes: list[str] = []
        if request.precision == "int8":
            validation = request.validation if max_drop is not None else None
            if max_drop is not None and not validation:
                raise DataError("--max-drop needs labelled validation clips; pass --val-data FOLDER_OR_CSV")
            reference = ov_model.clone()
            final, quant = quantize_int8(ov_model, request.calib, spec, device, options, validation, max_drop,
                                         request.stages)
            with request.stages.stage("check"):
                quant["calibration_check"] = output_agreement(reference, final, request.calib[:4])
            log.info("NNCF INT8: %d layers int8, float: %s; kept float by accuracy control: %s; check vs FP32 IR %s",
                     quant["layers_int8"], quant["layers_float"], quant["kept_float_by_accuracy_control"],
                     quant["calibration_check"])
            if quant.get("accuracy_control") and not quant["accuracy_control"]["reached"]:
                ac = quant["accuracy_control"]
                notes.append(f"accuracy control did not reach --max-drop {max_drop}: FP32 {ac['fp32_top1']}%,"
                             f" INT8 {ac['int8_top1']}% on {ac['validation_clips']} validation clips")
        else:
            final = ov_model
            quant = {"scheme": "none (FP32)" if request.precision == "fp32" else "FP16 weights (compress_to_fp16)"}
        ov.save_model(final, str(request.out_dir / MODEL_XML), compress_to_fp16=request.precision == "fp16")

        inference_precision = options.get("inference_precision") or default_inference_precision(device, request.precision)
        threads = options.get("threads") or target.threads
        runtime = {"device": device, "threads": threads, "inference_precision": inference_precision}
        (request.out_dir / RUNTIME_FILE).write_text(json.dumps(runtime, indent=2))

        fingerprint = {"openvino": ov.get_version(), "device": device}
        status = {}
        if device_present(device, available_devices()):
            core = ov.Core()
            config = runtime_config(device, "latency", threads, inference_precision)
            with request.stages.stage("compile"):
                core.compile_model(core.read_model(str(request.out_dir / MODEL_XML)), device, config)
            if device.upper() not in VIRTUAL_DEVICES:
                fingerprint["device_name"] = core.get_property(device, "FULL_DEVICE_NAME")
            status["device_compile"] = f"compiled and checked on {device} at build"
        else:
            status["device_compile"] = "pending on device"
            notes.append(f"OpenVINO here sees {', '.join(available_devices())}, not {device}: the IR is built;"
                         f" the {device} compile happens when the artifact is opened on the device")
        return BuildResult(
            quantization=quant,
            versions={"torch": torch.__version__, "openvino": ov.__version__, "nncf": nncf.__version__},
            fingerprint=fingerprint,
            status=status,
            notes=notes,
            input_name="input",
        )

    def quantizable_layers(self, request: BuildRequest) -> list[QuantLayer]:
        """Every convolution and matmul of the converted model, named after its PyTorch module."""
        return quantizable_ops(convert(request.model, request.spec, request.target.input_shape))

    def open(self, artifact, threads=None, mode="latency") -> Runner:
        for name in (MODEL_XML, MODEL_BIN, RUNTIME_FILE):
            if not artifact.file(name).is_file():
                raise ArtifactError(f"{artifact.file(name)} is missing; rebuild with `{artifact.rebuild_command()}`")
        runtime = json.loads(artifact.file(RUNTIME_FILE).read_text())
        device = runtime["device"]
        require_device(device, f"artifact {artifact.path.name} is for device")
        config = runtime_config(device, mode, threads or runtime.get("threads"), runtime.get("inference_precision"))
        m = artifact.manifest
        precision = config.get("INFERENCE_PRECISION_HINT", "device default")
        return OpenVINORunner(artifact.file(MODEL_XML), device, config,
                              f"OpenVINO {device} {m.precision.upper()} ({config['PERFORMANCE_HINT'].lower()}, {precision})")


def output_agreement(reference, quantized, clips: Sequence[np.ndarray]) -> dict[str, float]:
    """Cosine and top-1 agreement of the INT8 model with the FP32 IR on a few calibration clips."""
    import openvino as ov

    core = ov.Core()
    ref = core.compile_model(reference, "CPU", _accuracy_config())
    try:
        out = core.compile_model(quantized, "CPU", _accuracy_config())
    except RuntimeError as exc:  # OpenVINO's message is many lines; the one naming the node says what broke
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("While validating")), lines[-1] if lines else "")
        raise EdgevidError(f"OpenVINO {ov.__version__} cannot compile the INT8 model on CPU: {detail[:400]}"
                           " (an OpenVINO CPU plugin error; fp32/fp16 build, or --keep-float the layers around it)") from None
    a = np.concatenate([ref(c)[0] for c in clips]).astype(np.float64)
    b = np.concatenate([out(c)[0] for c in clips]).astype(np.float64)
    cosine = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return {"clips": len(clips), "cosine_vs_fp32_ir": round(cosine, 5),
            "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1)))}


BACKEND = OpenVINOBackend()
