"""`edgevid trace`: where an INT8 artifact's numeric error arises, layer by layer, against FP32.

Every backend runs the same clips (the model's centre clip of each video) through the INT8 program
and an FP32 twin whose layers carry the same names, reads each traced layer's output in both, and
reports ``SQNR = 10 log10(sum ref^2 / sum (ref - int8)^2)`` over all clips, in graph order. Read
top to bottom, a falling SQNR shows where error accumulates; a layer far below its neighbours is
the one to keep in float (``--keep-float``). What a "layer" is, per backend:

* **Q/DQ ONNX** (``onnx-cpu``; a TensorRT target's Q/DQ ONNX, run under ONNX Runtime CPU): every
  node fed by a ``DequantizeLinear``. The FP32 twin is exported again from the same weights (and
  passed through the ONNX Runtime pre-processing the quantizer saw), so float tensors keep their
  names; the layer outputs are added as graph outputs of both graphs.
* **OpenVINO IR** (``intel-*``): every op that reads a FakeQuantize'd activation (the ops the CPU
  plugin runs in INT8), and the weighted ops (Conv / GroupConv / MatMul) left in float, reported
  ``float``. The FP32 twin is converted again through the backend's own path
  (``backends.openvino.convert``), whose friendly names NNCF keeps (checked with openvino 2026.4 /
  nncf 3.4: every INT8 op has a same-named op in the FP32 conversion); a layer's output is its op's
  output, or the bias ``Add`` right after a Conv / MatMul. Both ``ov.Model``s get those outputs
  added (``add_outputs``) and run on CPU at f32 inference precision, so only INT8 error remains
  (the added outputs leave the INT8 IR's logits bit-identical: checked on the harness model).
* **ExecuTorch** (``android``, ``ios``): the granularity is the **PT2E converted graph** (the
  ``quantize -> dequantize -> op`` program that was lowered into ``model.pte``) evaluated in
  PyTorch, node by node, against the FP32 rewritten graph it came from (the same node names): every
  compute node in an INT8 ``dequantize -> op -> quantize`` pattern, and conv/linear nodes left in
  float. Why not the ``.pte`` itself: the executorch 1.4.1 pip runtime is built without
  ``EXECUTORCH_ENABLE_EVENT_TRACER`` (no ETDump, so ``Inspector.calculate_numeric_gap`` has no
  runtime side), and ETDump only logs intermediates outside delegates: inside the XNNPACK
  delegate, which holds every INT8 op, at most each delegate call's outputs. The converted graph is
  rebuilt from the manifest's recipe (weights, the Conv3d strategies recorded in
  ``delegation.json``, the calibration clips, checked against the manifest's digest, the activation
  observer, the kept-float modules; lowering that rebuild gives a ``.pte`` byte-identical to the
  harness model's artifact). The ``.pte`` then runs the same clips, and its logits SQNR against
  FP32 and against the simulated graph are reported beside the table, so every trace checks the
  simulation against the artifact.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from ..artifact import Artifact, write_text_atomic
from ..errors import EdgevidError

ONNX_FILE = "model.onnx"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def quantized_outputs(model) -> list[tuple[str, str, str]]:
    """``(node name, op type, output tensor)`` of every node fed by a DequantizeLinear, in graph order."""
    from_dq = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [(node.name, node.op_type, node.output[0]) for node in model.graph.node
            if node.op_type not in QDQ_OPS and node.output and any(i in from_dq for i in node.input)]


def twin_name(name: str, names: set[str]) -> str | None:
    """The FP32 graph's name of the Q/DQ graph's float tensor ``name`` (the quantizer renames a graph
    output it quantizes to ``<name>_QuantizeLinear_Input``), or None."""
    if name in names:
        return name
    base = name.removesuffix("_QuantizeLinear_Input")
    return base if base in names else None


def _with_outputs(model, names: list[str]):
    import onnx

    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model


def _fp32_twin(artifact: Artifact, folder: Path, weights_path: str | None) -> list[Path]:
    """The FP32 ONNX of the artifact's model and weights: as exported, and ONNX Runtime-pre-processed."""
    import torch

    from ..export import export_onnx
    from .eval import reference_runner

    runner = reference_runner(artifact.manifest, threads=1, weights_path=weights_path)
    model = runner.model if hasattr(runner, "model") else None
    if model is None:
        raise EdgevidError("trace: could not rebuild the FP32 model of this artifact")
    exported = export_onnx(model.eval(), torch.zeros(artifact.manifest.input_shape), folder / "fp32.onnx")
    candidates = [exported]
    try:
        from ..backends.onnxruntime import pre_process

        candidates.append(pre_process(exported, folder / "fp32-prepared.onnx"))
    except Exception:  # pre-processing is only for name matching; the exported graph still works
        pass
    return candidates


class SqnrSums:
    """Running ``sum ref^2`` and ``sum (ref - out)^2`` per traced tensor over clips; only each
    batch's first row is compared (the real clip, not the padding of a static batch)."""

    def __init__(self, count: int):
        self.signal = np.zeros(count)
        self.noise = np.zeros(count)

    def add(self, index: int, ref, out) -> None:
        a = np.asarray(ref, dtype=np.float64)[:1]
        b = np.asarray(out, dtype=np.float64)[:1]
        if a.shape != b.shape:
            raise EdgevidError(f"trace: tensor {index} has shape {b.shape[1:]} in the INT8 program but {a.shape[1:]}"
                               " in its FP32 twin (the twin was not rebuilt from the same model)")
        self.signal[index] += float((a * a).sum())
        self.noise[index] += float(((a - b) ** 2).sum())

    def db(self) -> list[float]:
        return [math.inf if n == 0 else 10 * math.log10(max(s, 1e-30) / n) for s, n in zip(self.signal, self.noise)]


def traced(layers: list[dict], sums: SqnrSums, quantized: int, **extra) -> dict:
    """The result every tracer returns: ``sums`` holds the logits at 0, then one entry per layer of
    ``layers`` (dicts with ``layer``, ``op``, ``tensor``, ``precision``)."""
    sqnr = sums.db()
    rows = [{"index": i, **layer, "sqnr_db": sqnr[i + 1]} for i, layer in enumerate(layers)]
    return {"layers_quantized": quantized, "layers_traced": sum(r["precision"] == "int8" for r in rows),
            "logits_sqnr_db": sqnr[0], "layers": rows, **extra}


def trace(artifact_path: str | Path, data: str | Path | None = None, clips: int = 8, threads: int | None = None,
          weights_path: str | None = None) -> dict:
    """Per-layer SQNR of an INT8 artifact (Q/DQ ONNX, OpenVINO IR or ExecuTorch program) against its
    FP32 twin on the centre clips of ``clips`` videos."""
    from ..data.manifest import load_dataset
    from ..data.views import single_clip

    artifact = Artifact(artifact_path)
    artifact.verify()
    m = artifact.manifest
    if m.precision != "int8":
        raise EdgevidError(f"trace: {artifact.path} is {m.precision}; trace an INT8 artifact (its FP32 twin is rebuilt)")
    tracer = _tracer(artifact)
    if clips < 1:
        raise EdgevidError(f"--clips {clips}: give at least 1 clip")
    if data is None:
        if m.spec.label_set != "synthmotion":
            raise EdgevidError("trace needs --data (videos of the model's label set)")
        from ..data.synthmotion import ensure_split

        data = ensure_split("val", clips)
    items = load_dataset(Path(data)).items[:clips]
    if not items:
        raise EdgevidError(f"--data {data}: no videos")
    inputs = []
    for path, _ in items:
        clip = single_clip(path, m.spec).astype(np.float32)
        batch = m.input_shape[0]
        inputs.append(np.concatenate([clip, np.zeros((batch - 1, *clip.shape[1:]), np.float32)]) if batch > 1 else clip)
    result = tracer(artifact, inputs, threads, weights_path)
    return {"artifact": str(artifact.path), "model": m.model, "target": m.target, "backend": m.backend,
            "data": str(data), "clips": len(items), **result}


def _tracer(artifact: Artifact):
    m = artifact.manifest
    if m.backend in ("onnxruntime", "tensorrt") and artifact.file(ONNX_FILE).is_file():
        return trace_onnx
    if m.backend == "openvino":
        return trace_openvino
    if m.backend == "executorch":
        return trace_executorch
    raise EdgevidError(f"trace: {m.backend} artifacts have no INT8 program whose intermediates can be read (traced:"
                       " Q/DQ ONNX for onnx-cpu and TensorRT targets, OpenVINO IRs, ExecuTorch programs)")


# --- Q/DQ ONNX ---------------------------------------------------------------------------------

def trace_onnx(artifact: Artifact, inputs: list[np.ndarray], threads: int | None = None,
               weights_path: str | None = None) -> dict:
    import onnx

    qdq = onnx.load(str(artifact.file(ONNX_FILE)))
    with tempfile.TemporaryDirectory() as tmp:
        twins = [onnx.load(str(p)) for p in _fp32_twin(artifact, Path(tmp), weights_path)]
        return trace_graphs(qdq, twins, inputs, threads)


def trace_graphs(qdq, twins: list, inputs: list[np.ndarray], threads: int | None = None) -> dict:
    """Per-layer SQNR of the Q/DQ graph ``qdq`` against the FP32 graph among ``twins`` whose tensor
    names match the most quantized layers, on ``inputs`` (only each input's first clip is compared)."""
    import onnxruntime as ort

    from ..backends.onnxruntime import session_options

    layers = quantized_outputs(qdq)
    if not layers:
        raise EdgevidError("trace: the artifact's ONNX has no quantized nodes (no DequantizeLinear inputs)")
    best = None
    for fp32 in twins:
        names = {out for node in fp32.graph.node for out in node.output}
        matched = [(*layer, twin_name(layer[2], names)) for layer in layers]
        matched = [layer for layer in matched if layer[3] is not None]
        if best is None or len(matched) > len(best[1]):
            best = (fp32, matched)
    fp32, matched = best
    if not matched:
        raise EdgevidError("trace: no quantized layer of the artifact has a same-named tensor in the FP32 export"
                           " (was it built with another torch/onnx version?)")
    sessions = []
    for graph, tensors in ((fp32, [layer[3] for layer in matched]), (qdq, [layer[2] for layer in matched])):
        final = graph.graph.output[0].name
        graph = _with_outputs(graph, tensors)
        session = ort.InferenceSession(graph.SerializeToString(), session_options(threads),
                                       providers=["CPUExecutionProvider"])
        sessions.append((session, [final, *tensors]))
    sums = SqnrSums(len(matched) + 1)
    for clip in inputs:
        ref, out = [session.run(names, {session.get_inputs()[0].name: clip}) for session, names in sessions]
        for i, (a, b) in enumerate(zip(ref, out)):
            sums.add(i, a, b)
    rows = [{"layer": node, "op": op, "tensor": name, "precision": "int8"} for node, op, name, _ in matched]
    return traced(rows, sums, len(layers), granularity="ONNX nodes fed by a DequantizeLinear (ONNX Runtime CPU)")


# --- OpenVINO IR -------------------------------------------------------------------------------

#: data-movement ops: their output's SQNR is their input's, so they are not listed
OV_LAYOUT_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "VariadicSplit", "Gather",
                 "StridedSlice", "Slice", "Convert", "FakeQuantize", "Result", "ShapeOf", "Broadcast"}


def openvino_layers(ov_model) -> list[tuple[object, str]]:
    """``(op, precision)`` in graph order: every compute op reading a FakeQuantize'd activation
    (``int8``) and every weighted op that does not (``float``)."""
    from ..backends.openvino import WEIGHTED_OPS, _reads_quantized_activation

    layers = []
    for op in ov_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in OV_LAYOUT_OPS:
            continue
        if _reads_quantized_activation(op):
            layers.append((op, "int8"))
        elif kind in WEIGHTED_OPS:
            layers.append((op, "float"))
    return layers


def _layer_output(op):
    """The op's output, or the bias ``Add`` right after it (Conv / MatMul + constant bias)."""
    consumers = [port.get_node() for port in op.output(0).get_target_inputs()]
    if len(consumers) == 1 and consumers[0].get_type_name() == "Add":
        add = consumers[0]
        other = [port.get_source_output().get_node() for port in add.inputs() if port.get_source_output().get_node() != op]
        while other and other[0].get_type_name() in ("Convert", "Reshape", "Unsqueeze") and other[0].inputs():
            other = [other[0].input(0).get_source_output().get_node()]
        if other and other[0].get_type_name() == "Constant":
            return add.output(0), add.get_friendly_name()
    return op.output(0), op.get_friendly_name()


def trace_openvino(artifact: Artifact, inputs: list[np.ndarray], threads: int | None = None,
                   weights_path: str | None = None) -> dict:
    """The IR's INT8 layers against the same-named ops of the FP32 IR converted again from the weights."""
    import openvino as ov

    from ..backends.openvino import MODEL_XML, convert
    from ..pipeline import reference_model
    from ..targets import get_target

    m = artifact.manifest
    core = ov.Core()
    try:
        int8 = core.read_model(str(artifact.file(MODEL_XML)))
    except RuntimeError as exc:
        raise EdgevidError(f"trace: OpenVINO cannot read {artifact.file(MODEL_XML)} ({str(exc).strip().splitlines()[0][:200]});"
                           f" rebuild it with `{artifact.rebuild_command()}`") from None
    layers = openvino_layers(int8)
    quantized = sum(precision == "int8" for _, precision in layers)
    if not quantized:
        raise EdgevidError(f"trace: {artifact.file(MODEL_XML)} has no FakeQuantize'd layer (not an NNCF INT8 IR)")
    fp32 = convert(reference_model(m, weights_path).eval(), m.spec, get_target(m.target).input_shape)
    by_name = {op.get_friendly_name(): op for op in fp32.get_ordered_ops()}
    rows, ports = [], []
    for op, precision in layers:
        twin = by_name.get(op.get_friendly_name())
        if twin is None or twin.get_type_name() != op.get_type_name():
            continue
        (out, tensor), (ref, _) = _layer_output(op), _layer_output(twin)
        rows.append({"layer": op.get_friendly_name(), "op": op.get_type_name(), "tensor": tensor, "precision": precision})
        ports.append((ref, out))
    if not rows:
        raise EdgevidError("trace: no INT8 op of the IR has a same-named op in the FP32 conversion (was it built with"
                           f" another openvino version than {ov.__version__}?); rebuild it with `{artifact.rebuild_command()}`")
    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})}
    compiled = []
    for model, extra in ((fp32, [p[0] for p in ports]), (int8, [p[1] for p in ports])):
        added = model.add_outputs(extra)  # one Result per port; a port that already feeds one (the logits) keeps it
        results = [o.get_node() for o in model.outputs]
        where = [0] + [next(j for j, node in enumerate(results) if node == port.get_node()) for port in added]
        compiled.append((core.compile_model(model, "CPU", config), where))
    sums = SqnrSums(len(rows) + 1)
    for clip in inputs:
        ref, out = [[outputs[j] for j in where] for outputs, where in ((_ov_outputs(c, clip), w) for c, w in compiled)]
        for i, (a, b) in enumerate(zip(ref, out)):
            sums.add(i, a, b)
    return traced(rows, sums, quantized, granularity="OpenVINO ops reading a FakeQuantize'd activation, and"
                  " Conv/MatMul left in float (CPU plugin, f32 inference precision)")


def _ov_outputs(compiled, clip: np.ndarray) -> list[np.ndarray]:
    """Every output of ``compiled`` on ``clip``: the logits first, then the added layer outputs."""
    request = compiled.create_infer_request()
    request.infer({0: clip})
    return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]


# --- ExecuTorch --------------------------------------------------------------------------------

#: data-movement ops of a torch.export graph: not listed (their SQNR is their input's)
ET_LAYOUT_OPS = ("permute", "reshape", "view", "transpose", "slice", "select", "cat", "chunk", "split", "squeeze",
                 "unsqueeze", "clone", "alias", "flatten", "expand", "contiguous", "getitem", "_to_copy")
ET_WEIGHTED_OPS = ("conv2d", "linear", "convolution", "addmm")


def _aten_name(node) -> str:
    name = getattr(node.target, "__name__", str(node.target))
    parts = name.split(".")
    return parts[0] if parts[0] not in ("aten", "quantized_decomposed") or len(parts) < 2 else parts[1]


def _is_dq(node) -> bool:
    return getattr(node, "op", None) == "call_function" and _aten_name(node).startswith("dequantize_per")


def _is_q(node) -> bool:
    return getattr(node, "op", None) == "call_function" and _aten_name(node).startswith("quantize_per")


def executorch_layers(graph) -> list[dict]:
    """The converted graph's layers in graph order: compute nodes in a ``dequantize -> op ->
    quantize`` pattern (a conv/linear with a dequantized weight and input) are ``int8``; conv /
    linear nodes outside one are ``float``."""
    from torch import fx

    from ..backends.executorch.rewrite.graph import module_path

    layers = []
    for node in graph.nodes:
        if node.op != "call_function" or _is_q(node) or _is_dq(node):
            continue
        op = _aten_name(node)
        if op in ET_LAYOUT_OPS:
            continue
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        weighted = op in ET_WEIGHTED_OPS
        if weighted:
            int8 = len(tensors) >= 2 and _is_dq(tensors[0]) and _is_dq(tensors[1])
        else:
            int8 = bool(tensors) and all(_is_dq(t) for t in tensors) and bool(node.users) \
                and all(_is_q(user) for user in node.users)
        if int8 or weighted:
            module = module_path(node)
            layers.append({"layer": f"{module}/{node.name}" if module else node.name, "op": op, "tensor": node.name,
                           "precision": "int8" if int8 else "float"})
    return layers


def _capture(module, names: set[str], clip):
    """Run ``module`` (a torch.fx GraphModule) on ``clip``; the outputs of the nodes in ``names``
    and the program's output."""
    import torch
    from torch import fx

    seen: dict[str, np.ndarray] = {}

    class Capture(fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node.name in names and isinstance(value, torch.Tensor):
                seen[node.name] = value.detach().float().numpy().copy()
            return value

    with torch.no_grad():
        out = Capture(module).run(torch.from_numpy(clip))
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out.detach().float().numpy(), seen


def rebuild_executorch(artifact: Artifact, weights_path: str | None = None):
    """The FP32 exported program of the rewritten model and the PT2E converted program lowered into
    the artifact's ``model.pte``, rebuilt from its manifest (same weights, Conv3d strategies,
    calibration clips - their digest checked -, activation observer and kept-float modules)."""
    import json

    import torch

    from ..backends.executorch import DELEGATION_FILE, _calibration_batches
    from ..backends.executorch.rewrite import rewrite_for_xnnpack
    from ..backends.executorch.rewrite import xnnpack as xnn
    from ..calibration import calibration_set
    from ..pipeline import reference_model

    m = artifact.manifest
    try:
        decisions = json.loads(artifact.file(DELEGATION_FILE).read_text())["rewrite"]["conv3d_decisions"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgevidError(f"trace: {artifact.file(DELEGATION_FILE)} is missing or has no rewrite record (the Conv3d"
                           f" strategies the .pte was built with); rebuild it with `{artifact.rebuild_command()}`") from None
    strategies = {d["module"]: d["strategy"] for d in decisions}
    example = torch.zeros(m.input_shape)

    def recorded(spec, module):
        if module not in strategies:
            raise EdgevidError(f"trace: {DELEGATION_FILE} records no Conv3d strategy for module {module!r} (the model"
                               f" changed since the build); rebuild it with `{artifact.rebuild_command()}`")
        return strategies[module]

    rewritten = rewrite_for_xnnpack(reference_model(m, weights_path).eval(), example, strategy=recorded, check=False)
    program = xnn.export(rewritten.graph_module, example)
    if m.calibration is None or m.build is None:
        raise EdgevidError(f"trace: {artifact.path} records no calibration set; rebuild it with `{artifact.rebuild_command()}`")
    try:
        calib = calibration_set(m.build.calib, m.spec, m.build.calib_size or m.calibration.clips, backend=m.backend)
    except EdgevidError as exc:
        raise EdgevidError(f"trace: the calibration clips of this build ({m.calibration.source}) cannot be loaded"
                           f" again, so its INT8 graph cannot be rebuilt: {exc}") from None
    if calib.digest != m.calibration.digest:
        raise EdgevidError(f"trace: the calibration clips of {m.calibration.source} are not the ones this artifact was"
                           " calibrated on (digest differs), so its INT8 graph cannot be rebuilt; trace a fresh build"
                           f" (`{artifact.rebuild_command()}`)")
    kept = m.quantization.get("kept_float") or []
    observer = m.quantization.get("activation_observer", "histogram")  # not recorded before the option existed
    int8_adds = m.quantization.get("adds", "int8") == "int8"  # recorded since the int8_adds option
    quantized = xnn.quantize(program, example, _calibration_batches(calib.clips, example.shape), kept,
                             activation_observer=observer, int8_adds=int8_adds)
    return program, quantized


def trace_executorch(artifact: Artifact, inputs: list[np.ndarray], threads: int | None = None,
                     weights_path: str | None = None) -> dict:
    """The PT2E converted graph's layers (evaluated in PyTorch) against the FP32 rewritten graph, plus
    the ``.pte``'s own logits on the same clips (see the module docstring for why this granularity)."""
    from ..backends.executorch import MODEL_FILE
    from ..backends.executorch.runner import ExecuTorchRunner

    m = artifact.manifest
    runner = ExecuTorchRunner(artifact.file(MODEL_FILE), m.input_shape, threads, "ExecuTorch INT8")
    fp32, int8 = rebuild_executorch(artifact, weights_path)
    layers = executorch_layers(int8.graph_module.graph)
    quantized = sum(layer["precision"] == "int8" for layer in layers)
    if not quantized:
        raise EdgevidError("trace: the rebuilt INT8 graph has no quantized layer (every module kept in float?)")
    fp32_module, int8_module = fp32.module(), int8.module()
    fp32_names = {n.name for n in fp32_module.graph.nodes}
    int8_names = {n.name for n in int8_module.graph.nodes}
    layers = [layer for layer in layers if layer["tensor"] in fp32_names and layer["tensor"] in int8_names]
    names = {layer["tensor"] for layer in layers}
    sums = SqnrSums(len(layers) + 1)
    pte = SqnrSums(2)  # the .pte's logits against FP32, and against the simulated INT8 graph
    for clip in inputs:
        ref_logits, ref = _capture(fp32_module, names, clip)
        out_logits, out = _capture(int8_module, names, clip)
        sums.add(0, ref_logits, out_logits)
        for i, layer in enumerate(layers):
            sums.add(i + 1, ref[layer["tensor"]], out[layer["tensor"]])
        device = runner(clip)
        pte.add(0, ref_logits, device)
        pte.add(1, out_logits, device)
    runner.close()
    pte_fp32, pte_sim = pte.db()
    from ..backends.executorch import _versions

    now = _versions()
    changed = [f"{name} {m.versions[name]} at build, {now[name]} here" for name in ("torch", "executorch", "torchao")
               if m.versions.get(name) and now.get(name) and m.versions[name] != now[name]]
    notes = [(f"rebuilt with other versions than the artifact ({'; '.join(changed)}): the INT8 graph may differ from"
              " the .pte's; the .pte-vs-traced SQNR says by how much")] if changed else []
    return traced(layers, sums, quantized, notes=notes,
                  granularity="PT2E converted graph (the program lowered into model.pte, rebuilt from the manifest)"
                              " evaluated in PyTorch, node by node: the executorch pip runtime is built without ETDump"
                              " (EXECUTORCH_ENABLE_EVENT_TRACER) and ETDump logs no intermediates inside XNNPACK",
                  checks={"pte_logits_sqnr_db": pte_fp32, "pte_vs_simulated_logits_sqnr_db": pte_sim})


# --- report ------------------------------------------------------------------------------------

CHECK_LABELS = {"pte_logits_sqnr_db": "the .pte's logits against FP32",
                "pte_vs_simulated_logits_sqnr_db": "the .pte's logits against the traced INT8 graph's"}


def trace_notes(result: dict) -> list[str]:
    """What was traced and how (granularity, the checks beside the table), one line each."""
    notes = [(f"{result['layers_traced']} of {result['layers_quantized']} quantized layers traced on {result['clips']}"
              f" clips of {result['data']}; logits SQNR {result['logits_sqnr_db']:.1f} dB")]
    if result.get("granularity"):
        notes.append(f"layers: {result['granularity']}")
    for key, value in (result.get("checks") or {}).items():
        notes.append(f"SQNR of {CHECK_LABELS.get(key, key)}: {value:.1f} dB")
    return notes + list(result.get("notes") or [])


def trace_markdown(result: dict) -> str:
    lines = [f"# INT8 trace: {result['model']} on {result['target']} ({result['backend']})", ""]
    lines += [f"{note}  " for note in trace_notes(result)]
    lines += ["", "| # | layer | op | precision | SQNR dB |", "|---|---|---|---|---|"]
    lines += [f"| {r['index']} | {r['layer']} | {r['op']} | {r.get('precision', 'int8')} | {r['sqnr_db']:.1f} |"
              for r in result["layers"]]
    return "\n".join(lines) + "\n"


def write_trace(result: dict, path: str | Path) -> tuple[Path, Path]:
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=2))
    table = path.with_suffix(".md")
    write_text_atomic(table, trace_markdown(result))
    return path, table
