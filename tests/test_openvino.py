"""OpenVINO backend: IR from torch.export, FP32/FP16/INT8 (NNCF), accuracy control, runner, bad input.

Unit tests use small nn.Modules written here (an X3D-like conv net, a one-block video
transformer) so a build takes seconds; the reference-model accuracy test is marked slow and
skips while a SynthMotion reference model has no weights.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("openvino", reason="openvino not installed: pip install 'edgevid[openvino]'")
pytest.importorskip("nncf", reason="nncf not installed: pip install 'edgevid[build-openvino]'")
import openvino as ov  # noqa: E402

from edgevid.artifact import Artifact, Manifest, WeightsInfo, finalize_manifest, staging_dir  # noqa: E402
from edgevid.backends import BuildRequest, open_runner  # noqa: E402
from edgevid.backends.openvino import (  # noqa: E402
    BACKEND, RUNTIME_FILE, DeviceUnavailable, layer_precisions, quantize_int8, top1_validator)
from edgevid.errors import ArtifactError, DataError, EdgevidError  # noqa: E402
from edgevid.spec import KINETICS_NORM, ClipSpec, ModelSpec  # noqa: E402
from edgevid.targets import get_target  # noqa: E402
from helpers import assert_one_line_error, random_model, reference_weights, run_cli  # noqa: E402

AVAILABLE = ov.Core().available_devices
CLASSES = 4


def spec_for(family: str, transformer: bool = False) -> ModelSpec:
    return ModelSpec(name=f"tiny_{family}", family=family, clip=ClipSpec(frames=4, stride=1, crop=16, short_side=16),
                     norm=KINETICS_NORM, num_classes=CLASSES, label_set="synthmotion", transformer=transformer)


class TinyX3D(nn.Module):
    """Stem conv, depthwise 3x3x3 conv with BN + SiLU (X3D's pattern), pointwise conv, pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv3d(3, 24, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(24)
        self.dw = nn.Conv3d(24, 24, 3, padding=1, groups=24, bias=False)
        self.bn2 = nn.BatchNorm3d(24)
        self.pw = nn.Conv3d(24, 48, 1)
        self.head = nn.Linear(48, CLASSES)

    def forward(self, x):
        x = nn.functional.silu(self.bn1(self.stem(x)))
        x = nn.functional.silu(self.bn2(self.dw(x)))
        x = torch.relu(self.pw(x))
        return self.head(x.mean((2, 3, 4)))


class TinyViT(nn.Module):
    """Tubelet embedding, one pre-norm attention + MLP block, mean pooling, linear head."""

    def __init__(self, dim: int = 32, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.embed = nn.Conv3d(3, dim, (2, 4, 4), stride=(2, 4, 4))
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)  # N, L, D
        n, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(n, length, dim))
        x = x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-scaled random weights, norm scales near 1, small biases, random BN statistics (so BN folding is not the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim > 1:
                p.copy_(noise * (2 / p[0].numel()) ** 0.5)
            else:  # norm scales near 1, biases near 0
                p.copy_(1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def clips(n: int, seed: int, scale: float = 1.0) -> list[np.ndarray]:
    """Noise over a random per-clip colour/brightness per frame, so pooled features (and the
    logits) differ from clip to clip the way they do for real videos."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        clip = 0.5 * rng.standard_normal((1, 3, 4, 16, 16)) + rng.standard_normal((1, 3, 4, 1, 1))
        clip += np.linspace(-1, 1, 16) * rng.standard_normal((1, 3, 1, 1, 1))
        out.append((clip * scale).astype(np.float32))
    return out


def build(tmp_path, model, spec, precision, target="intel-cpu", calib=None, **options) -> Artifact:
    """What `edgevid build` does around the backend: staging folder, manifest with hashes, rename."""
    target_obj = get_target(target)
    final = tmp_path / f"{spec.name}-{target}-{precision}"
    with staging_dir(final) as tmp:
        result = BACKEND.build(BuildRequest(model=model, spec=spec, target=target_obj, precision=precision,
                                            out_dir=tmp, calib=calib, options=options))
        finalize_manifest(tmp, Manifest(
            model=spec.name, spec=spec, labels=[str(i) for i in range(CLASSES)], target=target, backend="openvino",
            device=target_obj.device, precision=precision, weights=WeightsInfo(source="random", random=True),
            quantization=result.quantization, input_shape=list(spec.input_shape()), versions=result.versions,
            fingerprint=result.fingerprint, status=result.status, notes=result.notes))
    return Artifact(final)


def torch_out(model, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(batch)).numpy()


def sqnr_db(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / ((ours - ref) ** 2).sum()))


@pytest.fixture(scope="module")
def x3d():
    return seeded(TinyX3D())


@pytest.fixture(scope="module")
def vit():
    return seeded(TinyViT(), seed=1)


@pytest.fixture(scope="module")
def fp32(x3d, tmp_path_factory):
    return build(tmp_path_factory.mktemp("ov32"), x3d, spec_for("x3d"), "fp32")


@pytest.fixture(scope="module")
def int8(x3d, tmp_path_factory):
    return build(tmp_path_factory.mktemp("ov8"), x3d, spec_for("x3d"), "int8", calib=clips(32, seed=2))


# --- build ---------------------------------------------------------------------------------------

def test_fp32_ir_matches_eager_and_names_layers_after_modules(fp32, x3d):
    assert {"model.xml", "model.bin", RUNTIME_FILE} <= set(fp32.manifest.files)
    batch = np.concatenate(clips(3, seed=5))
    with open_runner(fp32.path) as runner:
        ours = runner(batch)
    np.testing.assert_allclose(ours, torch_out(x3d, batch), rtol=1e-4, atol=1e-5)
    ir = ov.Core().read_model(str(fp32.file("model.xml")))
    assert ir.input(0).get_any_name() == "input" and list(ir.input(0).get_shape()) == [1, 3, 4, 16, 16]
    int8_layers, float_layers = layer_precisions(ir)
    assert not int8_layers and sorted(float_layers) == ["dw", "head", "pw", "stem"]  # BN folded into stem and dw
    assert fp32.manifest.status["device_compile"].startswith("compiled and checked on CPU")


def test_fp16_compresses_weights(fp32, x3d, tmp_path):
    fp16 = build(tmp_path, x3d, spec_for("x3d"), "fp16")
    weights = ov.Core().read_model(str(fp16.file("model.xml")))
    constants = {op.get_output_element_type(0).get_type_name() for op in weights.get_ordered_ops()
                 if op.get_type_name() == "Constant" and np.prod(list(op.get_output_shape(0))) > 16}
    assert "f16" in constants and "f32" not in constants
    assert fp16.file("model.bin").stat().st_size < 0.6 * fp32.file("model.bin").stat().st_size
    batch = np.concatenate(clips(2, seed=6))
    with open_runner(fp16.path) as runner:
        np.testing.assert_allclose(runner(batch), torch_out(x3d, batch), rtol=2e-2, atol=2e-3)


def test_int8_conv_recipe_quantizes_every_conv(int8, x3d):
    q = int8.manifest.quantization
    assert q["preset"] == "mixed" and q["bias_correction"] == "full" and q["weights"].endswith("per-channel")
    assert q["model_type"] == "default" and q["calibration_clips"] == 32
    ir = ov.Core().read_model(str(int8.file("model.xml")))
    int8_layers, float_layers = layer_precisions(ir)
    assert {"stem", "dw", "pw"} <= set(int8_layers), (int8_layers, float_layers)
    assert q["layers_int8"] == len(int8_layers) and q["layers_float"] == float_layers
    weights = [op for op in ir.get_ordered_ops() if op.get_type_name() == "Constant"
               and op.get_output_element_type(0).get_type_name() == "i8"]
    assert weights, "quantized weights are stored as int8"
    batch = np.concatenate(clips(16, seed=7))
    with open_runner(int8.path) as runner:
        ours, ref = runner(batch), torch_out(x3d, batch)
    print(f"tiny X3D INT8 vs eager: SQNR {sqnr_db(ours, ref):.1f} dB")
    # measured here: 10.6 dB (random toys have no redundancy); a broken INT8 model lands near 0 dB
    assert sqnr_db(ours, ref) > 8.0


@pytest.mark.parametrize("alpha", ["abc", True, [0.5]])
def test_smooth_quant_alpha_option_must_be_a_number(alpha):
    from edgevid.backends.openvino import quantization_settings
    from edgevid.models import get_spec

    uniformer, timesformer = get_spec("uniformerv2_synth"), get_spec("timesformer_synth")
    assert quantization_settings(uniformer, "CPU", {})[1]["smooth_quant_alpha"] == -1  # its spec: off by default
    assert quantization_settings(timesformer, "CPU", {})[1]["smooth_quant_alpha"] > 0  # NNCF's transformer default
    assert quantization_settings(uniformer, "CPU", {"smooth_quant_alpha": 0.5})[1]["smooth_quant_alpha"] == 0.5
    assert "smooth_quant_alpha" not in quantization_settings(get_spec("x3d_synth"), "CPU", {})[1]  # no SmoothQuant
    with pytest.raises(EdgevidError, match="option smooth_quant_alpha=.*give a number"):
        quantization_settings(timesformer, "CPU", {"smooth_quant_alpha": alpha})


def test_transformer_recipe_keeps_norm_softmax_gelu_float(vit, tmp_path):
    art = build(tmp_path, vit, spec_for("timesformer", transformer=True), "int8", calib=clips(32, seed=3))
    q = art.manifest.quantization
    assert q["model_type"].startswith("TRANSFORMER")
    ir = ov.Core().read_model(str(art.file("model.xml")))
    int8_layers, _ = layer_precisions(ir)
    assert {"qkv", "proj", "fc1", "fc2"} <= set(int8_layers), int8_layers
    for op in ir.get_ordered_ops():
        if op.get_type_name() in ("MVN", "Softmax", "Gelu"):
            source = op.input(0).get_source_output().get_node().get_type_name()
            assert source != "FakeQuantize", f"{op.get_type_name()} reads a quantized input"
    assert q["smooth_quant_alpha"] > 0  # NNCF's transformer default (0.95); -1 would mean off
    batch = np.concatenate(clips(8, seed=8))
    with open_runner(art.path) as runner:
        ours, ref = runner(batch), torch_out(vit, batch)
    # a random toy has no activation outliers for SmoothQuant to fix, so the bound is loose
    # (measured here: 8.6 dB; 15.3 dB with smooth_quant_alpha=-1); an INT8 model that does not track FP32 lands near 0 dB
    print(f"tiny ViT INT8 vs eager: SQNR {sqnr_db(ours, ref):.1f} dB")
    assert sqnr_db(ours, ref) > 6.0


@pytest.mark.parametrize("name", ["uniformerv2_synth", "timesformer_synth", "tubevit_synth"])
def test_every_transformer_family_compiles_as_int8(name, tmp_path):
    """The real architectures, not a toy: each INT8 IR must compile on the CPU plugin and track FP32.
    (timesformer_synth once failed here: the CPU plugin rewrote the CLS mean behind an INT8 MatMul
    into an invalid Reshape.)"""
    from edgevid.build import build_artifact

    model, spec = random_model(name)
    art = build_artifact(name, "intel-cpu", "int8", weights="random", calib="synthetic", calib_size=8, out=tmp_path)
    assert art.manifest.quantization["layers_int8"] > 0
    # SmoothQuant is off (alpha -1) exactly for the specs that say it measurably costs accuracy
    assert (art.manifest.quantization["smooth_quant_alpha"] < 0) == (not spec.smooth_quant)
    # every MatMul of two activations stays float, also those outside NNCF's attention patterns
    assert art.manifest.quantization["activation_matmuls"] == "float"
    floats = art.manifest.quantization["float_activation_matmul_layers"]
    _, float_layers = layer_precisions(ov.Core().read_model(str(art.file("model.xml"))))
    assert floats and set(floats) <= set(float_layers), (floats, float_layers)
    clip = np.random.default_rng(0).standard_normal(spec.input_shape()).astype(np.float32)
    with open_runner(art.path) as runner:
        ours, ref = runner(clip), torch_out(model, clip)
    print(f"{name} INT8 vs eager (random weights): SQNR {sqnr_db(ours, ref):.1f} dB")
    assert ours.shape == ref.shape and sqnr_db(ours, ref) > 3.0


def test_tubevit_attention_pool_product_stays_float_unless_asked(tmp_path):
    """TubeViT's attention pool multiplies two activations outside NNCF's attention patterns: NNCF
    quantizes it (that cost tubevit_synth 0.7 points), so the transformer recipe keeps it float;
    ``float_activation_matmuls=false`` gives NNCF's own choice back."""
    from edgevid.backends.openvino import activation_matmuls, convert
    from edgevid.build import build_artifact
    from edgevid.targets import ShapePolicy

    precisions = {}
    for int8_products in (False, True):
        art = build_artifact("tubevit_synth", "intel-cpu", "int8", weights="random", calib="synthetic", calib_size=4,
                             out=tmp_path / str(int8_products), options={"float_activation_matmuls": not int8_products})
        precisions[int8_products] = layer_precisions(ov.Core().read_model(str(art.file("model.xml"))))
    pool = [name for name in precisions[False][1] if name.startswith("pool/")]
    assert pool, precisions[False][1]
    assert set(pool) <= set(precisions[True][0])  # quantized when asked
    model, spec = random_model("tubevit_synth")
    products = activation_matmuls(convert(model, spec, ShapePolicy()))
    assert set(pool) <= set(products)
    assert not any(name.endswith(("qkv", "proj", "fc1", "fc2", "head")) for name in products)  # weighted ones are not


def test_accuracy_control_keeps_sensitive_layers_float(x3d, fp32):
    """Calibrating on clips 200x too large leaves INT8 too coarse for real inputs; with max_drop
    the accuracy-control loop must revert layers to float until top-1 is within the budget, and
    the manifest description must name them."""
    ir = ov.Core().read_model(str(fp32.file("model.xml")))
    validation = [(c, int(torch_out(x3d, c).argmax())) for c in clips(40, seed=9)]  # FP32 top-1 = 100%
    bad_calib = clips(16, seed=10, scale=200.0)
    nncf_ranges = {"activation_range": "default"}  # NNCF's own ranges; the histogram ones shrug off the bad clips
    plain, _ = quantize_int8(ir.clone(), bad_calib, spec_for("x3d"), "CPU", nncf_ranges)
    plain_top1, _ = top1_validator(ov.Core().compile_model(plain, "CPU"), validation)
    assert plain_top1 < 0.9, "precondition: the badly calibrated INT8 model loses accuracy"
    final, described = quantize_int8(ir.clone(), bad_calib, spec_for("x3d"), "CPU", nncf_ranges, validation, max_drop=5.0)
    ac = described["accuracy_control"]
    assert ac["fp32_top1"] == 100.0 and ac["reached"] and ac["int8_top1"] >= 95.0, ac
    kept = described["kept_float_by_accuracy_control"]
    int8_layers, float_layers = layer_precisions(final)
    assert kept and int8_layers, "some layers reverted to float, others still INT8"
    assert set(kept) & {"stem", "dw", "pw", "head"} <= set(float_layers)
    final_top1, _ = top1_validator(ov.Core().compile_model(final, "CPU"), validation)
    assert final_top1 >= 0.95



def test_keep_float_layers_stay_float_and_are_listed(x3d, tmp_path):
    """The harness's hook (sensitivity, --max-drop --min-agreement): named layers go to NNCF's
    ignored_scope, every other layer is still INT8, and a misspelt name is a one-line error."""
    from edgevid.backends.base import QuantLayer

    request = BuildRequest(model=x3d, spec=spec_for("x3d"), target=get_target("intel-cpu"), precision="int8",
                           out_dir=tmp_path, calib=clips(16, seed=2))
    layers = BACKEND.quantizable_layers(request)
    assert [(layer.name, layer.op) for layer in layers] == [("stem", "Conv"), ("dw", "Conv"), ("pw", "Conv"),
                                                           ("head", "MatMul")]
    assert all(isinstance(layer, QuantLayer) for layer in layers)
    art = build(tmp_path, x3d, spec_for("x3d"), "int8", calib=clips(16, seed=2), keep_float=["dw", "head"])
    int8_layers, float_layers = layer_precisions(ov.Core().read_model(str(art.file("model.xml"))))
    assert set(float_layers) == {"dw", "head"} and set(int8_layers) == {"stem", "pw"}
    assert art.manifest.quantization["kept_float"] == ["dw", "head"]
    with pytest.raises(EdgevidError, match="--keep-float dww: no such layer.*Did you mean dw") as info:
        build(tmp_path / "bad", x3d, spec_for("x3d"), "int8", calib=clips(4, seed=2), keep_float="stem,dww")
    assert "\n" not in str(info.value)

# --- run -----------------------------------------------------------------------------------------

def test_runner_modes_threads_and_precision(int8):
    batch = np.concatenate(clips(3, seed=11))
    with open_runner(int8.path, threads=1, mode="latency") as latency:
        assert latency.config == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                  "INFERENCE_NUM_THREADS": "1"}
        assert latency.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert latency.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        one_by_one = np.concatenate([latency(c[None]) for c in batch])
        assert latency.input_shape == (1, 3, 4, 16, 16)
    with open_runner(int8.path, threads=2, mode="throughput") as throughput:
        assert throughput.config["PERFORMANCE_HINT"] == "THROUGHPUT"
        assert throughput.input_shape[0] == throughput.requests >= 1
        together = throughput(batch)  # 3 clips over the request queue (last chunk padded)
    assert together.shape == (3, CLASSES)
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)
    with open_runner(int8.path, threads=1, mode="stream") as stream:  # latency beside a decoder: not pinned
        assert stream.config["PERFORMANCE_HINT"] == "LATENCY" and stream.config["ENABLE_CPU_PINNING"] == "NO"
        assert stream.compiled.get_property("ENABLE_CPU_PINNING") is False
        np.testing.assert_allclose(np.concatenate([stream(c[None]) for c in batch]), one_by_one, rtol=1e-6, atol=1e-7)


def test_runner_path_imports_no_torch(int8):
    code = (
        "import sys, numpy as np\n"
        "from edgevid.backends import open_runner\n"
        f"r = open_runner({str(int8.path)!r}, threads=1)\n"
        "out = r(np.zeros(r.input_shape, np.float32))\n"
        "assert out.shape == (1, 4), out.shape\n"
        "bad = [m for m in ('torch', 'nncf', 'av') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- bad input -----------------------------------------------------------------------------------

def test_int8_without_calibration_clips_is_an_error(x3d, tmp_path):
    for calib in (None, []):
        with pytest.raises(DataError, match="INT8 needs calibration clips"):
            build(tmp_path, x3d, spec_for("x3d"), "int8", calib=calib)
    assert not any(tmp_path.iterdir()), "nothing half-written"


def test_calibration_set_smaller_than_asked_warns_and_uses_what_exists(tmp_path, caplog):
    from edgevid.calibration import calibration_set
    from edgevid.data.synthmotion import ensure_split
    from edgevid.models import get_spec

    manifest = ensure_split("calib", 2)
    with caplog.at_level("WARNING", logger="edgevid"):
        found = calibration_set(str(manifest), get_spec("x3d_synth"), size=5)
    assert len(found.clips) == 2 and "fewer than the 5 asked for" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos"):
        calibration_set(str(tmp_path / "empty"), get_spec("x3d_synth"), size=5)


def test_bad_precision_and_max_drop_are_one_line_errors(x3d, tmp_path):
    with pytest.raises(EdgevidError, match="OpenVINO builds fp32, fp16, int8"):
        build(tmp_path, x3d, spec_for("x3d"), "int4")
    with pytest.raises(EdgevidError, match="--max-drop applies to INT8"):
        build(tmp_path, x3d, spec_for("x3d"), "fp16", max_drop=1.0)
    with pytest.raises(EdgevidError, match="allowed top-1 drop in points"):
        build(tmp_path, x3d, spec_for("x3d"), "int8", calib=clips(2, 0), max_drop=-1)
    assert not any(tmp_path.iterdir())


def test_cli_errors_exit_nonzero_with_one_line():
    proc = run_cli("build", "--model", "x3d_synth", "--target", "intel-npu", "--precision", "fp32", "--weights", "random",
                   "--out", "/nonexistent-not-written")
    assert_one_line_error(proc, "--precision fp32 is not supported by target intel-npu")
    if "NPU" not in AVAILABLE:
        proc = run_cli("build", "--model", "x3d_synth", "--target", "intel-cpu", "--precision", "fp32", "--weights",
                       "random", "--device", "NPU", "--out", "/nonexistent-not-written")
        assert_one_line_error(proc, "--device NPU", "OpenVINO on this machine sees only")


@pytest.mark.skipif("NPU" in AVAILABLE, reason="an NPU is present here: the absent-device path cannot be exercised")
def test_requested_device_absent_is_an_error(x3d, tmp_path):
    with pytest.raises(DeviceUnavailable, match="--device NPU"):
        build(tmp_path, x3d, spec_for("x3d"), "fp32", device="NPU")


@pytest.mark.skipif(any(d.startswith("GPU") for d in AVAILABLE), reason="a GPU is present: the build compiles on it")
def test_gpu_target_without_gpu_builds_ir_and_defers_compile(x3d, tmp_path):
    art = build(tmp_path, x3d, spec_for("x3d"), "fp16", target="intel-gpu")
    assert art.manifest.status["device_compile"] == "pending on device"
    assert any("compile happens when the artifact is opened on the device" in n for n in art.manifest.notes)
    assert art.file("model.xml").is_file()
    with pytest.raises(DeviceUnavailable, match="is for device GPU"):
        open_runner(art.path)


def test_missing_or_tampered_ir_is_refused(x3d, tmp_path):
    art = build(tmp_path, x3d, spec_for("x3d"), "fp32")
    original = art.file("model.bin").read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    art.file("model.bin").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.bin does not match its sha256"):
        open_runner(art.path)
    art.file("model.bin").write_bytes(original)
    open_runner(art.path).close()  # restored: accepted again
    art.file("model.xml").unlink()
    with pytest.raises(ArtifactError, match="model.xml is missing"):
        open_runner(art.path)
    with pytest.raises(ArtifactError, match="model.xml is missing"):  # even without hash verification
        open_runner(art.path, verify=False)


# --- the SynthMotion reference models ------------------------------------------------------------

REFERENCE_MODELS = ("x3d_synth", "uniformerv2_synth", "timesformer_synth", "tubevit_synth")


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_reference_model_int8_keeps_accuracy(name, tmp_path):
    """INT8 top-1 within 1.0 point of PyTorch FP32 and >= 97% agreement on 200 fresh val videos."""
    from edgevid.build import build_artifact
    from edgevid.data.synthmotion import ensure_split
    from edgevid.harness.eval import evaluate
    from edgevid.models import list_models

    if name not in list_models():
        pytest.skip(f"{name} is not registered yet (its model family has not landed)")
    if reference_weights(name, trained=True) is None:
        pytest.skip(f"{name} reference weights not trained to 90% yet (scripts/train_reference.py --model {name})")
    art = build_artifact(name, "intel-cpu", "int8", calib="synthetic", out=tmp_path)  # default: 300 calib clips
    result = evaluate(art.path, ensure_split("val", 200), threads=2)
    print(f"\n{name} OpenVINO INT8: top-1 {result['top1']:.2f} (FP32 {result['ref_top1']:.2f}),"
          f" agreement {result['agreement']:.2f}%, SQNR {result['sqnr_db']:.1f} dB,"
          f" layers float {art.manifest.quantization['layers_float']}")
    assert result["ref_top1"] - result["top1"] <= 1.0
    assert result["agreement"] >= 97.0
