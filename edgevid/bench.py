"""`edgevid bench`: latency, throughput and memory of an artifact and of PyTorch baselines.

Every measurement runs in its own subprocess (``python -m edgevid.bench``) so that peak RSS is
the runner's own and one backend's thread pools do not disturb another's. Baselines are measured
in the same invocation, one after the other, so ratios compare like with like.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import EdgevidError


@dataclass
class Timing:
    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    outliers_dropped: int


def time_callable(fn, warmup: int = 3, min_runs: int = 10, min_seconds: float = 2.0, max_runs: int = 1000) -> Timing:
    """Time ``fn()`` after warm-up until both ``min_runs`` and ``min_seconds`` are reached.

    Runs slower than median + 5 * MAD are dropped as outliers (preemption, page faults); how many
    were dropped is reported.
    """
    for _ in range(warmup):
        fn()
    samples = []
    started = time.perf_counter()
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() - started < min_seconds):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    raw = np.array(samples)
    median = np.median(raw)
    mad = np.median(np.abs(raw - median)) or 1e-9
    kept = raw[raw <= median + 5 * mad * 1.4826]
    return Timing(
        runs=int(len(kept)),
        mean_ms=float(kept.mean()),
        p50_ms=float(np.percentile(kept, 50)),
        p90_ms=float(np.percentile(kept, 90)),
        p99_ms=float(np.percentile(kept, 99)),
        min_ms=float(kept.min()),
        outliers_dropped=int(len(raw) - len(kept)),
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def machine_info() -> dict:
    info = {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        info["cpu"] = model
        info["isa"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16") if f in flags]
    except OSError:
        info["cpu"] = platform.processor()
    return info


def _worker(kind: str, artifact_path: str, threads: int | None, min_seconds: float) -> dict:
    """Runs inside the subprocess: open, time, report."""
    from .artifact import Artifact

    artifact = Artifact(artifact_path)
    shape = tuple(artifact.manifest.input_shape)
    clip = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    load_started = time.perf_counter()
    if kind == "artifact":
        from .backends import open_runner

        runner = open_runner(artifact, threads=threads, mode="latency")
        fn = lambda: runner(clip)  # noqa: E731
    else:
        import torch

        from .harness.eval import reference_runner

        eager = reference_runner(artifact.manifest, threads)
        model = eager.model
        if kind == "compile":
            model = torch.compile(model)
        tensor = torch.from_numpy(clip)

        def fn():
            with torch.inference_mode():
                return model(tensor)

    fn()
    load_seconds = time.perf_counter() - load_started
    timing = time_callable(fn, min_seconds=min_seconds)
    return {"kind": kind, "load_seconds": round(load_seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1), **asdict(timing)}


def measure(kind: str, artifact_path: str | Path, threads: int | None, min_seconds: float = 2.0, timeout: float = 900) -> dict:
    """Run one measurement in a fresh subprocess and return its figures."""
    cmd = [sys.executable, "-m", "edgevid.bench", kind, str(artifact_path), str(threads or 0), str(min_seconds)]
    env = dict(os.environ)
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise EdgevidError(f"benchmark of {artifact_path} ({kind}) failed: {lines[-1] if lines else 'no output'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_artifact(
    artifact_path: str | Path,
    threads: int | None = None,
    baselines: tuple[str, ...] = (),
    min_seconds: float = 2.0,
) -> dict:
    """Time an artifact (and optional 'eager' / 'compile' baselines in the same run)."""
    from .artifact import Artifact

    artifact = Artifact(artifact_path)
    artifact.verify()
    m = artifact.manifest
    result = {"artifact": str(artifact.path), "model": m.model, "target": m.target, "backend": m.backend,
              "precision": m.precision, "threads": threads, "input_shape": m.input_shape}
    runs = {"artifact": measure("artifact", artifact.path, threads, min_seconds)}
    for kind in baselines:
        if kind not in ("eager", "compile"):
            raise EdgevidError(f"--baseline {kind}: choose eager or compile")
        runs[kind] = measure(kind, artifact.path, threads, min_seconds)
    batch = m.input_shape[0]
    span = m.spec.clip.frames * m.spec.clip.stride
    for kind, run in runs.items():
        run["clips_per_s"] = batch * 1e3 / run["mean_ms"]
        run["video_frames_per_s"] = run["clips_per_s"] * span
    own = runs["artifact"]
    for kind in baselines:
        own[f"speedup_vs_{kind}"] = runs[kind]["mean_ms"] / own["mean_ms"]
    size = sum(artifact.file(name).stat().st_size for name in m.files)
    result.update(runs=runs, artifact_mb=round(size / 2**20, 2), build_seconds=m.build_seconds,
                  versions=m.versions, machine=machine_info())
    artifact.update_report("bench", result)
    return result


if __name__ == "__main__":  # subprocess entry point used by ``measure``
    _kind, _path, _threads, _secs = sys.argv[1:5]
    print(json.dumps(_worker(_kind, _path, int(_threads) or None, float(_secs))))
