"""Which source frames make a clip: test-time uniform views and random training clips (numpy only).

A clip is ``frames`` source frames ``stride`` apart, spanning ``(frames - 1) * stride + 1``
source frames. Test views follow SlowFast's offset-uniform scheme (``USE_OFFSET_SAMPLING``):
the ``k`` clips are spread evenly from the first frame to the last (clip ``i`` starts at
``floor(i * delta / (k - 1))`` with ``delta = num_frames - span``), and a single clip is the
centre one (start ``delta // 2``). A video shorter than the span has ``delta = 0``: every
clip starts at frame 0 and indices past the end are clamped to the last frame (it repeats),
as SlowFast clamps them.

Segment sampling (``ClipSpec.sampling == "segment"``, TSN-style, as UniFormerV2's
``kinetics_sparse`` and SSv2 loaders do) instead splits the whole video into ``frames`` equal
segments of ``seg = (num_frames - 1) / frames`` frames and takes one frame from each: at test
time view ``i`` of ``k`` takes frame ``round(seg * j) + int(seg / (k + 1) * (i + 1))`` of segment
``j``; in training a random frame between ``round(seg * j)`` and ``round(seg * (j + 1))``.
"""

from __future__ import annotations

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
