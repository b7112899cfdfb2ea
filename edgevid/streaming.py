"""Streaming classification: a frame ring buffer, sliding windows, sampling at the model's
training frame interval, prediction smoothing and per-window timing. numpy only (no torch).

A camera (or a file played as one) pushes RGB uint8 frames with their timestamps into a
``StreamClassifier``. ``FrameSampler`` keeps one frame every ``stride / training_fps`` seconds,
so the model sees motion at the speed it was trained on whatever the camera's real frame rate
(a 30 fps camera feeding a model trained at stride 3 on 15 fps video keeps every 6th frame): the
rule of the offline clip sampler (``edgevid.data.sampling.resample``) applied online, so a file
gives the same frame times streamed as in ``edgevid eval``.
Each kept frame is resized, cropped and normalised straight into a preallocated ring of
``frames`` slots; every ``window_stride`` kept frames the last ``frames`` of them are copied in
order into a preallocated clip and classified, and the class probabilities are smoothed over
windows (EMA or a moving average).

A file is read as ``edgevid eval`` reads it (``iter_video_frames(lazy=True, sample_every=...)``):
a kept frame is scaled to the model's short side inside libswscale while converting, then only
cropped and normalised; a frame no sampler keeps is never converted, and not even decoded when
no other frame refers to it (a non-reference B-frame). ``BackgroundClassifier`` classifies on a
worker thread from two clip buffers, so the worker goes from one window straight to the next.

Nothing on the per-frame path allocates arrays (after the first frame of a new size); per window
only the runner's output and the small result object do. Memory is therefore flat over any
stream length: ``benchmarks/streaming.py`` measures it.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

import numpy as np

from .data.transforms import _bilinear_taps, scaled_size

if TYPE_CHECKING:
    from .backends.base import Runner
    from .spec import ModelSpec

from .spec import DEFAULT_TRAINING_FPS, TRAINING_FPS  # noqa: E402,F401  (re-exported)


def training_fps(spec: "ModelSpec") -> float:
    """Frame rate of the model's training videos (``ModelSpec.training_fps``)."""
    return spec.training_fps or TRAINING_FPS.get(spec.label_set, DEFAULT_TRAINING_FPS)


class FramePreprocessor:
    """One RGB uint8 frame ``[H, W, 3]`` to ``[3, crop, crop]`` float32, written into ``out``.

    Equal, bit for bit, to ``edgevid.data.views.preprocess_frames`` (short side to
    ``short_side`` with numpy bilinear, centre crop, table normalisation), but only the cropped
    output pixels are interpolated, channel-planar, and every buffer is allocated once per
    input size. A frame whose short side already is ``short_side`` (a file's frames, scaled
    inside libswscale while converting: ``DecodedFrame.scaled``) is only cropped and normalised.
    """

    def __init__(self, spec: "ModelSpec"):
        self.crop = spec.clip.crop
        self.short_side = spec.clip.short_side
        levels = np.arange(256, dtype=np.float64) / 255.0
        self._tables = [((levels - m) / s).astype(np.float32) for m, s in zip(spec.norm.mean, spec.norm.std)]
        self._size: tuple[int, int] | None = None
        self._crop_only: tuple[int, int] | None = None
        size = (3, self.crop, self.crop)
        self._corners = [np.empty(size, np.uint8) for _ in range(4)]
        self._floats = [np.empty(size, np.float32) for _ in range(3)]
        self._pixels = np.empty(size, np.intp)  # table indices (intp: np.take would convert uint8 into a temporary)

    def _prepare(self, height: int, width: int) -> None:
        """Source byte offsets and weights of the crop window, for frames of this size."""
        out_h, out_w = scaled_size(height, width, self.short_side)
        if self.crop > out_h or self.crop > out_w:
            raise ValueError(f"crop {self.crop} does not fit frames of {out_h}x{out_w}")
        top, left = -(-(out_h - self.crop) // 2), -(-(out_w - self.crop) // 2)
        self._size = (height, width)
        # a frame already at the short side: the taps are the identity (weights 0), so the result is the crop itself
        self._crop_only = (top, left) if (out_h, out_w) == (height, width) else None
        if self._crop_only is not None:
            return
        r0, r1, wy = (a[top:top + self.crop] for a in _bilinear_taps(height, out_h))
        c0, c1, wx = (a[left:left + self.crop] for a in _bilinear_taps(width, out_w))
        # full-size weights: a broadcast operand would make the ufuncs allocate buffers
        shape = (3, self.crop, self.crop)
        self._wy = np.ascontiguousarray(np.broadcast_to(wy[None, :, None], shape))
        self._wx = np.ascontiguousarray(np.broadcast_to(wx[None, None, :], shape))
        channel = np.arange(3)[:, None, None]
        # offsets into the frame's bytes of the four bilinear neighbours, channel-planar [3, crop, crop]
        self._offsets = [channel + 3 * (r[None, :, None] * width + c[None, None, :]) for r in (r0, r1) for c in (c0, c1)]

    def __call__(self, frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 frame [H, W, 3], got {frame.dtype} {frame.shape}")
        if frame.shape[:2] != self._size:
            self._prepare(*frame.shape[:2])
        if self._crop_only is not None:  # already at the short side (scaled while decoding): crop + normalise
            top, left = self._crop_only
            window = frame[top:top + self.crop, left:left + self.crop]
            np.copyto(self._pixels, window.transpose(2, 0, 1), casting="unsafe")
            return self._normalise(out)
        flat = np.ascontiguousarray(frame).reshape(-1)
        for offsets, corner in zip(self._offsets, self._corners):
            np.take(flat, offsets, out=corner, mode="clip")  # 'clip': unbuffered (offsets are in range)
        top_left, top_right, bottom_left, bottom_right = self._corners
        left, right, lower = self._floats
        # rows first, as transforms.resize: each column of the pair interpolated between two rows
        for (upper_px, lower_px), acc in (((top_left, bottom_left), left), ((top_right, bottom_right), right)):
            np.copyto(acc, upper_px)
            np.copyto(lower, lower_px)
            np.subtract(lower, acc, out=lower)
            np.multiply(lower, self._wy, out=lower)
            np.add(acc, lower, out=acc)
        np.subtract(right, left, out=right)
        np.multiply(right, self._wx, out=right)
        np.add(left, right, out=right)
        np.rint(right, out=right)  # bilinear weights lie in [0, 1]: already within 0..255, no clip needed
        np.copyto(self._pixels, right, casting="unsafe")
        return self._normalise(out)

    def _normalise(self, out: np.ndarray) -> np.ndarray:
        for channel, table in enumerate(self._tables):
            np.take(table, self._pixels[channel], out=out[channel], mode="clip")
        return out


class FrameSampler:
    """Resamples a stream online to one frame every ``interval`` seconds, on a fixed grid.

    Grid time ``t0 + k * interval`` (``t0``: the first frame's time) is served by the first frame
    at or after it (1 ms tolerance): ``edgevid.data.sampling.resample``'s rule, frame by frame, so
    a 15 fps source at a 0.2 s interval keeps exactly every 3rd frame and a 30 fps one every 6th;
    at rates that do not divide, the kept spacing averages ``interval``. A source slower than the
    interval serves several grid times with one frame (``take`` > 1), as the offline sampler and
    the official loaders repeat frames. ``max_gap`` (seconds): a longer pause in the stream (a
    stalled camera) restarts the grid instead of repeating the last frame across it.
    """

    TOLERANCE = 1e-3

    def __init__(self, interval: float, max_gap: float | None = None):
        if interval <= 0:
            raise ValueError(f"sampling interval must be > 0 s, got {interval}")
        self.interval, self.max_gap = interval, max_gap
        self.reset()

    def reset(self) -> None:
        self._start: float | None = None
        self._next = 0  # grid index of the next due time
        self._last: float | None = None
        self.frame_spacing: float | None = None  # EMA of the source's frame spacing, seconds

    def take(self, timestamp: float) -> int:
        """How many grid times this frame serves (0: drop it)."""
        if self._last is not None and timestamp > self._last:
            step = timestamp - self._last
            self.frame_spacing = step if self.frame_spacing is None else 0.9 * self.frame_spacing + 0.1 * step
        gap = None if self._last is None else timestamp - self._last
        self._last = timestamp
        if self._start is None or (self.max_gap is not None and gap is not None and gap > self.max_gap):
            self._start, self._next = timestamp, 1
            return 1
        due = int(np.floor((timestamp + self.TOLERANCE - self._start) / self.interval)) + 1  # grid times <= timestamp
        count = max(due - self._next, 0)
        self._next = max(self._next, due)
        return count

    def accept(self, timestamp: float) -> bool:
        """Whether this frame is kept (serves at least one grid time)."""
        return self.take(timestamp) > 0

    @property
    def source_fps(self) -> float | None:
        return 1.0 / self.frame_spacing if self.frame_spacing else None


def window_seconds(spec: "ModelSpec", train_fps: float | None = None) -> float:
    """Stream seconds before the first window: ``frames`` samples ``stride / training_fps`` apart."""
    return (spec.clip.frames - 1) * spec.clip.stride / (train_fps or training_fps(spec))


def too_short_message(path, spec: "ModelSpec") -> str | None:
    """A one-line message when a video file is too short for one window (the demo shows it), else None."""
    from .data.video import read_meta

    meta = read_meta(path)
    duration = float(meta.times[-1] + (meta.times[-1] - meta.times[-2] if meta.frames > 1 else 0.0))
    need = window_seconds(spec)
    if duration + 1e-6 >= need:
        return None
    return (f"{Path(path).name} lasts {duration:.2f} s, shorter than one {spec.clip.frames}-frame window of"
            f" {spec.name} ({need:.2f} s): no prediction until the window fills (play it longer or loop it)")


class Smoother:
    """Smooths class probabilities over windows: ``ema`` (weight ``alpha`` on the newest),
    ``mean`` (moving average of the last ``window`` windows) or ``none``."""

    KINDS = ("ema", "mean", "none")

    def __init__(self, num_classes: int, kind: str = "ema", alpha: float = 0.5, window: int = 4):
        if kind not in self.KINDS:
            raise ValueError(f"smoothing {kind!r}: choose one of {', '.join(self.KINDS)}")
        if not 0 < alpha <= 1:
            raise ValueError(f"EMA alpha must be in (0, 1], got {alpha}")
        if window < 1:
            raise ValueError(f"moving-average window must be >= 1, got {window}")
        self.kind, self.alpha = kind, alpha
        self._history = np.zeros((window if kind == "mean" else 1, num_classes), np.float32)
        self.value = np.zeros(num_classes, np.float32)
        self.count = 0

    def reset(self) -> None:
        self._history[:] = 0
        self.value[:] = 0
        self.count = 0

    def update(self, probs: np.ndarray) -> np.ndarray:
        if self.kind == "none" or (self.kind == "ema" and self.count == 0):
            self.value[:] = probs
        elif self.kind == "ema":
            self.value *= 1 - self.alpha
            self.value += self.alpha * probs
        else:
            self._history[self.count % len(self._history)] = probs
            filled = min(self.count + 1, len(self._history))
            np.mean(self._history[:filled], axis=0, out=self.value)
        self.count += 1
        return self.value


@dataclass
class WindowResult:
    """One classified window."""

    index: int  # windows so far, from 0
    frame_index: int  # pushed frame that completed the window, from 0
    timestamp: float  # its stream time, seconds
    top_k: list[tuple[str, float]]  # smoothed probabilities, best first
    raw_top1: str  # this window alone, unsmoothed
    model_ms: float  # the runner call
    pipeline_ms: float  # everything since the previous window: decode (as reported) + sampling + preprocessing + inference + smoothing
    decode_ms: float = 0.0  # of pipeline_ms: decoding the frames since the previous window (as the caller reported it)
    preprocess_ms: float = 0.0  # of pipeline_ms: sampling, preprocessing and the window copy (+ smoothing)
    wait_ms: float = 0.0  # not in pipeline_ms: from the window coming due to its inference starting (worker queue, shared runner)
    frames_fed: int = 0  # frames pushed since the previous window (all frames up to this one for the first window)

    @property
    def label(self) -> str:
        return self.top_k[0][0]


#: Fields of ``StreamStats.recent`` entries, in order.
RECENT_FIELDS = ("model_ms", "pipeline_ms", "decode_ms", "preprocess_ms", "wait_ms")


@dataclass
class StreamStats:
    """Per-stream counters and timings.

    The first window is the *warm-up*: its pipeline time holds decoding and preprocessing every
    frame needed to fill the window (``frames`` sampled frames, ``stride x frames`` decoded), not
    one window's worth, so it is kept apart (``warmup_ms``, ``warmup_frames``) and the
    end-to-end figures are *steady state*: windows 2, 3, ... over their own pipeline time.
    Model-only figures count every window (the first inference is an ordinary one: runners are
    warmed up when opened).
    """

    frames: int = 0
    sampled: int = 0
    windows: int = 0
    model_ms: float = 0.0  # totals over every window
    pipeline_ms: float = 0.0  # totals over the steady-state windows (all but the first)
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    wait_ms: float = 0.0
    warmup_ms: float | None = None  # pipeline time of the first window (filling it)
    warmup_frames: int = 0  # frames pushed until the first window
    recent: deque = field(default_factory=lambda: deque(maxlen=30))  # RECENT_FIELDS of the last steady-state windows
    recent_model: deque = field(default_factory=lambda: deque(maxlen=30))  # model_ms of the last windows (first included)

    @property
    def steady_windows(self) -> int:
        return max(self.windows - 1, 0)

    def add(self, result: "WindowResult") -> None:
        self.windows += 1
        self.model_ms += result.model_ms
        self.recent_model.append(result.model_ms)
        if self.warmup_ms is None:
            self.warmup_ms, self.warmup_frames = result.pipeline_ms, result.frames_fed
            return
        self.pipeline_ms += result.pipeline_ms
        self.decode_ms += result.decode_ms
        self.preprocess_ms += result.preprocess_ms
        self.wait_ms += result.wait_ms
        self.recent.append((result.model_ms, result.pipeline_ms, result.decode_ms, result.preprocess_ms, result.wait_ms))

    def model_fps(self, recent: bool = False) -> float | None:
        """Windows per second of inference time alone (model-only FPS); ``recent``: from the
        median of the last 30 windows, as ``edgevid bench`` reports its p50."""
        if recent and self.recent_model:
            # the steady-state windows the end-to-end figure uses, once there are any (the same windows
            # on both sides: with only a few windows the warm-up inference would otherwise weigh in)
            window = [item[0] for item in self.recent] or list(self.recent_model)
            median = float(np.median(window))
            return 1e3 / median if median > 0 else None
        return 1e3 * self.windows / self.model_ms if self.windows and self.model_ms else None

    def e2e_fps(self, recent: bool = False) -> float | None:
        """Steady-state windows per second of pipeline time: decode + sampling + preprocessing +
        inference + smoothing per window, the first (warm-up) window excluded."""
        if recent and self.recent:
            total = sum(item[1] for item in self.recent)
            return 1e3 * len(self.recent) / total if total else None
        n = self.steady_windows
        return 1e3 * n / self.pipeline_ms if n and self.pipeline_ms else None

    def breakdown(self, recent: bool = True) -> dict[str, float] | None:
        """Mean ms per steady-state window of each part (``RECENT_FIELDS``), over the last 30
        windows (``recent``) or the whole stream; None before the second window."""
        if recent and self.recent:
            return {name: float(sum(item[i] for item in self.recent) / len(self.recent)) for i, name in enumerate(RECENT_FIELDS)}
        n = self.steady_windows
        if not n:
            return None
        # model_ms totals include the first window: take the steady share from the per-window mean
        return {"model_ms": self.model_ms / self.windows, "pipeline_ms": self.pipeline_ms / n, "decode_ms": self.decode_ms / n,
                "preprocess_ms": self.preprocess_ms / n, "wait_ms": self.wait_ms / n}


def _softmax(logits: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.subtract(logits, logits.max(), out=out)
    np.exp(out, out=out)
    out /= out.sum()
    return out


class Inferred(NamedTuple):
    """A window's model output, not yet smoothed (``StreamClassifier.infer``; ``finish`` completes it)."""

    snapshot: tuple  # the clip buffer's (frame index, timestamp, intake ms, decode ms, frames, taken)
    logits: np.ndarray  # [classes]
    started: float  # perf_counter: the window's inference work began (after any wait for a shared runner)
    acquired: float  # the runner was ours
    ended: float  # the runner returned


class StreamClassifier:
    """Classifies a stream of frames with sliding windows over a ring of preprocessed frames.

    ``push(frame, timestamp)`` returns a ``WindowResult`` when the frame completed a window,
    else ``None``. Timestamps are stream seconds (``frame_index / fps`` for a file; the arrival
    time for a live camera); ``None`` uses the monotonic clock. ``decode_ms`` is time the caller
    spent decoding this frame, counted into the window's end-to-end time. ``lock`` guards a runner
    that several streams share (time spent waiting for it is not counted).

    ``push`` is ``feed`` (intake: sample, preprocess into the ring; True when a window is due),
    ``snapshot`` (copy the window, in order, into the clip buffer) and ``classify`` (run the model
    on the snapshot, smooth). A live source calls the first two on its intake thread and
    ``classify`` on a worker, so a slow model drops windows instead of camera frames; ``feed``
    may run while ``classify`` does, and so may ``snapshot`` into the other of the two clip
    buffers (``BackgroundClassifier`` does this).
    """

    def __init__(
        self,
        runner: "Runner",
        spec: "ModelSpec",
        labels: list[str],
        *,
        train_fps: float | None = None,
        window_stride: int = 1,
        max_gap: float | None = None,
        smoothing: str = "ema",
        alpha: float = 0.5,
        average: int = 4,
        top_k: int = 5,
        lock=None,
    ):
        if window_stride < 1:
            raise ValueError(f"window stride must be >= 1 sampled frame, got {window_stride}")
        self.runner, self.spec, self.labels = runner, spec, list(labels)
        self.lock = lock or nullcontext()  # a runner shared between streams: timing starts once it is ours
        self.frames = spec.clip.frames
        self.window_stride, self.top_k = window_stride, min(top_k, len(self.labels))
        self.train_fps = train_fps or training_fps(spec)
        self.sampler = FrameSampler(spec.clip.stride / self.train_fps, max_gap)
        self.preprocess = FramePreprocessor(spec)
        crop = spec.clip.crop
        self._ring = np.zeros((3, self.frames, crop, crop), np.float32)  # slot = sampled % frames
        shape = tuple(runner.input_shape) if getattr(runner, "input_shape", None) else spec.input_shape(1)
        # two clip buffers (batch row 0 holds the window, others stay zero): a worker classifies one while the
        # intake snapshots the next window into the other
        self._clips = (np.zeros(shape, np.float32), np.zeros(shape, np.float32))
        self._probs = np.zeros(len(self.labels), np.float32)
        self.smoother = Smoother(len(self.labels), smoothing, alpha, average)
        self.stats = StreamStats()
        self._pending_ms = 0.0  # intake work since the last snapshot
        self._pending_decode_ms = 0.0  # of which decoding, as reported by the caller
        self._pending_frames = 0  # frames fed since the last snapshot
        self._last_frame = (-1, 0.0)  # (index, timestamp) of the last fed frame
        # per clip buffer: (frame index, timestamp, intake ms, decode ms, frames, perf_counter when taken) of its window
        self._snapshots = [(-1, 0.0, 0.0, 0.0, 0, 0.0), (-1, 0.0, 0.0, 0.0, 0, 0.0)]

    def reset(self) -> None:
        """Forget the stream (keeps the buffers)."""
        self.sampler.reset()
        self.smoother.reset()
        self.stats = StreamStats()
        self._pending_ms = self._pending_decode_ms = 0.0
        self._pending_frames = 0

    def feed(self, frame, timestamp: float | None = None, decode_ms: float = 0.0) -> bool:
        """Take one frame; True when it completed a window (take a ``snapshot`` to classify it).

        ``frame`` is RGB uint8 ``[H, W, 3]``, or a callable returning it: then only the frames the
        sampler keeps are converted (see ``iter_video_frames(lazy=True)``).
        """
        started = time.perf_counter()
        stats = self.stats
        self._last_frame = (stats.frames, time.monotonic() if timestamp is None else timestamp)
        stats.frames += 1
        due = False
        repeats = self.sampler.take(self._last_frame[1])
        if repeats:
            slot = stats.sampled % self.frames
            if isinstance(frame, DecodedFrame):  # scaled to the short side while converting
                frame = frame.scaled(self.preprocess.short_side)
            elif callable(frame):
                frame = frame()
            self.preprocess(frame, self._ring[:, slot])
            for extra in range(1, min(repeats, self.frames)):  # a slow source: the frame serves several samples
                np.copyto(self._ring[:, (slot + extra) % self.frames], self._ring[:, slot])
            if repeats > self.frames:  # the whole window is this frame: keep the ring's phase
                np.copyto(self._ring, self._ring[:, slot:slot + 1])
            first = stats.sampled + 1
            stats.sampled += repeats
            due = stats.sampled >= self.frames and any(
                (n - self.frames) % self.window_stride == 0 for n in range(max(first, self.frames), stats.sampled + 1))
        self._pending_ms += decode_ms + (time.perf_counter() - started) * 1e3
        self._pending_decode_ms += decode_ms
        self._pending_frames += 1
        return due

    def snapshot(self, buffer: int = 0) -> None:
        """Copy the last ``frames`` sampled frames, oldest first, into clip buffer ``buffer`` (0 or 1)."""
        started = time.perf_counter()
        oldest = self.stats.sampled % self.frames
        window = self._clips[buffer][0]
        np.copyto(window[:, : self.frames - oldest], self._ring[:, oldest:])
        np.copyto(window[:, self.frames - oldest:], self._ring[:, :oldest])
        taken = time.perf_counter()
        intake_ms = self._pending_ms + (taken - started) * 1e3
        self._snapshots[buffer] = (*self._last_frame, intake_ms, self._pending_decode_ms, self._pending_frames, taken)
        self._pending_ms = self._pending_decode_ms = 0.0
        self._pending_frames = 0

    def infer(self, buffer: int = 0) -> Inferred:
        """Run the model on the snapshot in clip buffer ``buffer`` (the first half of ``classify``)."""
        started = time.perf_counter()
        snapshot = self._snapshots[buffer]
        asked = time.perf_counter()
        with self.lock:
            acquired = time.perf_counter()
            logits = self.runner(self._clips[buffer])
            ended = time.perf_counter()
        started += acquired - asked  # time spent waiting for another stream's inference is not ours
        # the runner may reuse its output buffer for the next call: keep a copy (8-400 floats)
        return Inferred(snapshot, np.array(logits, np.float32, copy=True)[0], started, acquired, ended)

    def finish(self, inferred: Inferred) -> WindowResult:
        """Smooth an ``infer`` result and count it (the second half of ``classify``). Windows must be
        finished in the order they were inferred, by one thread at a time."""
        began = time.perf_counter()
        frame_index, timestamp, intake_ms, decode_ms, frames_fed, taken = inferred.snapshot
        model_ms = (inferred.ended - inferred.acquired) * 1e3
        probs = _softmax(inferred.logits, self._probs)
        raw_top1 = self.labels[int(probs.argmax())]
        smoothed = self.smoother.update(probs)
        best = np.argsort(smoothed)[::-1][: self.top_k]
        top_k = [(self.labels[i], float(smoothed[i])) for i in best]
        # the window's own work: intake, inference, smoothing (not a wait between inference and finishing)
        pipeline_ms = intake_ms + (inferred.ended - inferred.started + time.perf_counter() - began) * 1e3
        wait_ms = (inferred.acquired - (taken or inferred.started)) * 1e3  # since the snapshot: queue and shared lock
        stats = self.stats
        result = WindowResult(stats.windows, frame_index, timestamp, top_k, raw_top1, model_ms, pipeline_ms,
                              decode_ms=decode_ms, preprocess_ms=max(pipeline_ms - decode_ms - model_ms, 0.0),
                              wait_ms=max(wait_ms, 0.0), frames_fed=frames_fed)
        stats.add(result)
        return result

    def classify(self, buffer: int = 0) -> WindowResult:
        """Run the model on the snapshot in clip buffer ``buffer`` and smooth; the window's result."""
        return self.finish(self.infer(buffer))

    def push(self, frame, timestamp: float | None = None, decode_ms: float = 0.0) -> WindowResult | None:
        """Feed one frame and, when it completes a window, classify that window."""
        if not self.feed(frame, timestamp, decode_ms):
            return None
        self.snapshot()
        return self.classify()


def stream_runner_threads(cores: int, targets: int = 1) -> tuple[int, str]:
    """Threads per runner when ``targets`` pipelined streams share ``cores``, and why: one core stays
    for decoding and preprocessing (the intake thread of ``BackgroundClassifier``) when there are two
    or more, the rest split evenly, so the runners never compete with the decoder for a core
    (``benchmarks/streaming.py`` reports end-to-end against this runner and one on every core)."""
    targets = max(targets, 1)
    if cores < 2:
        return 1, "1 core"
    threads = max(1, (cores - 1) // targets)
    return threads, f"{cores} cores: 1 for decoding, {cores - 1} for {targets} target{'s' if targets != 1 else ''}"


class BackgroundClassifier:
    """A ``StreamClassifier`` whose windows are classified on a worker thread, so that decoding and
    preprocessing the next frames overlaps inference of the current window.

    ``policy``: ``"drop"`` (live sources) skips a window that comes due while the model is still
    busy, and counts it in ``dropped``, so the source is never held up; ``"wait"`` (files,
    benchmarks) classifies every window: one more window may wait for the worker in the second
    clip buffer, so the worker goes from one window straight to the next (no hand-off back to
    the intake thread in between), and the intake waits only when it is a further window ahead.

    Smoothing and counting a window (``StreamClassifier.finish``) goes to whichever thread is free:
    the worker does it when no window waits for it (always, under ``"drop"``: a live result is
    never held back), else it hands it to the intake, which finishes it at its next ``push`` (or
    in ``drain``), so a model-bound stream's worker runs the model back to back.
    ``on_result`` is called with each ``WindowResult``, in order, on the thread that finished it;
    an exception in the model or in ``on_result`` is kept in ``error`` (and re-raised by ``drain``).
    """

    POLICIES = ("drop", "wait")

    def __init__(self, classifier: StreamClassifier, policy: str = "drop", on_result=None, name: str = "edgevid-stream"):
        if policy not in self.POLICIES:
            raise ValueError(f"policy {policy!r}: choose drop or wait")
        import threading

        self.classifier, self.policy, self.on_result = classifier, policy, on_result
        self.dropped = 0
        self.error: BaseException | None = None
        self._ready = threading.Condition()
        self._queued: int | None = None  # clip buffer of the window waiting for the worker
        self._running: int | None = None  # clip buffer being classified
        self._closed = False
        self._unfinished: deque[Inferred] = deque()  # inferred windows handed over for finishing, oldest first
        self._finishing = threading.Lock()  # one thread finishes at a time, so windows finish in order
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    def push(self, frame, timestamp: float | None = None, decode_ms: float = 0.0) -> bool:
        """Feed one frame; True when it queued the classification of a window."""
        if self._unfinished:
            self._finish_handed()
        if not self.classifier.feed(frame, timestamp, decode_ms):
            return False
        with self._ready:
            if self.policy == "drop" and (self._running is not None or self._queued is not None):
                self.dropped += 1
                return False
            while self._queued is not None and not self._closed:  # "wait": a window already waits for the worker
                self._ready.wait()
            if self._closed:
                raise RuntimeError("cannot classify after close")
            buffer = 1 - self._running if self._running is not None else 0
        self.classifier.snapshot(buffer)  # a buffer the worker does not touch until it is queued
        with self._ready:
            self._queued = buffer
            self._ready.notify_all()
        return True

    def _finish_handed(self) -> None:
        """Finish the handed-over windows, oldest first."""
        with self._finishing:
            while True:
                try:
                    inferred = self._unfinished.popleft()
                except IndexError:
                    return
                try:
                    result = self.classifier.finish(inferred)
                    on_result = self.on_result  # None once closed
                    if on_result is not None:
                        on_result(result)
                except BaseException as exc:  # kept for drain; the stream goes on
                    self.error = exc

    def _work(self) -> None:
        ready = self._ready
        while True:
            with ready:
                while self._queued is None and not self._closed:
                    ready.wait()
                if self._closed:
                    return
                self._running, self._queued = self._queued, None
                ready.notify_all()  # an intake waiting for the queue slot
                buffer = self._running
            inferred = None
            try:
                inferred = self.classifier.infer(buffer)
            except BaseException as exc:  # kept for drain; the stream goes on
                self.error = exc
            with ready:
                if inferred is not None:
                    self._unfinished.append(inferred)
                self._running = None
                backlog = self._queued is not None
                ready.notify_all()
            if not backlog:  # nothing waits for the model: finish here rather than hold the result back
                self._finish_handed()

    def drain(self) -> None:
        """Wait until the queued windows are classified and finished; raise the model's error if one failed."""
        with self._ready:
            while (self._queued is not None or self._running is not None) and not self._closed:
                self._ready.wait()
        self._finish_handed()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the worker (after the window it is classifying, if any); a queued window is dropped."""
        with self._ready:
            self._closed, self._queued = True, None
            self._ready.notify_all()


def iter_video_frames(path, realtime: bool = False, threads: int = 1, lazy: bool = False,
                      short_side: int | None = None,
                      sample_every: Iterable[float] = ()) -> Iterator[tuple[np.ndarray, float, float]]:
    """Decode a video file one frame at a time: ``(rgb uint8 [H, W, 3], stream seconds, decode ms)``.

    Frames come as displayed (rotated by the display matrix, as ``edgevid eval`` reads them);
    ``short_side`` scales them inside libswscale while converting. With ``realtime`` the frames are
    paced at the file's frame rate, as a camera would deliver them. With ``lazy`` the first item is
    a ``DecodedFrame`` that converts to RGB when called (a ``StreamClassifier`` converts only the
    frames it keeps, scaled to its short side; ``decode ms`` is then the decoding alone, and the
    conversion counts as preprocessing).

    ``sample_every`` (lazy only): the sampling intervals (seconds) of the classifiers this stream
    feeds (``StreamClassifier.sampler.interval``). Every frame still comes, in order, but one that
    no ``FrameSampler`` at those intervals keeps and that no other frame is predicted from
    (a non-reference B-frame) is not decoded: it comes as a ``SkippedFrame`` (its timestamp, no
    pixels), as ``edgevid eval``'s decoder skips the frames it does not need. The frames the
    samplers keep are exactly those of a full decode (the same rule on the same timestamps).

    A file that stops decoding part-way (truncated) ends the iteration with a logged warning; one
    that decodes nothing raises ``DataError``. One decoder thread by default: a stream wants each
    frame as soon as it is decoded, and frame threading adds frames of delay (and, for camera-sized
    frames, is slower: measured 2 vs 4 ms a 160x128 frame here).
    """
    import logging

    import av

    from .data.video import _check_still, _open, _reason
    from .errors import DataError

    path = Path(path)
    intervals = sorted(set(sample_every))
    if intervals and not lazy:
        raise ValueError("sample_every needs lazy=True (skipped frames have no pixels)")
    container = _open(path)
    index = 0
    try:
        _check_still(path, container)
        stream = container.streams.video[0]
        if threads > 1:
            stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        converters = _Converters(path, short_side)
        start_wall, first = time.monotonic(), None
        plan = _skip_plan(path, stream, intervals) if intervals else None
        decoder = container.decode(stream) if plan is None else _decode_skipping(container, stream, *plan)
        while True:
            decode_started = time.perf_counter()
            try:
                frame = next(decoder, None)
            except av.FFmpegError as error:
                if not index:
                    raise DataError(f"{path}: no frame decodes ({_reason(error)}); re-encode or replace it.") from None
                logging.getLogger("edgevid").warning(
                    "%s: stopped decoding after %d frames (%s): truncated or damaged", path, index, _reason(error))
                return
            if frame is None:
                if not index:
                    raise DataError(f"{path}: no decodable frames; re-encode or replace it.")
                if stream.frames and index < stream.frames:
                    logging.getLogger("edgevid").warning(
                        "%s: only %d of the %d frames the container claims decode (truncated?)", path, index, stream.frames)
                return
            if isinstance(frame, SkippedFrame):
                image, seconds = frame, frame.time
            else:
                image = DecodedFrame(frame, converters) if lazy else converters[None](frame)
                if frame.time is not None:
                    seconds = float(frame.time)
                else:  # no timestamps: count frames at the stream's rate
                    rate = float(stream.average_rate or 30)
                    seconds = index / rate
            decode_ms = (time.perf_counter() - decode_started) * 1e3
            first = seconds if first is None else first
            if realtime:
                delay = (seconds - first) - (time.monotonic() - start_wall)
                if delay > 0:
                    time.sleep(delay)
            index += 1
            yield image, seconds - first, decode_ms
    finally:
        container.close()


def _skip_plan(path: Path, stream, intervals: list[float]) -> tuple[np.ndarray, set[int]] | None:
    """(every frame's pts in display order, the pts some sampler keeps), from the demuxer alone; None
    without timestamps. The samplers see the seconds ``iter_video_frames`` yields (the same expression)."""
    from .data.video import read_meta

    meta = read_meta(path)
    if not meta.has_pts or not stream.time_base:
        return None
    seconds = [float(int(p) * stream.time_base) for p in meta.pts]
    kept: set[int] = set()
    for interval in intervals:
        sampler = FrameSampler(interval)
        kept.update(int(p) for p, t in zip(meta.pts, seconds) if sampler.take(t - seconds[0]))
    return meta.pts, kept


def _decode_skipping(container, stream, pts: np.ndarray, kept: set[int]):
    """Decoded frames in display order, with a ``SkippedFrame`` for each frame not decoded: packets
    of frames no sampler keeps are decoded with ``skip_frame = NONREF`` (the decoder drops them when
    nothing refers to them). The decoder gives frames in display order, so a frame sent that way
    that has not come out before a later one never will."""
    codec = stream.codec_context
    time_base = stream.time_base
    sent_nonref: set[int] = set()
    position = 0  # into pts: the next frame in display order

    def skipped_before(limit: int | None):
        nonlocal position
        while position < len(pts) and (limit is None or pts[position] < limit):
            stamp = int(pts[position])
            position += 1
            if stamp in sent_nonref:
                yield SkippedFrame(float(stamp * time_base))

    for packet in container.demux(stream):
        wanted = packet.pts is None or packet.is_keyframe or packet.pts in kept
        if not wanted:
            sent_nonref.add(int(packet.pts))
        codec.skip_frame = "DEFAULT" if wanted else "NONREF"
        for frame in codec.decode(packet):
            if frame.pts is not None:
                yield from skipped_before(frame.pts)
                if position < len(pts) and pts[position] == frame.pts:
                    position += 1
            yield frame
    yield from skipped_before(None)


class _Converters(dict):
    """``FrameConverter`` per short side (None: the size ``iter_video_frames`` was asked for), made on first use."""

    def __init__(self, path: Path, short_side: int | None):
        super().__init__()
        self.path, self.short_side = path, short_side

    def __missing__(self, short_side: int | None):
        from .data.video import FrameConverter

        converter = self[short_side] = FrameConverter(self.path, self.short_side if short_side is None else short_side)
        return converter


class DecodedFrame:
    """A decoded video frame, converted to RGB uint8 ``[H, W, 3]`` only when asked (``iter_video_frames(lazy=True)``).

    ``frame()``: at the size the iterator was asked for; ``frame.scaled(short_side)``: the short side scaled to
    ``short_side`` inside libswscale while converting, as ``edgevid eval`` converts a file's frames (so a
    streamed file's windows hold eval's pixels, and no full-size RGB frame is made). Each size is converted
    once per frame, however many classifiers ask for it.
    """

    __slots__ = ("_frame", "_converters", "_done")

    def __init__(self, frame, converters: _Converters):
        self._frame, self._converters, self._done = frame, converters, {}

    def __call__(self) -> np.ndarray:
        return self.scaled(None)

    def scaled(self, short_side: int | None) -> np.ndarray:
        image = self._done.get(short_side)
        if image is None:
            image = self._done[short_side] = self._converters[short_side](self._frame)
        return image



class SkippedFrame(DecodedFrame):
    """A frame ``iter_video_frames(sample_every=...)`` did not decode (no sampler keeps it): its
    timestamp (``time``, stream seconds as the decoder states them), no pixels."""

    __slots__ = ("time",)

    def __init__(self, seconds: float):
        super().__init__(None, None)
        self.time = seconds

    def scaled(self, short_side: int | None) -> np.ndarray:
        raise RuntimeError("this frame was not decoded (iter_video_frames skipped it: no sampler keeps it)")
