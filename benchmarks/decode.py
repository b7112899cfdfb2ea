"""Decode benchmark: memory bounded by the clip, and segment sampling faster than decoding every frame.

    python benchmarks/decode.py [--minutes 10] [--width 1920 --height 1080] [--json FILE]

1. **Memory.** Writes (once, cached under ``$EDGEVID_HOME/bench``) an H.264 file of ``--minutes``
   at ``--width x --height``, 30 fps (x264 defaults but the ``ultrafast`` preset: keyframes every
   250 frames at most), then, each in a fresh subprocess, produces the test views of
   ``x3d_s`` (10 clips x 3 crops) and ``uniformerv2_b16`` (4 x 3) with ``edgevid.data.views``.
   Reported: peak RSS growth (peak during minus RSS before, the libraries already loaded by a
   warm-up on a small file; the kernel's peak mark ``VmHWM`` reset just before) minus the views
   tensor's own bytes (the issue's budget: <= 150 MB), the
   wall time, and the decoder's counts (packets read, frames decoded / converted, seeks).
2. **Speed.** A 10-s 30 fps 340x256 H.264 file, written with x264's default GOP (keyint 250) and
   with 1-s GOPs (keyint 30): one 8-segment ``uniformerv2_b16`` clip and its 4 x 3 test views,
   against decoding every frame (PyAV's bare decode, and decode + RGB conversion + resize of every
   frame, which is what ``read_video`` and main's views did). Best of ``--repeats`` runs, one
   decoder thread per run (``--threads``), wall and process CPU time (the steadier figure on a
   shared machine; the speed-ups are given for both).
3. **Extreme aspect ratio.** An 8192x8 file: the one-line error, and how long it took.

Results (with the machine and versions) go to ``benchmarks/results/decode.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def long_video(minutes: float, width: int, height: int) -> Path:
    """A cached ``minutes``-long 30 fps H.264 file: a textured background under moving blocks,
    generated frame by frame (never all in memory)."""
    import av

    from edgevid.paths import edgevid_home

    path = edgevid_home() / "bench" / f"decode-{width}x{height}-{minutes:g}min-30fps.mp4"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.mp4")
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    background = np.repeat(np.repeat(tile, 8, 0), 8, 1)[:height, :width]
    frames = int(minutes * 60 * 30)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        image = np.empty_like(background)
        for i in range(frames):
            np.copyto(image, background)
            x, y = (i * 7) % (width - 200), (i * 3) % (height - 200)
            image[y:y + 200, x:x + 200] = (i * 5 % 256, 255 - i % 256, 128)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    tmp.rename(path)
    return path


def short_video(keyint: int | None) -> Path:
    """A cached 10-s 30 fps 340x256 H.264 file (SynthMotion content, rendered at 30 fps)."""
    from edgevid.data.synthmotion import render_clip
    from edgevid.data.transforms import resize
    from edgevid.data.video import write_video
    from edgevid.paths import edgevid_home

    path = edgevid_home() / "bench" / f"decode-340x256-10s-30fps-keyint{keyint or 'default'}.mp4"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = resize(render_clip(3_000_005, times=np.arange(300) / 30).frames, 256, 340)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.mp4")
        write_video(tmp, frames, 30, keyframe_interval=keyint)
        tmp.rename(path)
    return path


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak() -> float:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS and return that RSS (MB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def memory_child(model: str, video: str, warmup: str) -> dict:
    """In a fresh process: peak RSS growth while producing ``model``'s test views of ``video``."""
    from edgevid.data.video import decode_frames
    import edgevid.data.video as video_mod
    from edgevid.data.views import load_views
    from edgevid.models import get_spec

    spec = get_spec(model)
    load_views(warmup, spec, "test")  # libraries, codec and swscale contexts loaded
    counts: dict = {}
    original = video_mod.decode_frames

    def counted(*args, **kwargs):
        kwargs["stats"] = counts
        return original(*args, **kwargs)

    video_mod.decode_frames = counted
    before = reset_peak()  # RSS now; VmHWM from here on is the peak of this run alone
    started = time.perf_counter()
    views = load_views(video, spec, "test")
    seconds = time.perf_counter() - started
    after = _status_mb("VmHWM")
    video_mod.decode_frames = decode_frames
    views_mb = views.inputs.nbytes / 2**20
    return {"model": model, "views": list(views.inputs.shape), "views_mb": round(views_mb, 1),
            "rss_before_mb": round(before, 1), "peak_rss_during_mb": round(after, 1),
            "growth_above_views_mb": round(after - before - views_mb, 1), "seconds": round(seconds, 2),
            "decoder": counts, "notes": views.notes}


def best_ms(fn, repeats: int) -> dict:
    """Best of ``repeats``: wall ms, and CPU ms of this process (steadier on a shared machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return {"wall_ms": round(min(wall) * 1e3, 1), "cpu_ms": round(min(cpu) * 1e3, 1)}


def speed(keyint: int | None, repeats: int, threads: int) -> dict:
    import av

    from edgevid.data.transforms import scaled_size
    from edgevid.data.video import _SCALE_TO_RGB, decode_frames, read_meta
    from edgevid.data.views import load_views
    from edgevid.models import get_spec

    path = short_video(keyint)
    spec = get_spec("uniformerv2_b16")
    meta = read_meta(path)

    def bare():
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = threads
            return sum(1 for _ in container.decode(stream))

    def every_frame_converted():  # what read_video / main's views did before sampling
        height, width = scaled_size(256, 340, spec.clip.crop)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = threads
            return np.stack([f.to_ndarray(format="rgb24", width=width, height=height, interpolation=_SCALE_TO_RGB)
                             for f in container.decode(stream)])

    clip_counts: dict = {}
    from edgevid.data.sampling import plan_clips

    plan = plan_clips(meta.times, spec, "center")
    decode_frames(meta, plan.indices.reshape(-1), spec.clip.short_side, threads, stats=clip_counts)
    result = {
        "file": path.name, "keyframes": int(meta.keyframes.sum()), "frames": meta.frames,
        "bare_decode_every_frame_ms": best_ms(bare, repeats),
        "decode_and_convert_every_frame_ms": best_ms(every_frame_converted, repeats),
        "segment_clip_8_frames_ms": best_ms(lambda: load_views(path, spec, "center", threads=threads), repeats),
        "test_views_4x3_ms": best_ms(lambda: load_views(path, spec, "test", threads=threads), repeats),
        "segment_clip_decoder": clip_counts,
    }
    for base in ("bare_decode_every_frame_ms", "decode_and_convert_every_frame_ms"):
        result[f"segment_clip_speedup_vs_{base[:-3]}"] = {
            kind: round(result[base][kind] / result["segment_clip_8_frames_ms"][kind], 2) for kind in ("wall_ms", "cpu_ms")}
    return result


def aspect() -> dict:
    from edgevid.data.video import write_video
    from edgevid.data.views import load_views
    from edgevid.errors import DataError
    from edgevid.models import get_spec
    from edgevid.paths import edgevid_home

    path = edgevid_home() / "bench" / "decode-8192x8.mp4"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, np.zeros((45, 8, 8192, 3), np.uint8), 15)
    spec = get_spec("x3d_s")
    before = reset_peak()
    started = time.perf_counter()
    try:
        load_views(path, spec, "test")
        message = "accepted (unexpected)"
    except DataError as exc:
        message = str(exc)
    return {"file": f"{path.name} ({path.stat().st_size} bytes)", "error": message,
            "ms": round((time.perf_counter() - started) * 1e3, 1),
            "peak_rss_growth_mb": round(_status_mb("VmHWM") - before, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="decoder threads in the speed runs")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "decode.json")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(memory_child(*args.child)))
        return

    import av

    from edgevid import __version__

    started = time.perf_counter()
    video = long_video(args.minutes, args.width, args.height)
    made = time.perf_counter() - started
    warmup = short_video(None)
    memory = []
    for model in ("x3d_s", "uniformerv2_b16"):
        proc = subprocess.run([sys.executable, __file__, "--child", model, str(video), str(warmup)],
                              capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        memory.append(json.loads(proc.stdout.splitlines()[-1]))
        print(json.dumps(memory[-1]), flush=True)
    speeds = [speed(keyint, args.repeats, args.threads) for keyint in (None, 30)]
    for row in speeds:
        print(json.dumps(row), flush=True)
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "pyav": av.__version__, "ffmpeg": av.library_versions.get("libavcodec"), "edgevid": __version__,
                    "note": "shared 2-core machine, other jobs running"},
        "long_video": {"file": video.name, "bytes": video.stat().st_size, "generated_seconds": round(made, 1)},
        "memory": memory,
        "speed": speeds,
        "aspect": aspect(),
    }
    print(json.dumps(result["aspect"]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
