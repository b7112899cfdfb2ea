"""The ExecuTorch backend: .pte build (FP32 / PT2E INT8), full XNNPACK delegation, runner, bad input.

Every test lowers real graphs with executorch 1.4.1 and runs the .pte with its runtime (no mocks).
Accuracy on the SynthMotion reference models is a slow test that skips while weights are absent.
"""

from __future__ import annotations

import importlib.util
import json

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch", reason="ExecuTorch is not installed: pip install 'edgevid[build-executorch]'")
torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgevid.backends import BuildRequest, get_backend, open_runner  # noqa: E402
from edgevid.backends.executorch import COREML_FILE, DELEGATION_FILE, MODEL_FILE, ExecuTorchRunner  # noqa: E402
from edgevid.errors import ArtifactError, DataError, EdgevidError  # noqa: E402
from edgevid.backends.executorch.rewrite import Conv3dSpec, StrategyChooser, rewrite_for_xnnpack  # noqa: E402
from edgevid.backends.executorch.rewrite.xnnpack import delegation_report, export, lower, quantize  # noqa: E402
from edgevid.spec import KINETICS_NORM, ClipSpec, ModelSpec  # noqa: E402
from edgevid.targets import get_target  # noqa: E402
from helpers import random_model  # noqa: E402

SYNTH_MODELS = ("x3d_synth", "uniformerv2_synth", "timesformer_synth", "tubevit_synth")
SPEC = ModelSpec(name="tiny", family="x3d", clip=ClipSpec(frames=4, stride=2, crop=16, short_side=16),
                 norm=KINETICS_NORM, num_classes=5, label_set="synthmotion")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Tiny(nn.Module):
    """Conv3d stem + BN3d, depthwise 3x3x3, SE gate, pooled Linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, (3, 3, 3), (1, 2, 2), 1, bias=False), nn.BatchNorm3d(8), nn.ReLU())
        self.dw = nn.Conv3d(8, 8, 3, padding=1, groups=8)
        self.gate = nn.Conv3d(8, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.stem(x)
        y = self.dw(y) * torch.sigmoid(self.gate(y.mean((2, 3, 4), keepdim=True)))
        return self.head(nn.functional.silu(y).mean((2, 3, 4)))


def _tiny():
    torch.manual_seed(0)
    return Tiny().eval()


def _calib(n=4):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, 4, 16, 16)).astype(np.float32) for _ in range(n)]


def _build(tmp_path, model=None, precision="fp32", target="android", calib=None, **options):
    request = BuildRequest(model=model or _tiny(), spec=SPEC, target=get_target(target), precision=precision,
                           out_dir=tmp_path, calib=calib, options={"conv3d_strategy": "taps", **options})
    return get_backend("executorch").build(request)


def _report(tmp_path) -> dict:
    return json.loads((tmp_path / DELEGATION_FILE).read_text())


def test_fp32_pte_is_fully_delegated_and_matches_pytorch(tmp_path):
    model = _tiny()
    result = _build(tmp_path, model)
    report = _report(tmp_path)
    assert report["gemm_flops_delegated_share"] == 1.0 and report["gemm_flops"] > 0
    assert report["not_delegated"] == []
    assert report["rewrite"]["conv3d"] == 3 and report["rewrite"]["batch_norms_folded"] == 1
    assert "100.0%" in result.status["delegation"]
    runner = ExecuTorchRunner(tmp_path / MODEL_FILE, (1, 3, 4, 16, 16), threads=1)
    clip = np.random.default_rng(1).standard_normal((1, 3, 4, 16, 16)).astype(np.float32)
    expected = model(torch.from_numpy(clip)).detach().numpy()
    got = runner(clip)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    with pytest.raises(DataError, match="shape"):
        runner(clip[:, :, :2])


def test_int8_quantizes_convs_and_linears_and_keeps_float_modules(tmp_path):
    plain, kept = tmp_path / "plain", tmp_path / "kept"
    plain.mkdir(), kept.mkdir()
    result = _build(plain, precision="int8", calib=_calib())
    _build(kept, precision="int8", calib=_calib(), keep_float="head,dw")
    assert "per-channel symmetric" in result.quantization["scheme"]

    def weight_quantized(folder) -> set:
        return {n["module"] for n in _report(folder)["nodes"] if n.get("int8")}

    assert {"stem.0", "dw", "gate", "head"} == weight_quantized(plain)
    assert _report(plain)["gemm_flops_int8_share"] == 1.0
    assert weight_quantized(kept) & {"dw", "head"} == set() and "stem.0" in weight_quantized(kept)
    for folder in (plain, kept):
        report = _report(folder)
        assert report["gemm_flops_delegated_share"] == 1.0 and report["not_delegated"] == []
    clip = torch.from_numpy(_calib(1)[0])
    fp32 = _tiny()(clip).detach().numpy()[0]
    int8 = ExecuTorchRunner(plain / MODEL_FILE, (1, 3, 4, 16, 16), threads=1)(clip.numpy())[0]
    assert np.dot(fp32, int8) / (np.linalg.norm(fp32) * np.linalg.norm(int8)) > 0.98



def test_minmax_activation_observer_sets_ranges_from_the_extremes(tmp_path):
    """``activation_observer=minmax``: each activation's range is the calibration extremes (PT2E's
    MinMaxObserver), recorded in the manifest; histogram (the default) clips outliers instead."""
    from torchao.quantization.pt2e import HistogramObserver, MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgevid.backends.executorch.rewrite.xnnpack import bincount_histogram_observer, xnnpack_quantizer

    example = torch.from_numpy(_calib(1)[0])
    program = export(rewrite_for_xnnpack(_tiny(), example, strategy="taps").graph_module, example)
    for name, kind in (("minmax", MinMaxObserver), ("histogram", bincount_histogram_observer())):
        prepared = prepare_pt2e(program.module(), xnnpack_quantizer(activation_observer=name))
        observers = [m for m in prepared.modules() if isinstance(m, (MinMaxObserver, HistogramObserver))]
        activations = [m for m in observers if m.qscheme == torch.per_tensor_affine]
        assert activations and all(type(m) is kind for m in activations), name
    folder = tmp_path / "minmax"
    folder.mkdir()
    result = _build(folder, precision="int8", calib=_calib(), activation_observer="minmax")
    assert result.quantization["activation_observer"] == "minmax" and "minmax observer" in result.quantization["scheme"]
    clip = _calib(1)[0]
    fp32 = _tiny()(torch.from_numpy(clip)).detach().numpy()[0]
    int8 = ExecuTorchRunner(folder / MODEL_FILE, (1, 3, 4, 16, 16), threads=1)(clip)[0]
    assert np.dot(fp32, int8) / (np.linalg.norm(fp32) * np.linalg.norm(int8)) > 0.98
    with pytest.raises(ValueError, match="activation_observer 'mse'"):
        xnnpack_quantizer(activation_observer="mse")


def test_bincount_histogram_observer_equals_pt2e_histogram_observer():
    """The histogram observer calibration uses (``bincount`` instead of ``torch.histc``) keeps
    PT2E's ``HistogramObserver`` state exactly - range, every bin's count, merges of ranges that
    grow call after call - so it picks the same scale and zero point."""
    from torchao.quantization.pt2e import HistogramObserver

    from edgevid.backends.executorch.rewrite.xnnpack import bincount_histogram_observer

    kwargs = dict(eps=2**-12, dtype=torch.qint8, qscheme=torch.per_tensor_affine, quant_min=-128, quant_max=127)
    generator = torch.Generator().manual_seed(0)
    for trial in range(8):
        reference, fast = HistogramObserver(**kwargs), bincount_histogram_observer()(**kwargs)
        for call in range(6):
            x = torch.randn(20_000, generator=generator) * (1 + 0.3 * call) ** (trial % 3) + 0.1 * trial
            if trial % 2:
                x = torch.nn.functional.gelu(x)
            x[:: 997] *= 1 + trial  # outliers
            reference(x), fast(x)
            assert torch.equal(reference.min_val, fast.min_val) and torch.equal(reference.max_val, fast.max_val)
            assert torch.equal(reference.histogram, fast.histogram), (trial, call)
        assert all(torch.equal(a, b) for a, b in zip(reference.calculate_qparams(), fast.calculate_qparams()))
    constant = bincount_histogram_observer()(**kwargs)
    for _ in range(2):
        constant(torch.full((100,), 0.5))  # one value: an empty range goes through torch.histc
    assert constant.histogram.sum() == 200


def test_int8_adds_false_leaves_every_add_in_float(tmp_path):
    """``int8_adds=false``: an add (here the Conv3d taps' partial sums) is not requantized to int8 -
    a partial sum flows in float into the next add; only a sum that feeds an int8 op is quantized,
    as that op's input. The default quantizes every add's output. The build records which, and runs."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgevid.backends.executorch.rewrite.xnnpack import xnnpack_quantizer

    example = torch.from_numpy(_calib(1)[0])
    program = export(rewrite_for_xnnpack(_tiny(), example, strategy="taps").graph_module, example)
    add = torch.ops.aten.add.Tensor

    def adds(int8_adds: bool) -> list[tuple[bool, bool]]:
        """(observed, feeds only adds) of every add of the prepared graph."""
        prepared = prepare_pt2e(program.module(), xnnpack_quantizer(int8_adds=int8_adds))
        return [(any(u.op == "call_module" and "activation_post_process" in str(u.target) for u in n.users),
                 all(u.op == "call_function" and u.target == add for u in n.users))
                for n in prepared.graph.nodes if n.op == "call_function" and n.target == add]

    default, floating = adds(True), adds(False)
    assert default and all(observed for observed, _ in default)
    partial_sums = [observed for observed, feeds_adds in floating if feeds_adds]
    assert len(floating) == len(default) and partial_sums and not any(partial_sums)
    folder = tmp_path / "fadds"
    folder.mkdir()
    result = _build(folder, precision="int8", calib=_calib(), int8_adds=False, conv3d_strategy="taps")
    assert result.quantization["adds"] == "float"
    clip = _calib(1)[0]
    fp32 = _tiny()(torch.from_numpy(clip)).detach().numpy()[0]
    int8 = ExecuTorchRunner(folder / MODEL_FILE, (1, 3, 4, 16, 16), threads=1)(clip)[0]
    assert np.dot(fp32, int8) / (np.linalg.norm(fp32) * np.linalg.norm(int8)) > 0.98


def test_int8_default_rewrites_each_temporal_conv_as_one_conv2d(tmp_path):
    """With no ``conv3d_strategy``, INT8 uses ``channels`` (one requantization per temporal Conv3d,
    no timing micro-benchmarks); FP32 keeps the timed choice."""
    from edgevid.backends.executorch import default_conv3d_strategy

    request = BuildRequest(model=_tiny(), spec=SPEC, target=get_target("android"), precision="int8", out_dir=tmp_path,
                           calib=_calib(), options={})
    get_backend("executorch").build(request)
    counts = _report(tmp_path)["rewrite"]["conv3d_by_strategy"]
    assert counts["channels"] > 0 and counts["taps"] == 0
    assert "strategy benchmarks" not in request.stages.seconds
    assert default_conv3d_strategy("fp32") == "auto"


def test_quantizable_layers_are_the_modules_keep_float_takes():
    request = BuildRequest(model=_tiny(), spec=SPEC, target=get_target("android"), precision="int8", out_dir=Path("."))
    layers = get_backend("executorch").quantizable_layers(request)
    assert [(layer.name, layer.op) for layer in layers] == [("stem.0", "Conv"), ("dw", "Conv"), ("gate", "Conv"),
                                                           ("head", "Linear")]

def test_bad_options_and_calibration_are_one_line_errors(tmp_path):
    with pytest.raises(EdgevidError, match="--keep-float hed: the model has no module of that name. Did you mean head"):
        _build(tmp_path, precision="int8", calib=_calib(), keep_float=["hed"])
    with pytest.raises(DataError, match="INT8 needs calibration clips"):
        _build(tmp_path, precision="int8", calib=None)
    with pytest.raises(DataError, match=r"calibration clip 0 has shape \(1, 3, 8, 16, 16\)"):
        _build(tmp_path, precision="int8", calib=[np.zeros((1, 3, 8, 16, 16), np.float32)])
    with pytest.raises(EdgevidError, match="conv3d_strategy"):
        _build(tmp_path, conv3d_strategy="fastest")


class MaxPooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x):
        return self.pool(self.conv(x)).mean((2, 3, 4))


def test_op_without_2d_form_is_named_and_the_build_fails_if_it_cannot_run(tmp_path):
    """MaxPool3d has no rewrite: it stays 5-D, outside XNNPACK; the portable kernels cannot run it."""
    torch.manual_seed(0)
    try:
        result = _build(tmp_path, MaxPooled().eval())
    except EdgevidError as exc:
        assert "does not run" in str(exc) and "max_pool3d" in str(exc)
    else:  # a runtime that can run it: the build must still say what stays outside XNNPACK
        assert any("max_pool3d" in note and "pool" in note for note in result.notes)


# Lowering a whole model takes minutes on a shared 2-core machine: one family runs in `make test`
# (the tiny models above cover Conv3d/BN/SE/depthwise), every family and precision in `make bench`.
@pytest.mark.parametrize("name,precision", [("tubevit_synth", "int8")] + [
    pytest.param(name, precision, marks=pytest.mark.slow)
    for name, precision in [("x3d_synth", "int8"), ("x3d_synth", "fp32"), ("uniformerv2_synth", "fp32"),
                            ("uniformerv2_synth", "int8"), ("timesformer_synth", "fp32"),
                            ("timesformer_synth", "int8"), ("tubevit_synth", "fp32")]])
def test_every_family_is_fully_delegated(name, precision):
    """The goal of the rewrite: 100% of conv/linear/matmul FLOPs in XNNPACK, no op left outside."""
    model, spec = random_model(name)
    example = torch.randn(spec.input_shape(1))
    program = export(rewrite_for_xnnpack(model, example, strategy="taps").graph_module, example)
    if precision == "int8":
        program = quantize(program, example, [example])
    report = delegation_report(lower(program))
    assert report["gemm_flops_delegated_share"] == 1.0
    assert [(n["op"], n["module"]) for n in report["not_delegated"]] == []
    assert report["delegated_subgraphs"] == 1


class PassBait(nn.Module):
    """2-D ops that the XNNPACK delegate's conditional passes look for: a standalone BatchNorm,
    a single-weight PReLU, max-pool, bilinear upsampling, a 1-D conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.prelu = nn.PReLU()
        self.conv1d = nn.Conv1d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.bn(torch.relu(self.conv(x)))
        y = nn.functional.max_pool2d(self.prelu(y), 2, 2, 0)  # explicit stride: the partitioner reads args[2]
        y = nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.conv1d(y.flatten(2)).mean(-1)


def _plain_pte(program) -> bytes:
    """ExecuTorch's own lowering, without edgevid's build-time levers."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def test_lowering_levers_leave_the_pte_byte_identical(caplog):
    """``lower``/``pte_bytes`` share provenance objects and skip XNNPACK passes with nothing to
    rewrite; the .pte must be the one ExecuTorch writes without them, whether passes are skipped
    (the rewritten INT8 Tiny: no BN/PReLU/pool indices/upsample/1-D conv left) or needed (PassBait)."""
    import logging

    from torch.fx.traceback import NodeSource

    from edgevid.backends.executorch.rewrite.xnnpack import pte_bytes

    example = torch.randn(1, 3, 4, 16, 16)
    tiny = export(rewrite_for_xnnpack(_tiny(), example, strategy="taps").graph_module, example)
    tiny = quantize(tiny, example, [example])
    torch.manual_seed(0)
    bait_model = PassBait().eval()
    with torch.no_grad():
        bait_model.bn.running_mean.uniform_(-1, 1), bait_model.bn.running_var.uniform_(0.5, 2)
    bait = export(bait_model, torch.randn(1, 3, 8, 8))
    skipped = {}
    for name, program in (("tiny", tiny), ("bait", bait)):
        with caplog.at_level(logging.DEBUG, logger="edgevid"):
            caplog.clear()
            ours = pte_bytes(lower(program))
        skipped[name] = {r.getMessage().split()[2] for r in caplog.records if "skipped" in r.getMessage()}
        assert ours == _plain_pte(program), name
        assert "__deepcopy__" not in NodeSource.__dict__  # the sharing ends with the lowering
    assert {"FuseBatchNormPass", "DecomposeBatchNorm", "PReLUReshapePass", "RemoveGetItemPass",
            "Conv1dUnsqueezePass", "ConvertToUpsampleBilinear2d", "ConvertToSDPAPass"} == skipped["tiny"]
    # PassBait's BN, 1-D conv and upsampling reach the delegate as the ops these passes rewrite (its
    # PReLU and max-pool stay whole: prelu.default, max_pool2d.default, nothing for the other two)
    assert {"FuseBatchNormPass", "DecomposeBatchNorm", "Conv1dUnsqueezePass",
            "ConvertToUpsampleBilinear2d"}.isdisjoint(skipped["bait"])


def test_strategy_chooser_measures_once_and_caches(tmp_path, monkeypatch):
    spec = Conv3dSpec.of((1, 4, 4, 8, 8), (4, 1, 3, 3, 3), padding=1, groups=4)
    chooser = StrategyChooser("fp32", threads=1, path=tmp_path / "cache.json")
    first = chooser(spec, "layer")
    assert first in ("taps", "channels") and not chooser.decisions[0]["cached"]
    assert set(chooser.decisions[0]["ms"]) == {"taps", "channels"} and all(v > 0 for v in chooser.decisions[0]["ms"].values())
    import edgevid.backends.executorch.rewrite.choose as choose

    monkeypatch.setattr(choose, "measure_all", lambda *a, **k: pytest.fail("a cached decision was measured again"))
    again = StrategyChooser("fp32", threads=1, path=tmp_path / "cache.json")
    assert again(spec, "layer") == first and again.decisions[0]["cached"]
    assert "fp32|threads=1" in next(iter(json.loads((tmp_path / "cache.json").read_text())))


def test_artifact_end_to_end_with_runner_and_bench(tmp_path):
    """`edgevid build` path: manifest, hashes, delegation report inside, open_runner, bench, tamper check."""
    from edgevid.bench import bench_artifact
    from edgevid.build import build_artifact
    from edgevid.models import get_spec

    artifact = build_artifact("x3d_synth", "android", "fp32", weights="random", out=tmp_path,
                              options={"conv3d_strategy": "channels"})
    assert {MODEL_FILE, DELEGATION_FILE} <= set(artifact.manifest.files)
    shape = get_spec("x3d_synth").input_shape(1)
    assert artifact.manifest.backend == "executorch" and artifact.manifest.input_shape == list(shape)
    runner = open_runner(artifact.path, threads=1)
    from edgevid.harness.eval import reference_runner

    clip = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = reference_runner(artifact.manifest, threads=1)(clip)
    assert np.abs(runner(clip) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    result = bench_artifact(artifact.path, threads=1, baselines=(), min_seconds=0.2)
    assert result["runs"]["artifact"]["mean_ms"] > 0
    with open(artifact.file(MODEL_FILE), "r+b") as handle:  # tamper
        handle.seek(200)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        open_runner(artifact.path, threads=1)
    artifact.file(MODEL_FILE).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        open_runner(artifact.path, threads=1)


def test_ios_target_writes_a_coreml_pte_where_coremltools_is_installed(tmp_path):
    result = _build(tmp_path, target="ios", coreml=True)
    assert (tmp_path / MODEL_FILE).is_file()  # the XNNPACK .pte is always there
    if importlib.util.find_spec("coremltools") is None:
        assert "not installed" in result.status["coreml"]
        return
    assert result.status["coreml"].startswith("exported"), result.status["coreml"]
    pte = (tmp_path / COREML_FILE).read_bytes()
    assert b"CoreMLBackend" in pte
    from executorch.runtime import Runtime

    with pytest.raises(RuntimeError):  # Linux wheels have no Core ML runtime: export only
        Runtime.get().load_program(pte).load_method("forward").execute([torch.zeros(1, 3, 4, 16, 16)])


# ---- accuracy on the SynthMotion reference models ---------------------------------------------


def _reference_weights(name):
    from helpers import reference_weights

    path = reference_weights(name, trained=True)
    if path is None:
        pytest.skip(f"no {name} reference weights trained to 90% yet (scripts/train_reference.py writes them)")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SYNTH_MODELS))
def test_int8_accuracy_on_synthmotion(name, tmp_path):
    """INT8 .pte top-1 within 1.0 point of the FP32 .pte and >= 97% agreement with PyTorch FP32."""
    _reference_weights(name)
    from edgevid.build import build_artifact
    from edgevid.data.synthmotion import ensure_split
    from edgevid.harness.eval import evaluate

    data = ensure_split("val", 200)
    results = {}
    for precision in ("fp32", "int8"):
        artifact = build_artifact(name, "android", precision, out=tmp_path, calib_size=100)
        results[precision] = evaluate(artifact.path, data, threads=2)
    fp32, int8 = results["fp32"], results["int8"]
    print(f"{name}: fp32 top-1 {fp32['top1']:.1f}, int8 top-1 {int8['top1']:.1f},"
          f" int8 agreement {int8['agreement']:.1f}%")
    assert int8["top1"] >= fp32["top1"] - 1.0
    assert int8["agreement"] >= 97.0
