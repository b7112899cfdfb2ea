"""ONNX Runtime backend: FP32 equivalence, INT8 Q/DQ structure, torch-free runner, reference accuracy."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[build]'")
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from edgevid.artifact import Artifact  # noqa: E402
from edgevid.backends import open_runner  # noqa: E402
from edgevid.build import build_artifact  # noqa: E402
from edgevid.data.synthmotion import ensure_split  # noqa: E402
from edgevid.harness.eval import evaluate, reference_runner  # noqa: E402
from helpers import reference_weights  # noqa: E402


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return build_artifact("x3d_synth", "onnx-cpu", "fp32", weights="random", out=tmp_path_factory.mktemp("ort"))


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    return build_artifact("x3d_synth", "onnx-cpu", "int8", weights="random", calib="synthetic", calib_size=8,
                          out=tmp_path_factory.mktemp("ort8"))


@pytest.fixture(scope="module")
def int8_ort(tmp_path_factory):
    """The same model through ONNX Runtime's own quantizer (``quantizer: ort``)."""
    return build_artifact("x3d_synth", "onnx-cpu", "int8", weights="random", calib="synthetic", calib_size=8,
                          options={"quantizer": "ort"}, out=tmp_path_factory.mktemp("ort8-ort"))


def _qdq(artifact):
    graph = onnx.load(artifact.file("model.onnx")).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    return graph, inits, dq


def _assert_per_channel_symmetric_weights(convs, inits, dq):
    for conv in convs:
        weight_dq = dq[conv.input[1]]
        scale = inits[weight_dq.input[1]]
        out_channels = inits[weight_dq.input[0]].shape[0]
        assert scale.shape == (out_channels,), "weights are quantized per output channel"
        axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
        assert axis == 0
        if len(weight_dq.input) > 2:
            assert (inits[weight_dq.input[2]] == 0).all(), "weights are symmetric"


def test_fp32_matches_eager(fp32):
    clip = np.random.default_rng(0).standard_normal(fp32.manifest.input_shape).astype(np.float32)
    with open_runner(fp32.path) as runner:
        ours = runner(clip)
    reference = reference_runner(fp32.manifest)(clip)
    assert ours.shape == (1, 8)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_int8_default_is_nncf_qdq_with_per_channel_weights(int8):
    """The default quantizer: NNCF's ONNX backend with the OpenVINO recipe, recorded in the manifest."""
    m = int8.manifest
    assert m.calibration is not None and m.calibration.clips == 8 and len(m.calibration.digest) == 64
    q = m.quantization
    assert "ONNX backend" in q["tool"] and q["preset"] == "mixed" and q["activation_range"] == "histogram"
    assert q["bias_correction"] == "fast" and q["layers_int8"] > 0  # fast on ONNX (ONNX_BIAS_CORRECTION)
    graph, inits, dq = _qdq(int8)
    convs = [n for n in graph.node if n.op_type == "Conv" and n.name not in q["layers_float"]]
    assert len(convs) == q["layers_int8"]
    assert convs and all(n.input[0] in dq and n.input[1] in dq for n in convs), "every INT8 Conv reads Q/DQ input and weight"
    _assert_per_channel_symmetric_weights(convs, inits, dq)
    activation_zero_points = [inits[n.input[2]] for n in graph.node
                              if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[0] not in inits]
    assert any((z != 0).any() for z in activation_zero_points), "mixed preset: asymmetric activations (SiLU outputs)"


def test_int8_ort_quantizer_is_symmetric_per_channel_qdq(int8_ort):
    q = int8_ort.manifest.quantization
    assert q["calibrate_method"] == "percentile" and q["op_types"] == ["Conv", "MatMul", "Gemm"]
    graph, inits, dq = _qdq(int8_ort)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[0] in dq and n.input[1] in dq for n in convs), "every Conv reads Q/DQ input and weight"
    _assert_per_channel_symmetric_weights(convs, inits, dq)
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all((z == 0).all() for z in zero_points), "activations are symmetric (TensorRT needs it)"


def test_int8_output_tracks_fp32(int8, fp32):
    clips = np.random.default_rng(1).standard_normal((4, *int8.manifest.input_shape[1:])).astype(np.float32)
    with open_runner(int8.path) as q, open_runner(fp32.path) as f:
        a = np.concatenate([q(c[None]) for c in clips])
        b = np.concatenate([f(c[None]) for c in clips])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.9, cos


def test_runner_path_imports_no_torch(fp32):
    code = (
        "import sys, numpy as np\n"
        "from edgevid.backends import open_runner\n"
        f"r = open_runner({str(fp32.path)!r})\n"
        "r(np.zeros(r.input_shape, np.float32))\n"
        "bad = [m for m in ('torch', 'av') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["x3d_synth"] + [pytest.param(name, marks=pytest.mark.slow) for name in
                                                     ("uniformerv2_synth", "timesformer_synth", "tubevit_synth")])
def test_reference_model_int8_keeps_accuracy(name, tmp_path):
    """Reference model: INT8 ORT top-1 within 1.0 point of FP32 with >= 97% agreement (200 fresh val clips)."""
    if reference_weights(name, trained=True) is None:
        pytest.skip(f"{name} reference weights not trained to 90% yet (scripts/train_reference.py --model {name})")
    val = ensure_split("val", 200)
    art = build_artifact(name, "onnx-cpu", "int8", calib="synthetic", calib_size=100, out=tmp_path)
    result = evaluate(art.path, val)
    print(name, {k: result[k] for k in ("top1", "ref_top1", "agreement", "sqnr_db")})
    assert result["ref_top1"] - result["top1"] <= 1.0
    assert result["agreement"] >= 97.0
    assert Artifact(art.path).read_report()["eval"]["videos"] == 200


def _tiny_model(tmp_path):
    from onnx import TensorProto, helper

    from edgevid.backends._onnx import pre_process

    shape = [1, 3, 4, 8, 8]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Sigmoid", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    return pre_process(tmp_path / "m.onnx", tmp_path / "p.onnx"), shape


def _ranges(cache):
    from onnxruntime.quantization.calibrate import load_tensors_data

    return {name: np.asarray(data.range_value, dtype=np.float64).ravel() for name, data in load_tensors_data(cache).items()}


@pytest.mark.parametrize("method", ["entropy", "minmax"])
def test_calibration_in_memory_bounded_chunks_matches_one_pass(method, tmp_path, monkeypatch):
    """ORT's histogram calibrators hold every intermediate tensor of every clip they are given (300
    full-size X3D-S clips would need 142 GB): the clips go in chunks that fit, and the ranges agree
    with one pass over all of them; every clip is counted once in the build's calibration n/N."""
    import edgevid.backends._onnx as ort_backend
    from edgevid.stages import BuildStages

    prepared, shape = _tiny_model(tmp_path)
    assert ort_backend.activation_bytes(prepared) == 4 * 3 * 4 * 8 * 8  # the one intermediate tensor, h
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(shape).astype(np.float32) * (1 + i % 5) for i in range(12)]
    one = tmp_path / "one.json"
    ort_backend.calibrate(prepared, clips, "x", method, None, one, tmp_path)
    seen = []
    stages = BuildStages(lambda event, stage: seen.append((event, stage.done, stage.total)))
    monkeypatch.setattr(ort_backend, "calibration_chunk", lambda path, clips, method: 5)  # 5 + 5 + 2
    chunked = tmp_path / "chunked.json"
    ort_backend.calibrate(prepared, clips, "x", method, None, chunked, tmp_path, stages)
    a, b = _ranges(one), _ranges(chunked)
    assert a.keys() == b.keys() and a
    for name in a:  # min-max ranges are exact; entropy thresholds move by at most a histogram bin or so
        np.testing.assert_allclose(a[name], b[name], rtol=0 if method == "minmax" else 0.05, atol=1e-6)
    assert seen[-1] == ("end", 12, 12) and [d for e, d, _ in seen if e == "advance"] == list(range(1, 13))
    assert "calibration" in stages.seconds


def test_calibration_chunk_fits_free_memory_and_refuses_a_clip_that_cannot(tmp_path, monkeypatch):
    import os

    import edgevid.backends._onnx as ort_backend
    from edgevid.errors import EdgevidError

    prepared, _ = _tiny_model(tmp_path)
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert ort_backend.calibration_chunk(prepared, 100, "entropy") == 100  # 3 KB a clip: all at once
    monkeypatch.setattr(ort_backend, "activation_bytes", lambda path: free // 8)
    assert 1 <= ort_backend.calibration_chunk(prepared, 300, "entropy") <= 4  # half the free memory
    monkeypatch.setattr(ort_backend, "activation_bytes", lambda path: 4 * free)
    with pytest.raises(EdgevidError, match=r"entropy calibration holds .* GB of activations per clip") as info:
        ort_backend.calibration_chunk(prepared, 300, "entropy")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("quantizer", ["nncf", "ort"])
def test_int8_manifest_records_stage_seconds(quantizer, int8, int8_ort):
    artifact = {"nncf": int8, "ort": int8_ort}[quantizer]
    stages = artifact.manifest.stage_seconds
    # NNCF collects statistics and inserts the Q/DQ nodes in one call: one stage
    assert list(stages) == ["calibration data", "export", "calibration"] + (["quantize"] if quantizer == "ort" else [])
    assert all(v > 0 for v in stages.values())
    assert sum(stages.values()) <= artifact.manifest.build_seconds + 0.05


def test_attention_products_stay_float_when_asked(tmp_path):
    """float_activation_matmuls excludes MatMuls of two activations (Q·Kᵀ, A·V): their outputs stay float."""
    from onnx import TensorProto, helper, numpy_helper

    from edgevid.backends._onnx import activation_matmuls, quantizable_nodes, quantize_qdq

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), name) for name in ("wq", "wk")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wq"], ["q"], name="proj_q"),
         helper.make_node("MatMul", ["x", "wk"], ["k"], name="proj_k"),
         helper.make_node("MatMul", ["q", "k"], ["y"], name="scores")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], initializer=weights)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert activation_matmuls(onnx.load(str(path))) == ["scores"]
    # what the harness ranks and searches over: never the products this recipe always keeps float
    assert [layer.name for layer in quantizable_nodes(path, ["MatMul"], float_activation_matmuls=True)] == ["proj_q", "proj_k"]
    assert len(quantizable_nodes(path, ["MatMul"])) == 3
    clips = [np.random.default_rng(i).standard_normal((4, 8)).astype(np.float32) for i in range(4)]
    for keep_float in (False, True):
        out = tmp_path / f"q{keep_float}.onnx"
        quant = quantize_qdq(path, out, clips, "x", op_types=["MatMul"], float_activation_matmuls=keep_float)
        nodes = onnx.load(str(out)).graph.node
        quantized = {n.input[0] for n in nodes if n.op_type == "QuantizeLinear"}
        # ORT's QDQ MatMul quantizes its inputs and its output; kept float, the scores (pre-softmax in a
        # transformer) stay float, while q and k still carry the Q/DQ of the projections that produce them
        scores_quantized = any(name.split("_QuantizeLinear")[0] == "y" for name in quantized)  # a graph output is renamed
        assert scores_quantized != keep_float and {"x", "q", "k"} <= quantized
        assert ("scores" in quant["kept_float"]) == keep_float
        assert quant["activation_matmuls"] == ("float" if keep_float else "int8")


@pytest.mark.parametrize("value", ["maybe", 1, None])
def test_float_activation_matmuls_option_must_be_a_bool(value):
    from edgevid.backends.onnxruntime import _float_activation_matmuls
    from edgevid.errors import EdgevidError
    from edgevid.models import get_spec

    vit, cnn = get_spec("timesformer_synth"), get_spec("x3d_synth")
    assert _float_activation_matmuls({}, vit) and not _float_activation_matmuls({}, cnn)  # the spec's default
    assert not _float_activation_matmuls({"float_activation_matmuls": False}, vit)
    with pytest.raises(EdgevidError, match="option float_activation_matmuls=.*write true or false"):
        _float_activation_matmuls({"float_activation_matmuls": value}, cnn)


def test_entropy_at_default_bins_is_min_max_and_percentile_clips_the_tail(tmp_path):
    """Pins what the recipe rests on (``_onnx.calibrator_options``): ORT's entropy calibrator at its
    default 128 bins has one KL candidate, the full range, so its ranges equal min-max; percentile
    calibration cuts the tail, the more the lower the percentile."""
    import edgevid.backends._onnx as ort_backend

    prepared, shape = _tiny_model(tmp_path)
    rng = np.random.default_rng(1)
    clips = [rng.standard_t(3, shape).astype(np.float32) for _ in range(6)]  # heavy-tailed activations
    ranges = {}
    for name, method, percentile in [("minmax", "minmax", None), ("entropy", "entropy", None),
                                     ("p99.99", "percentile", 99.99), ("p99.9", "percentile", 99.9)]:
        cache = tmp_path / f"{name}.json"
        ort_backend.calibrate(prepared, clips, "x", method, None, cache, tmp_path,
                              extra_options=ort_backend.calibrator_options(method, percentile))
        ranges[name] = float(np.abs(_ranges(cache)["h"]).max())  # symmetric: the scale is max |range| / 127
    assert ranges["entropy"] == ranges["minmax"]
    assert ranges["p99.9"] < ranges["p99.99"] < ranges["minmax"]
    assert ort_backend.calibrator_options("percentile") == {"symmetric": True, "percentile": ort_backend.PERCENTILE}
