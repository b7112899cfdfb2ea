"""`edgevid bench`: latency, throughput, memory and roofline of artifacts, with PyTorch baselines.

What is measured, and how:

- **Model-only**: the runner on one preprocessed clip (the artifact's input shape), repeated.
- **End-to-end**: per clip, decode an H.264 video file, sample the centre clip at the model's
  stride, resize/crop/normalise (``edgevid.data.views.single_clip``) and run the model. The
  video is SynthMotion at its native 160x128 / 15 fps for SynthMotion models, else the same
  content upscaled to a Kinetics-like 340x256 / 30 fps, long enough for the model's span.
- **Timing**: warm-up, then runs until at least ``min_seconds`` and ``min_runs`` have passed
  *and* the 95 % confidence interval of the median (order statistics) is within
  ``target_ci_pct`` of it, or ``3 x min_seconds`` are spent. Runs slower than median + 5 scaled
  MADs are dropped as outliers (preemption, page faults) and counted. Reported: mean, p50, p90,
  p99, min, clips/s (from p50), video frames/s consumed (clips/s x frames x stride: what a
  stream of non-overlapping clips at the model's stride would read).
- **Isolation**: every measurement runs in its own subprocess (``python -m edgevid.bench``), so
  peak RSS is that runner's own and one runtime's thread pool cannot disturb another's. All
  runs of one invocation use the same thread count (default: the cores this process may use).
- **Baselines**: PyTorch eager FP32 and ``torch.compile`` FP32 of the same weights, measured in
  the same invocation; ratios are baseline p50 / artifact p50. With ``repeats > 1`` every
  measurement is repeated in rotation and the repeat with the median p50 is kept (the spread is
  reported), so slow drifts of a shared machine hit all runs alike.
- **Roofline**: achieved GOPS = the model's GFLOPs per clip (``edgevid.models.flops.count``:
  2 x MACs of convs/linear/matmul) x batch / p50 latency, against this machine's measured peak
  for the precision: the best of repeated 1024^3 GEMMs through ONNX Runtime's MLAS on the same
  thread count (FP32 ``MatMul``, FP16 ``MatMul``, INT8 ``MatMulInteger`` u8 x s8), measured in
  the same invocation. Without native FP16 arithmetic (AVX512-FP16 / AMX-FP16) FP16 artifacts
  compute in FP32 on a CPU, so their peak is the FP32 one. A GEMM peak is an upper bound that
  depthwise and 3-D convolutions rarely approach.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .errors import EdgevidError, first_line

log = logging.getLogger("edgevid")

BASELINES = ("eager", "compile")
PEAK_GEMM_N = 1024
RUNTIME_PACKAGES = ("torch", "numpy", "av", "onnxruntime", "openvino", "nncf", "executorch", "torchao", "tensorrt")
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "asimddp", "sve", "i8mm", "bf16")


@dataclass
class Timing:
    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    outliers_dropped: int
    median_ci_pct: float  # half-width of the 95 % confidence interval of the median, % of it


def median_ci_pct(samples: np.ndarray) -> float:
    """Half-width of the distribution-free 95 % confidence interval of the median, in % of it."""
    n = len(samples)
    if n < 6:
        return math.inf
    ordered = np.sort(samples)
    half = 0.98 * math.sqrt(n)  # 1.96 * sqrt(n) / 2 ranks either side of n / 2
    low, high = max(int(math.floor(n / 2 - half)), 0), min(int(math.ceil(n / 2 + half)), n - 1)
    median = float(np.median(ordered))
    return float((ordered[high] - ordered[low]) / 2 / median * 100) if median > 0 else math.inf


def summarize(samples_ms: Iterable[float]) -> Timing:
    """Statistics of latency samples after dropping slow outliers (> median + 5 scaled MADs)."""
    raw = np.asarray(list(samples_ms), dtype=np.float64)
    if raw.size == 0:
        raise ValueError("no timing samples")
    median = np.median(raw)
    mad = np.median(np.abs(raw - median)) * 1.4826 or 1e-9
    kept = raw[raw <= median + 5 * mad]
    return Timing(
        runs=int(len(kept)),
        mean_ms=float(kept.mean()),
        p50_ms=float(np.percentile(kept, 50)),
        p90_ms=float(np.percentile(kept, 90)),
        p99_ms=float(np.percentile(kept, 99)),
        min_ms=float(kept.min()),
        outliers_dropped=int(len(raw) - len(kept)),
        median_ci_pct=round(median_ci_pct(kept), 2),
    )


def time_callable(fn: Callable[[], object], warmup: int = 3, min_runs: int = 10, min_seconds: float = 2.0,
                  max_seconds: float | None = None, max_runs: int = 100_000, target_ci_pct: float = 2.0) -> Timing:
    """Time ``fn()``: warm-up, then until the median is stable (see the module docstring). A model
    slower than ``max_seconds / 3`` a run stops at 3 runs after ``max_seconds``."""
    max_seconds = max(max_seconds or 3 * min_seconds, min_seconds)
    warm_started = time.perf_counter()
    for i in range(max(warmup, 1)):
        fn()
        if i + 1 >= warmup and time.perf_counter() - warm_started > 0.1 * min_seconds:
            break
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < max_runs:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        spent = time.perf_counter() - started
        if spent >= max_seconds and len(samples) >= 3:  # a slow model: the time budget wins over min_runs
            break
        if len(samples) >= min_runs and spent >= min_seconds and (
                len(samples) % 5 == 0 and median_ci_pct(np.array(samples)) <= target_ci_pct):
            break
    return summarize(samples)


def model_only_input(shape) -> np.ndarray:
    """The fixed clip model-only timings run on (the artifact's input shape, seeded normal noise)."""
    return np.random.default_rng(0).standard_normal(tuple(shape)).astype(np.float32)


def time_runner(runner, shape, min_seconds: float = 2.0, max_seconds: float | None = None) -> Timing:
    """Model-only timing of an open runner, as ``edgevid bench`` reports it: its input, warm-up, stopping
    rule and statistics (1000 / ``p50_ms`` = windows/s). The demo times its runners with this too, so
    its model-only figure and bench's are the same measurement."""
    clip = model_only_input(shape)
    return time_callable(lambda: runner(clip), min_seconds=min_seconds, max_seconds=max_seconds)


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def machine_info() -> dict:
    """CPU model, cores, ISA flags that matter for INT8/FP16/BF16 kernels, memory, OS."""
    info = {"machine": platform.machine(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "python": platform.python_version(), "os": platform.platform(terse=True)}
    try:
        text = Path("/proc/cpuinfo").read_text()
        field = lambda key: next((line.split(":", 1)[1].strip() for line in text.splitlines()  # noqa: E731
                                  if line.split(":")[0].strip() == key), "")
        info["cpu"] = field("model name") or field("Hardware") or platform.processor()
        flags = set((field("flags") or field("Features")).split())
        info["isa"] = [f for f in ISA_FLAGS if f in flags]
        mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), None)
        info["memory_gb"] = round(int(mem) / 2**20, 1) if mem else None
    except OSError:
        info["cpu"] = platform.processor()
    return info


def runtime_versions() -> dict[str, str]:
    """Installed versions of the runtimes that may take part (no imports)."""
    from importlib import metadata

    versions = {}
    for name in RUNTIME_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


# --- the end-to-end video -----------------------------------------------------------------------

def e2e_video(spec) -> Path:
    """A cached H.264 file to time end-to-end clips on (see the module docstring)."""
    from .data import synthmotion as sm
    from .data.sampling import clip_frames_needed
    from .paths import edgevid_home

    span = clip_frames_needed(spec)
    if spec.label_set == "synthmotion":
        height, width, fps = sm.HEIGHT, sm.WIDTH, sm.FPS
    else:
        height = max(256, spec.clip.short_side)
        height += height % 2
        width, fps = 2 * round(height * 4 / 3 / 2), 30
    frames = max(span, sm.FRAMES)
    path = edgevid_home() / "bench" / f"e2e-{width}x{height}-{frames}f-{fps}fps.mp4"
    if path.is_file():
        return path
    from .data.transforms import resize
    from .data.video import write_video

    clips = [sm.generate_clip(seed)[0] for seed in range(-(-frames // sm.FRAMES))]
    video = np.concatenate(clips)[:frames]
    if (height, width) != video.shape[1:3]:
        video = resize(video, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.mp4")
    write_video(tmp, video, fps)
    os.replace(tmp, path)
    return path


# --- measurements (each in its own subprocess) ---------------------------------------------------

def _peak_worker(precision: str, threads: int | None, seconds: float) -> dict:
    """Best GEMM throughput of this machine for ``precision`` (see the module docstring)."""
    n = PEAK_GEMM_N
    rng = np.random.default_rng(0)
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        if precision == "int8":
            return {"precision": precision, "gops": None, "method": "no INT8 GEMM without onnxruntime"}
        a = rng.standard_normal((n, n), dtype=np.float32)
        run, method = (lambda: a @ a), f"numpy float32 matmul {n}^3"
    else:
        types = {"fp32": (TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"), "fp16": (TensorProto.FLOAT16, TensorProto.FLOAT16, "MatMul"),
                 "int8": (TensorProto.UINT8, TensorProto.INT8, "MatMulInteger")}
        a_type, b_type, op = types.get(precision, types["fp32"])
        out_type = TensorProto.INT32 if op == "MatMulInteger" else a_type
        graph = helper.make_graph(
            [helper.make_node(op, ["a", "b"], ["c"])], "gemm",
            [helper.make_tensor_value_info("a", a_type, [n, n]), helper.make_tensor_value_info("b", b_type, [n, n])],
            [helper.make_tensor_value_info("c", out_type, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        if op == "MatMulInteger":
            feeds = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8), "b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
        else:
            dtype = np.float16 if precision == "fp16" else np.float32
            feeds = {"a": rng.standard_normal((n, n)).astype(dtype), "b": rng.standard_normal((n, n)).astype(dtype)}
        run = lambda: session.run(None, feeds)  # noqa: E731
        method = f"onnxruntime {ort.__version__} MLAS {op} {onnx.helper.tensor_dtype_to_np_dtype(a_type).name}x" \
                 f"{onnx.helper.tensor_dtype_to_np_dtype(b_type).name} {n}^3"
    timing = time_callable(run, warmup=2, min_runs=5, min_seconds=seconds, max_seconds=seconds)
    return {"precision": precision, "gops": round(2 * n**3 / (timing.min_ms / 1e3) / 1e9, 1), "method": method,
            "median_gops": round(2 * n**3 / (timing.p50_ms / 1e3) / 1e9, 1)}


def _worker(kind: str, artifact_path: str, threads: int | None, min_seconds: float, video: str | None = None) -> dict:
    """Runs inside the subprocess: open, time (model-only, then end-to-end), report."""
    from .artifact import Artifact

    artifact = Artifact(artifact_path)
    manifest = artifact.manifest
    shape = tuple(manifest.input_shape)
    clip = model_only_input(shape)
    load_started = time.perf_counter()
    if kind == "artifact":
        from .backends import open_runner

        runner = open_runner(artifact, threads=threads, mode="latency")
        fn = lambda: runner(clip)  # noqa: E731
    else:
        import torch

        from .harness.eval import reference_runner

        model = reference_runner(manifest, threads).model
        if kind == "compile":
            model = torch.compile(model)
        tensor = torch.from_numpy(clip)

        def fn():
            with torch.inference_mode():
                return model(tensor)

    fn()
    load_seconds = time.perf_counter() - load_started
    timing = time_runner(runner, shape, min_seconds) if kind == "artifact" else time_callable(fn, min_seconds=min_seconds)
    result = {"kind": kind, "load_seconds": round(load_seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1), **asdict(timing)}
    if video and kind == "artifact":
        from .data.views import single_clip

        batch = shape[0]

        def end_to_end():
            clips = [single_clip(video, manifest.spec) for _ in range(batch)]
            return runner(clips[0] if batch == 1 else np.concatenate(clips))

        result["e2e"] = {**asdict(time_callable(end_to_end, min_seconds=min_seconds)), "video": video,
                         "peak_rss_mb": round(peak_rss_mb(), 1)}
        # decoding runs in a process of its own (one decoder thread): a runtime whose Python binding
        # keeps the GIL while it infers (ExecuTorch's) would otherwise stall a decode thread
        result["e2e_overlapped"] = _overlapped_from_decode_process(video, manifest.spec, shape, runner, min_seconds,
                                                                   timing.p50_ms)
    return result


#: shared-memory slots of decoded clips: two decode jobs in flight, two clips queued for the runner,
#: one being inferred and one the producer holds, with room to spare
SHARED_SLOTS = 8


def _overlapped_from_decode_process(video: str, spec, shape: tuple, runner, min_seconds: float, model_ms: float) -> dict:
    """``overlapped_throughput`` with a spawned decode process writing each clip straight into a
    shared-memory ring (``SHARED_SLOTS`` clips): the inference process receives a slot number, not
    a pickled 5 MB array, so none of its core goes into copying input."""
    import itertools
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import shared_memory

    clip_bytes = int(np.prod(shape)) * 4
    ring = shared_memory.SharedMemory(create=True, size=clip_bytes * SHARED_SLOTS)
    slots = np.ndarray((SHARED_SLOTS, *shape), dtype=np.float32, buffer=ring.buf)
    spec_json = spec.model_dump_json()
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as decoder:
            turn = itertools.count()
            submit = lambda: decoder.submit(_decode_into_slot, video, spec_json, shape, ring.name,  # noqa: E731
                                            next(turn) % SHARED_SLOTS)
            pending = deque(submit() for _ in range(2))

            def next_clip() -> np.ndarray:  # two jobs in flight: the decode process never idles
                pending.append(submit())
                return slots[pending.popleft().result()]

            return overlapped_throughput(next_clip, runner, min_seconds, model_ms=model_ms)
    finally:
        slots = None  # drop the ring's view before its mapping closes
        ring.unlink()  # first: the name never outlives the run
        try:
            ring.close()
        except BufferError:  # a clip view still referenced somewhere: the mapping goes when it does
            pass


def _decode_into_slot(video: str, spec_json: str, shape: tuple, ring_name: str, slot: int) -> int:
    """Decode and preprocess ``shape[0]`` centre clips of ``video`` into ``slot`` of the shared ring
    (runs in the decode process of the overlapped end-to-end run)."""
    from multiprocessing import shared_memory

    from .data.views import single_clip
    from .spec import ModelSpec

    spec = ModelSpec.model_validate_json(spec_json)
    ring = shared_memory.SharedMemory(name=ring_name)  # the parent's resource tracker (spawn shares it)
    try:
        target = np.ndarray((SHARED_SLOTS, *shape), dtype=np.float32, buffer=ring.buf)[slot]
        for i in range(shape[0]):
            target[i] = single_clip(video, spec, threads=1)[0]
        del target
    finally:
        ring.close()
    return slot


def overlapped_throughput(produce: Callable[[], np.ndarray], runner: Callable[[np.ndarray], object],
                          min_seconds: float, model_ms: float, depth: int = 2, min_clips: int = 12) -> dict:
    """Clips/s when a second thread obtains decoded, preprocessed clips (``produce``; bench hands it
    to a decode process) while this one infers: the steady-state rate of a pipeline whose decode
    runs on another core. ``queue_wait_share``: the inference thread's time spent waiting for
    input (0 means the model is the bottleneck); ``produce_ms``: the producer's mean per clip."""
    import queue
    import threading

    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    produced: list[float] = []
    failure: list[BaseException] = []

    def producer() -> None:
        try:
            while not stop.is_set():
                started = time.perf_counter()
                clip = produce()
                produced.append(time.perf_counter() - started)
                while not stop.is_set():
                    try:
                        ready.put(clip, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # surfaced below, not swallowed
            failure.append(exc)

    def take() -> np.ndarray:
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            if failure:
                raise RuntimeError(f"the decode thread failed: {failure[0]!r}")
            try:
                return ready.get(timeout=0.05)
            except queue.Empty:
                continue
        raise RuntimeError("the decode thread produced nothing for 120 s")

    worker = threading.Thread(target=producer, name="bench-decode", daemon=True)
    worker.start()
    try:
        for _ in range(depth + 1):  # fill the pipeline and warm both sides
            runner(take())
        clips, waited = 0, 0.0
        started = time.perf_counter()
        while clips < min_clips or time.perf_counter() - started < min_seconds:
            wait_from = time.perf_counter()
            clip = take()
            waited += time.perf_counter() - wait_from
            runner(clip)
            clips += 1
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        worker.join(timeout=30)
    clips_per_s = clips / elapsed
    return {"clips": clips, "seconds": round(elapsed, 3), "clips_per_s": clips_per_s,
            "vs_model": clips_per_s * model_ms / 1e3, "queue_wait_share": round(waited / elapsed, 3),
            "produce_ms": round(1e3 * float(np.mean(produced)), 2) if produced else None}


def _run_subprocess(args: list[str], threads: int | None, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "edgevid.bench", *args]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise EdgevidError(f"benchmark {' '.join(args[:2])} took over {timeout:.0f} s; pass fewer --seconds or check the machine") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise EdgevidError(f"benchmark {' '.join(args[:2])} failed: {lines[-1] if lines else 'no output'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(kind: str, artifact_path: str | Path, threads: int | None, min_seconds: float = 2.0,
            video: str | Path | None = None, timeout: float = 1800) -> dict:
    """Run one measurement in a fresh subprocess and return its figures."""
    return _run_subprocess([kind, str(artifact_path), str(threads or 0), str(min_seconds), str(video or "-")], threads, timeout)


def measure_peak(precision: str, threads: int | None, seconds: float = 1.0) -> dict:
    """This machine's GEMM peak for ``precision`` (in a subprocess, like every measurement)."""
    cpu_has_fp16 = bool({"avx512_fp16", "amx_fp16"} & set(machine_info().get("isa", [])))
    if precision == "fp16" and not cpu_has_fp16:
        peak = _run_subprocess(["peak", "fp32", str(threads or 0), str(seconds)], threads, 300)
        return {**peak, "precision": "fp16", "method": peak["method"] + " (no native FP16 arithmetic: FP16 computes in FP32)"}
    return _run_subprocess(["peak", precision, str(threads or 0), str(seconds)], threads, 300)


def _gflops(model: str) -> float | None:
    try:
        from .models.flops import count

        return count(model)[1]
    except Exception as exc:  # an unregistered or unconstructible model: no roofline, not a failure
        log.debug("no FLOP count for %s: %s", model, exc)
        return None


def _measure_jobs(jobs: list[tuple[str, str, Path, Path | None]], threads: int | None, min_seconds: float,
                  repeats: int, optional: set[str] = frozenset(), progress: Callable[[str], None] | None = None) -> dict:
    """Run ``(key, kind, artifact, video)`` jobs ``repeats`` times in rotation; keep each key's
    median-p50 repeat. A failing key in ``optional`` is recorded as ``{"error": ...}``."""
    runs: dict[str, list[dict]] = {key: [] for key, *_ in jobs}
    errors: dict[str, str] = {}
    for round_ in range(repeats):
        for key, kind, path, video in jobs:
            if key in errors:
                continue
            if progress:
                progress(f"{key} ({kind})" + (f", repeat {round_ + 1}/{repeats}" if repeats > 1 else ""))
            try:
                runs[key].append(measure(kind, path, threads, min_seconds, video))
            except EdgevidError as exc:
                if key not in optional:
                    raise
                errors[key] = str(exc)
    result = {}
    for key, got in runs.items():
        if key in errors:
            result[key] = {"kind": key, "error": errors[key]}
            continue
        got.sort(key=lambda run: run["p50_ms"])
        chosen = dict(got[len(got) // 2])
        if len(got) > 1:
            p50s = [run["p50_ms"] for run in got]
            chosen["p50_repeats"] = p50s
            chosen["p50_spread_pct"] = round((max(p50s) - min(p50s)) / chosen["p50_ms"] * 100, 1)
        result[key] = chosen
    return result


def _derive(run: dict, manifest, gflops: float | None, peak: dict | None) -> None:
    """Throughput and roofline figures of one run, in place."""
    if "error" in run:
        return
    batch = manifest.input_shape[0]
    run["clips_per_s"] = batch * 1e3 / run["p50_ms"]
    run["video_frames_per_s"] = run["clips_per_s"] * manifest.spec.clip.frames * manifest.spec.clip.stride
    if "e2e" in run:
        run["e2e"]["clips_per_s"] = batch * 1e3 / run["e2e"]["p50_ms"]
        run["e2e_vs_model"] = run["e2e"]["clips_per_s"] / run["clips_per_s"]
    if "e2e_overlapped" in run:
        run["e2e_overlapped"]["clips_per_s"] *= batch
    if gflops:
        run["achieved_gops"] = gflops * batch / (run["p50_ms"] / 1e3)
        if peak and peak.get("gops"):
            run["pct_of_peak"] = 100 * run["achieved_gops"] / peak["gops"]


def bench_artifact(
    artifact_path: str | Path,
    threads: int | None = None,
    baselines: tuple[str, ...] = (),
    min_seconds: float = 2.0,
    e2e: bool = True,
    roofline: bool = True,
    repeats: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Time one artifact (model-only and end-to-end), optional 'eager' / 'compile' baselines in
    the same run, and the roofline; the figures also go into the artifact's report.json."""
    from .artifact import Artifact

    for kind in baselines:
        if kind not in BASELINES:
            raise EdgevidError(f"--baseline {kind}: choose eager or compile")
    if repeats < 1:
        raise EdgevidError(f"--repeats {repeats}: must be >= 1")
    artifact = Artifact(artifact_path)
    artifact.verify()
    m = artifact.manifest
    threads = threads or usable_cores()
    video = e2e_video(m.spec) if e2e else None
    jobs = [("artifact", "artifact", artifact.path, video)] + [(kind, kind, artifact.path, None) for kind in baselines]
    runs = _measure_jobs(jobs, threads, min_seconds, repeats, optional=set(baselines), progress=progress)
    gflops = _gflops(m.model) if roofline else None
    peaks = {}
    if gflops:
        for precision in {m.precision, *(["fp32"] if baselines else [])}:
            peaks[precision] = measure_peak(precision, threads)
    _derive(runs["artifact"], m, gflops, peaks.get(m.precision))
    for kind in baselines:
        _derive(runs[kind], m, gflops, peaks.get("fp32"))
    own = runs["artifact"]
    for kind in baselines:
        if "p50_ms" in runs[kind]:
            own[f"speedup_vs_{kind}"] = runs[kind]["p50_ms"] / own["p50_ms"]
    size = sum(artifact.file(name).stat().st_size for name in m.files)
    result = {"artifact": str(artifact.path), "model": m.model, "target": m.target, "backend": m.backend,
              "precision": m.precision, "threads": threads, "input_shape": m.input_shape, "gflops_per_clip": gflops,
              "runs": runs, "artifact_mb": round(size / 2**20, 2), "build_seconds": m.build_seconds,
              "peaks": peaks, "versions": m.versions, "runtime_versions": runtime_versions(), "machine": machine_info(),
              "method": METHOD}
    from .pipeline import record_report

    record_report(artifact, "bench", result)
    return result



def reported_model_fps(artifact_path: str | Path) -> dict | None:
    """``edgevid bench``'s model-only figure from an artifact's report.json, as a stream would count
    it: ``{"fps": windows/s (1000 / p50 ms: one window per runner call, whatever the batch),
    "p50_ms", "threads"}``; None when the artifact was never benchmarked (or the report is unreadable)."""
    from .artifact import Artifact

    try:
        report = Artifact(artifact_path).read_report()
    except (EdgevidError, OSError, ValueError):
        return None
    bench = report.get("bench") if isinstance(report, dict) else None
    run = bench.get("runs", {}).get("artifact", {}) if isinstance(bench, dict) else {}
    p50 = run.get("p50_ms") if isinstance(run, dict) else None
    if not isinstance(p50, (int, float)) or p50 <= 0:
        return None
    return {"fps": 1e3 / p50, "p50_ms": float(p50), "threads": bench.get("threads")}

METHOD = {
    "latency": "p50 of runs after warm-up until the 95% CI of the median is within 2% (or 3x --seconds); "
               "runs above median + 5 scaled MADs dropped",
    "e2e": "per clip: decode the H.264 file + sample the centre clip + resize/crop/normalise + inference",
    "e2e_overlapped": "the same clips decoded and preprocessed in a second process (one decoder thread; queue of 2)"
                      " while the runner infers: steady-state clips/s over at least --seconds and 12 clips;"
                      " vs_model = that x model-only p50",
    "video_frames_per_s": "clips/s x frames x stride",
    "speedup": "baseline p50 / artifact p50, same invocation and threads",
    "roofline": "GFLOPs = 2 x MACs (convs, linear, matmul) per clip; achieved GOPS = GFLOPs x batch / p50; "
                "peak = best 1024^3 GEMM via ONNX Runtime MLAS for the precision, same threads, same invocation",
}


# --- every CPU target of this machine -----------------------------------------------------------

HOST_DEVICES = {"cpu", "xnnpack"}


def host_targets(selected: Iterable[str] = ()) -> tuple[list, list[tuple[str, str]]]:
    """Targets whose artifacts can be built and run on this machine, and the others with why not."""
    from .backends import get_backend
    from .errors import BackendUnavailable
    from .targets import get_target, list_targets

    wanted = {get_target(name).name for name in selected}
    chosen, skipped, seen = [], [], {}
    for target in list_targets():
        if wanted and target.name not in wanted:
            continue
        try:
            backend = get_backend(target.backend)
            backend.check(for_build=True)
        except BackendUnavailable as exc:
            skipped.append((target.name, str(exc)))
            continue
        device = target.device.lower()
        if target.backend == "openvino" and device not in HOST_DEVICES:
            from .backends.openvino import available_devices, device_present

            if not device_present(target.device, available_devices()):
                skipped.append((target.name, f"OpenVINO device {target.device} is not present on this machine"))
                continue
        elif device not in HOST_DEVICES:
            skipped.append((target.name, f"runs on {target.device}, not this machine's CPU (build on the device)"))
            continue
        key = (target.backend, device)
        if key in seen and not wanted:
            skipped.append((target.name, f"same {target.backend} {target.device} engine as {seen[key]} on this machine"))
            continue
        seen[key] = target.name
        chosen.append(target)
    return chosen, skipped


def ensure_artifact(model: str, target, precision: str, out: Path, weights: str | None, calib: str | None,
                    calib_size: int | None, rebuild: bool, track=None) -> tuple[Path, bool]:
    """The artifact folder for (model, target, precision) under ``out``, built if missing or stale."""
    from .artifact import artifact_name
    from .build import build_artifact
    from .models import canonical_name

    from .pipeline import stale_reason

    path = Path(out) / artifact_name(canonical_name(model), target.name, precision)
    if path.is_dir() and not rebuild:
        reason = stale_reason(path, model, target, weights, calib if precision == "int8" else None,
                              calib_size if precision == "int8" else None)
        if reason is None:
            return path, False
        log.info("rebuilding %s: %s", path, reason)
    artifact = build_artifact(model, target.name, precision, weights, calib, calib_size, out, track=track)
    return artifact.path, True


def bench_all_targets(
    model: str,
    out: str | Path = "artifacts",
    threads: int | None = None,
    targets: Iterable[str] = (),
    precisions: Iterable[str] = (),
    weights: str | None = None,
    calib: str | None = None,
    calib_size: int | None = None,
    baselines: tuple[str, ...] = BASELINES,
    min_seconds: float = 2.0,
    e2e: bool = True,
    repeats: int = 1,
    rebuild: bool = False,
    progress: Callable[[str], None] | None = None,
    track=None,
) -> dict:
    """Build what is missing for every CPU target of this machine and every precision, then time
    all artifacts and the baselines in one invocation."""
    from .artifact import Artifact
    from .models import canonical_name

    name = canonical_name(model)
    if repeats < 1:
        raise EdgevidError(f"--repeats {repeats}: must be >= 1")
    for kind in baselines:
        if kind not in BASELINES:
            raise EdgevidError(f"--baseline {kind}: choose eager or compile")
    precisions = set(precisions)
    threads = threads or usable_cores()
    chosen, skipped = host_targets(targets)
    artifacts, failures = [], []
    for target in chosen:
        for precision in target.precisions:
            if precisions and precision not in precisions:
                continue
            if progress:
                progress(f"artifact {name} {target.name} {precision}")
            try:
                path, built = ensure_artifact(name, target, precision, Path(out), weights, calib, calib_size, rebuild, track)
            except EdgevidError as exc:
                failures.append({"target": target.name, "precision": precision, "error": str(exc)})
                continue
            except Exception as exc:  # a backend bug must not hide the other targets' figures
                failures.append({"target": target.name, "precision": precision,
                                 "error": f"{type(exc).__name__}: {first_line(exc)}"})
                continue
            artifacts.append((path, built))
    if not artifacts:
        why = "; ".join(f"{f['target']} {f['precision']}: {f['error']}" for f in failures) or "no target selected"
        raise EdgevidError(f"--all-targets --model {name}: nothing to benchmark ({why})")
    first = Artifact(artifacts[0][0])
    video = e2e_video(first.manifest.spec) if e2e else None
    jobs = [(path.name, "artifact", path, video) for path, _ in artifacts]
    jobs += [(kind, kind, first.path, None) for kind in baselines]
    runs = _measure_jobs(jobs, threads, min_seconds, repeats, optional={path.name for path, _ in artifacts} | set(baselines),
                         progress=progress)
    gflops = _gflops(name)
    used = {Artifact(path).manifest.precision for path, _ in artifacts} | ({"fp32"} if baselines else set())
    peaks = {precision: measure_peak(precision, threads) for precision in sorted(used)} if gflops else {}
    for kind in baselines:
        _derive(runs[kind], first.manifest, gflops, peaks.get("fp32"))
    rows = []
    for path, built in artifacts:
        artifact = Artifact(path)
        m = artifact.manifest
        run = runs[path.name]
        _derive(run, m, gflops, peaks.get(m.precision))
        for kind in baselines:
            if "p50_ms" in run and "p50_ms" in runs[kind]:
                run[f"speedup_vs_{kind}"] = runs[kind]["p50_ms"] / run["p50_ms"]
        size = sum(artifact.file(n).stat().st_size for n in m.files)
        entry = {"artifact": str(path), "model": m.model, "target": m.target, "backend": m.backend, "precision": m.precision,
                 "input_shape": m.input_shape, "artifact_mb": round(size / 2**20, 2), "build_seconds": m.build_seconds,
                 "built_now": built, "weights": m.weights.source, "versions": m.versions, "notes": m.notes,
                 "runs": {"artifact": run}}
        if "error" not in run:
            from .pipeline import record_report

            record_report(artifact, "bench", {**entry, "runs": {"artifact": run, **{k: runs[k] for k in baselines}},
                                              "threads": threads, "gflops_per_clip": gflops, "machine": machine_info()})
        rows.append(entry)
    return {"model": name, "threads": threads, "gflops_per_clip": gflops, "input_shape": first.manifest.input_shape,
            "artifacts": rows, "baselines": {kind: runs[kind] for kind in baselines}, "failures": failures,
            "skipped_targets": [{"target": t, "reason": r} for t, r in skipped], "peaks": peaks,
            "runtime_versions": runtime_versions(), "machine": machine_info(), "method": METHOD}


# --- tables -------------------------------------------------------------------------------------

COLUMNS = ("run", "target", "precision", "p50 ms", "p99 ms", "clips/s", "video frames/s", "e2e p50 ms", "e2e clips/s",
           "e2e/model", "overlapped clips/s", "overlapped/model", "x eager", "x compile", "GOPS", "% peak", "peak RSS MB", "size MB", "build s")


def table_rows(result: dict) -> list[dict]:
    """One row per artifact and baseline, for `bench_artifact` and `bench_all_targets` results alike."""
    if "artifacts" in result:
        entries = [(Path(a["artifact"]).name, a, a["runs"]["artifact"]) for a in result["artifacts"]]
        baselines = result["baselines"]
    else:
        entries = [(Path(result["artifact"]).name, result, result["runs"]["artifact"])]
        baselines = {k: v for k, v in result["runs"].items() if k != "artifact"}
    rows = []
    for name, entry, run in entries:
        rows.append(_row(name, entry.get("target"), entry.get("precision"), run, entry.get("artifact_mb"), entry.get("build_seconds")))
    for kind, run in baselines.items():
        rows.append(_row(f"PyTorch {'eager' if kind == 'eager' else 'torch.compile'} (baseline)", "-", "fp32", run, None, None))
    return rows


def _row(name, target, precision, run, size, build) -> dict:
    if "error" in run:
        return {"run": name, "target": target, "precision": precision, "p50 ms": f"failed: {run['error'][:120]}"}
    e2e = run.get("e2e", {})
    return {
        "run": name, "target": target, "precision": precision, "p50 ms": run.get("p50_ms"), "p99 ms": run.get("p99_ms"),
        "clips/s": run.get("clips_per_s"), "video frames/s": run.get("video_frames_per_s"), "e2e p50 ms": e2e.get("p50_ms"),
        "e2e clips/s": e2e.get("clips_per_s"), "e2e/model": run.get("e2e_vs_model"),
        "overlapped clips/s": run.get("e2e_overlapped", {}).get("clips_per_s"),
        "overlapped/model": run.get("e2e_overlapped", {}).get("vs_model"), "x eager": run.get("speedup_vs_eager"),
        "x compile": run.get("speedup_vs_compile"), "GOPS": run.get("achieved_gops"), "% peak": run.get("pct_of_peak"),
        "peak RSS MB": run.get("peak_rss_mb"), "size MB": size, "build s": build,
    }


def cell(value, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if column.startswith("x ") or column in ("e2e/model", "overlapped/model"):
            return f"{value:.2f}x"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def header_lines(result: dict) -> list[str]:
    machine = result["machine"]
    lines = [
        f"machine: {machine.get('cpu', '?')}, {machine.get('usable_cores')} usable of {machine.get('cores')} cores, "
        f"ISA {' '.join(machine.get('isa', [])) or '?'}, {machine.get('memory_gb', '?')} GB, {machine.get('os', '')}",
        f"model: {result['model']}  input {result['input_shape']}  "
        f"{'%.2f GFLOPs per clip (2 x MACs)' % result['gflops_per_clip'] if result.get('gflops_per_clip') else 'GFLOPs unknown'}"
        f"  threads: {result['threads']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in result.get("runtime_versions", {}).items()),
    ]
    for precision, peak in sorted(result.get("peaks", {}).items()):
        lines.append(f"peak {precision}: {peak.get('gops') or '-'} GOPS ({peak.get('method')})")
    return lines


def markdown(result: dict) -> str:
    """The table and its context as Markdown."""
    rows = table_rows(result)
    out = [f"### edgevid bench: {result['model']}", ""]
    out += [f"- {line}" for line in header_lines(result)]
    out += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    out += ["| " + " | ".join(cell(row.get(c), c) for c in COLUMNS) + " |" for row in rows]
    notes = [f"{f['target']} {f['precision']}: {f['error']}" for f in result.get("failures", [])]
    notes += [f"{s['target']}: skipped, {s['reason']}" for s in result.get("skipped_targets", [])]
    if notes:
        out += ["", *[f"- {note}" for note in notes]]
    out += ["", "Method: " + "; ".join(f"{k}: {v}" for k, v in result.get("method", METHOD).items()), ""]
    return "\n".join(out)


if __name__ == "__main__":  # subprocess entry point used by ``measure`` / ``measure_peak``
    _kind, _arg, _threads, _secs = sys.argv[1:5]
    if _kind == "peak":
        print(json.dumps(_peak_worker(_arg, int(_threads) or None, float(_secs))))
    else:
        _video = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else None
        print(json.dumps(_worker(_kind, _arg, int(_threads) or None, float(_secs), _video)))
