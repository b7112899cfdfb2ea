"""TensorRT backend: Q/DQ ONNX (ModelOpt, CPU calibration), target policy, pending-on-device flow.

Everything here runs without a GPU except the tests marked ``gpu`` (TensorRT >= 10, pycuda and a
CUDA GPU: run automatically where they work, skipped with the reason elsewhere) and the accuracy
test marked ``slow`` (needs the SynthMotion reference weights in edgevid/models/weights/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgevid.artifact import Artifact, finalize_manifest
from edgevid.backends import open_runner
from edgevid.backends import tensorrt as trt_backend
from edgevid.backends.tensorrt import (
    QuantPolicy, activation_matmuls, autocast_fp16, check_dla_request, check_fingerprint,
    dla_supported, engine_unavailable_reason, fingerprint_mismatches, jetpack_from_tegra_release,
    parser_error_lines, profile_shapes, quant_policy, quantize_int8_qdq,
)
from edgevid.errors import ArtifactError, BackendUnavailable, EdgevidError

# the ops TensorRT runs in the high-precision type; a Q/DQ recipe must feed them no INT8 (TensorRT docs)
FLOAT_OPS = {"Softmax", "LayerNormalization", "Erf", "Gelu"}
from edgevid.export import export_onnx
from edgevid.targets import Target, get_target

ENGINE_REASON = engine_unavailable_reason()


def needs_engine(test):
    """Marked ``gpu``; runs where TensorRT >= 10, pycuda and a CUDA GPU work, skipped with the reason elsewhere."""
    skip = pytest.mark.skipif(ENGINE_REASON is not None, reason=f"needs TensorRT >= 10, pycuda and a CUDA GPU: {ENGINE_REASON}")
    return pytest.mark.gpu(skip(test))


no_engine_here = pytest.mark.skipif(ENGINE_REASON is None, reason="this machine can build engines")
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ tiny models


class TinyConv(nn.Module):
    """Conv3d/BN/SiLU, a depthwise Conv3d and a Linear head: the X3D pattern in miniature."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv3d(8, 8, 3, padding=1, groups=8), nn.BatchNorm3d(8), nn.ReLU())
        self.pw = nn.Conv3d(8, 16, 1)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.pw(self.dw(self.stem(x))).mean((2, 3, 4)))


class Block(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2, self.act = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim), nn.GELU()
        self.heads = heads

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    """Tubelet embedding + two pre-norm attention blocks: the video-transformer pattern in miniature."""

    blocks_count = 2

    def __init__(self, classes: int = 5, dim: int = 32):
        super().__init__()
        self.embed = nn.Conv3d(3, dim, (2, 8, 8), stride=(2, 8, 8))
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(self.blocks_count)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(1))


SHAPE = (1, 3, 4, 32, 32)


def _clips(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Each tiny model (fixed random weights), its FP32 ONNX and its ModelOpt Q/DQ ONNX."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for cls, transformer in ((TinyConv, False), (TinyViT, True)):  # as the specs of X3D / TimeSformer say
        torch.manual_seed(0)
        model = cls().eval()
        fp32 = root / f"{cls.__name__}.onnx"
        export_onnx(model, torch.zeros(SHAPE), fp32)
        qdq = root / f"{cls.__name__}.qdq.onnx"
        quant = quantize_int8_qdq(fp32, qdq, _clips(8, 1), transformer=transformer, calibrate_method="max")
        out[cls.__name__] = {"model": model, "fp32": fp32, "qdq": qdq, "quant": quant, "transformer": transformer}
    return out


# ------------------------------------------------------------------ graph helpers


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _consumers(model):
    out: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _from_dq(model, tensor: str) -> bool:
    """Whether ``tensor`` is a DequantizeLinear output, possibly through Casts."""
    prod = _producers(model)
    node = prod.get(tensor)
    while node is not None and node.op_type in ("Cast", "Identity"):
        node = prod.get(node.input[0])
    return node is not None and node.op_type == "DequantizeLinear"


def _feeds_quantize(model, tensor: str) -> bool:
    cons = _consumers(model)
    todo = list(cons.get(tensor, []))
    while todo:
        node = todo.pop()
        if node.op_type == "QuantizeLinear":
            return True
        if node.op_type in ("Cast", "Identity"):
            todo.extend(cons.get(node.output[0], []))
    return False


def float_rule_violations(model) -> list[str]:
    """Q/DQ next to the ops a transformer must keep in float (the placement rule under test)."""
    bad = []
    for node in model.graph.node:
        if node.op_type in FLOAT_OPS and any(_from_dq(model, i) for i in node.input if i):
            bad.append(f"{node.op_type} {node.name} reads a dequantized tensor")
        if node.op_type == "Softmax" and _feeds_quantize(model, node.output[0]):
            bad.append(f"Softmax {node.name} output is quantized")
    for name in activation_matmuls(model):
        node = next(n for n in model.graph.node if n.name == name)
        if any(_from_dq(model, i) for i in node.input):
            bad.append(f"attention MatMul {name} has Q/DQ inputs")
    return bad


def _init(model, name):
    return next((numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name), None)


def weight_dq_nodes(model):
    """(DequantizeLinear, consumer, weight array) for every DQ that feeds a weighted layer's weight input."""
    prod, cons = _producers(model), _consumers(model)
    found = []
    for dq in (n for n in model.graph.node if n.op_type == "DequantizeLinear"):
        src = dq.input[0]
        weight = _init(model, src)
        if weight is None and src in prod and prod[src].op_type == "QuantizeLinear":
            weight = _init(model, prod[src].input[0])
        if weight is None:
            continue
        for user in cons.get(dq.output[0], []):
            if user.op_type in ("Conv", "MatMul", "Gemm") and list(user.input).index(dq.output[0]) == 1:
                found.append((dq, user, weight))
    return found


def _axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _ort(path, clips):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": c})[0] for c in clips])


def _cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ------------------------------------------------------------------ ONNX export and Q/DQ placement


def test_export_is_opset_17_plus_with_layernorm_as_one_node(tiny):
    model = onnx.load(str(tiny["TinyViT"]["fp32"]))
    assert next(o.version for o in model.opset_import if o.domain == "") >= 17
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LayerNormalization") == 2 * TinyViT.blocks_count + 1  # TensorRT's normalization layer
    assert ops.count("Softmax") == TinyViT.blocks_count


def test_attention_matmuls_are_found(tiny):
    fp32 = onnx.load(str(tiny["TinyViT"]["fp32"]))
    assert len(activation_matmuls(fp32)) == 2 * TinyViT.blocks_count  # Q@K^T and attn@V per block
    assert activation_matmuls(onnx.load(str(tiny["TinyConv"]["fp32"]))) == []


def test_transformer_qdq_keeps_softmax_layernorm_gelu_and_attention_in_float(tiny):
    entry = tiny["TinyViT"]
    qdq = onnx.load(str(entry["qdq"]))
    assert entry["quant"]["tool"].startswith("nvidia-modelopt")
    assert float_rule_violations(qdq) == []
    # ...while every Linear is INT8 (weights and inputs), so the model is really quantized
    assert entry["quant"]["int8_layers"].get("MatMul", 0) >= 4 * TinyViT.blocks_count
    assert len(entry["quant"]["kept_float"]) == 2 * TinyViT.blocks_count
    # FP16 remainder, LayerNorm kept FP32 (FP16 LayerNorm after attention overflows)
    norms = [n for n in qdq.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(_init(qdq, n.input[1]).dtype == np.float32 for n in norms)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in qdq.graph.initializer)


def test_placement_rule_catches_default_placement_on_a_transformer(tiny, tmp_path):
    """ModelOpt's CNN placement on a transformer quantizes residual adds into LayerNorm and softmax
    outputs: the rule above must see that (so its passing is meaningful)."""
    out = tmp_path / "default.onnx"
    trt_backend._modelopt_quantize(tiny["TinyViT"]["fp32"], out, _clips(4, 1), QuantPolicy(kind="cnn"),  # ModelOpt's own placement
                                   "input", "max", "fp32")
    assert float_rule_violations(onnx.load(str(out)))


@pytest.mark.parametrize("name", ["TinyConv", "TinyViT"])
def test_weights_per_channel_activations_per_tensor_symmetric(tiny, name):
    qdq = onnx.load(str(tiny[name]["qdq"]))
    weights = weight_dq_nodes(qdq)
    assert len(weights) >= 3
    for dq, user, weight in weights:
        out_axis = 1 if user.op_type == "MatMul" else 0  # MatMul weights are [in, out]; Conv/Gemm [out, ...]
        scale = _init(qdq, dq.input[1])
        assert _axis(dq) % weight.ndim == out_axis, (user.name, _axis(dq))
        assert scale.shape == (weight.shape[out_axis],), (user.name, scale.shape)
    weight_dqs = {dq.name for dq, _, _ in weights}
    activation_dqs = 0
    for node in qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = _init(qdq, node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1, np.int8)
            assert zero.dtype == np.int8 and not zero.any()  # symmetric INT8
        if node.op_type == "DequantizeLinear" and node.name not in weight_dqs and _init(qdq, node.input[0]) is None:
            assert _init(qdq, node.input[1]).size == 1, node.name  # activations: one scale per tensor
            activation_dqs += 1
    assert activation_dqs >= 3


@pytest.mark.parametrize("name", ["TinyConv", "TinyViT"])
def test_qdq_onnx_runs_on_onnxruntime_cpu_close_to_eager(tiny, name):
    clips = _clips(4, 2)
    got = _ort(tiny[name]["qdq"], clips)
    with torch.inference_mode():
        want = np.concatenate([tiny[name]["model"](torch.from_numpy(c)).numpy() for c in clips])
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _cosine(got, want).min() > 0.99
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_onnxruntime_fallback_follows_the_same_rules(tiny, tmp_path):
    out = tmp_path / "ort.onnx"
    quant = quantize_int8_qdq(tiny["TinyViT"]["fp32"], out, _clips(4, 1), transformer=True, tool="ort")
    assert quant["tool"].startswith("onnxruntime") and quant["high_precision"] == "fp32"
    model = onnx.load(str(out))
    assert float_rule_violations(model) == []
    linear = quant["int8_layers"].get("MatMul", 0) + quant["int8_layers"].get("Gemm", 0)  # ORT fuses MatMul+Add
    assert linear >= 4 * TinyViT.blocks_count


def test_percentile_calibration_with_the_onnxruntime_tool_clips_the_input_range(tiny, tmp_path):
    from edgevid.backends.tensorrt.options import TensorRTOptions

    def input_scale(path):
        model = onnx.load(str(path))
        first = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == model.graph.input[0].name)
        return float(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == first.input[1])))

    scales = {}
    for method, percentile in (("max", None), ("percentile", 99.0)):
        out = tmp_path / f"{method}.onnx"
        quant = quantize_int8_qdq(tiny["TinyConv"]["fp32"], out, _clips(4, 1), transformer=False, tool="ort",
                                  calibrate_method=method, percentile=percentile)
        scales[method] = input_scale(out)
        assert quant["calibration"].startswith(method + (" 99.0" if percentile else ""))
    # standard normal input: min-max reaches ~4.5 sigma over 4 clips, the 99th percentile of |x| ~2.6
    assert 0.4 < scales["percentile"] / scales["max"] < 0.75, scales
    with pytest.raises(EdgevidError, match="qdq_tool: ort"):
        quantize_int8_qdq(tiny["TinyConv"]["fp32"], tmp_path / "m.onnx", _clips(2, 1), transformer=False,
                          calibrate_method="percentile")
    with pytest.raises(ValueError, match="qdq_tool: ort"):
        TensorRTOptions(calibrate_method="percentile")
    with pytest.raises(ValueError, match="calibrate_method=percentile only"):
        TensorRTOptions(qdq_tool="ort", percentile=99.9)


def test_quant_policy_follows_the_specs_transformer_field(tiny):
    conv, vit = (onnx.load(str(tiny[name]["fp32"])) for name in ("TinyConv", "TinyViT"))
    assert quant_policy(False, conv).kind == "cnn"
    assert quant_policy(True, conv).kind == "transformer"  # the spec's word, even without Softmax / LayerNorm
    assert quant_policy(False, vit).kind == "transformer"  # a graph with them is recognised all the same
    assert tiny["TinyViT"]["quant"]["policy"].startswith("transformer") and tiny["TinyConv"]["quant"]["policy"].startswith("cnn")


def test_int8_without_calibration_clips_is_an_error(tiny, tmp_path):
    with pytest.raises(EdgevidError, match="--calib"):
        quantize_int8_qdq(tiny["TinyConv"]["fp32"], tmp_path / "x.onnx", [], transformer=False)


def test_fp16_autocast_keeps_io_fp32_and_layernorm_fp32(tiny, tmp_path):
    out = tmp_path / "fp16.onnx"
    quant = autocast_fp16(tiny["TinyViT"]["fp32"], out, transformer=True)
    assert "AutoCast" in quant["scheme"]
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    matmul_weights = [_init(model, n.input[1]) for n in model.graph.node if n.op_type == "MatMul"]
    assert any(w is not None and w.dtype == np.float16 for w in matmul_weights)
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert all(_init(model, n.input[1]).dtype == np.float32 for n in norms)
    clips = _clips(2, 3)
    with torch.inference_mode():
        want = np.concatenate([tiny["TinyViT"]["model"](torch.from_numpy(c)).numpy() for c in clips])
    assert _cosine(_ort(out, clips), want).min() > 0.999


# ------------------------------------------------------------------ target policy (pure)


def test_profile_shapes_follow_the_target_policy():
    jetson, rtx = get_target("jetson"), get_target("rtx")
    shape = (1, 3, 8, 112, 112)
    assert profile_shapes(shape, jetson.input_shape) == (shape, shape, shape)
    lo, opt, hi = profile_shapes(shape, rtx.input_shape)
    assert (lo[0], opt[0], hi[0]) == (1, 1, 8) and lo[1:] == hi[1:] == shape[1:]
    assert profile_shapes(shape, rtx.input_shape, dla=True) == (shape, shape, shape)  # DLA: static


def test_dla_requests():
    check_dla_request(get_target("jetson"), None)
    check_dla_request(get_target("jetson"), 1)
    with pytest.raises(EdgevidError, match="target rtx has no DLA cores"):
        check_dla_request(get_target("rtx"), 0)
    with pytest.raises(EdgevidError, match="DLA cores 0..1"):
        check_dla_request(get_target("jetson"), 2)
    with pytest.raises(EdgevidError, match="TensorRT targets only"):
        check_dla_request(get_target("onnx-cpu"), 0)
    dynamic = Target(name="x", description="x", backend="tensorrt", device="cuda", precisions=("int8",),
                     default_precision="int8", input_shape={"batch": 1, "max_batch": 4}, options={"dla_cores": 2})
    with pytest.raises(EdgevidError, match="static shapes"):
        check_dla_request(dynamic, 0)


@pytest.mark.parametrize("version,ok", [("10.3.0.30", True), ("10.7.0", True), ("10.8.0", False),
                                        ("11.0.0", False), ("11.4.0", False), ("11.4.1", True)])
def test_dla_support_by_tensorrt_version(version, ok):
    assert dla_supported(version) is ok


ORIN = {"gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0.30", "cuda": "12.6", "jetpack": "6"}


def test_fingerprint_matching():
    assert fingerprint_mismatches(ORIN, dict(ORIN)) == []
    assert fingerprint_mismatches(ORIN, {**ORIN, "cuda": "12.6.68", "l4t": "36.4.3"}) == []
    assert fingerprint_mismatches(ORIN, {**ORIN, "tensorrt": "10.3.0.26"}) == ["tensorrt"]
    assert fingerprint_mismatches(ORIN, {**ORIN, "cuda": "12.2"}) == ["cuda"]
    rtx = {"gpu": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "tensorrt": "11.4.1", "cuda": "13.0"}
    assert fingerprint_mismatches(ORIN, rtx) == ["gpu", "compute_capability", "tensorrt", "cuda", "jetpack"]
    assert fingerprint_mismatches(rtx, dict(rtx)) == []  # no JetPack on either side: not compared


def test_engine_from_another_machine_is_refused_with_the_rebuild_command():
    cmd = "edgevid build --model x3d_s --target jetson-orin --precision int8 --from-onnx artifacts/a"
    check_fingerprint(ORIN, dict(ORIN), Path("a/model.plan"), cmd)
    with pytest.raises(ArtifactError) as info:
        check_fingerprint(ORIN, {**ORIN, "gpu": "Xavier", "compute_capability": "7.2"}, Path("a/model.plan"), cmd)
    text = str(info.value)
    assert "\n" not in text and "Orin (sm 8.7)" in text and "Xavier (sm 7.2)" in text and cmd in text


def test_engines_are_only_built_on_the_targets_kind_of_device():
    from edgevid.backends.tensorrt import target_mismatch

    desktop = {"gpu": "NVIDIA GeForce RTX 4090"}
    assert target_mismatch(get_target("rtx"), desktop) is None
    assert target_mismatch(get_target("jetson"), ORIN) is None
    assert "not a Jetson" in target_mismatch(get_target("jetson"), desktop)
    assert "is a Jetson" in target_mismatch(get_target("rtx"), ORIN)


def test_jetpack_from_tegra_release():
    text = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13\n"
    assert jetpack_from_tegra_release(text) == ("36.4.0", "6")
    assert jetpack_from_tegra_release("# R35 (release), REVISION: 5.0, GCID: 1")[1] == "5"
    assert jetpack_from_tegra_release("not a tegra release") is None


def test_parser_errors_one_per_line_naming_node_and_op():
    lines = parser_error_lines([("/blocks.0/Einsum", "Einsum", "Unsupported equation\n 'bij,bjk'"),
                                ("node_Bogus_3", "Bogus", "No importer registered for op: Bogus")])
    assert lines == ["node '/blocks.0/Einsum' (Einsum): Unsupported equation 'bij,bjk'",
                     "node 'node_Bogus_3' (Bogus): No importer registered for op: Bogus"]


# ------------------------------------------------------------------ the pending-on-device flow (CLI)


def _cli(*args, block_torch=False, env=None):
    prelude = "import sys; sys.modules['torch'] = None; " if block_torch else "import sys; "
    code = prelude + f"sys.argv = ['edgevid'] + {list(map(str, args))!r}; from edgevid.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "COLUMNS": "400", **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def pending(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    proc = _cli("build", "--model", "x3d_synth", "--target", "jetson", "--weights", "random", "--calib-size", "4",
                "--out", out)
    return proc, out / "x3d_synth-jetson-orin-int8"


@no_engine_here
def test_build_without_tensorrt_stops_after_the_qdq_onnx(pending):
    proc, path = pending
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "pending on device" in line]
    assert len(lines) == 1, proc.stderr
    command = f"edgevid build --model x3d_synth --target jetson-orin --precision int8 --from-onnx {path}"
    assert command in lines[0]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["status"] == {"engine": "pending on device"}
    assert set(manifest["files"]) == {"model.onnx"} and not (path / "model.plan").exists()
    assert manifest["quantization"]["tool"].startswith("nvidia-modelopt")
    assert manifest["quantization"]["calibration"].startswith("max, 4 clips")
    assert manifest["quantization"]["opset"] >= 17 and manifest["quantization"]["int8_layers"]["Conv"] > 10
    # X3D's depthwise 3x3x3 convs: no INT8 kernels in TensorRT, kept FP16 with the reason; the rest checks out
    kept = manifest["quantization"]["kept_high_precision"]
    assert kept and all("depthwise" in k["op"] and "#2125" in k["reason"] for k in kept)
    qdq = onnx.load(str(path / "model.onnx"))
    by_name = {n.name: n for n in qdq.graph.node}
    assert all(not _from_dq(qdq, by_name[k["node"]].input[1]) for k in kept)
    assert manifest["quantization"]["tensorrt_readiness"] == {"10.3": "ok"}



def test_keep_float_nodes_stay_float_in_the_qdq_onnx(tmp_path):
    """The harness's hook: ``quantizable_layers`` names the Conv/MatMul/Gemm nodes, and the named
    ones reach ModelOpt's nodes_to_exclude (no Q/DQ in front of them) while the rest stay INT8."""
    from edgevid.backends import BuildRequest, get_backend
    from edgevid.build import build_artifact
    from edgevid.models import create_model, get_spec

    torch.manual_seed(0)
    request = BuildRequest(model=create_model("x3d_synth").eval(), spec=get_spec("x3d_synth"),
                           target=get_target("jetson"), precision="int8", out_dir=tmp_path)
    layers = get_backend("tensorrt").quantizable_layers(request)
    convs = [layer.name for layer in layers if layer.op == "Conv"]
    assert len(convs) > 10 and {layer.op for layer in layers} <= {"Conv", "MatMul", "Gemm"}

    def int8_convs(keep_float: list[str]) -> tuple[set[str], dict]:
        art = build_artifact("x3d_synth", "jetson", "int8", weights="random", calib="synthetic", calib_size=2,
                             out=tmp_path / str(len(keep_float)), options={"keep_float": keep_float})
        qdq = onnx.load(str(art.file("model.onnx")))
        # INT8 = data and weights through Q/DQ (as qdq_summary counts); a kept layer may still read a
        # DQ output that its input tensor's other, quantized consumers share
        return ({n.name for n in qdq.graph.node if n.name in convs and _from_dq(qdq, n.input[0]) and _from_dq(qdq, n.input[1])},
                art.manifest.quantization)

    full, _ = int8_convs([])
    kept = sorted(full)[:2]  # ModelOpt leaves a few (SE, head) convs float by itself
    mixed, quant = int8_convs(kept)
    # the kept layers lost their Q/DQ and every other INT8 layer kept it (ModelOpt may then also
    # quantize a neighbour it had left float: its placement looks at the surrounding graph)
    assert not mixed & set(kept) and full - set(kept) <= mixed, (sorted(full), sorted(mixed))
    assert set(kept) <= set(quant["kept_float"])

@no_engine_here
def test_pending_artifact_runs_the_qdq_onnx_on_onnxruntime_cpu(pending):
    from edgevid.harness.eval import reference_runner

    _, path = pending
    runner = open_runner(path)
    assert "ONNX Runtime CPU" in runner.description and "pending on device" in runner.description
    reference = reference_runner(Artifact(path).manifest)  # same seeded random weights as the build
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(runner.input_shape).astype(np.float32) for _ in range(3)]
    got = np.concatenate([runner(c) for c in clips])
    want = np.concatenate([reference(c) for c in clips])
    assert _cosine(got, want).min() > 0.99


@no_engine_here
def test_eval_labels_a_pending_artifact(pending):
    from edgevid.data.synthmotion import ensure_split
    from edgevid.harness.eval import evaluate

    _, path = pending
    result = evaluate(path, ensure_split("val", 4), limit=2)
    # the runtime that actually ran: ONNX Runtime over the Q/DQ ONNX, not TensorRT
    assert re.fullmatch(r"onnxruntime \S+ \(CPU\) \(Q/DQ ONNX; engine pending on device\)", result["runtime"])
    assert result["label"] == f"tensorrt int8 on {result['runtime']}"
    assert result["videos"] == 2 and "agreement" in result


@no_engine_here
def test_golden_report_of_a_pending_artifact_names_onnxruntime(pending, tmp_path):
    from edgevid.data.synthmotion import ensure_split
    from edgevid.harness import golden

    _, path = pending
    pack = golden.make_pack("x3d_synth", ensure_split("val", 2), 2, tmp_path / "pack", weights="random", threads=1)
    (tmp_path / "loose.yaml").write_text("max_top1_drop: 100\nmin_agreement: 0\nmin_sqnr_db: 0\n")
    proc = _cli("golden", "run", path, pack, "--gates", tmp_path / "loose.yaml", "--json", tmp_path / "g.json",
                block_torch=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "g.json").read_text())
    assert result["runtime"].startswith("onnxruntime") and "engine pending on device" in result["runtime"]
    assert f"runtime: {result['runtime']}" in proc.stdout


@no_engine_here
def test_engine_artifacts_need_tensorrt_and_pycuda_not_onnxruntime(pending, tmp_path, monkeypatch):
    """A Jetson with TensorRT + pycuda and no ONNX Runtime must be able to open an engine: the
    backend's requirements are TensorRT's; ONNX Runtime only evaluates a pending artifact."""
    from edgevid.backends import get_backend

    backend = get_backend("tensorrt")
    assert set(backend.requirements) == {"tensorrt", "pycuda"}
    _, path = pending
    engine = tmp_path / "engine"
    shutil.copytree(path, engine)
    (engine / "model.plan").write_bytes(b"an engine built on the device")
    m = Artifact(engine).manifest
    finalize_manifest(engine, m.model_copy(update={"status": {"engine": "built"}, "files": {}}))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # this "Jetson" has no ONNX Runtime
    with pytest.raises(BackendUnavailable, match="holds a TensorRT engine; running it needs tensorrt, pycuda") as exc:
        backend.check_open(Artifact(engine))
    assert "onnxruntime" not in str(exc.value)
    with pytest.raises(BackendUnavailable, match=r"no engine yet.*pip install 'edgevid\[onnxruntime\]'"):
        backend.check_open(Artifact(path))
    assert "edgevid[tensorrt]" in backend.status() and "installed" not in backend.status().split(";")[0]


@no_engine_here
def test_from_onnx_without_tensorrt_is_one_line_and_torch_free(pending):
    _, path = pending
    proc = _cli("build", "--model", "x3d_synth", "--target", "jetson", "--from-onnx", path, block_torch=True)
    assert proc.returncode == 3
    assert proc.stderr.strip().count("\n") == 0 and "needs TensorRT >= 10" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_from_onnx_checks_model_and_target(pending):
    _, path = pending
    proc = _cli("build", "--model", "x3d_synth", "--target", "rtx", "--from-onnx", path, block_torch=True)
    assert proc.returncode == 2 and "differs from the artifact's target jetson-orin" in proc.stderr
    proc = _cli("build", "--model", "x3d_s", "--target", "jetson", "--from-onnx", path)
    assert proc.returncode == 2 and "holds x3d_synth" in proc.stderr


def test_dla_on_a_target_without_dla_fails_fast_in_one_line():
    proc = _cli("build", "--model", "x3d_synth", "--target", "rtx", "--weights", "random", "--dla-core", "0")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "target rtx has no DLA cores" in proc.stderr


def _fake_engine_artifact(src: Path, dst: Path, plan: bytes, fingerprint: dict) -> Path:
    shutil.copytree(src, dst)
    (dst / "model.plan").write_bytes(plan)
    manifest = Artifact(dst).manifest.model_copy(update={"status": {"engine": "built"}, "fingerprint": fingerprint})
    finalize_manifest(dst, manifest)
    return dst


@no_engine_here
def test_engine_artifact_needs_tensorrt_and_a_tampered_plan_is_refused(pending, tmp_path):
    _, path = pending
    fake = _fake_engine_artifact(path, tmp_path / "engine", b"not a plan", ORIN)
    with pytest.raises(BackendUnavailable, match="holds a TensorRT engine") as info:
        open_runner(fake)
    assert "\n" not in str(info.value)
    (fake / "model.plan").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="model.plan does not match its sha256"):
        open_runner(fake)


# ------------------------------------------------------------------ on a machine with TensorRT + a GPU


def _here_target() -> str:
    from edgevid.backends.tensorrt.engine import machine_fingerprint

    return "jetson" if machine_fingerprint().get("jetpack") else "rtx"


@pytest.fixture(scope="module")
def engine_artifact(tmp_path_factory):
    """x3d_synth INT8 built end to end on this machine (jetson-orin on a Jetson, rtx elsewhere)."""
    from edgevid.build import build_artifact

    return build_artifact("x3d_synth", _here_target(), "int8", "random", None, 4, tmp_path_factory.mktemp("engines"))


@needs_engine
def test_engine_builds_runs_and_matches_the_qdq_onnx(engine_artifact):
    from edgevid.backends.tensorrt import engine as tensorrt_engine

    m = engine_artifact.manifest
    assert m.status["engine"] == "built" and {"model.plan", "timing.cache", "model.onnx"} <= set(m.files)
    assert fingerprint_mismatches(m.fingerprint, tensorrt_engine.machine_fingerprint()) == []
    assert m.quantization["engine"]["strongly_typed"] is True
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(m.input_shape).astype(np.float32) for _ in range(3)]
    with open_runner(engine_artifact) as runner:
        got = np.concatenate([runner(c) for c in clips])
    assert _cosine(got, _ort(engine_artifact.file("model.onnx"), clips)).min() > 0.99


@needs_engine
def test_from_onnx_reuses_the_timing_cache(engine_artifact, tmp_path):
    from edgevid.backends.tensorrt import build_from_onnx

    m = engine_artifact.manifest
    again = build_from_onnx(engine_artifact.path, m.model, m.target, None, tmp_path)
    assert again.manifest.quantization["engine"]["timing_cache"] == "reused"
    assert again.manifest.status["engine"] == "built"


@needs_engine
def test_engine_for_another_tensorrt_and_corrupt_plan_are_refused(engine_artifact, tmp_path):
    m = engine_artifact.manifest
    other = tmp_path / "other"
    shutil.copytree(engine_artifact.path, other)
    finalize_manifest(other, m.model_copy(update={"fingerprint": {**m.fingerprint, "tensorrt": "10.0.0.1"}}))
    with pytest.raises(ArtifactError, match="--from-onnx"):
        open_runner(other)
    corrupt = _fake_engine_artifact(engine_artifact.path, tmp_path / "corrupt", b"\0" * 64, m.fingerprint)
    with pytest.raises(ArtifactError, match="is not a TensorRT"):
        open_runner(corrupt)


@needs_engine
def test_engine_for_the_other_kind_of_device_is_not_built_here(engine_artifact, tmp_path):
    from edgevid.backends.tensorrt import build_from_onnx

    other = "rtx" if engine_artifact.manifest.target == "jetson-orin" else "jetson-orin"
    with pytest.raises(EdgevidError, match="target"):
        build_from_onnx(engine_artifact.path, None, other, None, tmp_path)


@needs_engine
def test_parser_rejection_names_node_and_op(tmp_path):
    from onnx import helper

    from edgevid.backends.tensorrt.engine import build_engine

    node = helper.make_node("Bogus", ["input"], ["logits"], name="bogus_node", domain="edgevid.test")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("edgevid.test", 1)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(EdgevidError) as info:
        build_engine(tmp_path / "bad.onnx", tmp_path / "x.plan", tmp_path / "x.cache", [(1, 4)] * 3)
    assert "bogus_node" in str(info.value) and "Bogus" in str(info.value) and "\n" not in str(info.value)


@needs_engine
def test_rtx_engine_takes_the_batch_range(engine_artifact):
    if engine_artifact.manifest.target != "rtx":
        pytest.skip("the batch-range profile is the rtx target's; this machine is a Jetson")
    assert engine_artifact.manifest.quantization["engine"]["profile"]["max"][0] == 8
    with open_runner(engine_artifact) as runner:
        shape = (3, *engine_artifact.manifest.input_shape[1:])
        assert runner(np.zeros(shape, np.float32)).shape == (3, engine_artifact.manifest.spec.num_classes)


@needs_engine
def test_dla_engine_with_gpu_fallback(engine_artifact, tmp_path):
    import tensorrt as trt

    from edgevid.backends.tensorrt import build_from_onnx

    cores = trt.Builder(trt.Logger(trt.Logger.ERROR)).num_DLA_cores
    if engine_artifact.manifest.target != "jetson-orin" or cores == 0 or not dla_supported(trt.__version__):
        pytest.skip(f"no DLA here (target {engine_artifact.manifest.target}, {cores} DLA cores, TensorRT {trt.__version__})")
    dla = build_from_onnx(engine_artifact.path, None, None, None, tmp_path, dla_core=0)
    assert dla.manifest.status == {"engine": "built", "dla_core": "0"}
    assert dla.manifest.quantization["engine"]["gpu_fallback"] is True
    with open_runner(dla) as runner:
        assert runner(np.zeros(runner.input_shape, np.float32)).shape[0] == 1


@needs_engine
def test_engine_runner_is_torch_free(engine_artifact):
    code = ("import sys; sys.modules['torch'] = None; import numpy as np; from edgevid.backends import open_runner; "
            f"r = open_runner({str(engine_artifact.path)!r}); print(r(np.zeros(r.input_shape, np.float32)).shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------ accuracy on the reference models

SYNTH_MODELS = ["x3d_synth", "uniformerv2_synth", "timesformer_synth", "tubevit_synth"]
WEIGHTS = REPO / "edgevid" / "models" / "weights"


@pytest.mark.slow
@pytest.mark.parametrize("name", SYNTH_MODELS)
def test_int8_qdq_accuracy_on_synthmotion(name, tmp_path):
    """INT8 Q/DQ ONNX under ONNX Runtime CPU: top-1 within 1.0 point of FP32, >= 97% agreement."""
    if not (WEIGHTS / f"{name}.pt").is_file():
        pytest.skip(f"reference weights {WEIGHTS / (name + '.pt')} are not there yet")
    import edgevid.models  # noqa: F401  (registers the families)
    from edgevid.build import build_artifact
    from edgevid.data.synthmotion import ensure_split
    from edgevid.harness.eval import evaluate

    artifact = build_artifact(name, "jetson", "int8", None, None, None, tmp_path)
    result = evaluate(artifact.path, ensure_split("val", 200), threads=2)
    print(f"\n{name}: {json.dumps({k: result[k] for k in ('top1', 'ref_top1', 'top1_drop', 'agreement', 'sqnr_db')})}")
    assert result["top1_drop"] <= 1.0 and result["agreement"] >= 97.0
