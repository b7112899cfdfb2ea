"""Will this Q/DQ ONNX build on the device's TensorRT? Checked on the host, without a GPU.

No GPU with TensorRT can be had where the Q/DQ ONNX is made, so the build checks the graph against
what NVIDIA documents (onnx-tensorrt's operator support matrix for the 10.x line JetPack 6 ships,
10.3, and for 11.x; TensorRT's explicit-quantization rules) and against what users report failing:

* Opsets: TensorRT 10.0-10.3 parse opsets 9-20; 10.15 and 11.x parse 9-24 (onnx-tensorrt
  docs/operators.md of those releases). Ops the matrix marks unsupported (QLinearConv,
  ConvInteger, DynamicQuantizeLinear, ...) and ops of other domains stop the parser.
* Q/DQ (TensorRT's Quantize/Dequantize operator docs, onnx-tensorrt matrix): the scale must be a
  build-time constant (an initializer), positive; the zero point must be 0 (symmetric); INT8 data
  (UINT8 only as a network input/output type); a scalar scale (per-tensor) or a 1-D one
  (per-channel); 2-D block scales are INT4-only. Activations are quantized per-tensor; per-channel
  scales belong to weights, along the output channels: axis 0 of Conv weights [K, C/g, ...],
  axis 1 of ConvTranspose weights [C, K/g, ...], the last axis of a MatMul's [K, N] weights (axis
  0 of a Gemm's with transB=1).
* Layers TensorRT has no INT8 implementation for are kept in the high-precision type instead of
  quantized: grouped / depthwise 3-D convolutions. INT8 Q/DQ Conv3d engines fail to build in
  reports against TensorRT (NVIDIA/TensorRT#1726, #2125, the latter still open), and INT8
  depthwise convolutions fail with "Could not find any implementation for node" (#4060 on a
  Jetson AGX Orin target with 8.6, #3385 on Orin with 8.5); NVIDIA's answer in #1176 is that INT8
  kernels exist for (dense) 3-D convolution since 7.x, so dense Conv3d stays INT8.
* Softmax and LayerNormalization compute in float in TensorRT: a Q/DQ pair around them only adds
  reformats (the transformer policy already leaves them unquantized); it is reported, not fatal.

Pure ONNX-protobuf code: no torch, no TensorRT, no ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: opset range each TensorRT line's ONNX parser documents
OPSETS = {"10.3": (9, 20), "11": (9, 24)}
#: ops onnx-tensorrt's support matrix marks "N" (10.x and 11.x alike)
UNSUPPORTED_OPS = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im",
    "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear",
    "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv",
    "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss", "StringNormalizer",
    "TfIdfVectorizer", "Unique",
})
#: supported by the later lines only (10.15 / 11.x matrices), not by 10.3
NEWER_OPS = {"Attention": "11", "RMSNormalization": "11", "RotaryEmbedding": "11", "TensorScatter": "11"}
FLOAT_ONLY = ("Softmax", "LayerNormalization")
INT8 = 3  # onnx.TensorProto.INT8
UINT8 = 2


@dataclass
class Readiness:
    """What the check found for one TensorRT line: errors stop the build, notes go to the manifest."""

    tensorrt: str
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> dict[str, Any]:
        return {"tensorrt": self.tensorrt, "ok": self.ok, "errors": self.errors, "notes": self.notes}


def trt_line(version: str | None) -> str:
    """'10.3' or '11' for a target's ``tensorrt`` option ('10' means the 10.x line: checked as 10.3)."""
    major = str(version or "10").split(".")[0]
    return "11" if major.isdigit() and int(major) >= 11 else "10.3"


def _initializers(model) -> dict[str, Any]:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:  # Constant nodes are build-time constants too
        if node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                inits[node.output[0]] = attr.t
    return {name: numpy_helper.to_array(t) if not isinstance(t, np.ndarray) else t for name, t in inits.items()}


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def _weight_shape(model, name: str, inits: dict[str, Any]):
    """The shape of a weight that is an initializer or the output of a DequantizeLinear of one."""
    if name in inits:
        return inits[name].shape
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] == name and node.input[0] in inits:
            return inits[node.input[0]].shape
    return None


def high_precision_nodes(model) -> list[dict[str, str]]:
    """Nodes of an FP32 ONNX that must not be quantized for TensorRT (name, op, reason): the build
    keeps them in the high-precision type and records the reason in the manifest."""
    inits = _initializers(model)
    kept = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        shape = _weight_shape(model, node.input[1], inits)
        group = int(_attr(node, "group", 1) or 1)
        if shape is not None and len(shape) == 5 and group > 1:
            kind = "depthwise" if shape[1] == 1 else "grouped"
            kept.append({"node": node.name, "op": f"Conv3d ({kind}, groups={group})",
                         "reason": f"TensorRT has no INT8 {kind} 3-D convolution: Q/DQ Conv3d builds fail"
                                   " (NVIDIA/TensorRT#2125, #1726) and INT8 depthwise convs find no implementation"
                                   " (#4060, #3385 on Jetson Orin); kept in the high-precision type"})
    return kept


def check_qdq(model, tensorrt: str = "10.3") -> Readiness:
    """Check a (Q/DQ or FP16) ONNX against ``tensorrt``'s ('10.3' or '11') documented rules."""
    line = trt_line(tensorrt)
    report = Readiness(line)
    lo, hi = OPSETS[line]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not lo <= opset <= hi:
        report.errors.append(f"opset {opset} is outside TensorRT {line}'s ONNX parser range {lo}-{hi}")
    inits = _initializers(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    for node in model.graph.node:
        where = f"node {node.name!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            report.errors.append(f"{where}: op of domain {node.domain!r} has no TensorRT parser support (needs a plugin)")
            continue
        if node.op_type in UNSUPPORTED_OPS:
            report.errors.append(f"{where}: not supported by TensorRT's ONNX parser")
        elif node.op_type in NEWER_OPS and line == "10.3":
            report.errors.append(f"{where}: TensorRT 10.3 has no {node.op_type} (from the {NEWER_OPS[node.op_type]} line)")
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale_name = node.input[1] if len(node.input) > 1 else ""
        if scale_name not in inits:
            report.errors.append(f"{where}: the scale {scale_name!r} is not a build-time constant")
            continue
        scale = np.asarray(inits[scale_name])
        if scale.ndim > 1:
            report.errors.append(f"{where}: a {scale.ndim}-D (block) scale is INT4-only in TensorRT, not INT8")
        if not (scale > 0).all():
            report.errors.append(f"{where}: scales must be positive")
        if len(node.input) > 2 and node.input[2]:
            zp = inits.get(node.input[2])
            if zp is None:
                report.errors.append(f"{where}: the zero point is not a build-time constant")
            elif np.asarray(zp).any():
                report.errors.append(f"{where}: zero point {np.asarray(zp).ravel()[:3].tolist()} is not 0 (TensorRT"
                                     " quantization is symmetric)")
            elif np.asarray(zp).dtype == np.uint8:
                report.errors.append(f"{where}: UINT8 quantization (TensorRT takes UINT8 only as a network I/O type)")
        if scale.ndim == 1 and scale.size > 1:
            _check_axis(node, model, inits, producers, consumers, report)
        if node.op_type == "DequantizeLinear":
            for user in consumers.get(node.output[0], []):
                if user.op_type in FLOAT_ONLY:
                    report.notes.append(f"{user.name!r} ({user.op_type}) reads a DequantizeLinear: TensorRT computes"
                                        " it in float (an extra reformat, no INT8 gain)")
    return report


def _check_axis(node, model, inits, producers, consumers, report: Readiness) -> None:
    """Per-channel scales: weights only, along the output channels."""
    where = f"node {node.name!r} ({node.op_type})"
    axis = int(_attr(node, "axis", 1))
    data = node.input[0]
    is_weight = data in inits or (node.op_type == "DequantizeLinear" and data in producers
                                  and producers[data].op_type == "QuantizeLinear" and producers[data].input[0] in inits)
    if node.op_type == "QuantizeLinear" and data in inits:
        is_weight = True
    if not is_weight:
        report.errors.append(f"{where}: per-channel quantization of an activation (TensorRT quantizes activations"
                             " per-tensor)")
        return
    shape = np.asarray(inits[data]).shape if data in inits else np.asarray(inits[producers[data].input[0]]).shape
    axis = axis % len(shape) if shape else axis
    out = node.output[0]
    if node.op_type == "QuantizeLinear":  # follow Q -> DQ to the weighted op
        dqs = [n for n in consumers.get(out, []) if n.op_type == "DequantizeLinear"]
        out = dqs[0].output[0] if dqs else out
    for user in consumers.get(out, []):
        if len(user.input) < 2 or user.input[1] != out:
            continue
        if user.op_type == "Conv":
            want = 0
        elif user.op_type == "ConvTranspose":
            want = 1
        elif user.op_type == "MatMul":
            want = len(shape) - 1
        elif user.op_type == "Gemm":
            want = 0 if int(_attr(user, "transB", 0) or 0) else 1
        else:
            continue
        if axis != want:
            report.errors.append(f"{where}: per-channel axis {axis} of {user.op_type} {user.name!r}'s weights; TensorRT"
                                 f" needs the output-channel axis {want}")


def assert_buildable(model, tensorrt: str, what: str) -> Readiness:
    """The readiness for ``tensorrt``; raise a one-line ``EdgevidError`` when the graph cannot build."""
    from ...errors import EdgevidError

    report = check_qdq(model, tensorrt)
    if not report.ok:
        more = f" (+{len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise EdgevidError(f"{what} will not build on TensorRT {report.tensorrt}: {report.errors[0]}{more};"
                           " keep that layer in float (--keep-float NODE) or change the model")
    return report
