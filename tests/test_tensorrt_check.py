"""TensorRT readiness of Q/DQ ONNX graphs, checked without a GPU: hand-built graphs that break one
documented rule each, and the graphs the TensorRT backend really produces."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install 'edgevid[build]'")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgevid.backends.tensorrt.check import assert_buildable, check_qdq, high_precision_nodes, trt_line  # noqa: E402
from edgevid.errors import EdgevidError  # noqa: E402


def _model(nodes, inits, opset=19, inputs=("x",), output="y", shape=(1, 8, 4, 8, 8)):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, list(shape)) for i in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), name) for name, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _qdq_conv(weight_axis=0, act_scale=np.float32(0.1), zero=np.int8(0), group=1, weight_shape=(8, 8, 3, 3, 3)):
    """x -> Q/DQ -> Conv(W via int8 initializer -> DQ) -> y."""
    w = np.ones(weight_shape, dtype=np.int8)
    channels = weight_shape[weight_axis]
    inits = {"w_q": w, "w_s": np.full(channels, 0.01, np.float32), "w_z": np.zeros(channels, np.int8),
             "x_s": act_scale, "x_z": zero}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], name="dq_w", axis=weight_axis),
        helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", group=group, pads=[1] * 6),
    ]
    return _model(nodes, inits)


def test_a_well_formed_qdq_conv3d_passes_both_lines():
    for line in ("10.3", "11"):
        report = check_qdq(_qdq_conv(), line)
        assert report.ok, report.errors


def test_per_channel_weight_axis_must_be_the_output_channels():
    report = check_qdq(_qdq_conv(weight_axis=1), "10.3")
    assert any("per-channel axis 1" in e and "output-channel axis 0" in e for e in report.errors), report.errors


def test_zero_points_must_be_zero_and_scales_constant():
    report = check_qdq(_qdq_conv(zero=np.int8(3)), "10.3")
    assert any("zero point [3] is not 0" in e for e in report.errors), report.errors
    model = _qdq_conv()
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "x_s"))
    model.graph.input.append(helper.make_tensor_value_info("x_s", TensorProto.FLOAT, []))
    assert any("'x_s' is not a build-time constant" in e for e in check_qdq(model, "11").errors)


def test_activations_are_quantized_per_tensor():
    report = check_qdq(_qdq_conv(act_scale=np.full(8, 0.1, np.float32), zero=np.zeros(8, np.int8)), "10.3")
    assert any("per-channel quantization of an activation" in e for e in report.errors), report.errors


def test_opset_range_and_unsupported_ops_differ_by_line():
    model = _qdq_conv()
    model.opset_import[0].version = 21
    assert not check_qdq(model, "10.3").ok and check_qdq(model, "11").ok
    model.graph.node.append(helper.make_node("RMSNormalization", ["y", "w_s"], ["z"], name="rms"))
    assert any("TensorRT 10.3 has no RMSNormalization" in e for e in check_qdq(model, "10.3").errors)
    bad = _model([helper.make_node("ConvInteger", ["x", "w"], ["y"], name="ci")], {"w": np.ones((8, 8, 1, 1, 1), np.int8)})
    assert any("not supported by TensorRT's ONNX parser" in e for e in check_qdq(bad, "11").errors)
    custom = _model([helper.make_node("QuickGelu", ["x"], ["y"], name="g", domain="com.microsoft")], {})
    assert any("domain 'com.microsoft'" in e for e in check_qdq(custom, "11").errors)


def test_the_build_fails_with_one_line_where_the_graph_cannot_build():
    with pytest.raises(EdgevidError) as exc:
        assert_buildable(_qdq_conv(weight_axis=1, zero=np.int8(1)), "10.3", "the INT8 ONNX for jetson-orin")
    line = str(exc.value)
    assert "\n" not in line and line.startswith("the INT8 ONNX for jetson-orin will not build on TensorRT 10.3")
    assert "(+2 more)" in line  # the zero point of x's Q and DQ, and the weight axis


def test_depthwise_and_grouped_conv3d_are_kept_in_high_precision_with_the_reason():
    inits = {"dw": np.ones((8, 1, 3, 3, 3), np.float32), "gw": np.ones((8, 4, 3, 3, 3), np.float32),
             "w2": np.ones((8, 8, 3, 3), np.float32), "w3": np.ones((8, 8, 1, 1, 1), np.float32)}
    nodes = [helper.make_node("Conv", ["x", "dw"], ["a"], name="depthwise", group=8, pads=[1] * 6),
             helper.make_node("Conv", ["a", "gw"], ["b"], name="grouped", group=2, pads=[1] * 6),
             helper.make_node("Conv", ["b", "w3"], ["y"], name="dense3d")]
    kept = {k["node"]: k for k in high_precision_nodes(_model(nodes, inits))}
    assert set(kept) == {"depthwise", "grouped"}  # dense Conv3d has INT8 kernels (TensorRT#1176)
    assert "depthwise" in kept["depthwise"]["op"] and "#2125" in kept["depthwise"]["reason"]
    assert kept["grouped"]["op"] == "Conv3d (grouped, groups=2)"


def test_trt_line_of_target_versions():
    assert trt_line("10.3") == "10.3" and trt_line("10") == "10.3" and trt_line("11.4.1") == "11"
    assert trt_line(None) == "10.3"


def test_the_backends_qdq_onnx_is_ready_and_keeps_the_depthwise_conv3d(tmp_path):
    """ModelOpt's Q/DQ ONNX of the tiny attention model the TensorRT tests use: ready for 10.3 and 11."""
    from edgevid.backends import get_backend

    if not get_backend("tensorrt").available(for_build=True):
        pytest.skip("the TensorRT host build needs nvidia-modelopt: pip install 'edgevid[build-tensorrt]'")
    import harness_models as hm

    art = hm.artifact(hm.TINY, "int8", target="jetson")
    quant = art.manifest.quantization
    assert quant["tensorrt_readiness"] == {"10.3": "ok"}
    (kept,) = quant["kept_high_precision"]  # TinyVideoNet's depthwise temporal Conv3d
    assert kept["op"] == "Conv3d (depthwise, groups=8)"
    model = onnx.load(str(art.file("model.onnx")))
    assert check_qdq(model, "11").ok
    conv = next(n for n in model.graph.node if n.name == kept["node"])
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert conv.input[1] not in dq_outputs  # its weights stay high precision
