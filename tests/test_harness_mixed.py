"""Per-layer INT8 sensitivity and the --max-drop mixed-precision fallback (ONNX Runtime backend hooks)."""

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'edgevid[build]'")
import onnx  # noqa: E402
import torch  # noqa: E402

import harness_models as hm  # noqa: E402
from edgevid.backends import BuildRequest, get_backend  # noqa: E402
from edgevid.harness.metrics import softmax  # noqa: E402
from edgevid.harness.mixed import Workbench, search, sensitivity  # noqa: E402
from edgevid.models import create_model, get_spec  # noqa: E402
from edgevid.targets import get_target  # noqa: E402
from helpers import reference_weights, run_cli  # noqa: E402

NAIVE = {"quantizer": "ort", "op_types_to_quantize": None, "calibrate_method": "minmax",  # every op ORT can quantize, min/max
         "float_activation_matmuls": False}  # attention products too
# The budget of the demonstration on each trained reference model. x3d_synth takes INT8 well: the naive
# recipe costs it 0.5 points on the 200 val clips (one clip; 1.0 with earlier weights), so its budget is
# 0.25 points, which the naive recipe misses and the search must meet (it kept 6 layers float, drop 0.0).
BUDGETS = {"x3d_synth": 0.25}


def test_ort_lists_quantizable_layers_and_keeps_chosen_ones_float(tmp_path):
    torch.manual_seed(0)
    spec = get_spec(hm.TINY)
    clips = [np.random.default_rng(i).standard_normal(spec.input_shape(1)).astype(np.float32) for i in range(4)]
    request = BuildRequest(model=create_model(hm.TINY), spec=spec, target=get_target("onnx-cpu"), precision="int8",
                           out_dir=tmp_path, calib=clips, options={"quantizer": "ort"})
    plan = get_backend("onnxruntime").int8_plan(request)
    try:
        fp32 = onnx.load(str(plan.prepared))
        weighted = [n.name for n in fp32.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]  # quantizer=ort's op types
        assert [layer.name for layer in plan.layers] == weighted and len(weighted) >= 8
        assert {layer.scope for layer in plan.layers} >= {"temporal", "res", "qkv", "head"}  # the PyTorch modules
        keep = [weighted[0], weighted[-1]]
        result = plan.build(keep, tmp_path)
        assert result.quantization["kept_float"] == keep
        graph = onnx.load(str(tmp_path / "model.onnx")).graph
        made_by = {out: node.op_type for node in graph.node for out in node.output}
        for node in graph.node:
            if node.name in weighted:
                fed_quantized = made_by.get(node.input[0]) == "DequantizeLinear"
                assert fed_quantized == (node.name not in keep), node.name
    finally:
        plan.close()


def test_nncf_quantizer_keeps_chosen_layers_float_and_refuses_unknown_ones(tmp_path):
    """NNCF, the ONNX Runtime backend's default for a non-transformer: kept layers read float activations, the manifest says so,
    and a layer name the graph does not have is a one-line error (NNCF's own check would be a traceback)."""
    from edgevid.backends._onnx import qdq_layer_precisions
    from edgevid.errors import EdgevidError

    spec = get_spec(hm.TINY)
    clips = [np.random.default_rng(i).standard_normal(spec.input_shape(1)).astype(np.float32) for i in range(4)]
    request = BuildRequest(model=create_model(hm.TINY), spec=spec, target=get_target("onnx-cpu"), precision="int8",
                           out_dir=tmp_path, calib=clips)
    plan = get_backend("onnxruntime").int8_plan(request)
    try:
        convs = [layer.name for layer in plan.layers if layer.op == "Conv"]
        assert len(convs) >= 2
        for folder in ("full", "kept", "typo"):
            (tmp_path / folder).mkdir()
        plan.build([], tmp_path / "full")
        int8_full, _ = qdq_layer_precisions(onnx.load(str(tmp_path / "full" / "model.onnx")), ("Conv",))
        assert set(convs) <= set(int8_full)  # NNCF makes every Conv of this net INT8 ...
        result = plan.build(convs[:1], tmp_path / "kept")
        int8, float_ = qdq_layer_precisions(onnx.load(str(tmp_path / "kept" / "model.onnx")), ("Conv",))
        assert convs[0] in float_ and set(convs[1:]) <= set(int8)  # ... but the kept one
        assert result.quantization["kept_float"] == convs[:1] and convs[0] in result.quantization["layers_float"]
        with pytest.raises(EdgevidError, match=r"^--keep-float no_such_conv: no such layer in the exported ONNX graph"):
            plan.build(["no_such_conv"], tmp_path / "typo")
    finally:
        plan.close()


def test_search_keeps_the_fewest_ranked_layers_that_meet_the_budget():
    with Workbench(hm.TINY, "onnx-cpu", weights="random", calib="synthetic", calib_size=8, options=NAIVE,
                   val_size=96, threads=1) as bench:
        # Random weights: judge against the FP32 model's own predictions, so the FP32 top-1 is 100% and
        # the drop is exactly the share of videos whose INT8 top-1 flips. How many flip depends on the CPU's
        # INT8 kernels (12 videos flipped some on an AVX2 machine, none with AVX-512 VNNI; 96 flip 2 there).
        bench.val.labels = [int(np.argsort(-softmax(r).mean(0), kind="stable")[0]) for r in bench.val.ref]
        ranking = sensitivity(bench, "quantize-one", rank_videos=None)
        rows = ranking["layers"]
        assert len(rows) == len(bench.layers) and [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)
        assert {r["op"] for r in rows} >= {"Conv", "MatMul", "Add", "Softmax"}  # naive: activations too
        order = [r["layer"] for r in rows]
        kept, naive, trials = search(bench, order, max_drop=0.0)
        print(f"naive full INT8: drop {naive['top1_drop']:.1f}; kept {len(kept)} of {len(order)}: {kept}")
        assert naive["top1_drop"] > 0  # otherwise there is nothing to fall back from
        assert 0 < len(kept) < len(order)
        assert bench.variant(kept)["top1_drop"] <= 0
        assert bench.variant(kept[:-1])["top1_drop"] > 0  # one layer fewer misses the budget
        assert trials[0]["kept"] == 0 and any(t["kept"] == len(kept) for t in trials)
        # with these labels the drop is 100 - agreement: an agreement budget keeps the same layers
        assert search(bench, order, max_drop=100.0, min_agreement=100.0)[0] == kept


def test_cli_sensitivity_then_build_with_max_drop(tmp_path):
    prelude = "import sys; sys.path.insert(0, 'tests'); import harness_models"
    ranking = tmp_path / "rank.json"
    common = ["--model", hm.TINY, "--target", "onnx-cpu", "--weights", "random", "--calib-size", "8"]
    proc = run_cli("sensitivity", *common, "--val-size", "8", "--threads", "1", "--out", str(ranking), prelude=prelude)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(ranking.read_text())["layers"]
    assert rows[0]["rank"] == 1 and (tmp_path / "rank.md").read_text().count("\n|") >= len(rows)
    proc = run_cli("build", *common, "--precision", "int8", "--max-drop", "0", "--val-size", "8",
                   "--sensitivity", str(ranking), "--out", str(tmp_path / "art"), prelude=prelude)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "art" / f"{hm.TINY}-onnx-cpu-int8" / "manifest.json").read_text())
    record = manifest["quantization"]["mixed_precision"]
    kept = [k["layer"] for k in record["kept_float"]]
    assert record["reached"] and record["final"]["top1_drop"] <= 0
    assert manifest["quantization"]["kept_float"] == kept
    assert kept == [r["layer"] for r in rows[: len(kept)]]  # the top of the ranking
    proc = run_cli("build", *common, "--precision", "fp32", "--max-drop", "1", prelude=prelude)
    assert proc.returncode == 2 and "--max-drop applies to int8 builds" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model", ["x3d_synth", "uniformerv2_synth", "timesformer_synth", "tubevit_synth"])
def test_naive_full_int8_of_a_reference_model_meets_the_budget(model, tmp_path):
    """The demonstration on a trained SynthMotion model: every op quantized (convs, activations, residual adds,
    pooling; softmax/LayerNorm in the transformers), min/max ranges, on the 200-clip val split. Where that loses
    more than the budget, the search keeps the fewest layers in float that meet it; where it does not, nothing."""
    if reference_weights(model, trained=True) is None:
        pytest.skip(f"{model} reference weights not trained to 90% yet (scripts/train_reference.py --model {model})")
    from edgevid.harness.mixed import build_with_budget

    budget = BUDGETS.get(model, 1.0)
    artifact = build_with_budget(model, "onnx-cpu", budget, calib="synthetic", calib_size=32, out=tmp_path,
                                 options=NAIVE, val_size=200, rank_videos=32, threads=1)
    record = artifact.manifest.quantization["mixed_precision"]
    kept = [k["layer"] for k in record["kept_float"]]
    print(f"{model}: naive drop {record['naive']['top1_drop']:.1f} (agreement {record['naive']['agreement']:.1f}%,"
          f" SQNR {record['naive']['sqnr_db']:.1f} dB); kept {kept}; final drop {record['final']['top1_drop']:.1f};"
          f" {record['variant_builds']} variants in {record['search_seconds']} s")
    from edgevid.data.synthmotion import ensure_split
    from edgevid.harness.eval import evaluate

    held_out = evaluate(artifact.path, ensure_split("test", 200), threads=1)  # not the split the search chose on
    print(f"  on the held-out test split: top-1 {held_out['top1']:.1f} (FP32 {held_out['ref_top1']:.1f}),"
          f" agreement {held_out['agreement']:.1f}%")
    if model in BUDGETS:
        assert record["naive"]["top1_drop"] > budget, "the demonstration needs a naive recipe that misses the budget"
    assert record["reached"] and record["final"]["top1_drop"] <= budget
    assert artifact.manifest.quantization["kept_float"] == kept
    if record["naive"]["top1_drop"] <= budget:
        assert kept == []
    else:  # minimal along the ranking: one layer fewer missed the budget
        assert any(t["kept"] == len(kept) - 1 and t["top1_drop"] > budget for t in record["trials"])
