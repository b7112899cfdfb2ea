"""`edgevid trace`: per-layer SQNR of an INT8 artifact (Q/DQ ONNX, OpenVINO IR, ExecuTorch program)
against its FP32 twin, on the tiny harness model."""

import json
import math
import tempfile
from pathlib import Path

import harness_models as hm
import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli

from edgevid.errors import EdgevidError
from edgevid.harness.trace import _fp32_twin, quantized_outputs, trace, trace_graphs

PRELUDE = "import sys; sys.path.insert(0, 'tests'); import harness_models"
#: the tiny model's weighted modules in forward order
FORWARD_ORDER = ["stem.0", "temporal", "down.0", "res", "qkv", "proj", "head"]
KEPT = "down.0"


@pytest.fixture(scope="module")
def int8():
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[onnx]'")
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
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[onnx]'")
    fp32 = hm.copy(hm.artifact(hm.TINY, "fp32"), tmp_path)
    with pytest.raises(EdgevidError, match="trace an INT8 artifact"):
        trace(fp32.path, clips=1)
    proc = run_cli("trace", str(fp32.path), "--clips", "1", prelude=PRELUDE)
    assert_one_line_error(proc, "trace an INT8 artifact")


def test_trace_cli_writes_json_and_markdown(int8, tmp_path):
    art = hm.copy(int8, tmp_path)
    proc = run_cli("trace", str(art.path), "--clips", "1", "--threads", "1", prelude=PRELUDE)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((art.path / "trace.json").read_text())
    assert result["layers_traced"] > 0 and "| # | layer | op | precision | SQNR dB |" in (art.path / "trace.md").read_text()


def _modules_in_order(rows: list[dict], key) -> list[str]:
    """The weighted modules of ``rows`` in the order the trace lists them (first appearance)."""
    seen: list[str] = []
    for row in rows:
        module = key(row)
        if module in FORWARD_ORDER and module not in seen:
            seen.append(module)
    return seen


def _assert_finite_int8(result: dict) -> None:
    int8_rows = [r for r in result["layers"] if r["precision"] == "int8"]
    assert len(int8_rows) == result["layers_traced"] == result["layers_quantized"] > 5
    assert all(5 < r["sqnr_db"] < 80 for r in int8_rows)  # INT8: close to FP32, never identical
    assert all(math.isfinite(r["sqnr_db"]) for r in result["layers"])
    assert 5 < result["logits_sqnr_db"] < 80
    assert [r["index"] for r in result["layers"]] == list(range(len(result["layers"])))


# --- OpenVINO ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ov_traces(tmp_path_factory):
    """Traces of the INT8 IR and of one built with ``--keep-float down.0`` (2 clips each)."""
    pytest.importorskip("openvino", reason="openvino not installed: pip install 'edgevid[openvino]'")
    pytest.importorskip("nncf", reason="nncf not installed: pip install 'edgevid[build-openvino]'")
    plain = hm.artifact(hm.TINY, "int8", target="intel-cpu")
    kept = hm.artifact(hm.TINY, "int8", target="intel-cpu", options={"keep_float": [KEPT]})
    return plain, trace(plain.path, clips=2, threads=1), trace(kept.path, clips=2, threads=1)


def test_openvino_trace_lists_ir_layers_in_graph_order(ov_traces):
    import openvino as ov

    artifact, result, _ = ov_traces
    _assert_finite_int8(result)
    ordered = [op.get_friendly_name() for op in ov.Core().read_model(str(artifact.file("model.xml"))).get_ordered_ops()]
    names = [r["layer"] for r in result["layers"]]
    assert names == sorted(names, key=ordered.index)
    assert _modules_in_order(result["layers"], lambda r: r["layer"]) == FORWARD_ORDER
    ops = {r["layer"]: r["op"] for r in result["layers"]}
    assert ops["stem.0"] == "Convolution" and ops["temporal"] == "GroupConvolution" and ops["head"] == "MatMul"
    # the head's bias Add is the logits: its traced output must be the logits the IR returns
    head = next(r for r in result["layers"] if r["layer"] == "head")
    assert head["sqnr_db"] == pytest.approx(result["logits_sqnr_db"], abs=1e-6)


def test_openvino_trace_reports_a_kept_float_layer(ov_traces):
    _, plain, kept = ov_traces
    before = {r["layer"]: r for r in plain["layers"]}
    after = {r["layer"]: r for r in kept["layers"]}
    assert before[KEPT]["precision"] == "int8" and after[KEPT]["precision"] == "float"
    # its input is still the INT8 output of the Add before it, so it gains only its own error back
    assert after[KEPT]["sqnr_db"] > before[KEPT]["sqnr_db"]
    assert kept["layers_quantized"] == plain["layers_quantized"] - 1


def test_openvino_trace_report_and_a_corrupt_ir(ov_traces, tmp_path):
    from edgevid.harness.trace import write_trace

    json_file, md_file = write_trace(ov_traces[1], tmp_path / "trace.json")
    assert json.loads(json_file.read_text())["layers"][0]["layer"] == "stem.0"
    table = md_file.read_text()
    assert "| 0 | stem.0 | Convolution | int8 |" in table and "OpenVINO ops reading a FakeQuantize" in table
    art = hm.copy(ov_traces[0], tmp_path)
    (art.path / "model.xml").write_text("<net>")
    assert_one_line_error(run_cli("trace", str(art.path), "--clips", "1", prelude=PRELUDE), "model.xml", "rebuild")
    assert not (art.path / "trace.json").exists()


# --- ExecuTorch --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def et_traces():
    """Traces of the INT8 .pte and of one built with ``--keep-float down.0`` (2 clips each)."""
    pytest.importorskip("executorch", reason="executorch not installed: pip install 'edgevid[executorch]'")
    pytest.importorskip("torchao", reason="torchao not installed: pip install 'edgevid[build-executorch]'")
    options = {"conv3d_strategy": "taps"}
    plain = hm.artifact(hm.TINY, "int8", target="android", options=options)
    kept = hm.artifact(hm.TINY, "int8", target="android", options={**options, "keep_float": [KEPT]})
    return plain, trace(plain.path, clips=2, threads=1), trace(kept.path, clips=2, threads=1)


def test_executorch_trace_lists_converted_graph_layers_in_order(et_traces):
    _, result, _ = et_traces
    _assert_finite_int8(result)
    assert _modules_in_order(result["layers"], lambda r: r["layer"].rsplit("/", 1)[0]) == FORWARD_ORDER
    assert {r["op"] for r in result["layers"] if r["precision"] == "int8"} >= {"conv2d", "linear", "add"}
    assert "PT2E converted graph" in result["granularity"]
    # the simulated INT8 graph is the artifact's: the .pte agrees with it far better than with FP32
    checks = result["checks"]
    assert abs(checks["pte_logits_sqnr_db"] - result["logits_sqnr_db"]) < 3
    assert checks["pte_vs_simulated_logits_sqnr_db"] > result["logits_sqnr_db"] + 5


def test_executorch_trace_reports_a_kept_float_module(et_traces):
    _, plain, kept = et_traces
    before = {r["layer"]: r for r in plain["layers"]}
    rows = [r for r in kept["layers"] if r["layer"].startswith(KEPT + "/") and r["op"] == "conv2d"]
    assert rows and all(r["precision"] == "float" for r in rows)
    assert all(before[r["layer"]]["precision"] == "int8" for r in rows)
    gain = np.mean([r["sqnr_db"] - before[r["layer"]]["sqnr_db"] for r in rows])
    assert gain > 0  # its weights stay float (its input is still the INT8 output of the layer before)
    after = {r["layer"]: r for r in kept["layers"]}
    assert after["down.1/relu"]["sqnr_db"] > before["down.1/relu"]["sqnr_db"]  # no INT8 outputs inside the block
    assert kept["layers_quantized"] < plain["layers_quantized"]


def test_executorch_trace_refuses_a_corrupt_program(et_traces, tmp_path):
    art = hm.copy(et_traces[0], tmp_path)
    (art.path / "model.pte").write_bytes(b"not a program")
    assert_one_line_error(run_cli("trace", str(art.path), "--clips", "1", prelude=PRELUDE), "model.pte", "rebuild")
    assert not (art.path / "trace.json").exists()
