"""Streaming benchmark: end-to-end vs model-only FPS, and memory over a long stream.

    python benchmarks/streaming.py [--artifact PATH] [--frames 2000] [--threads 2] [--json FILE]

Streams an H.264 file of ``--frames`` SynthMotion frames (clips of the test split back to back,
15 fps) through ``edgevid.streaming.StreamClassifier`` as fast as it goes: decode each frame,
sample at the model's training interval, preprocess into the ring, classify every sampled frame
(window stride 1), smooth. Reported, all from that one run:

- model-only FPS = windows / inference seconds; end-to-end FPS = windows / wall seconds of the
  whole loop (decode of every frame + sampling + preprocessing + inference + smoothing); their
  ratio (the issue asks >= 0.8 on the fastest CPU artifact);
- RSS (from /proc/self/statm) after a warm-up of 200 frames and at the end, and its maximum in
  between (the issue asks growth < 50 MB over 2,000 frames);
- with reference weights, the top-1 accuracy of windows that lie inside one clip.

Default artifact: the reference model ``x3d_synth`` on OpenVINO INT8 (``intel-cpu``), built into
``artifacts/demo`` when missing (reference weights when shipped, else random: speed does not
depend on them); ONNX Runtime INT8 where OpenVINO is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

FRAMES_PER_CLIP = 32
WARMUP_FRAMES = 200


def rss_mb() -> float:
    """Current resident set size (not the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stream_video(frames: int) -> tuple[Path, np.ndarray]:
    """A cached H.264 stream of ``frames`` SynthMotion frames, and each frame's class index."""
    from edgevid.data.synthmotion import FPS, generate_clip, split_seeds
    from edgevid.data.video import write_video
    from edgevid.paths import edgevid_home

    clips = -(-frames // FRAMES_PER_CLIP)
    seeds = split_seeds("test", clips)
    labels = np.repeat([seed % 8 for seed in seeds], FRAMES_PER_CLIP)[:frames]
    path = edgevid_home() / "bench" / f"stream-{frames}f-{FPS}fps.mp4"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        video = np.concatenate([generate_clip(seed)[0] for seed in seeds])[:frames]
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.mp4")
        write_video(tmp, video, FPS)
        os.replace(tmp, path)
    return path, labels


def default_artifact(out: Path) -> Path:
    from edgevid.bench import ensure_artifact
    from edgevid.models.weights import SHIPPED
    from edgevid.targets import get_target

    try:
        import openvino  # noqa: F401

        target = get_target("intel-cpu")
    except ImportError:
        target = get_target("onnx-cpu")
    weights = None if (SHIPPED / "x3d_synth.pt").is_file() else "random"
    path, built = ensure_artifact("x3d_synth", target, "int8", out, weights, None, None, False)
    print(f"{'built' if built else 'using'} {path}", file=sys.stderr)
    return path


def run(artifact_path: Path, frames: int, threads: int | None) -> dict:
    from edgevid.artifact import Artifact
    from edgevid.backends import open_runner
    from edgevid.bench import machine_info, runtime_versions
    from edgevid.data.sampling import clip_span
    from edgevid.streaming import StreamClassifier, iter_video_frames

    artifact = Artifact(artifact_path)
    m = artifact.manifest
    video, frame_labels = stream_video(frames)
    runner = open_runner(artifact, threads=threads, mode="latency")
    runner(np.zeros(m.input_shape, np.float32))  # first-run compilation is not streaming
    stream = StreamClassifier(runner, m.spec, m.labels, window_stride=1)
    span = clip_span(m.spec.clip.frames, m.spec.clip.stride)
    rss = {"start": rss_mb()}
    rss_max = rss["start"]
    inside = correct = 0
    started = time.perf_counter()
    for index, (pixels, seconds, decode_ms) in enumerate(iter_video_frames(video)):
        result = stream.push(pixels, seconds, decode_ms)
        if result is not None:
            first = result.frame_index - span + 1
            clip = frame_labels[max(first, 0)]
            if first >= 0 and first // FRAMES_PER_CLIP == result.frame_index // FRAMES_PER_CLIP:
                inside += 1
                correct += result.raw_top1 == m.labels[clip]
        if index + 1 == WARMUP_FRAMES:
            rss["after_warmup"] = rss_mb()
        if index % 50 == 0:
            rss_max = max(rss_max, rss_mb())
    wall = time.perf_counter() - started
    runner.close()
    rss["end"] = rss_mb()
    rss["max"] = max(rss_max, rss["end"])
    stats = stream.stats
    model_fps, e2e_fps = stats.model_fps(), stats.windows / wall
    return {
        "artifact": str(artifact.path), "backend": m.backend, "precision": m.precision, "weights": m.weights.source,
        "threads": threads, "frames": stats.frames, "sampled": stats.sampled, "windows": stats.windows,
        "wall_seconds": round(wall, 2), "model_only_fps": model_fps, "end_to_end_fps": e2e_fps,
        "e2e_over_model": e2e_fps / model_fps, "pipeline_fps_from_window_times": stats.e2e_fps(),
        "video_frames_per_s": stats.frames / wall, "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "rss_growth_mb": round(rss["end"] - rss["after_warmup"], 1),
        "window_top1_inside_one_clip": (100 * correct / inside if inside and not m.weights.random else None),
        "windows_inside_one_clip": inside, "machine": machine_info(), "runtime_versions": runtime_versions(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, help="artifact folder (default: x3d_synth OpenVINO INT8, built if missing)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/demo"), help="where the default artifact is built")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    artifact = args.artifact or default_artifact(args.out)
    result = run(artifact, args.frames, args.threads)
    ratio_ok = result["e2e_over_model"] >= 0.8
    rss_ok = result["rss_growth_mb"] < 50
    print(f"streaming {Path(result['artifact']).name} ({result['backend']} {result['precision']}, threads={args.threads or 'default'})"
          f" on {result['machine'].get('cpu')}: {result['frames']} frames, {result['windows']} windows in {result['wall_seconds']} s")
    print(f"  model-only {result['model_only_fps']:.1f} windows/s, end-to-end {result['end_to_end_fps']:.1f} windows/s"
          f" -> ratio {result['e2e_over_model']:.2f} ({'meets' if ratio_ok else 'misses'} >= 0.8);"
          f" {result['video_frames_per_s']:.0f} video frames/s decoded")
    print(f"  RSS {result['rss_mb']['after_warmup']:.1f} MB after {WARMUP_FRAMES} frames -> {result['rss_mb']['end']:.1f} MB at the end"
          f" (max {result['rss_mb']['max']:.1f}): growth {result['rss_growth_mb']:+.1f} MB ({'meets' if rss_ok else 'misses'} < 50 MB)")
    if result["window_top1_inside_one_clip"] is not None:
        print(f"  top-1 of the {result['windows_inside_one_clip']} windows inside one clip: {result['window_top1_inside_one_clip']:.1f} %")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
