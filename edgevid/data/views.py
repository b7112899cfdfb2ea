"""Model inputs cut from a video, exactly as at inference: test views, the centre clip, training clips.

One path for every user (eval, calibration, golden packs, sensitivity, training, bench): the
video's timestamps are read without decoding, ``sampling.plan_clips`` picks the source frames in
stream time (resampled to the model's training fps, under the family's test protocol), only those
frames are decoded and converted (scaled to the model's size inside libswscale, rotated by the
display matrix), and crop + normalisation write straight into the float32 views, one table lookup
per channel.

Inputs are a video path or RGB uint8 frames ``[N, H, W, 3]`` taken to be at the training fps (scaled
here with numpy bilinear, as ``torch`` ``interpolate``). The two scalers differ by a few grey levels
on downscaled content; use one of them consistently for one dataset. Outputs are float32, layout
NCTHW, normalised with ``spec.norm``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgevid.data.sampling import ClipPlan, clip_frames_needed, plan_clips
from edgevid.data.transforms import _check_crop, short_side_resize
from edgevid.errors import DataError

if TYPE_CHECKING:
    from edgevid.spec import ModelSpec

log = logging.getLogger("edgevid")

KINDS = ("test", "center", "train")


@dataclass
class Views:
    """The views of one video and what was unusual about it."""

    inputs: np.ndarray  # float32 [views, 3, T, crop, crop], clip-major (view = clip * crops + crop)
    plan: ClipPlan
    notes: list[str] = field(default_factory=list)  # one-line warnings (padded, truncated, upscaled)

    @property
    def padded(self) -> bool:
        return self.plan.padded


def _tables(spec: ModelSpec) -> list[np.ndarray]:
    """Per-channel 256-entry tables of ``(pixel / 255 - mean) / std`` (float64, then float32:
    bit-stable, as ``transforms.normalize``)."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    return [((levels - m) / s).astype(np.float32) for m, s in zip(spec.norm.mean, spec.norm.std)]


def _offsets(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of the centre crop, or SlowFast's 3 crops along the long side."""
    centre = lambda length: -(-(length - size) // 2)  # noqa: E731
    if crops == 1:
        return [(centre(height), centre(width))]
    along = lambda length: (0, centre(length), length - size)  # noqa: E731
    if height > width:
        return [(top, centre(width)) for top in along(height)]
    return [(centre(height), left) for left in along(width)]


def crop_normalize(frames: np.ndarray, where: np.ndarray, offsets: list[tuple[int, int]], size: int,
                   tables: list[np.ndarray], flip: bool = False) -> np.ndarray:
    """Views ``[clips * crops, 3, T, size, size]`` from distinct frames ``[K, H, W, 3]`` and
    ``where [clips, T]`` (indices into them): each (crop, channel) is one table lookup over every clip."""
    clips, length = where.shape
    out = np.empty((clips * len(offsets), 3, length, size, size), np.float32)
    flat = where.reshape(-1)
    for k, (top, left) in enumerate(offsets):
        window = frames[flat, top:top + size, left:left + size]  # [clips * T, size, size, 3] uint8
        if flip:
            window = window[:, :, ::-1]
        for channel, table in enumerate(tables):
            out[k::len(offsets), channel] = table[window[..., channel]].reshape(clips, length, size, size)
    return out


def _geometry(spec: ModelSpec, kind: str) -> tuple[int, int]:
    """(short side to scale to, crops) of a kind of view."""
    clip = spec.clip
    if kind == "test":
        if clip.test_crops not in (1, 3):
            raise ValueError(f"{spec.name}: test_crops must be 1 or 3, got {clip.test_crops}")
        return (clip.short_side if clip.test_crops == 1 else clip.crop), clip.test_crops
    return clip.short_side, 1


def _padding_note(plan: ClipPlan, spec: ModelSpec) -> str:
    frames = f"{plan.resampled} frame{'s' if plan.resampled != 1 else ''}"
    return (f"shorter than one clip ({frames} at {spec.training_fps:g} fps, a clip spans"
            f" {clip_frames_needed(spec)}): padded by repeating the last frame, as the official loaders")


def load_views(source, spec: ModelSpec, kind: str = "test", rng: np.random.Generator | None = None,
               flip: bool = False, threads: int = 0, timings: dict[str, float] | None = None) -> Views:
    """The ``kind`` views (``test``: the spec's clips x crops; ``center``: one centre-cropped clip;
    ``train``: one random clip with a random crop, flipped half the time when ``flip``).

    ``timings`` (when given) accumulates seconds under ``decode`` (open, demux, decode, convert and
    scale inside FFmpeg) and ``preprocess`` (sampling plan, crop, normalise; frames given as an
    array: their resize too)."""
    started = time.perf_counter()
    if kind not in KINDS:
        raise ValueError(f"views kind {kind!r}: choose one of {', '.join(KINDS)}")
    short_side, crops = _geometry(spec, kind)
    rng = rng if rng is not None else (np.random.default_rng() if kind == "train" else None)
    notes: list[str] = []
    if isinstance(source, (str, Path)):
        frames, where, plan = _decode(Path(source), spec, kind, short_side, rng, notes, threads)
        decoded = time.perf_counter()
    else:
        decoded = started
        array = np.asarray(source)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames [N, H, W, 3] or a path, got {array.dtype} {array.shape}")
        plan = plan_clips(np.arange(len(array)) / spec.training_fps, spec, kind, rng)
        distinct, where = np.unique(plan.indices, return_inverse=True)
        frames = short_side_resize(array[distinct], short_side)
        where = where.reshape(plan.indices.shape)
    if plan.padded:
        notes.insert(0, _padding_note(plan, spec))
    height, width = _check_crop(frames, spec.clip.crop)
    if kind == "train":
        offsets = [(int(rng.integers(0, height - spec.clip.crop + 1)), int(rng.integers(0, width - spec.clip.crop + 1)))]
        flip = flip and rng.random() < 0.5
    else:
        offsets, flip = _offsets(height, width, spec.clip.crop, crops), False
    views = Views(crop_normalize(frames, where, offsets, spec.clip.crop, _tables(spec), flip), plan, notes)
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + decoded - started
        timings["preprocess"] = timings.get("preprocess", 0.0) + time.perf_counter() - decoded
    return views


def _decode(path: Path, spec, kind, short_side, rng, notes, threads):
    from edgevid.data.video import decode_frames, open_video, read_meta

    with open_video(path) as container:  # one open for the demux and the decode
        meta = read_meta(path, container)
        if meta.truncated_note():
            notes.append(meta.truncated_note())
        for _ in range(2):
            plan = plan_clips(meta.times, spec, kind, rng)
            frames, where, decodable, converted = decode_frames(meta, plan.indices.reshape(-1), short_side, threads,
                                                                container=container)
            notes.extend(n for n in converted if n not in notes)
            if frames is not None:
                return frames, where.reshape(plan.indices.shape), plan
            if decodable == 0:
                raise DataError(f"{path}: no frame decodes; re-encode or replace it.")
            if decodable >= meta.frames:
                break
            notes.append(f"only {decodable} of {meta.frames} frames decode (truncated?): sampled from those")
            meta = _first(meta, decodable)
    raise DataError(f"{path}: damaged frames do not decode; re-encode or replace it.")


def _first(meta, count: int):
    from dataclasses import replace

    return replace(meta, pts=meta.pts[:count], times=meta.times[:count], keyframes=meta.keyframes[:count], claimed=0)


def _logged(views: Views, source) -> np.ndarray:
    for note in views.notes:
        log.warning("%s: %s", source if isinstance(source, (str, Path)) else "frames", note)
    return views.inputs


def test_views(path_or_frames, spec: ModelSpec) -> np.ndarray:
    """All test views ``[clips * crops, 3, T, crop, crop]``, clip-major (view = clip * crops + crop).

    ``test_crops == 1``: short side to ``spec.clip.short_side``, centre crop. ``test_crops == 3``:
    short side to ``crop``, then three crops along the long side (SlowFast's 3-crop testing).
    Warnings (padded, truncated, upscaled) go to the ``edgevid`` logger; ``load_views`` returns them.
    """
    return _logged(load_views(path_or_frames, spec, "test"), path_or_frames)


test_views.__test__ = False  # not a pytest test, even when a test module imports it


def preprocess_frames(frames: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Already-sampled frames ``[T, H, W, 3]`` to the centre view ``[3, T, crop, crop]``."""
    frames = short_side_resize(np.asarray(frames), spec.clip.short_side)
    offsets = _offsets(*frames.shape[1:3], spec.clip.crop, 1)
    _check_crop(frames, spec.clip.crop)
    return crop_normalize(frames, np.arange(len(frames))[None], offsets, spec.clip.crop, _tables(spec))[0]


def single_clip(path_or_frames, spec: ModelSpec, threads: int = 0) -> np.ndarray:
    """The single-clip input ``[1, 3, T, crop, crop]`` (the protocol's one-clip choice, short side
    to ``short_side``, centre crop) that calibration, bench and streaming use (``threads``: decoder
    threads, 0 = FFmpeg's choice)."""
    return _logged(load_views(path_or_frames, spec, "center", threads=threads), path_or_frames)


def train_clip(frames, spec: ModelSpec, rng: np.random.Generator, flip: bool = False) -> np.ndarray:
    """A training clip ``[3, T, crop, crop]``: random start (segment sampling: a random frame per
    segment), short side to ``short_side``, random crop, and a horizontal flip half the time when
    ``flip`` (off by default: flipping swaps the class of left/right motion)."""
    return load_views(frames, spec, "train", rng, flip).inputs[0]


def resampled_frames(path, spec: ModelSpec, short_side: int | None = None) -> np.ndarray:
    """The whole video resampled to ``spec.training_fps`` as RGB uint8 ``[N, H, W, 3]`` (short side
    at ``short_side``, default the spec's): what the training script caches and draws clips from
    with ``sampling.protocol_train_indices``. Only the frames the resampling keeps are converted."""
    from edgevid.data.sampling import resample
    from edgevid.data.video import decode_frames, read_meta

    meta = read_meta(path)
    source = resample(meta.times, spec.training_fps)
    frames, where, decodable, _ = decode_frames(meta, source, short_side or spec.clip.short_side)
    if frames is None:
        raise DataError(f"{path}: only {decodable} of {meta.frames} frames decode; re-encode or replace it.")
    return frames[where]
