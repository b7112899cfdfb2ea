"""`edgevid trace`: per-layer SQNR of an INT8 Q/DQ ONNX artifact against its FP32 twin."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[onnx]'")

import harness_models as hm  # noqa: E402
from edgevid.errors import EdgevidError  # noqa: E402
from edgevid.harness.trace import _fp32_twin, quantized_outputs, trace, trace_graphs  # noqa: E402
from helpers import assert_one_line_error, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def int8():
    return hm.artifact(hm.TINY, "int8")


def test_trace_reads_every_quantized_layer(int8, tmp_path):
    result = trace(hm.copy(int8, tmp_path).path, clips=2, threads=1)
    assert result["layers_quantized"] > 3 and result["layers_traced"] == result["layers_quantized"]
    ops = {row["op"] for row in result["layers"]}
    assert {"Conv"} <= ops
    sqnr = [row["sqnr_db"] for row in result["layers"]]
    assert all(5 < s < 80 for s in sqnr)  # INT8: close to FP32, never identical
    assert 5 < result["logits_sqnr_db"] < 80


def test_trace_pinpoints_a_broken_layer(int8):
    """Double one quantized Conv's weight scale: that layer's SQNR collapses, the layers before it do not."""
    import onnx
    from onnx import numpy_helper

    qdq = onnx.load(str(int8.file("model.onnx")))
    layers = quantized_outputs(qdq)
    producers = {out: node for node in qdq.graph.node for out in node.output}
    inits = {init.name: init for init in qdq.graph.initializer}
    convs = [i for i, (_, op, _) in enumerate(layers) if op == "Conv"]
    broken = convs[1]
    node = next(n for n in qdq.graph.node if n.output and n.output[0] == layers[broken][2])
    weight_dq = producers[node.input[1]]
    scale = inits[weight_dq.input[1]]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 2, scale.name))
    clip = np.random.default_rng(0).standard_normal(tuple(int8.manifest.input_shape)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        twins = [onnx.load(str(p)) for p in _fp32_twin(int8, Path(tmp), None)]
        clean = trace_graphs(onnx.load(str(int8.file("model.onnx"))), twins, [clip], threads=1)["layers"]
        twins = [onnx.load(str(p)) for p in _fp32_twin(int8, Path(tmp), None)]
        hurt = trace_graphs(qdq, twins, [clip], threads=1)["layers"]
    assert hurt[broken]["sqnr_db"] < clean[broken]["sqnr_db"] - 10 and hurt[broken]["sqnr_db"] < 8
    assert [r["sqnr_db"] for r in hurt[:broken]] == pytest.approx([r["sqnr_db"] for r in clean[:broken]])


def test_trace_refuses_what_it_cannot_read(tmp_path):
    fp32 = hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path)
    with pytest.raises(EdgevidError, match="trace an INT8 artifact"):
        trace(fp32.path, clips=1)
    proc = run_cli("trace", str(fp32.path), "--clips", "1",
                   prelude="import sys; sys.path.insert(0, 'tests'); import harness_models")
    assert_one_line_error(proc, "trace an INT8 artifact")


def test_trace_cli_writes_json_and_markdown(int8, tmp_path):
    art = hm.copy(int8, tmp_path)
    proc = run_cli("trace", str(art.path), "--clips", "1", "--threads", "1",
                   prelude="import sys; sys.path.insert(0, 'tests'); import harness_models")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((art.path / "trace.json").read_text())
    assert result["layers_traced"] > 0 and "| # | layer | op | SQNR dB |" in (art.path / "trace.md").read_text()
