"""`edgevid trace`: where an INT8 artifact's numeric error arises, layer by layer, against FP32.

For artifacts that are a Q/DQ ONNX graph (``onnx-cpu``; a TensorRT target's Q/DQ ONNX, run under
ONNX Runtime CPU): the FP32 twin is exported again from the same weights (and passed through the
same ONNX Runtime pre-processing the quantizer saw), so the float tensors of both graphs carry the
same names. Every quantized compute node (a node fed by a ``DequantizeLinear``) has its output
added as a graph output in both graphs; both run the same clips (the model's centre clip of each
video), and each layer's SQNR is ``10 log10(sum ref^2 / sum (ref - int8)^2)`` over all clips.
Read top to bottom, a falling SQNR shows where error accumulates; a layer far below its
neighbours is the one to keep in float (``--option keep_float=[...]``).

OpenVINO IRs and ExecuTorch programs are not traced here (no intermediate outputs exposed by this
path yet): the command says so instead of printing numbers.
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


def trace(artifact_path: str | Path, data: str | Path | None = None, clips: int = 8, threads: int | None = None,
          weights_path: str | None = None) -> dict:
    """Per-layer SQNR of an INT8 Q/DQ ONNX artifact against its FP32 twin on ``clips`` videos."""
    import onnx

    from ..data.manifest import load_dataset
    from ..data.views import single_clip

    artifact = Artifact(artifact_path)
    artifact.verify()
    m = artifact.manifest
    if m.precision != "int8":
        raise EdgevidError(f"trace: {artifact.path} is {m.precision}; trace an INT8 artifact (its FP32 twin is rebuilt)")
    if m.backend not in ("onnxruntime", "tensorrt") or not artifact.file(ONNX_FILE).is_file():
        raise EdgevidError(f"trace: {m.backend} artifacts are not traced yet (intermediate outputs are read from Q/DQ"
                           " ONNX graphs: build for onnx-cpu, or a TensorRT target's Q/DQ ONNX)")
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

    qdq = onnx.load(str(artifact.file(ONNX_FILE)))
    inputs = []
    for path, _ in items:
        clip = single_clip(path, m.spec).astype(np.float32)
        batch = m.input_shape[0]
        inputs.append(np.concatenate([clip, np.zeros((batch - 1, *clip.shape[1:]), np.float32)]) if batch > 1 else clip)
    with tempfile.TemporaryDirectory() as tmp:
        twins = [onnx.load(str(p)) for p in _fp32_twin(artifact, Path(tmp), weights_path)]
        traced = trace_graphs(qdq, twins, inputs, threads)
    return {"artifact": str(artifact.path), "model": m.model, "target": m.target, "backend": m.backend,
            "data": str(data), "clips": len(items), **traced}


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
    tensors = [layer[2] for layer in matched]
    signal = np.zeros(len(tensors) + 1)
    noise = np.zeros(len(tensors) + 1)
    for clip in inputs:
        ref, out = [session.run(names, {session.get_inputs()[0].name: clip}) for session, names in sessions]
        for i, (a, b) in enumerate(zip(ref, out)):
            a, b = a[:1].astype(np.float64), b[:1].astype(np.float64)  # the real clip, not the batch padding
            signal[i] += float((a * a).sum())
            noise[i] += float(((a - b) ** 2).sum())
    sqnr = [math.inf if n == 0 else 10 * math.log10(max(s, 1e-30) / n) for s, n in zip(signal, noise)]
    rows = [{"index": i, "layer": node, "op": op, "tensor": name, "sqnr_db": sqnr[i + 1]}
            for i, (node, op, name, _) in enumerate(matched)]
    return {"layers_quantized": len(layers), "layers_traced": len(rows), "logits_sqnr_db": sqnr[0], "layers": rows}


def trace_markdown(result: dict) -> str:
    lines = [f"# INT8 trace: {result['model']} on {result['target']} ({result['backend']})", "",
             f"{result['layers_traced']} of {result['layers_quantized']} quantized layers traced on {result['clips']}"
             f" clips of {result['data']}; logits SQNR {result['logits_sqnr_db']:.1f} dB", "",
             "| # | layer | op | SQNR dB |", "|---|---|---|---|"]
    lines += [f"| {r['index']} | {r['layer']} | {r['op']} | {r['sqnr_db']:.1f} |" for r in result["layers"]]
    return "\n".join(lines) + "\n"


def write_trace(result: dict, path: str | Path) -> tuple[Path, Path]:
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=2))
    table = path.with_suffix(".md")
    write_text_atomic(table, trace_markdown(result))
    return path, table
