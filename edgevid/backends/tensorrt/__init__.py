"""TensorRT for Jetson and desktop NVIDIA GPUs: explicit Q/DQ INT8 (or AutoCast FP16) ONNX -> engine.

Host side (any machine): dynamo ONNX export -> INT8 Q/DQ ONNX from NVIDIA ModelOpt, calibrated on
ONNX Runtime's CPU provider (or FP16 from ModelOpt AutoCast). Precision lives in the ONNX itself,
so TensorRT builds it as a strongly typed network: no ``BuilderFlag.INT8/FP16``, no calibrators
(both are gone in TensorRT 11).

Device side (``import tensorrt`` + a CUDA GPU): the engine build and runner in ``tensorrt.engine``.
Where those are missing the build stops after the Q/DQ ONNX with status "pending on device" and
the command that finishes it on the device (``edgevid build ... --from-onnx ARTIFACT``); such an
artifact opens as an ONNX Runtime CPU runner over the Q/DQ ONNX (the accuracy estimate).

This module imports neither torch nor TensorRT at import time; the ``--from-onnx`` path and the
runners stay torch-free.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import ArtifactError, BackendUnavailable, EdgevidError, first_line
from ...stages import BuildStages
from ..base import Backend, BuildRequest, BuildResult, QuantLayer, Runner
from .options import TensorRTOptions
from .._onnx import activation_matmuls

log = logging.getLogger("edgevid")

ONNX_FILE = "model.onnx"
ENGINE_FILE = "model.plan"
TIMING_CACHE_FILE = "timing.cache"
PENDING = "pending on device"
BUILT = "built"

WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")
#: the last TensorRT 10.x with DLA (11.0-11.4.0 have none; 11.4.1 brings it back on AGX Orin with JetPack 7.2.2)
LAST_DLA_TRT10 = (10, 7)
MIN_TENSORRT = (10, 0)
FINGERPRINT_KEYS = ("gpu", "compute_capability", "tensorrt", "cuda", "jetpack")
DEVICE_EXTRA = "install TensorRT's Python package (desktop: pip install tensorrt; Jetson: it comes with JetPack) and pip install pycuda"


# --------------------------------------------------------------------------------------------
# Q/DQ placement policy
# --------------------------------------------------------------------------------------------


@dataclass
class QuantPolicy:
    """What ModelOpt quantizes for one kind of model, and what stays in float."""

    kind: str  # "cnn" | "transformer"
    op_types_to_quantize: list[str] | None = None  # None: ModelOpt's TensorRT-guided placement
    nodes_to_exclude: list[str] = field(default_factory=list)
    keep_fp32_ops: list[str] = field(default_factory=list)  # stay FP32 inside the FP16 graph

    def describe(self) -> str:
        if self.kind == "transformer":
            return ("transformer: only Conv/MatMul/Gemm (weights per-channel, inputs per-tensor) are INT8;"
                    " attention MatMuls, Softmax, LayerNorm, GELU and residual adds stay high precision")
        if self.op_types_to_quantize:
            return ("cnn: Conv/MatMul/Gemm INT8 (weights per-channel, inputs per-tensor); adds, pools,"
                    " SiLU/sigmoid gates stay high precision")
        return "cnn: ModelOpt's TensorRT-guided Q/DQ placement (adds and pools INT8 too), weights per-channel"


def quant_policy(transformer: bool, model, placement: str = "weighted") -> QuantPolicy:
    """Exclusions for the ONNX ``model``: the transformer policy when the spec says ``transformer`` or the
    graph has Softmax/LayerNorm (a model registered elsewhere is still recognised), else the CNN one.

    CNNs default to ``weighted`` placement too: on x3d_synth (SynthMotion val-200, 300 calibration
    clips, max calibration) it gave 19.7 dB SQNR / 0.5 pt top-1 drop against 18.6 dB / 2.5 pt for
    ModelOpt's own placement (``placement="modelopt"``, which also quantizes residual adds and pools:
    more INT8 fusion in TensorRT, less accuracy).
    """
    if placement not in ("weighted", "modelopt"):
        raise EdgevidError(f"target option qdq_placement: {placement!r} is not weighted or modelopt")
    ops = {n.op_type for n in model.graph.node}
    if transformer or ops & {"Softmax", "LayerNormalization"}:
        return QuantPolicy(
            kind="transformer",
            op_types_to_quantize=list(WEIGHTED_OPS),
            nodes_to_exclude=activation_matmuls(model),
            keep_fp32_ops=["LayerNormalization"],  # FP16 LayerNorm after attention overflows
        )
    return QuantPolicy(kind="cnn", op_types_to_quantize=list(WEIGHTED_OPS) if placement == "weighted" else None)


def qdq_summary(model) -> dict[str, Any]:
    """Weighted layers with INT8 data and weights vs. left in float, and the opset, for the manifest."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    int8: dict[str, int] = {}
    floating: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS:
            counts = int8 if len(node.input) > 1 and {node.input[0], node.input[1]} <= dq_outputs else floating
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"int8_layers": int8, "float_layers": floating,
            "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in model.graph.node), "opset": opset}


# --------------------------------------------------------------------------------------------
# ONNX side: ModelOpt INT8 Q/DQ and AutoCast FP16
# --------------------------------------------------------------------------------------------


class _ClipReader:
    """ONNX Runtime CalibrationDataReader over a memory-mapped [N, C, T, H, W] array, one clip at a
    time; with ``progress`` (a file) it writes the number of clips handed out there."""

    def __init__(self, clips: np.ndarray, input_name: str, progress: str | None = None):
        self._clips, self._name, self._index = clips, input_name, 0
        self._progress = progress

    def _feed(self, i: int):
        return {self._name: np.ascontiguousarray(self._clips[i:i + 1], dtype=np.float32)}

    def get_first(self):  # ModelOpt's trial runs use it
        return self._feed(0)

    def get_next(self):
        if self._index >= len(self._clips):
            return None
        self._index += 1
        if self._progress:
            Path(self._progress).write_text(str(self._index))
        return self._feed(self._index - 1)

    def rewind(self):
        self._index = 0


def _modelopt_version() -> str:
    from importlib.metadata import version

    return version("nvidia-modelopt")


def _run_modelopt(job: dict[str, Any], clips: Sequence[np.ndarray] | None = None, stage=None) -> None:
    """Run a ModelOpt job in a child process.

    ModelOpt patches ONNX Runtime's quantization module in place when it runs (calibrator methods,
    and it deletes Relu/Softmax/Reshape/... from ORT's QDQ registries), which breaks a later
    ``onnxruntime.quantization.quantize_static`` in the same process (seen with 0.47.0 + ORT 1.32:
    "Histogram has not been collected"). A child process keeps edgevid's ONNX Runtime backend intact
    and keeps ModelOpt's console logging out of the terminal (it goes to build.log).
    """
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        job = dict(job, result=str(Path(tmp) / "result.json"))
        if clips is not None:
            first = np.asarray(clips[0])
            stacked = np.lib.format.open_memmap(Path(tmp) / "calib.npy", mode="w+", dtype=np.float32,
                                                shape=(len(clips), *first.shape[1:]))
            for i, clip in enumerate(clips):
                stacked[i] = np.asarray(clip, dtype=np.float32)[0]
            stacked.flush()
            del stacked
            job["clips"] = str(Path(tmp) / "calib.npy")
            job["progress"] = str(Path(tmp) / "progress")
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        with open(Path(tmp) / "output.txt", "w+") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from edgevid.backends.tensorrt import _modelopt_worker;"
                 " _modelopt_worker(sys.argv[1])", str(Path(tmp) / "job.json")],
                stdout=sink, stderr=subprocess.STDOUT, text=True,
            )
            try:  # the child writes how many clips it has calibrated on: calibration n/N
                while proc.poll() is None:
                    time.sleep(0.5)
                    _report_progress(job.get("progress"), stage)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            sink.seek(0)
            output = sink.read().strip()
        if output:
            log.debug("modelopt (%s) said:\n%s", job["mode"], output[-6000:])
        result = Path(job["result"])
        if proc.returncode != 0 or not result.is_file():
            error = json.loads(result.read_text())["error"] if result.is_file() else (
                output.splitlines()[-1][:300] if output else f"exit code {proc.returncode}")
            raise RuntimeError(error)


def _report_progress(path: str | None, stage) -> None:
    if stage is None or not path:
        return
    try:
        done = int(Path(path).read_text() or 0)
    except (OSError, ValueError):
        return
    if done > stage.done and (stage.total is None or done <= stage.total):
        stage.advance(done - stage.done)


def _modelopt_worker(job_path: str) -> None:
    """Child-process side of ``_run_modelopt`` (INT8 Q/DQ with ``quantize``, FP16 with AutoCast)."""
    import json

    job = json.loads(Path(job_path).read_text())
    try:
        if job["mode"] == "int8":
            from modelopt.onnx.quantization import quantize

            quantize(
                job["fp32"],
                quantize_mode="int8",
                calibration_data_reader=_ClipReader(np.load(job["clips"], mmap_mode="r"), job["input_name"],
                                                    job.get("progress")),
                calibration_method=job["method"],
                calibration_eps=["cpu"],
                op_types_to_quantize=job["op_types_to_quantize"],
                nodes_to_exclude=job["nodes_to_exclude"] or None,
                disable_mha_qdq=job["disable_mha_qdq"],
                high_precision_dtype=job["high_precision"],
                op_types_to_exclude_fp16=job["keep_fp32_ops"] or None,
                use_external_data_format=job["external_data"],
                output_path=job["out"],
                log_level="WARNING",
            )
        else:
            import onnx
            from modelopt.onnx.autocast import convert_to_mixed_precision

            model = convert_to_mixed_precision(job["fp32"], low_precision_type="fp16", keep_io_types=True,
                                               op_types_to_exclude=job["keep_fp32_ops"] or None, providers=["cpu"])
            onnx.save(model, job["out"], save_as_external_data=job["external_data"])
        if not Path(job["out"]).is_file():
            raise RuntimeError("ModelOpt wrote no output model")
    except BaseException as exc:
        Path(job["result"]).write_text(json.dumps({"error": f"{type(exc).__name__}: {first_line(exc, 250)}"}))
        raise SystemExit(1) from None
    Path(job["result"]).write_text(json.dumps({"ok": True}))


def _modelopt_quantize(fp32_path, out_path, clips, policy: QuantPolicy, input_name, calibrate_method, high_precision,
                       stages: BuildStages | None = None):
    stages = stages or BuildStages()
    with stages.stage("calibration", total=len(clips)) as stage:
        _run_modelopt({
            "mode": "int8", "fp32": str(fp32_path), "out": str(out_path), "input_name": input_name,
            "method": calibrate_method, "high_precision": high_precision,
            "op_types_to_quantize": policy.op_types_to_quantize,
            "nodes_to_exclude": [f"^{re.escape(name)}$" for name in policy.nodes_to_exclude],
            "disable_mha_qdq": policy.kind == "transformer", "keep_fp32_ops": policy.keep_fp32_ops,
            "external_data": Path(fp32_path).stat().st_size > 1.8e9,
        }, clips, stage)


def quantize_int8_qdq(
    fp32_path: Path,
    out_path: Path,
    clips: Sequence[np.ndarray],
    transformer: bool,
    input_name: str = "input",
    calibrate_method: str = "max",
    percentile: float | None = None,
    high_precision: str = "fp16",
    tool: str = "modelopt",
    placement: str = "weighted",
    keep_float: Sequence[str] = (),
    keep_high_precision: Sequence[dict[str, str]] = (),
    stages: BuildStages | None = None,
) -> dict[str, Any]:
    """INT8 Q/DQ ONNX for TensorRT's explicit quantization, calibrated on the CPU execution provider.

    ModelOpt places Q/DQ the way TensorRT fuses them (symmetric, per-channel weights) and converts
    the float remainder to ``high_precision``. If ModelOpt fails, ONNX Runtime's ``quantize_static``
    with symmetric Q/DQ is the fallback (float remainder stays FP32); the manifest says which ran.
    ``keep_float`` names extra nodes to leave unquantized (e.g. from a sensitivity sweep);
    ``keep_high_precision`` (``tensorrt.check.high_precision_nodes``) the nodes TensorRT cannot run
    in INT8, each with its reason (both stay out of INT8; the manifest lists them apart).
    ``transformer``: the spec's field (``quant_policy``).
    """
    import onnx

    if not clips:
        raise EdgevidError("INT8 needs calibration clips; pass --calib (a folder, a manifest or 'synthetic')")
    if calibrate_method not in ("entropy", "max", "percentile"):
        raise EdgevidError(f"target option calibrate_method: {calibrate_method!r} is not entropy, max or percentile")
    if tool not in ("modelopt", "ort"):
        raise EdgevidError(f"target option qdq_tool: {tool!r} is not modelopt or ort")
    if calibrate_method == "percentile" and tool != "ort":
        raise EdgevidError("target option calibrate_method: percentile needs qdq_tool: ort (ModelOpt has max and entropy)")
    policy = quant_policy(transformer, onnx.load(str(fp32_path), load_external_data=False), placement)
    policy.nodes_to_exclude += [name for name in keep_float if name not in policy.nodes_to_exclude]
    quant: dict[str, Any] = {
        "scheme": "explicit INT8 Q/DQ for TensorRT: symmetric, per-channel weights, per-tensor activations",
        "policy": policy.describe(),
        "calibration": f"{calibrate_method}{f' {percentile}' if percentile else ''}, {len(clips)} clips,"
                       " ONNX Runtime CPU execution provider",
        "kept_float": list(policy.nodes_to_exclude),
    }
    if keep_high_precision:
        quant["kept_high_precision"] = [dict(k) for k in keep_high_precision]
        policy.nodes_to_exclude += [k["node"] for k in keep_high_precision if k["node"] not in policy.nodes_to_exclude]
    error = None
    if tool == "modelopt":
        try:
            _modelopt_quantize(fp32_path, out_path, clips, policy, input_name, calibrate_method, high_precision, stages)
            kept = f" ({', '.join(policy.keep_fp32_ops)} kept fp32)" if policy.keep_fp32_ops and high_precision != "fp32" else ""
            quant.update(tool=f"nvidia-modelopt {_modelopt_version()}", high_precision=high_precision + kept)
        except Exception as exc:  # the fallback below is reported in the log and the manifest, never silent
            error = str(exc)
            log.warning("ModelOpt quantization failed (%s); falling back to ONNX Runtime quantize_static", error)
    if tool == "ort" or error:
        import onnxruntime

        from .._onnx import quantize_qdq

        method = {"entropy": "entropy", "max": "minmax", "percentile": "percentile"}[calibrate_method]
        quantize_qdq(fp32_path, out_path, clips, input_name, op_types=list(WEIGHTED_OPS),
                     calibrate_method=method, nodes_to_exclude=policy.nodes_to_exclude, stages=stages,
                     percentile=percentile)
        quant.update(tool=f"onnxruntime {onnxruntime.__version__} quantize_static (symmetric Q/DQ)", high_precision="fp32")
        if error:
            quant["modelopt_error"] = error
    quant.update(qdq_summary(onnx.load(str(out_path), load_external_data=False)))
    return quant


def autocast_fp16(fp32_path: Path, out_path: Path, transformer: bool) -> dict[str, Any]:
    """FP16 by ModelOpt AutoCast (strongly typed: the ONNX carries the precision), FP32 I/O;
    ``transformer`` (the spec's field) keeps LayerNorm in FP32 (``quant_policy``)."""
    import onnx

    policy = quant_policy(transformer, onnx.load(str(fp32_path), load_external_data=False))
    try:
        _run_modelopt({"mode": "fp16", "fp32": str(fp32_path), "out": str(out_path), "keep_fp32_ops": policy.keep_fp32_ops,
                       "external_data": Path(fp32_path).stat().st_size > 1.8e9})
    except RuntimeError as exc:
        raise EdgevidError(f"ModelOpt AutoCast (FP16) failed on {Path(fp32_path).name}: {exc}") from None
    model = onnx.load(str(out_path), load_external_data=False)
    kept = sorted({n.op_type for n in model.graph.node if n.op_type in policy.keep_fp32_ops})
    return {"scheme": "FP16 by ModelOpt AutoCast (FP32 I/O" + (f"; {', '.join(kept)} kept fp32)" if kept else ")"),
            "tool": f"nvidia-modelopt {_modelopt_version()}"}


# --------------------------------------------------------------------------------------------
# Target policy: profiles, DLA, fingerprints (pure functions, tested without a GPU)
# --------------------------------------------------------------------------------------------


def profile_shapes(input_shape: Sequence[int], policy, dla: bool = False) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) input shapes from the target's input-shape policy; DLA needs them static."""
    rest = tuple(input_shape[1:])
    lo, opt, hi = policy.min_batch or policy.batch, policy.batch, policy.max_batch or policy.batch
    if dla:
        lo = hi = opt
    return (lo, *rest), (opt, *rest), (hi, *rest)


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(text))[:3])


def check_dla_request(target, dla_core: int | None) -> None:
    """Raise a one-line error if ``--dla-core`` cannot work for ``target`` (checked before any work)."""
    if dla_core is None:
        return
    if target.backend != "tensorrt":
        raise EdgevidError(f"--dla-core applies to TensorRT targets only; target {target.name} uses {target.backend}")
    cores = int(target.options.get("dla_cores", 0))
    if cores <= 0:
        raise EdgevidError(f"--dla-core {dla_core}: target {target.name} has no DLA cores"
                           " (targets with DLA: jetson-orin, jetson-xavier); drop --dla-core")
    if not 0 <= dla_core < cores:
        raise EdgevidError(f"--dla-core {dla_core}: target {target.name} has DLA cores 0..{cores - 1}")
    if target.input_shape.dynamic:
        raise EdgevidError(f"--dla-core needs static shapes; target {target.name} has a batch range")


def dla_supported(trt_version: str) -> bool:
    """Whether this TensorRT release can build DLA engines at all (the device still has to have DLA)."""
    version = parse_version(trt_version)
    return version[:2] <= LAST_DLA_TRT10 or version >= (11, 4, 1)


def jetpack_from_tegra_release(text: str) -> tuple[str, str] | None:
    """('36.4.0', '6') from /etc/nv_tegra_release ('# R36 (release), REVISION: 4.0, ...')."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return None
    major = int(match.group(1))
    jetpack = {32: "4", 34: "5", 35: "5", 36: "6", 38: "7"}.get(major, f"L4T R{major}")
    return f"{major}.{match.group(2)}", jetpack


def describe_fingerprint(fp: dict[str, Any]) -> str:
    parts = [f"{fp.get('gpu', '?')} (sm {fp.get('compute_capability', '?')})",
             f"TensorRT {fp.get('tensorrt', '?')}", f"CUDA {fp.get('cuda', '?')}"]
    if fp.get("jetpack"):
        parts.append(f"JetPack {fp['jetpack']}")
    return ", ".join(parts)


def fingerprint_mismatches(built: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """Keys on which an engine's build machine and this machine differ (CUDA compared as major.minor)."""
    diffs = []
    for key in FINGERPRINT_KEYS:
        a, b = built.get(key), here.get(key)
        if key == "jetpack" and not a and not b:
            continue
        if key == "cuda":
            a, b = parse_version(a or "")[:2], parse_version(b or "")[:2]
        if a != b:
            diffs.append(key)
    return diffs


def check_fingerprint(built: dict[str, Any], here: dict[str, Any], engine: Path, rebuild: str) -> None:
    """Refuse an engine made for another GPU / TensorRT / CUDA / JetPack, with the rebuild command."""
    diffs = fingerprint_mismatches(built, here)
    if diffs:
        raise ArtifactError(
            f"{engine} was built for {describe_fingerprint(built)} but this machine has {describe_fingerprint(here)}"
            f" ({', '.join(diffs)} differ); TensorRT engines are not portable: rebuild here with `{rebuild}`"
        )


def parser_error_lines(errors: Sequence[tuple[str, str, str]]) -> list[str]:
    """One line per TensorRT ONNX parser error: node name, op type and what the parser said."""
    lines = []
    for node, op, desc in errors:
        where = f"node {node!r} ({op})" if node or op else "model"
        lines.append(f"{where}: {' '.join(str(desc).split())}")
    return lines


def finish_command(model: str, target: str, precision: str, artifact: Path | str, dla_core: int | None = None) -> str:
    cmd = f"edgevid build --model {model} --target {target} --precision {precision} --from-onnx {artifact}"
    return cmd + (f" --dla-core {dla_core}" if dla_core is not None else "")


def engine_unavailable_reason() -> str | None:
    """Why no engine can be built or run here (None when TensorRT, pycuda and a CUDA GPU all work)."""
    try:
        import tensorrt  # noqa: F401
    except ModuleNotFoundError:
        return "no TensorRT"
    except Exception as exc:
        return f"TensorRT does not import ({type(exc).__name__}: {str(exc)[:80]})"
    try:
        import pycuda.driver as cuda

        cuda.init()
        count = cuda.Device.count()
    except ImportError:
        return "no pycuda"
    except Exception as exc:
        return f"no usable CUDA driver/GPU ({str(exc)[:80]})"
    if count == 0:
        return "no CUDA GPU found"
    import tensorrt

    if parse_version(tensorrt.__version__) < MIN_TENSORRT:
        return (f"TensorRT {tensorrt.__version__} is older than 10.0: it has no strongly typed networks and its"
                " parser stops at opset 17 (these Q/DQ ONNX files are opset 19)")
    return None


def target_mismatch(target, machine: dict[str, Any]) -> str | None:
    """Why this machine is the wrong kind for ``target`` (a Jetson target on a desktop GPU, or the reverse)."""
    jetson_target, jetson_here = bool(target.options.get("jetpack")), bool(machine.get("jetpack"))
    if jetson_target and not jetson_here:
        return f"this machine ({machine.get('gpu', 'GPU')}) is not a Jetson, target {target.name} is"
    if jetson_here and not jetson_target:
        return f"this machine is a Jetson (JetPack {machine['jetpack']}), target {target.name} is a desktop GPU"
    return None


def _require_engine_support(what: str) -> None:
    reason = engine_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"{what} needs TensorRT >= 10 with pycuda and a CUDA GPU: {reason}; {DEVICE_EXTRA}")


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------


def _final_path(request: BuildRequest) -> Path:
    """Where build_artifact will rename the staging folder to (for the finish-on-device command)."""
    from ...artifact import artifact_name
    from ...spec import protocol_name

    return request.out_dir.parent / artifact_name(request.spec.name, request.target.name, request.precision,
                                                  protocol_name(request.spec))


def _reusable_timing_cache(artifact_dir: Path, here: dict[str, Any]) -> bytes | None:
    """A previous build's timing cache, when that build ran on a machine like this one."""
    from ...artifact import Artifact

    try:
        previous = Artifact(artifact_dir)
    except ArtifactError:
        return None
    cache = artifact_dir / TIMING_CACHE_FILE
    if cache.is_file() and previous.manifest.fingerprint and not fingerprint_mismatches(previous.manifest.fingerprint, here):
        return cache.read_bytes()
    return None


def _build_engine_into(folder: Path, manifest_like, target, options: dict[str, Any], cache_from: list[Path]) -> dict:
    """Build model.plan + timing.cache in ``folder`` from ``folder/model.onnx``; returns fingerprint etc."""
    from . import engine

    here = engine.machine_fingerprint()
    wrong = target_mismatch(target, here)
    if wrong:
        raise EdgevidError(f"not building a {target.name} engine here: {wrong}; run this on a {target.name} device")
    dla_core = options.get("dla_core")
    if dla_core is not None:
        check_dla_request(target, dla_core)
        if not dla_supported(here["tensorrt"]):
            raise EdgevidError(f"--dla-core {dla_core}: TensorRT {here['tensorrt']} has no DLA support (DLA ended"
                               " after 10.7 and is back from 11.4.1 on AGX Orin with JetPack 7.2.2); drop --dla-core")
    expected = target.options.get("tensorrt")
    if expected and parse_version(expected)[:1] != parse_version(here["tensorrt"])[:1]:
        log.warning("target %s expects TensorRT %s, this machine has %s", target.name, expected, here["tensorrt"])
    previous = next((c for c in (_reusable_timing_cache(p, here) for p in cache_from) if c), None)
    shapes = profile_shapes(manifest_like.input_shape, target.input_shape, dla=dla_core is not None)
    details = engine.build_engine(
        folder / ONNX_FILE, folder / ENGINE_FILE, folder / TIMING_CACHE_FILE,
        shapes=shapes, workspace_mb=int(options.get("workspace_mb", 2048)), dla_core=dla_core,
        timing_cache=previous,
    )
    return {"fingerprint": here, "details": details, "dla_core": dla_core}


#: what the Q/DQ-under-ONNX-Runtime evaluation of a pending artifact needs (the only use of ORT here)
PENDING_REQUIREMENTS = {"onnxruntime": "onnxruntime"}


class TensorRTBackend(Backend):
    name = "tensorrt"
    options_model = TensorRTOptions
    # An engine needs TensorRT (the device's own package) and pycuda; nothing else.
    requirements = {"tensorrt": "tensorrt", "pycuda": "pycuda"}
    build_requirements = {"torch": "torch==2.13.0", "onnx": "onnx", "onnxscript": "onnxscript",
                          "onnxruntime": "onnxruntime", "modelopt": "nvidia-modelopt",
                          "onnx_graphsurgeon": "onnx-graphsurgeon"}
    extra = "tensorrt"
    build_extra = "build-tensorrt"
    precisions = ("fp16", "int8")
    finishes_on_device = True

    def check_request(self, target, options, spec=None) -> None:
        if options.get("dla_core") is not None:
            check_dla_request(target, options["dla_core"])

    def check_finish(self, source, model, target, precision, options):
        return check_finish(source, model, target, precision, options)

    def finish(self, source, target, options, out_dir, final) -> BuildResult:
        return finish_on_device(source, target, options, out_dir, final)

    def missing(self, for_build: bool = False) -> list[str]:
        if for_build:  # the host build needs ModelOpt & co, not TensorRT (the engine is built on the device)
            from ..base import _importable

            return [pip for module, pip in self.build_requirements.items() if not _importable(module)]
        return super().missing()

    def check_open(self, artifact) -> None:
        """An engine needs TensorRT + pycuda; a pending artifact (Q/DQ ONNX only) needs ONNX Runtime."""
        from ..base import _importable

        if is_pending(artifact):
            gone = [pip for module, pip in PENDING_REQUIREMENTS.items() if not _importable(module)]
            if gone:
                raise BackendUnavailable(
                    f"{artifact.path} has no engine yet (engine {PENDING}): its Q/DQ ONNX is evaluated under ONNX"
                    " Runtime, which is not installed: pip install 'edgevid[onnxruntime]' (or build the engine on"
                    f" the device: `{finish_command(artifact.manifest.model, artifact.manifest.target, artifact.manifest.precision, artifact.path)}`)")
            return
        missing = self.missing()
        if missing:
            raise BackendUnavailable(f"{artifact.path} holds a TensorRT engine; running it needs {', '.join(missing)}:"
                                     f" {DEVICE_EXTRA}")

    def status(self) -> str:
        from ..base import _importable

        run = self.missing()
        pending = "pending artifacts (Q/DQ ONNX) run under onnxruntime" + (
            "" if _importable("onnxruntime") else ": pip install 'edgevid[onnxruntime]'")
        build = self.missing(for_build=True)
        build_line = "builds Q/DQ ONNX here" if not build else \
            f"to build: pip install 'edgevid[{self.build_extra}]' (missing {', '.join(build)})"
        if not run:
            return f"installed (TensorRT + pycuda; engines are built on this device); {build_line}"
        return (f"engines: missing {', '.join(run)} (TensorRT comes with the device; pip install"
                f" 'edgevid[tensorrt]' for pycuda); {pending}; {build_line}")

    def build(self, request: BuildRequest) -> BuildResult:
        import onnx
        import onnxruntime
        import torch

        from ...export import INPUT_NAME, export_onnx

        target, spec = request.target, request.spec
        options = {**target.options, **request.options}
        dla_core = options.get("dla_core")
        check_dla_request(target, dla_core)
        if request.precision not in self.precisions:
            raise EdgevidError(f"--precision {request.precision}: TensorRT targets build fp16 or int8")
        policy = target.input_shape
        dynamic = (policy.min_batch or policy.batch, policy.max_batch) if policy.dynamic and dla_core is None else None
        example = torch.zeros(spec.input_shape(policy.batch))
        out = request.out_dir / ONNX_FILE
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            started = time.perf_counter()
            with request.stages.stage("export"):
                export_onnx(request.model, example, fp32, dynamic_batch=dynamic)
            log.info("exported ONNX in %.1f s", time.perf_counter() - started)
            started = time.perf_counter()
            from .check import assert_buildable, check_qdq, high_precision_nodes, trt_line

            if request.precision == "int8":
                quant = quantize_int8_qdq(
                    fp32, out, request.calib or [], transformer=spec.transformer, input_name=INPUT_NAME,
                    calibrate_method=options.get("calibrate_method", "max"),
                    percentile=options.get("percentile"),
                    high_precision=options.get("high_precision", "fp16"),
                    tool=options.get("qdq_tool", "modelopt"),
                    placement=options.get("qdq_placement", "weighted"),
                    keep_float=[*options.get("nodes_to_exclude", ()), *options.get("keep_float", ())],
                    keep_high_precision=high_precision_nodes(onnx.load(str(fp32), load_external_data=False)),
                    stages=request.stages,
                )
            else:
                with request.stages.stage("quantize"):
                    quant = autocast_fp16(fp32, out, transformer=spec.transformer)
            # the device's TensorRT line, and 11.x too for desktop targets ("10" = 10.x or 11.x)
            lines = [trt_line(target.options.get("tensorrt"))]
            if not target.options.get("jetpack") and "11" not in lines:
                lines.append("11")
            graph = onnx.load(str(out), load_external_data=False)
            readiness = [assert_buildable(graph, lines[0], f"the {request.precision.upper()} ONNX for {target.name}")]
            readiness += [check_qdq(graph, line) for line in lines[1:]]
            quant["tensorrt_readiness"] = {r.tensorrt: "ok" if r.ok else "; ".join(r.errors[:3]) for r in readiness}
            notes = sorted({n for r in readiness for n in r.notes})
            if notes:
                quant["tensorrt_readiness_notes"] = notes[:20]
            log.info("%s ONNX written in %.1f s (%s)", request.precision.upper(), time.perf_counter() - started,
                     quant.get("tool"))
        versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                    "modelopt": _modelopt_version()}
        result = BuildResult(quantization=quant, versions=versions, input_name=INPUT_NAME)
        if quant.get("modelopt_error"):
            result.notes.append(f"ModelOpt failed ({quant['modelopt_error']}); Q/DQ made by ONNX Runtime instead")

        reason = engine_unavailable_reason()
        if reason is None:  # TensorRT works here, but an engine only belongs on the target's own kind of device
            from .engine import machine_fingerprint

            reason = target_mismatch(target, machine_fingerprint())
        final = _final_path(request)
        if reason:
            command = finish_command(spec.name, target.name, request.precision, final, dla_core)
            result.status = {"engine": PENDING}
            if dla_core is not None:
                result.status["dla_core"] = str(dla_core)
            line = f"engine {PENDING} ({reason}); on the device run `{command}`"
            if parse_version(str(target.options.get("tensorrt", "10")))[:1] < MIN_TENSORRT[:1]:
                line += (f" (needs TensorRT >= 10; target {target.name}'s JetPack ships {target.options['tensorrt']},"
                         " see targets/" + target.name + ".yaml)")
            log.debug(line)
            result.notes.append(line)
            return result

        with request.stages.stage("compile"):
            built = _build_engine_into(request.out_dir, _Shape(spec.input_shape(policy.batch)), target, options, [final])
        result.fingerprint = built["fingerprint"]
        result.versions.update(tensorrt=built["fingerprint"]["tensorrt"], cuda=built["fingerprint"]["cuda"])
        result.status = {"engine": BUILT, **({"dla_core": str(dla_core)} if dla_core is not None else {})}
        result.quantization["engine"] = built["details"]
        return result

    def quantizable_layers(self, request: BuildRequest) -> list[QuantLayer]:
        """The Conv/MatMul/Gemm nodes of the exported ONNX that the INT8 policy quantizes (node
        names, as ``keep_float`` and ModelOpt's ``nodes_to_exclude`` take them). Variants are
        scored by running their Q/DQ ONNX under ONNX Runtime CPU, as ``open`` does before an engine
        exists: the same graph TensorRT compiles."""
        import onnx
        import torch

        from ...export import export_onnx
        from .._onnx import quantizable_nodes
        from .check import high_precision_nodes

        policy = request.target.input_shape
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_onnx(request.model, torch.zeros(request.spec.input_shape(policy.batch)), fp32)
            graph = onnx.load(str(fp32), load_external_data=False)
            excluded = set(quant_policy(request.spec.transformer, graph).nodes_to_exclude)
            excluded |= {k["node"] for k in high_precision_nodes(graph)}  # never INT8 on TensorRT: no candidates
            return [layer for layer in quantizable_nodes(fp32, WEIGHTED_OPS, fp32) if layer.name not in excluded]

    def open(self, artifact, threads=None, mode="latency") -> Runner:
        m = artifact.manifest
        if is_pending(artifact):
            from .._onnx import OnnxRuntimeRunner

            runner = OnnxRuntimeRunner(
                artifact.file(ONNX_FILE), threads,
                f"TensorRT {m.precision.upper()} Q/DQ ONNX under ONNX Runtime CPU (engine {PENDING})",
            )
            runner.runtime = f"{runner.runtime} (Q/DQ ONNX; engine {PENDING})"
            return runner
        _require_engine_support(f"{artifact.path} holds a TensorRT engine; running it")
        from . import engine

        rebuild = finish_command(m.model, m.target, m.precision, artifact.path,
                                 int(m.status["dla_core"]) if m.status.get("dla_core") else None)
        check_fingerprint(m.fingerprint, engine.machine_fingerprint(), artifact.file(ENGINE_FILE), rebuild)
        return engine.TensorRTRunner(artifact.file(ENGINE_FILE), tuple(m.input_shape), rebuild,
                                     f"TensorRT {m.precision.upper()} on {m.fingerprint.get('gpu', 'GPU')}")


def is_pending(artifact) -> bool:
    """No engine in the artifact yet: only its Q/DQ (or FP16) ONNX, evaluated under ONNX Runtime."""
    return artifact.manifest.status.get("engine") == PENDING or not artifact.has(ENGINE_FILE)


def _canonical(model: str) -> str:
    """Resolve a model alias where the model registry (torch) is importable; on a bare device, as given."""
    try:
        from ...models import canonical_name

        return canonical_name(model)
    except Exception:
        return model


@dataclass
class _Shape:
    input_shape: tuple[int, ...]


def check_finish(src, model: str | None, target: str | None, precision: str | None, options: dict[str, Any]):
    """The target an ``--from-onnx`` device build finishes ``src`` for, after refusing what does not fit."""
    from ...targets import get_target

    m = src.manifest
    if m.backend != "tensorrt" or not src.has(ONNX_FILE):
        raise EdgevidError(f"--from-onnx {src.path}: not a TensorRT artifact with {ONNX_FILE} (backend {m.backend});"
                           " build one with `edgevid build --target jetson ...` first")
    if model and model != m.model and _canonical(model) != m.model:
        raise EdgevidError(f"--model {model} does not match --from-onnx {src.path}, which holds {m.model}")
    target_obj = get_target(target or m.target)
    if target_obj.name != m.target:
        raise EdgevidError(f"--target {target_obj.name} differs from the artifact's target {m.target} (its ONNX was"
                           f" exported for that target's shapes); build for {target_obj.name} on the host first")
    if precision and precision != m.precision:
        raise EdgevidError(f"--precision {precision} does not match --from-onnx {src.path}, which is {m.precision}")
    if options.get("dla_core") is None and m.status.get("dla_core"):
        options["dla_core"] = int(m.status["dla_core"])
    check_dla_request(target_obj, options.get("dla_core"))
    _require_engine_support(f"--from-onnx {src.path}: building the engine")
    return target_obj


def finish_on_device(src, target, options: dict[str, Any], folder: Path, final: Path) -> BuildResult:
    """Copy ``src``'s ONNX into ``folder`` and build the engine beside it (torch-free)."""
    m = src.manifest
    for name in m.files:  # the ONNX and its external data, if any
        if name == ONNX_FILE or name.startswith(ONNX_FILE + "."):
            shutil.copy2(src.file(name), folder / name)
    dla_core = options.get("dla_core")
    log.info("building TensorRT engine for %s (%s, %s) from %s", m.model, target.name, m.precision, src.path)
    built = _build_engine_into(folder, m, target, {**target.options, "dla_core": dla_core}, [src.path, final])
    return BuildResult(
        quantization={**m.quantization, "engine": built["details"]},
        versions={**m.versions, "tensorrt": built["fingerprint"]["tensorrt"], "cuda": built["fingerprint"]["cuda"]},
        fingerprint=built["fingerprint"],
        status={"engine": BUILT, **({"dla_core": str(dla_core)} if dla_core is not None else {})},
        notes=[n for n in m.notes if not n.startswith(f"engine {PENDING}")],
        input_name=m.input_name,
    )


BACKEND = TensorRTBackend()
