"""Video files in and out with PyAV: demux timestamps, decode only the frames a clip needs (rotated
by the display matrix, scaled inside libswscale), encode H.264 ``.mp4`` and raw ``.y4m``."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from dataclasses import dataclass
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
    if container.streams.video[0].codec_context is None:
        container.close()
        raise DataError(f"{path}: its video stream cannot be decoded (truncated or an unknown codec); re-encode or replace it.")
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


MAX_ASPECT = 6.0
"""Widest accepted frame (long side / short side): beyond it a short side scaled to the model's size
would give rows of thousands of pixels (an 8192x8 video: 186,000 px at X3D-S's 182)."""
MIN_SIDE = 8
"""Smallest accepted short side, in pixels."""
UPSCALE_WARNING = 4.0
"""Frames scaled up by more than this get a warning (the model sees mostly interpolation)."""
_STILL_FORMATS = ("image2", "image2pipe")


@dataclass
class VideoMeta:
    """What the demuxer says about a video's frames, read without decoding."""

    path: Path
    pts: np.ndarray  # int64 presentation timestamps, ascending (None-pts streams: frame numbers)
    times: np.ndarray  # seconds from the first frame, float64
    keyframes: np.ndarray  # bool, per frame (in presentation order)
    claimed: int  # frames the container header claims (0 when it does not say)
    claimed_seconds: float  # the stream's duration by the header (0 when it does not say)
    fps: float
    width: int  # coded size (before rotation)
    height: int
    has_pts: bool

    @property
    def frames(self) -> int:
        return len(self.pts)

    @property
    def seconds(self) -> float:
        """Readable duration: first to last timestamp plus the last frame's spacing."""
        if self.frames < 2:
            return 1.0 / (self.fps or 30.0)
        return float(self.times[-1] + (self.times[-1] - self.times[-2]))

    def truncated_note(self) -> str | None:
        """A warning when fewer frames can be read than the header claims (and they span less time:
        AVI counts skipped frames of a variable rate too)."""
        short_in_time = not self.claimed_seconds or self.seconds < 0.95 * self.claimed_seconds
        if self.claimed > self.frames and short_in_time:
            return f"the container claims {self.claimed} frames but only {self.frames} can be read (truncated?)"
        return None


def _check_still(path: Path, container) -> None:
    name = container.format.name
    if name in _STILL_FORMATS or name.endswith("_pipe"):
        raise DataError(f"{path}: is a still image ({name.removesuffix('_pipe')}), not a video; pass a video file.")


def open_video(path: str | Path):
    """The opened container (a context manager): hand it to ``read_meta`` and then ``decode_frames``
    so that a clip costs one open, not two (on a short clip the open is a sixth of the decode)."""
    return _open(Path(path))


def read_meta(path: str | Path, container=None) -> VideoMeta:
    """Demux (no decoding) to list every frame's timestamp and keyframe flag (``container``: one
    from ``open_video``, left open for ``decode_frames``)."""
    path = Path(path)
    owned = container is None
    container = _open(path) if owned else container
    try:
        _check_still(path, container)
        stream = container.streams.video[0]
        pts, keys, has_pts = [], [], True
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is None:
                    has_pts = False
                pts.append(packet.pts if packet.pts is not None else len(pts))
                keys.append(packet.is_keyframe)
        except av.FFmpegError:
            pass  # a truncated file: what was read so far (the decoder reports the rest)
        fps = _fps(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        check_geometry(path, stream.codec_context.height, stream.codec_context.width)
        claimed = stream.frames or 0
        time_base = float(stream.time_base) if stream.time_base else 0.0
        claimed_seconds = float(stream.duration * time_base) if stream.duration and time_base else 0.0
    finally:
        if owned:
            container.close()
    if not pts:
        raise DataError(f"{path}: no decodable video frames; re-encode or replace it.")
    if has_pts and time_base:
        order = np.argsort(np.asarray(pts), kind="stable")
        stamps = np.asarray(pts, dtype=np.int64)[order]
        keep = np.ones(len(stamps), bool)
        keep[1:] = stamps[1:] != stamps[:-1]  # a repeated timestamp names one frame
        order, stamps = order[keep], stamps[keep]
        keyframes = np.asarray(keys, bool)[order]
        times = (stamps - stamps[0]) * time_base
    else:
        has_pts = False
        stamps = np.arange(len(pts), dtype=np.int64)
        keyframes = np.asarray(keys, bool)
        times = stamps / (fps or 30.0)
    return VideoMeta(path, stamps, np.asarray(times, np.float64), keyframes, claimed, claimed_seconds, fps, width,
                     height, has_pts)


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(height, width) as displayed: a quarter turn swaps them."""
    return (width, height) if _quarter_turns(rotation) % 2 else (height, width)


def _quarter_turns(rotation) -> int:
    return int(round((rotation or 0) / 90)) % 4


def check_geometry(path: Path, height: int, width: int) -> None:
    """Refuse frames too small or too elongated to scale sensibly (one-line error)."""
    short, long = min(height, width), max(height, width)
    if short < MIN_SIDE:
        raise DataError(f"{path}: frames are {width}x{height}, smaller than {MIN_SIDE} px on a side; pass a real video.")
    if long / short > MAX_ASPECT:
        raise DataError(
            f"{path}: frames are {width}x{height} (aspect {long / short:.0f}:1), beyond the {MAX_ASPECT:.0f}:1"
            " edgevid scales; crop or pad the video to a usual aspect ratio."
        )


class FrameConverter:
    """A decoded ``av.VideoFrame`` to RGB uint8 ``[H, W, 3]`` as displayed: rotated by its display
    matrix, the short side scaled to ``short_side`` inside libswscale (never a full-size copy).

    One ``VideoReformatter`` serves every frame: ``frame.to_ndarray(...)`` makes a new swscale
    context for each frame (its filter tables built and freed again), which cost 0.64 ms a
    160x128 frame inside a stream against ~0.1 ms with the context kept (same pixels)."""

    def __init__(self, path: Path, short_side: int | None):
        from av.video.reformatter import VideoReformatter

        self.path, self.short_side = path, short_side
        self._key = None
        self._reformatter = VideoReformatter()
        self.notes: list[str] = []

    def _prepare(self, frame) -> None:
        turns = _quarter_turns(frame.rotation)
        height, width = display_size(frame.width, frame.height, frame.rotation)
        check_geometry(self.path, height, width)
        size = {}
        if self.short_side is not None and scaled_size(height, width, self.short_side) != (height, width):
            out_h, out_w = scaled_size(height, width, self.short_side)
            coded_w, coded_h = (out_h, out_w) if turns % 2 else (out_w, out_h)
            size = {"width": coded_w, "height": coded_h, "interpolation": _SCALE_TO_RGB}
            factor = self.short_side / min(height, width)
            if factor > UPSCALE_WARNING:
                self.notes.append(f"{width}x{height} frames upscaled {factor:.1f}x to a {self.short_side} px short side")
        self._size, self._turns = size, turns
        self._key = (frame.width, frame.height, frame.rotation)

    def __call__(self, frame) -> np.ndarray:
        if (frame.width, frame.height, frame.rotation) != self._key:
            self._prepare(frame)
        image = self._reformatter.reformat(frame, format="rgb24", **self._size).to_ndarray()
        return np.rot90(image, self._turns) if self._turns else image


SEEK_GAP = 1
"""Seek (to the keyframe at or before the next wanted frame) when that keyframe lies more than this
many frames past the decoder's position, rather than decode through to it."""


def decode_frames(meta: VideoMeta, wanted: np.ndarray, short_side: int | None = None, threads: int = 0,
                  seek: bool = True, stats: dict | None = None,
                  container=None) -> tuple[np.ndarray | None, np.ndarray, int, list[str]]:
    """Decode only what the frames ``wanted`` (source indices; any order, repeats allowed) need,
    converted by ``FrameConverter``: ``(frames [distinct, H, W, 3], where, decodable, notes)`` with
    ``frames[where]`` in the order of ``wanted``. ``frames`` is None when the stream ended (or a
    frame was damaged) before every wanted frame decoded; ``decodable`` then counts the frames that
    did, else it is ``meta.frames``.

    Packets are fed to the decoder one by one: the decoder skips the non-reference frames that are
    not wanted (``skip_frame = NONREF``: nothing depends on them), the wanted ones alone are
    converted, and a keyframe ahead of the decoder before the next wanted frame is reached by
    seeking. ``stats``, if given, receives the counts ``packets``, ``decoded``, ``converted``, ``seeks``.
    ``container``: the one ``read_meta`` demuxed (``open_video``; the caller closes it), rewound by a
    seek to the first wanted frame's keyframe; where timestamps cannot seek, a fresh one is opened.
    """
    path = meta.path
    distinct, where = np.unique(np.asarray(wanted, dtype=np.int64), return_inverse=True)
    seek = seek and meta.has_pts and bool(meta.keyframes.any())
    index_of = {int(p): i for i, p in enumerate(meta.pts)} if meta.has_pts else None
    wanted_pts = {int(meta.pts[i]) for i in distinct} if meta.has_pts else None
    keys = np.flatnonzero(meta.keyframes)
    keyframe_before = lambda i: int(keys[max(np.searchsorted(keys, i, side="right") - 1, 0)])  # noqa: E731
    convert = FrameConverter(path, short_side)
    out, got = None, np.zeros(len(distinct), bool)
    position, last, seeked = 0, -1, False
    counts = {"packets": 0, "decoded": 0, "converted": 0, "seeks": 0}
    owned = container is None or not seek  # a demuxed container is rewound by seeking; else a fresh one
    container = _open(path) if owned else container

    def take(frame) -> bool:
        """Keep ``frame`` if wanted; True when every wanted frame is in."""
        nonlocal position, last, out
        counts["decoded"] += 1
        if index_of is None:
            index = last + 1
        else:
            index = index_of.get(frame.pts)
            if index is None:
                return False
        last = max(last, index)
        while position < len(distinct) and distinct[position] < index:
            position += 1  # that frame never came out of the decoder (damaged)
        if position < len(distinct) and distinct[position] == index:
            image = convert(frame)
            counts["converted"] += 1
            if out is None:
                out = np.empty((len(distinct), *image.shape), np.uint8)
            elif image.shape != out.shape[1:]:
                raise DataError(f"{path}: the frame size changes mid-stream; re-encode it at one size.")
            out[position], got[position] = image, True
            position += 1
        return position == len(distinct)

    try:
        stream = container.streams.video[0]
        if not stream.codec_context.is_open:  # a shared container's second pass keeps the first's threads
            if threads != 1:
                stream.thread_type = "AUTO"
            if threads:
                stream.codec_context.thread_count = threads
        context = stream.codec_context
        packets, done, cursor = None, False, -1  # cursor: the keyframe the demuxer was last sent to
        far = lambda: seek and keyframe_before(distinct[position]) - max(last, cursor) > SEEK_GAP  # noqa: E731
        rewind = not owned  # the demuxer stands at the end of the stream
        while not done and position < len(distinct):
            if rewind or far():
                rewind = False
                cursor = keyframe_before(distinct[position])
                container.seek(int(meta.pts[cursor]), stream=stream, backward=True, any_frame=False)
                packets, seeked = None, True
                counts["seeks"] += 1
            if packets is None:
                packets = container.demux(stream)
            for packet in packets:
                if packet.size:
                    counts["packets"] += 1
                    if wanted_pts is not None:
                        context.skip_frame = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
                elif wanted_pts is not None:
                    context.skip_frame = "DEFAULT"  # flushing: let every held frame out
                for frame in context.decode(packet if packet.size else None):
                    if take(frame):
                        done = True
                        break
                if done:
                    break
                if position < len(distinct) and far():
                    break  # seek for it
            else:
                break  # the stream ended
    except av.FFmpegError:
        pass  # truncated or damaged: the frames so far
    finally:
        if owned:
            container.close()
        if stats is not None:
            stats.update(counts)
    if got.all():
        return out, where, meta.frames, convert.notes
    if seeked:  # an imprecise index: decode through instead
        return decode_frames(meta, wanted, short_side, threads, seek=False, stats=stats)
    return None, where, max(last + 1, 0), convert.notes


def read_video(path: str | Path, short_side: int | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame as RGB uint8 ``[T, H, W, 3]`` (as displayed: rotated by the display
    matrix), and the frame rate. For tests and small files; the clip path decodes only the frames
    a clip needs (``edgevid.data.views``).

    With ``short_side`` the frames are scaled while decoding (libswscale, bilinear) so that the
    short side has that length and the long side keeps the aspect ratio (floored, as SlowFast).
    """
    path = Path(path)
    container = _open(path)
    convert = FrameConverter(path, short_side)
    try:
        _check_still(path, container)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [convert(frame) for frame in container.decode(stream)]
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


_CODECS = {  # encoder: (pixel format, options)
    "libx264": ("yuv420p", H264_OPTIONS),
    "libx265": ("yuv420p", {"crf": "18", "preset": "ultrafast", "x265-params": "log-level=error"}),
    "libvpx-vp9": ("yuv420p", {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
    "mjpeg": ("yuvj420p", {"q:v": "3"}),
}


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = H264_ENCODER,
                times: np.ndarray | None = None, rotation: int = 0, keyframe_interval: int | None = None) -> Path:
    """Encode RGB uint8 ``[T, H, W, 3]`` (even H and W), H.264 yuv420p in an ``.mp4`` by default.

    ``codec``: libx264, libx265 (HEVC), libvpx-vp9 or mjpeg (the container follows the suffix);
    ``times``: each frame's presentation time in seconds (a variable frame rate; ``fps`` is then
    the nominal rate); ``rotation``: a display matrix turning the picture counter-clockwise by that
    many degrees, as phones write; ``keyframe_interval``: frames per GOP.
    """
    frames = _check_frames(frames)
    path = Path(path)
    if codec not in _CODECS:
        raise ValueError(f"codec {codec!r}: choose one of {', '.join(_CODECS)}")
    pix_fmt, options = _CODECS[codec]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=dict(options))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.codec_context.thread_count = 1  # callers parallelise over files
        if keyframe_interval:
            stream.codec_context.gop_size = keyframe_interval
        base = None
        if times is not None:
            base = Fraction(1, 90000)
            stream.codec_context.time_base = base
            stream.time_base = base
        if rotation:
            stream.set_display_rotation(rotation)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if base is not None:
                frame.pts, frame.time_base = int(round(float(times[index]) * 90000)), base
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
