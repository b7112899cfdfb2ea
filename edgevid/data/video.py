"""Video files in and out with PyAV: decode to RGB arrays, encode H.264 ``.mp4`` and raw ``.y4m``."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from av.video.reformatter import Interpolation

from edgevid.data.transforms import scaled_size
from edgevid.errors import DataError

H264_ENCODER = "libx264"
"""The H.264 encoder in PyAV's wheels (built with libx264; libopenh264 is not included)."""

H264_OPTIONS = {"crf": "18", "preset": "veryfast"}
"""Visually lossless at this size; ``preset`` trades encode time for file size, not quality."""


_SCALE_TO_RGB = Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND
"""libswscale flags when scaling while decoding: interpolate chroma rather than repeat it. On a
saturated colour pattern this halves the error against an exact bilinear resize (6.7 to 3.2 grey
levels) for ~6% more time. Unscaled conversions keep the default fast path: there the flags
gained little (3.6 to 3.3) and doubled the conversion time."""


class VideoInfo(NamedTuple):
    frames: int
    fps: float
    width: int
    height: int


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found; check the path.")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise DataError(f"{path}: not a readable video ({_reason(error)}); re-encode or replace it.") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: has no video stream; pass a video file.")
    return container


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error).splitlines()[0]


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, fps and size from the container, without decoding (packets are counted
    when the container does not store a frame count, as in WebM/MKV)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        frames = stream.frames
        if not frames:
            frames = sum(1 for packet in container.demux(stream) if packet.size)
        return VideoInfo(frames, _fps(stream), stream.codec_context.width, stream.codec_context.height)
    except av.FFmpegError as error:
        raise DataError(f"{path}: corrupt video ({_reason(error)}); re-encode or replace it.") from None
    finally:
        container.close()


def read_video(path: str | Path, short_side: int | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame as RGB uint8 ``[T, H, W, 3]``, and the frame rate.

    With ``short_side`` the frames are scaled while decoding (libswscale, bilinear) so that the
    short side has that length and the long side keeps the aspect ratio (floored, as SlowFast).
    """
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = {}
        native = stream.codec_context.height, stream.codec_context.width
        if short_side is not None and scaled_size(*native, short_side) != native:
            height, width = scaled_size(*native, short_side)
            size = {"width": width, "height": height, "interpolation": _SCALE_TO_RGB}
        frames = [frame.to_ndarray(format="rgb24", **size) for frame in container.decode(stream)]
        fps = _fps(stream)
    except av.FFmpegError as error:
        raise DataError(f"{path}: corrupt video ({_reason(error)}); re-encode or replace it.") from None
    finally:
        container.close()
    if not frames:
        raise DataError(f"{path}: no decodable frames; re-encode or replace it.")
    return np.stack(frames), fps


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"4:2:0 video needs even height and width, got {frames.shape[1:3]}")
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Encode RGB uint8 ``[T, H, W, 3]`` (even H and W) as H.264 yuv420p in an ``.mp4``."""
    frames = _check_frames(frames)
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(H264_ENCODER, rate=rate, options=H264_OPTIONS)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1  # callers parallelise over files
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_y4m(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write raw YUV4MPEG2 (C420, BT.601 limited range), e.g. for Chromium's
    ``--use-file-for-fake-video-capture``."""
    frames = _check_frames(frames)
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    height, width = frames.shape[1:3]
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{width} H{height} F{rate.numerator}:{rate.denominator} Ip A1:1 C420\n".encode())
        for image in frames:
            yuv = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            file.write(b"FRAME\n")
            file.write(yuv.to_ndarray().tobytes())  # I420: Y, then U, then V planes
    return path
