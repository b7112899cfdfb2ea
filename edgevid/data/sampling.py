"""Which frames make a clip: one sampler in stream time for every path (numpy only).

**Resampling.** A video is first resampled to the model's training frame rate
(``ModelSpec.training_fps``): resampled frame ``k`` is the first source frame at or after stream
time ``t0 + k / fps`` (``t0``: the first frame's time; 1 ms tolerance for timestamp rounding; the
last frame past the end), over the video's duration (last timestamp + one frame). The rule is
causal, so a live stream applies it with no delay. Every index formula below counts resampled frames, so the
same motion at 5, 15, 30, 60 or 120 fps, or at a variable rate, gives the same frame times. A
source at the training rate resamples to itself (the official code's indices, exactly).
``streaming.FrameSampler`` applies the same rule online, frame by frame.

**Dense clips** are ``frames`` frames spanning ``stride`` frames each. Two spacings:
``stride`` (exactly ``stride`` apart, span ``(frames - 1) * stride + 1``: edgevid's reference
models) and ``linspace`` (SlowFast/TimeSformer ``temporal_sampling``: ``frames`` indices
``linspace(start, start + frames * stride - 1)`` truncated). Test clip starts: ``uniform``
(``delta * i / k``, SlowFast's default; one clip starts at frame 0 as TimeSformer's decoder),
``offset`` (``i * floor(delta / (k - 1))``, one clip centred: SlowFast ``USE_OFFSET_SAMPLING``)
and ``centre`` (``floor(i * delta / (k - 1))``, one clip ``delta // 2``), with
``delta = max(num_frames - clip size, 0)``.

**Segment sampling** (``ClipSpec.sampling == "segment"``, TSN-style, as UniFormerV2's
``kinetics_sparse`` and SSv2 loaders do) instead splits the whole video into ``frames`` equal
segments of ``seg = (num_frames - 1) / frames`` frames and takes one frame from each: at test
time view ``i`` of ``k`` takes frame ``round(seg * j) + int(seg / (k + 1) * (i + 1))`` of segment
``j``; in training a random frame between ``round(seg * j)`` and ``round(seg * (j + 1))``.

**Short videos.** Indices past the end are clamped to the last frame (it repeats), as the
official loaders clamp them; ``ClipPlan.padded`` says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def clip_span(frames: int, stride: int) -> int:
    """Source frames covered by one clip."""
    return (frames - 1) * stride + 1


def _check(num_frames: int, frames: int, stride: int) -> None:
    if num_frames < 1 or frames < 1 or stride < 1:
        raise ValueError(f"need num_frames, frames, stride >= 1, got {num_frames}, {frames}, {stride}")


def clip_indices(num_frames: int, frames: int, stride: int, num_clips: int = 1) -> np.ndarray:
    """Source-frame indices ``[num_clips, frames]`` (int64) of the test-time uniform views."""
    _check(num_frames, frames, stride)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    delta = max(num_frames - clip_span(frames, stride), 0)
    if num_clips == 1:
        starts = np.array([delta // 2])
    else:
        starts = np.arange(num_clips) * delta // (num_clips - 1)
    indices = starts[:, None] + stride * np.arange(frames)[None, :]
    return np.minimum(indices, num_frames - 1)


def random_clip_indices(num_frames: int, frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """Source-frame indices ``[frames]`` of one training clip at a uniformly random start."""
    _check(num_frames, frames, stride)
    delta = max(num_frames - clip_span(frames, stride), 0)
    start = int(rng.integers(0, delta + 1))
    return np.minimum(start + stride * np.arange(frames), num_frames - 1)


def segment_indices(num_frames: int, frames: int, num_clips: int = 1) -> np.ndarray:
    """Source-frame indices ``[num_clips, frames]`` of the test views under segment sampling."""
    _check(num_frames, frames, 1)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    seg = (num_frames - 1) / frames
    starts = np.round(seg * np.arange(frames)).astype(np.int64)
    offsets = (seg / (num_clips + 1) * (np.arange(num_clips) + 1)).astype(np.int64)
    return np.minimum(starts[None, :] + offsets[:, None], num_frames - 1)


def random_segment_indices(num_frames: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Source-frame indices ``[frames]`` of one training clip under segment sampling."""
    _check(num_frames, frames, 1)
    seg = (num_frames - 1) / frames
    starts = np.round(seg * np.arange(frames)).astype(np.int64)
    ends = np.round(seg * (np.arange(frames) + 1)).astype(np.int64)
    return np.minimum(rng.integers(starts, ends + 1), num_frames - 1)


def view_indices(num_frames: int, clip, num_clips: int) -> np.ndarray:
    """Test-view indices ``[num_clips, frames]`` for a ``ClipSpec``, in its sampling mode."""
    if clip.sampling == "segment":
        return segment_indices(num_frames, clip.frames, num_clips)
    return clip_indices(num_frames, clip.frames, clip.stride, num_clips)


def train_indices(num_frames: int, clip, rng: np.random.Generator) -> np.ndarray:
    """One training clip's indices ``[frames]`` for a ``ClipSpec``, in its sampling mode."""
    if clip.sampling == "segment":
        return random_segment_indices(num_frames, clip.frames, rng)
    return random_clip_indices(num_frames, clip.frames, clip.stride, rng)


# --- the official (SlowFast / TimeSformer) dense formula ------------------------------------------


def slowfast_clip_indices(num_frames: int, frames: int, stride: int, num_clips: int = 1, starts: str = "uniform") -> np.ndarray:
    """Indices ``[num_clips, frames]`` as SlowFast's ``get_start_end_idx`` + ``temporal_sampling``
    (clip size ``frames * stride``; ``starts`` uniform = ``delta * i / k``, offset = SlowFast's
    ``USE_OFFSET_SAMPLING``)."""
    _check(num_frames, frames, stride)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    size = frames * stride
    delta = max(num_frames - size, 0)
    clip = np.arange(num_clips)
    if starts == "uniform":
        start = delta * clip / num_clips
    elif num_clips == 1:
        start = np.array([math.floor(delta / 2)], dtype=np.float64)
    else:
        start = clip * math.floor(delta / (num_clips - 1))
    index = np.stack([_linspace32(float(s), float(s) + size - 1, frames) for s in np.atleast_1d(start)])
    return np.clip(index, 0, num_frames - 1).astype(np.int64)


def _linspace32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` in float32 as its scalar CPU kernel computes it (from
    the start for the first half, back from the end for the second). Torch's vectorised lanes round
    differently in the last bit, so where a value lies within ~1e-5 of an integer the official
    truncation may land one frame apart (about 1 clip in 1000 on realistic grids)."""
    start32, end32 = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([start32], np.float32)
    step = np.float32((end32 - start32) / np.float32(steps - 1))
    i = np.arange(steps)
    first = start32 + step * i.astype(np.float32)
    second = end32 - step * (steps - i - 1).astype(np.float32)
    return np.where(i < steps // 2, first, second).astype(np.float32)


def random_slowfast_indices(num_frames: int, frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """One training clip ``[frames]`` as SlowFast: start uniform in ``[0, delta]``, linspace."""
    _check(num_frames, frames, stride)
    size = frames * stride
    start = rng.uniform(0, max(num_frames - size, 0))
    return np.clip(_linspace32(start, start + size - 1, frames), 0, num_frames - 1).astype(np.int64)


def protocol_view_indices(num_frames: int, spec, num_clips: int | None = None) -> np.ndarray:
    """Test-view indices ``[num_clips, frames]`` of resampled frames under ``spec.protocol``."""
    clip, protocol = spec.clip, spec.protocol
    num_clips = num_clips or clip.test_clips
    if clip.sampling == "segment":
        return segment_indices(num_frames, clip.frames, num_clips)
    if protocol.spacing == "linspace":
        return slowfast_clip_indices(num_frames, clip.frames, clip.stride, num_clips,
                                     "offset" if protocol.starts == "offset" else "uniform")
    if protocol.starts == "uniform":  # stride spacing, SlowFast starts
        delta = max(num_frames - clip_span(clip.frames, clip.stride), 0)
        start = (delta * np.arange(num_clips) / num_clips).astype(np.int64)
        return np.minimum(start[:, None] + clip.stride * np.arange(clip.frames), num_frames - 1)
    return clip_indices(num_frames, clip.frames, clip.stride, num_clips)


def protocol_train_indices(num_frames: int, spec, rng: np.random.Generator) -> np.ndarray:
    """One training clip ``[frames]`` of resampled frames under ``spec.protocol``."""
    clip = spec.clip
    if clip.sampling == "segment":
        return random_segment_indices(num_frames, clip.frames, rng)
    if spec.protocol.spacing == "linspace":
        return random_slowfast_indices(num_frames, clip.frames, clip.stride, rng)
    return random_clip_indices(num_frames, clip.frames, clip.stride, rng)


def clip_frames_needed(spec) -> int:
    """Resampled frames one clip spans (a video with fewer is padded)."""
    clip = spec.clip
    if clip.sampling == "segment":
        return clip.frames
    if spec.protocol.spacing == "linspace":
        return clip.frames * clip.stride
    return clip_span(clip.frames, clip.stride)


# --- resampling to the training frame rate --------------------------------------------------------


TOLERANCE = 1e-3
"""Seconds by which a frame may precede a grid time and still serve it (timestamp rounding)."""


def resampled_length(timestamps: np.ndarray, fps: float) -> int:
    """Frames of the video resampled at ``fps``: its duration (first to last timestamp plus one
    frame, the median spacing) times ``fps``, with 2 ms of slack for containers that round
    timestamps to milliseconds (WebM, MKV); at least 1."""
    times = np.asarray(timestamps, dtype=np.float64)
    if len(times) < 2:
        return 1
    duration = times[-1] - times[0] + float(np.median(np.diff(times)))
    return max(1, int(math.floor((duration + 2 * TOLERANCE) * fps)))


def frames_at(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the first frame at or after each time (``timestamps`` ascending; the last frame for
    times past it)."""
    stamps = np.asarray(timestamps, dtype=np.float64)
    found = np.searchsorted(stamps, np.asarray(times, dtype=np.float64) - TOLERANCE, side="left")
    return np.minimum(found, len(stamps) - 1).astype(np.int64)


def resample(timestamps: np.ndarray, fps: float) -> np.ndarray:
    """Source frame of each frame of the video resampled at ``fps`` (``[resampled_length]``)."""
    stamps = np.asarray(timestamps, dtype=np.float64)
    count = resampled_length(stamps, fps)
    return frames_at(stamps, stamps[0] + np.arange(count) / fps)


@dataclass
class ClipPlan:
    """Which source frames the views of one video use."""

    indices: np.ndarray  # source frame indices [clips, frames]
    times: np.ndarray  # their stream times, seconds from the first frame [clips, frames]
    resampled: int  # frames of the video at the training fps
    padded: bool  # shorter than one clip: indices were clamped (frames repeat)


def plan_clips(timestamps: np.ndarray, spec, kind: str = "test", rng: np.random.Generator | None = None) -> ClipPlan:
    """The source frames of ``kind`` views: ``test`` (the spec's test clips), ``center`` (one clip,
    the protocol's single-clip choice) or ``train`` (one random clip, ``rng``)."""
    stamps = np.asarray(timestamps, dtype=np.float64)
    source = resample(stamps, spec.training_fps)
    n = len(source)
    if kind == "train":
        virtual = protocol_train_indices(n, spec, rng if rng is not None else np.random.default_rng())[None]
    else:
        virtual = protocol_view_indices(n, spec, 1 if kind == "center" else spec.clip.test_clips)
    indices = source[virtual]
    return ClipPlan(indices, stamps[indices] - stamps[0], n, n < clip_frames_needed(spec))
