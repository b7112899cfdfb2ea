"""Model inputs cut from a video, exactly as at inference: test views, the centre clip, training clips.

Inputs are a video path (decoded with PyAV, scaled while decoding) or RGB uint8 frames
``[N, H, W, 3]`` (scaled here with numpy bilinear, as ``torch`` ``interpolate``). The two scalers
differ by a few grey levels on downscaled content; use one of them consistently for one dataset.
Outputs are float32, layout NCTHW, normalised with ``spec.norm``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgevid.data.sampling import train_indices, view_indices
from edgevid.data.transforms import center_crop, normalize, random_crop, short_side_resize, three_crops

if TYPE_CHECKING:
    from edgevid.spec import ModelSpec


def _sampled_frames(path_or_frames, indices_of, short_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames with the short side at ``short_side``: the distinct sampled ones and where each
    sampled index finds its frame among them."""
    if isinstance(path_or_frames, (str, Path)):
        from edgevid.data.video import read_video

        frames, _ = read_video(path_or_frames, short_side=short_side)
    else:
        frames = np.asarray(path_or_frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames [N, H, W, 3] or a path, got {frames.dtype} {frames.shape}")
    indices = indices_of(len(frames))
    distinct, where = np.unique(indices, return_inverse=True)
    return short_side_resize(frames[distinct], short_side), where.reshape(indices.shape)


def test_views(path_or_frames, spec: ModelSpec) -> np.ndarray:
    """All test views ``[clips * crops, 3, T, crop, crop]``, clip-major (view = clip * crops + crop).

    ``test_crops == 1``: short side to ``spec.clip.short_side``, centre crop. ``test_crops == 3``:
    short side to ``crop``, then three crops along the long side (SlowFast's 3-crop testing).
    """
    clip = spec.clip
    if clip.test_crops not in (1, 3):
        raise ValueError(f"{spec.name}: test_crops must be 1 or 3, got {clip.test_crops}")
    short_side = clip.short_side if clip.test_crops == 1 else clip.crop
    frames, where = _sampled_frames(
        path_or_frames, lambda n: view_indices(n, clip, clip.test_clips), short_side
    )
    out = np.empty((clip.test_clips * clip.test_crops, 3, clip.frames, clip.crop, clip.crop), dtype=np.float32)
    for clip_index, frame_indices in enumerate(where):
        frames_of_clip = frames[frame_indices]
        if clip.test_crops == 1:
            crops = [center_crop(frames_of_clip, clip.crop)]
        else:
            crops = three_crops(frames_of_clip, clip.crop)
        for crop_index, view in enumerate(crops):
            out[clip_index * clip.test_crops + crop_index] = normalize(view, spec.norm.mean, spec.norm.std)
    return out


test_views.__test__ = False  # not a pytest test, even when a test module imports it


def preprocess_frames(frames: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Already-sampled frames ``[T, H, W, 3]`` to the centre view ``[3, T, crop, crop]``."""
    frames = center_crop(short_side_resize(frames, spec.clip.short_side), spec.clip.crop)
    return normalize(frames, spec.norm.mean, spec.norm.std)


def single_clip(path_or_frames, spec: ModelSpec) -> np.ndarray:
    """The centre clip, short side to ``short_side``, centre crop: ``[1, 3, T, crop, crop]``.

    This is the single-view inference input that calibration and streaming use.
    """
    clip = spec.clip
    frames, where = _sampled_frames(
        path_or_frames, lambda n: view_indices(n, clip, 1), clip.short_side
    )
    return preprocess_frames(frames[where[0]], spec)[None]


def train_clip(
    frames: np.ndarray, spec: ModelSpec, rng: np.random.Generator, flip: bool = False
) -> np.ndarray:
    """A training clip ``[3, T, crop, crop]``: random start (segment sampling: a random frame per
    segment), short side to ``short_side``, random
    crop, and a horizontal flip half the time when ``flip`` (off by default: flipping swaps the
    class of left/right motion)."""
    clip = spec.clip
    frames, where = _sampled_frames(
        frames, lambda n: train_indices(n, clip, rng)[None], clip.short_side
    )
    frames = random_crop(frames[where[0]], clip.crop, rng)
    if flip and rng.random() < 0.5:
        frames = frames[:, :, ::-1]
    return normalize(frames, spec.norm.mean, spec.norm.std)
