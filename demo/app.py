"""edgevid streaming demo: live top-k labels and per-target FPS from one or more built artifacts.

Sources: the browser's webcam (Gradio's streaming image input), an uploaded video file, or a
generated SynthMotion sample played at its real frame rate (an upload always wins over the
sample). Every selected artifact sees the same frames; each has its own ``StreamClassifier``
(ring buffer, sampler, smoother) inside the browser tab's ``Session``, so sessions never share
stream state. Runners are opened once per (artifact, threads) and shared by sessions; each has
its own lock, so opening one never holds up streams on the others.

Sessions live in a server-side ``SessionRegistry`` keyed by Gradio's session hash: at most
``MAX_SESSIONS`` at once, released (worker threads stopped, buffers dropped) as soon as the tab
closes (Gradio's unload event; the ``gr.State`` delete callback as a second line).

FPS (windows per second): *model-only* = the runner alone, timed with ``edgevid bench``'s own code
(``edgevid.bench.time_runner``: its input, warm-up, back-to-back runs, 1000 / p50) in this server
when the runner opens, at the demo's threads: the figure that agrees with bench's (shown beside
it from the artifact's report). *In-stream inference* = 1000 / median runner ms of the last 30
windows of the stream: paced by the source (a 15 fps file or camera leaves the runner idle between
windows: cold caches, a sleeping thread pool) and sharing the cores with decoding and the page
updates, so lower than back-to-back timing. *End-to-end* = steady-state windows per second of the
whole per-window work: decoding the frames (the browser's JPEG for the webcam, H.264 for files),
sampling, preprocessing, inference and smoothing. The first window (which needs every frame that
fills it) is the *warm-up*, shown apart. Time spent waiting for the camera or for another stream's
inference is not counted, so neither is capped by the camera's rate (shown separately).

Run it with ``edgevid demo [ARTIFACT ...]`` (binds to 127.0.0.1; ``--host``/``--share`` opt in).
"""

# No ``from __future__ import annotations``: Gradio injects ``gr.Request`` by reading the handlers'
# annotations as objects, and ``gr`` is imported inside ``build_app``.

import atexit
import html
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

log = logging.getLogger("edgevid")

MAX_TARGETS = 4
MAX_SESSIONS = 8  # live browser sessions a server keeps at once
IDLE_SECONDS = 60.0  # a session without frames this long may be evicted for a new one when the server is full
SAMPLE_FILES = 16  # generated SynthMotion clips kept in the server's private folder
SEED_MAX = 2**31 - 1
STREAM_EVERY = 1 / 15  # seconds between webcam frames the browser sends (it waits for the previous one)
STATS_EVERY = 0.25  # seconds between stats refreshes of one session
CHART_EVERY = 1.0
CHART_SECONDS = 60.0
SERVER_EVERY = 2.0  # seconds between refreshes of the server line (live sessions, RSS, threads)
BENCH_TOLERANCE = 0.10  # the demo's model-only FPS should be within this of `edgevid bench` at the same threads
MODEL_TIMING_SECONDS = 1.0  # timing each runner alone when it opens (bench's code, shorter: at most 3x this)


# --- artifacts and shared runners -------------------------------------------------------------------

def discover_artifacts(paths: Iterable[str | Path]) -> list[Path]:
    """Artifact folders among ``paths`` (each an artifact folder or a folder of them), sorted."""
    from edgevid.artifact import MANIFEST
    from edgevid.errors import ArtifactError

    found: list[Path] = []
    for path in map(Path, paths):
        if (path / MANIFEST).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p.parent for p in path.glob(f"*/{MANIFEST}")))
        else:
            raise ArtifactError(f"{path}: no artifact folder here; build one with `edgevid build` or pass an artifacts folder")
    unique = sorted(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ArtifactError(f"no artifacts under {', '.join(map(str, paths))}; build one with `edgevid build`")
    return unique


def usable_cores() -> int:
    from edgevid.bench import usable_cores as cores

    return cores()


@dataclass
class PooledRunner:
    runner: object
    lock: threading.Lock  # one inference at a time on this runner (sessions share it)
    manifest: object
    threads: int
    timing: object = None  # edgevid.bench.Timing: the runner alone, timed as `edgevid bench` does, when it opened


def _open_runner(path: Path, threads: int) -> PooledRunner:
    """Open (hash-checked) and warm up the runner of ``path`` (first-run compilation out of the stream),
    then time it alone with ``edgevid bench``'s own code (``time_runner``) before any stream uses it."""
    from edgevid.artifact import Artifact
    from edgevid.backends import open_runner
    from edgevid.bench import time_runner

    artifact = Artifact(path)
    runner = open_runner(artifact, threads=threads, mode="stream")  # streams decode beside it
    runner(np.zeros(artifact.manifest.input_shape, np.float32))
    timing = time_runner(runner, artifact.manifest.input_shape, min_seconds=MODEL_TIMING_SECONDS)
    return PooledRunner(runner, threading.Lock(), artifact.manifest, threads, timing)


class RunnerPool:
    """One open runner per (artifact, threads) for the whole server, each opened under its own lock.

    ``threads`` fixes every runner's thread count (``--threads``); None chooses it per selection
    from the cores this process may use and the number of selected targets (``threads_for``), so
    two runners on two cores get one thread each instead of oversubscribing. Opening a runner
    (15 s for torch-cpu) holds only that key's lock: streams on other artifacts go on.
    """

    def __init__(self, threads: int | None = None, opener: Callable[[Path, int], PooledRunner] = _open_runner):
        self.threads = threads
        self._open = opener
        self._entries: dict[tuple[Path, int], list] = {}  # key -> [opening lock, PooledRunner or None]
        self._guard = threading.Lock()  # guards _entries only, never held while opening
        self._bench: dict[Path, tuple] = {}  # path -> (report mtime, figure)

    def threads_for(self, targets: int) -> tuple[int, str]:
        """Threads per runner for ``targets`` selected targets, and why."""
        if self.threads:
            return self.threads, "--threads"
        from edgevid.streaming import stream_runner_threads

        return stream_runner_threads(usable_cores(), targets)

    def get(self, path: Path, threads: int | None = None) -> PooledRunner:
        """The runner of ``path`` at ``threads``, opened on first use."""
        threads = threads or self.threads_for(1)[0]
        key = (Path(path), threads)
        with self._guard:
            entry = self._entries.setdefault(key, [threading.Lock(), None])
        with entry[0]:
            if entry[1] is None:
                entry[1] = self._open(key[0], threads)
            return entry[1]

    def bench(self, path: Path) -> dict | None:
        """``edgevid bench``'s model-only figure for ``path`` from its report.json: {fps, threads, p50_ms}
        (read again when the report changes: a bench run while the demo is up shows at once)."""
        from edgevid.artifact import REPORT
        from edgevid.bench import reported_model_fps

        try:
            stamp = (Path(path) / REPORT).stat().st_mtime_ns
        except OSError:
            stamp = None
        cached = self._bench.get(path)
        if cached is None or cached[0] != stamp:
            cached = self._bench[path] = (stamp, reported_model_fps(path) if stamp is not None else None)
        return cached[1]

    def close(self) -> None:
        with self._guard:
            entries, self._entries = list(self._entries.values()), {}
        for _, pooled in entries:
            if pooled is not None:
                pooled.runner.close()


# --- generated samples ------------------------------------------------------------------------------

class DemoInputError(Exception):
    """A user's input the demo cannot take (shown as a toast, no traceback)."""


def check_seed(seed) -> int:
    """``seed`` as a SynthMotion seed (a whole number 0..SEED_MAX), else DemoInputError."""
    try:
        value = float(seed)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value != int(value) or not 0 <= value <= SEED_MAX:
        raise DemoInputError(f"SynthMotion seed {seed!r}: use a whole number from 0 to {SEED_MAX} (class = seed % 8).")
    return int(value)


class SampleCache:
    """SynthMotion clips of this server, in a private folder (``mkdtemp``: owner-only, unpredictable
    name), each file created exclusively there (``mkstemp``: O_EXCL, no symlink followed). At most
    ``limit`` files (least recently used removed first); ``close`` removes the folder."""

    def __init__(self, limit: int = SAMPLE_FILES, parent: str | Path | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="edgevid-demo-", dir=parent))
        self.limit = limit
        self._files: OrderedDict[int, tuple[Path, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, seed) -> tuple[Path, str]:
        """(H.264 file, class name) of the clip of ``seed`` (15 fps, 32 frames)."""
        from edgevid.data.synthmotion import CLASSES, FPS, generate_clip
        from edgevid.data.video import write_video

        seed = check_seed(seed)
        with self._lock:
            if seed in self._files and self._files[seed][0].is_file():
                self._files.move_to_end(seed)
                return self._files[seed]
            frames, label = generate_clip(seed)
            fd, name = tempfile.mkstemp(prefix=f"synthmotion-{seed}-", suffix=".mp4", dir=self.folder)
            os.close(fd)
            path = write_video(name, frames, FPS)
            self._files[seed] = (path, CLASSES[label])
            while len(self._files) > self.limit:  # a stream still reading an evicted file keeps its open handle
                old, _ = self._files.popitem(last=False)[1]
                old.unlink(missing_ok=True)
            return self._files[seed]

    def __len__(self) -> int:
        return len(self._files)

    def close(self) -> None:
        with self._lock:
            self._files.clear()
            shutil.rmtree(self.folder, ignore_errors=True)


# --- one browser session ------------------------------------------------------------------------------

@dataclass
class CameraFrame:
    """A webcam frame as decoded by the server, with when it arrived and what decoding cost."""

    pixels: np.ndarray
    received: float
    decode_ms: float


class Session:
    """Everything one browser session streams through: a classifier per selected artifact.

    Frames are taken in (sampled, preprocessed into each classifier's ring) on the caller's
    thread; each artifact's windows are classified on its own worker thread
    (``BackgroundClassifier``, policy "drop"): a window that comes due while that artifact's model
    is still busy is dropped and counted, so a slow target never holds up the frames that the
    others, and its own next windows, see.
    """

    def __init__(self, pool: RunnerPool, selected: list[Path], smoothing: str = "ema", threads: int | None = None):
        from edgevid.streaming import BackgroundClassifier, StreamClassifier

        self.pool = pool
        self.selected, self.smoothing = list(selected), smoothing
        chosen, self.threads_why = pool.threads_for(len(self.selected))
        self.threads = threads or chosen
        if threads:
            self.threads_why = "given"
        self.classifiers, self.manifests, self.streams, self.timings = {}, {}, {}, {}
        try:
            for path in self.selected:
                pooled = pool.get(path, self.threads)
                classifier = StreamClassifier(pooled.runner, pooled.manifest.spec, pooled.manifest.labels, smoothing=smoothing,
                                              lock=pooled.lock)
                self.classifiers[path], self.manifests[path] = classifier, pooled.manifest
                self.timings[path] = pooled.timing
                self.streams[path] = BackgroundClassifier(classifier, "drop", lambda result, path=path: self._record(path, result),
                                                          name=f"edgevid-{path.name}")
        except BaseException:
            self.close()
            raise
        self.lock = threading.Lock()  # guards latest / fresh / history between workers and rendering
        self.latest: dict[Path, object] = {}
        self.fresh: set[Path] = set()
        self.history: deque = deque()  # (seconds since start, artifact path, model fps, e2e fps)
        self.arrivals: deque = deque(maxlen=30)  # stream timestamps of the last frames
        self.started = self.last_active = time.monotonic()
        self.frames = 0
        self.last_stats = self.last_chart = 0.0
        self.truth: str | None = None
        self.source: str = "webcam"
        self.playing = False  # a file or sample is being played into this session
        self.closed = False

    def matches(self, selected: list[Path], smoothing: str) -> bool:
        return self.selected == list(selected) and self.smoothing == smoothing

    def push(self, pixels, timestamp: float, decode_ms: float) -> None:
        """One frame (RGB uint8 array, or a lazily converted ``DecodedFrame``) into every selected target."""
        if self.closed:  # released (tab closed, replaced) while a frame was on its way
            return
        self.frames += 1
        self.last_active = time.monotonic()
        self.arrivals.append(timestamp)
        for stream in self.streams.values():
            try:
                stream.push(pixels, timestamp, decode_ms)
            except RuntimeError:  # its worker was shut down by a concurrent close
                if not self.closed:
                    raise
                return

    def _record(self, path: Path, result) -> None:
        classifier = self.classifiers.get(path)
        if classifier is None:  # a window that finished after close
            return
        stats = classifier.stats
        with self.lock:
            self.latest[path] = result
            self.fresh.add(path)
            now = time.monotonic() - self.started
            self.history.append((now, path, stats.model_fps(recent=True), stats.e2e_fps(recent=True)))
            while self.history and self.history[0][0] < now - CHART_SECONDS:
                self.history.popleft()

    def dropped(self, path: Path) -> int:
        return self.streams[path].dropped

    def error(self, path: Path) -> str | None:
        exc = self.streams[path].error
        return f"{type(exc).__name__}: {exc}"[:200] if exc else None

    def drain(self) -> None:
        """Wait until every submitted window is classified (a model's error stays in ``error``)."""
        for stream in self.streams.values():
            try:
                stream.drain()
            except Exception:  # shown in the stats table, per target
                pass

    def close(self) -> None:
        """Stop the workers and drop the buffers now: each stream's callback refers back to this
        session, a cycle the garbage collector would free only at its next full pass (RSS grew
        2 MB a closed session until then)."""
        self.closed = True
        streams, self.streams, self.classifiers = self.streams, {}, {}
        for stream in streams.values():
            stream.close()
            stream.on_result = None

    def source_fps(self) -> float | None:
        """Frames per second reaching the classifiers, over the last 30 frames."""
        if len(self.arrivals) < 2 or self.arrivals[-1] <= self.arrivals[0]:
            return None
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])

    def snapshot(self) -> dict:
        """The latest result per artifact, taken once so that labels and table show the same numbers."""
        with self.lock:
            return dict(self.latest)


def _return_memory() -> None:
    """After a session is released: collect what Gradio's per-event objects left in reference cycles
    and hand freed heap pages back to the OS (glibc keeps them otherwise, per thread arena)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class ServerFull(DemoInputError):
    pass


class SessionRegistry:
    """The server's live sessions by Gradio session hash: at most ``limit``; ``release`` on tab close.

    When full, a new session evicts the longest-idle one if it has had no frame for
    ``idle_seconds`` (a tab left open on a stopped stream), else it is refused. A released
    (closed-tab) key is remembered so that a frame still in flight cannot reopen it.
    """

    def __init__(self, limit: int = MAX_SESSIONS, idle_seconds: float = IDLE_SECONDS):
        self.limit, self.idle_seconds = limit, idle_seconds
        self._live: OrderedDict[str, Session] = OrderedDict()
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.opened = self.released = 0

    def __len__(self) -> int:
        return len(self._live)

    def get(self, key: str) -> Session | None:
        with self._lock:
            return self._live.get(key)

    def is_closed(self, key: str) -> bool:
        return key in self._closed

    def open(self, key: str, factory: Callable[[], Session]) -> Session | None:
        """A new session for ``key`` (its previous one closed); None when that tab has closed."""
        evicted = []
        with self._lock:
            if key in self._closed:
                return None
            previous = self._live.pop(key, None)
            if previous is not None:
                evicted.append(previous)
            if len(self._live) >= self.limit:
                now = time.monotonic()
                idle = [k for k, s in self._live.items()
                        if s is not None and not s.playing and now - s.last_active >= self.idle_seconds]
                if not idle:
                    for session in evicted:
                        session.close()
                    raise ServerFull(f"The demo already streams {len(self._live)} sessions (its maximum); "
                                     "close another tab or try again in a minute.")
                oldest = min(idle, key=lambda k: self._live[k].last_active)
                evicted.append(self._live.pop(oldest))
                log.info("session %s evicted (idle %.0f s) for a new one", oldest[:8], now - evicted[-1].last_active)
            self._live[key] = None  # reserve the slot while the runners open
        for session in evicted:
            session.close()
        try:
            session = factory()
        except BaseException:
            with self._lock:
                if key in self._live and self._live[key] is None:
                    del self._live[key]
            raise
        with self._lock:
            if key in self._closed or key not in self._live:  # the tab closed while the runners opened
                session.close()
                return None
            other = self._live[key]  # a second open for this tab that finished first
            self._live[key] = session
            self.opened += 1
        if other is not None:
            other.close()
        log.info("session %s opened (%d live)", key[:8], len(self._live))
        return session

    def release(self, key: str | None, closed: bool = False) -> bool:
        """Close ``key``'s session (``closed``: its tab is gone; never reopen it)."""
        if not key:
            return False
        with self._lock:
            session = self._live.pop(key, None)
            if closed:
                self._closed[key] = None
                while len(self._closed) > 4096:
                    self._closed.popitem(last=False)
        if session is None:
            return False
        session.close()
        self.released += 1
        log.info("session %s released (%d live)", key[:8], len(self._live))
        _return_memory()
        return True

    def close(self) -> None:
        with self._lock:
            sessions, self._live = [s for s in self._live.values() if s is not None], OrderedDict()
        for session in sessions:
            session.close()


# --- rendering ---------------------------------------------------------------------------------------

TABLE_CSS = """
#edgevid-stats { max-width: 100%; }
#edgevid-stats .scroll { max-width: 100%; overflow-x: auto; }
#edgevid-stats table { width: 100%; table-layout: auto; border-collapse: collapse; font-size: 0.82em; margin: 0 0 0.4em 0; }
#edgevid-stats th, #edgevid-stats td { padding: 2px 5px; overflow-wrap: anywhere; vertical-align: top; text-align: left; }
#edgevid-stats td.num, #edgevid-stats th.num { text-align: right; white-space: nowrap; }
#edgevid-stats th.num { white-space: normal; overflow-wrap: normal; }  /* headers wrap between words (FPS kinds side by side), figures do not */
#edgevid-stats caption { text-align: left; font-weight: 600; font-size: 0.85em; }
#edgevid-stats .ok { color: #15803d; } #edgevid-stats .off { color: #b45309; }
#edgevid-stats p { font-size: 0.8em; margin: 0.2em 0; }
@media (max-width: 640px) {  /* a phone: each target's row becomes a block of label: value lines */
  #edgevid-stats table, #edgevid-stats tbody, #edgevid-stats tr, #edgevid-stats td, #edgevid-stats caption { display: block; width: 100%; box-sizing: border-box; }
  #edgevid-stats thead { display: none; }
  #edgevid-stats tr { border-top: 1px solid #d4d4d8; padding: 2px 0; }
  #edgevid-stats td, #edgevid-stats td.num { display: flex; justify-content: space-between; gap: 8px; text-align: right; white-space: normal; }
  #edgevid-stats td::before { content: attr(data-label); font-weight: 600; text-align: left; }
}
"""


def hint_html(selected: Iterable[str] = ()) -> str:
    """What to do next, for the artifacts ticked (no stream yet)."""
    names = list(selected)
    if not names:
        text = "Pick one or more artifacts, then start the webcam or play a video file or sample."
    else:
        text = (f"Ready: {html.escape(', '.join(names))}. Start the webcam (Webcam tab), or upload a video file or use a "
                "SynthMotion sample and press Play (Video file / SynthMotion sample tab).")
    return f"<div id='edgevid-stats' data-state='idle'><p class='hint'>{text}</p></div>"


def _fmt(value, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value else "-"


def bench_cell(pool: RunnerPool, path: Path, threads: int, model_fps: float | None) -> tuple[str, str]:
    """(cell html, data attributes) comparing the demo's model-only FPS with `edgevid bench`'s."""
    bench = pool.bench(path)
    if not bench:
        return "<span title='no bench figures in this artifact&#39;s report: run edgevid bench'>-</span>", "data-bench='0'"
    ratio = model_fps / bench["fps"] if model_fps else None
    same = bench["threads"] == threads
    attrs = f"data-bench='{bench['fps']:.3f}' data-bench-threads='{bench['threads']}' data-ratio='{ratio or 0:.3f}'"
    text = f"{bench['fps']:.1f} <small>@{bench['threads']}t</small>"
    if ratio is None:
        return text, attrs
    if not same:
        return (f"{text} <small class='off' title='bench ran at {bench['threads']} threads, this demo at {threads}: "
                f"run edgevid bench --threads {threads} (or edgevid demo --threads {bench['threads']}) to compare'>"
                f"threads differ</small>"), attrs
    within = abs(ratio - 1) <= BENCH_TOLERANCE
    mark = "ok" if within else "off"
    return (f"{text} <small class='{mark}' title='demo model-only / bench'>{ratio:.2f}x{' ✓' if within else ''}</small>",
            attrs + f" data-agree='{int(within)}'")


def model_only_fps(timing) -> float | None:
    """Windows/s of a runner alone from its ``edgevid.bench.Timing`` (1000 / p50 ms, as bench reports it)."""
    p50 = getattr(timing, "p50_ms", None)
    return 1e3 / p50 if p50 else None


def stats_html(session: Session | None, latest: dict | None = None, selected: Iterable[str] = ()) -> str:
    """The per-target table, the latency breakdown and the source line (one ``latest`` snapshot)."""
    if session is None or not session.classifiers:
        return hint_html(selected)
    latest = session.snapshot() if latest is None else latest
    rows, parts = [], []
    for path, classifier in session.classifiers.items():
        m = session.manifests[path]
        result = latest.get(path)
        stats = classifier.stats
        model_fps = model_only_fps(session.timings.get(path))
        stream_fps, e2e_fps = stats.model_fps(recent=True), stats.e2e_fps(recent=True)
        label, score = (result.top_k[0] if result else ("(filling the window)", 0.0))
        if session.error(path):
            label = f"error: {session.error(path)}"
        dropped = session.dropped(path)
        name = html.escape(f"{m.target} {m.precision}")
        bench, bench_attrs = bench_cell(session.pool, path, session.threads, model_fps)
        rows.append(
            f"<tr data-artifact='{html.escape(path.name)}'><td data-label='target' title='{html.escape(m.backend)}'>{name}</td>"
            f"<td class='top1' data-label='top-1'>{html.escape(label)}</td><td class='num p' data-label='p'>{score:.2f}</td>"
            f"<td class='num fps-model' data-label='model-only FPS' data-value='{model_fps or 0:.3f}'>{_fmt(model_fps)}</td>"
            f"<td class='num bench' data-label='bench FPS' {bench_attrs}>{bench}</td>"
            f"<td class='num fps-stream' data-label='in-stream inference FPS' data-value='{stream_fps or 0:.3f}'>"
            f"{_fmt(stream_fps)}</td>"
            f"<td class='num fps-e2e' data-label='end-to-end FPS' data-value='{e2e_fps or 0:.3f}'>{_fmt(e2e_fps)}</td>"
            f"<td class='num windows' data-label='windows' data-dropped='{dropped}'>{stats.windows}</td>"
            f"<td class='num sampled' data-label='sampled / frames'>{stats.sampled}/{stats.frames}</td></tr>")
        b = stats.breakdown(recent=True) or {}
        warm = f"{stats.warmup_ms:.0f} ms / {stats.warmup_frames} fr" if stats.warmup_ms is not None else "-"
        parts.append(
            f"<tr data-artifact='{html.escape(path.name)}'><td data-label='target'>{name}</td>"
            + "".join(f"<td class='num {key}' data-label='{title} ms'>{_fmt(b.get(key + '_ms'), 2)}</td>" for key, title in
                      (("decode", "decode"), ("preprocess", "preprocess"), ("model", "inference"), ("wait", "queue wait")))
            + f"<td class='num dropped' data-label='dropped windows'>{dropped}</td>"
            f"<td class='num warmup' data-label='warm-up'>{warm}</td></tr>")
    first = next(iter(session.classifiers.values()))
    source = session.source_fps()
    truth = f" &middot; ground truth: <b class='truth'>{html.escape(session.truth)}</b>" if session.truth else ""
    return (
        f"<div id='edgevid-stats' data-state='streaming' data-source-fps='{source or 0:.2f}' data-threads='{session.threads}'>"
        "<div class='scroll'><table class='main'><thead><tr><th>target</th><th>top-1</th>"
        "<th class='num' title='smoothed probability of the top-1 label'>p</th>"
        "<th class='num' title='the runner alone, timed as edgevid bench times it, in this server'>model-only FPS</th>"
        "<th class='num' title='edgevid bench, from the artifact&#39;s report'>bench FPS</th>"
        "<th class='num' title='in-stream inference: median runner time of the last 30 windows of this stream'>"
        "in-stream FPS</th>"
        "<th class='num'>end-to-end FPS</th>"
        "<th class='num'>windows</th><th class='num'>sampled / frames</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        "<div class='scroll'><table class='breakdown'><caption>latency per window, ms (mean of the last 30)</caption>"
        "<thead><tr><th>target</th><th class='num'>decode</th><th class='num'>preprocess</th><th class='num'>inference</th>"
        "<th class='num' title='from the window coming due to its inference starting: worker queue and a runner shared "
        "with other tabs (not in end-to-end)'>queue wait</th><th class='num'>dropped windows</th>"
        "<th class='num' title='pipeline time and frames until the first window'>warm-up</th></tr></thead>"
        f"<tbody>{''.join(parts)}</tbody></table></div>"
        f"<p class='source'>source: {html.escape(session.source)}, {session.frames} frames, "
        f"{f'{source:.1f} fps' if source else '-'} &middot; keeping one frame every "
        f"{first.sampler.interval:.3f} s (stride {first.spec.clip.stride} at {first.train_fps:g} fps training) &middot; "
        f"window {first.frames} frames &middot; <span class='threads'>threads per runner: {session.threads} "
        f"({html.escape(session.threads_why)})</span>{truth}</p>"
        "<p><small>FPS = windows per second. <b>p</b>: smoothed probability of the top-1 label. <b>model-only</b>: the "
        "runner alone, timed in this server with edgevid bench's own code (its input, warm-up, back-to-back runs, p50) "
        "when the runner opened, at the threads shown: the figure to compare with <b>bench</b>, edgevid bench's "
        f"model-only figure from the artifact's report (✓: within {BENCH_TOLERANCE:.0%} at the same threads). "
        "<b>in-stream inference</b>: the runner inside this stream (median of the last 30 windows). A source played at "
        "its frame rate leaves the runner idle between windows (caches cold, its thread pool asleep) and the server's "
        "decoding and page updates share the cores, so it reads lower than back-to-back timing; it is what this stream "
        "gets. <b>end-to-end</b>: steady state, decode + sampling + preprocessing + inference + smoothing per window; "
        "the first window (filling it) is the warm-up, shown apart; waiting for frames excluded, so neither is capped "
        "by the source's frame rate (shown above). A window that comes due while its model is busy is dropped, so a "
        "slow target never holds up the others.</small></p></div>")


KINDS = ("in-stream inference", "end-to-end")


def series_name(manifest) -> str:
    return f"{manifest.target} {manifest.precision}"


def chart_frame(session: Session | None, kind: str = "in-stream inference"):
    """The ``kind`` FPS history of the session's targets as a DataFrame (None before the first window).

    One chart per kind keeps the legend to one short entry per ticked target (Gradio draws it in
    one row under the chart and cuts what does not fit). Only the session's own targets appear.
    Gradio's LinePlot fixes its colour legend at the first data it draws, so every target is
    present from the first drawn time on (a NaN point there), never at t = 0 (which would pin the
    time axis and squeeze the rolling window)."""
    import pandas as pd

    if session is None:
        return None
    with session.lock:
        history = list(session.history)
    column = 2 if kind == "in-stream inference" else 3
    rows = [{"t": round(item[0], 2), "fps": item[column], "series": series_name(session.manifests[item[1]])}
            for item in history if item[column]]
    if not rows:
        return None
    present, first = {row["series"] for row in rows}, min(row["t"] for row in rows)
    rows += [{"t": first, "fps": float("nan"), "series": series_name(m)} for m in session.manifests.values()
             if series_name(m) not in present]
    return pd.DataFrame(rows)


def label_values(session: Session | None, latest: dict, force: bool = False) -> list:
    """Per-slot gr.Label values (a skip where nothing changed), from the ``latest`` snapshot."""
    import gradio as gr

    values = []
    paths = list(session.classifiers) if session else []
    fresh = set()
    if session is not None:
        with session.lock:
            fresh = set(session.fresh)
            session.fresh.clear()
    for slot in range(MAX_TARGETS):
        if slot < len(paths) and (force or paths[slot] in fresh):
            result = latest.get(paths[slot])
            m = session.manifests[paths[slot]]
            values.append(gr.update(value={k: v for k, v in result.top_k} if result else None,
                                    label=f"{m.target} {m.precision}", visible=True))
        elif slot >= len(paths) and force:
            values.append(gr.update(value=None, visible=False))
        else:
            values.append(gr.skip())
    return values


def rss_mb(pid: int | str = "self") -> float | None:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def server_html(registry: SessionRegistry) -> str:
    """Live sessions, threads and memory of this server process."""
    rss = rss_mb()
    return (f"<div id='edgevid-server' data-live='{len(registry)}' data-threads='{threading.active_count()}' "
            f"data-rss='{rss or 0:.1f}'><small>server: {len(registry)} live session{'s' if len(registry) != 1 else ''} "
            f"(at most {registry.limit}) &middot; {threading.active_count()} Python threads &middot; RSS "
            f"{f'{rss:.0f} MB' if rss else '-'}</small></div>")


# --- the app -----------------------------------------------------------------------------------------

def file_error(exc: Exception, path: str | Path, name: str) -> str:
    """One line about a file that cannot be played, naming the user's file, not the server's temp path."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = text.replace(str(path), name)
    if not text.startswith(name):
        text = f"{name}: cannot be decoded ({text}); re-encode it (e.g. H.264 or VP9) and upload it again."
    return text


def build_app(artifacts: list[Path], threads: int | None = None, pool: RunnerPool | None = None,
              registry: SessionRegistry | None = None, samples: SampleCache | None = None):
    """The Gradio Blocks app over ``artifacts`` (paths of artifact folders)."""
    import gradio as gr

    from edgevid.errors import EdgevidError
    from edgevid.streaming import SkippedFrame, iter_video_frames, too_short_message

    pool = RunnerPool(threads) if pool is None else pool
    registry = SessionRegistry() if registry is None else registry  # (an empty registry is falsy: no `or`)
    samples = SampleCache() if samples is None else samples
    by_name = {path.name: path for path in artifacts}
    default = [path.name for path in artifacts[:2]]
    opening = pool.threads_for(len(default))[0]
    for name in default:  # open before the first visitor: no compile pause in the first stream
        pool.get(by_name[name], opening)

    def user_error(message: str):
        return gr.Error(message, print_exception=False)

    class CameraImage(gr.Image):
        """gr.Image whose streamed frames arrive with their arrival time and decode cost."""

        is_template = True  # drawn by the frontend as a plain Image

        def preprocess(self, payload):
            received, started = time.monotonic(), time.perf_counter()
            image = super().preprocess(payload)
            if image is None:
                return None
            return CameraFrame(np.ascontiguousarray(image[..., :3]), received, (time.perf_counter() - started) * 1e3)

    def chosen(selected: list[str] | None) -> list[Path]:
        return [by_name[name] for name in (selected or []) if name in by_name][:MAX_TARGETS]

    def open_session(key: str, paths: list[Path], smoothing: str) -> Session | None:
        try:
            return registry.open(key, lambda: Session(pool, paths, smoothing))
        except DemoInputError as exc:
            raise user_error(str(exc)) from None

    def outputs(session: Session | None, selected=(), force: bool = False):
        now = time.monotonic()
        stats = gr.skip()
        charts = [gr.skip() for _ in KINDS]
        labels = [gr.skip() for _ in range(MAX_TARGETS)]
        if session is None or force or now - session.last_stats >= STATS_EVERY:
            latest = session.snapshot() if session is not None else {}  # one snapshot: labels and table agree
            labels, stats = label_values(session, latest, force), stats_html(session, latest, selected)
            if session:
                session.last_stats = now
        if session is not None and (force or now - session.last_chart >= CHART_EVERY):
            frames = [chart_frame(session, kind) for kind in KINDS]
            if frames[0] is not None:
                charts = [frame if frame is not None else gr.skip() for frame in frames]
                session.last_chart = now
        return [*labels, stats, *charts]

    def on_frame(frame, selected, smoothing, request: gr.Request):
        key = request.session_hash
        paths = chosen(selected)
        session = registry.get(key)
        if session is not None and session.playing:  # a file plays into this tab: it owns the panels
            return [gr.skip() for _ in range(MAX_TARGETS + 1 + len(KINDS))]
        if not paths:
            if session is not None:
                registry.release(key)
            return outputs(None, selected, force=True)
        changed = session is None or not session.matches(paths, smoothing) or session.source != "webcam"
        if changed:
            session = open_session(key, paths, smoothing)
            if session is None:  # the tab has closed
                return [gr.skip() for _ in range(MAX_TARGETS + 1 + len(KINDS))]
        if frame is None:
            return outputs(session, selected, changed)
        if not isinstance(frame, CameraFrame):
            frame = CameraFrame(np.ascontiguousarray(np.asarray(frame)[..., :3]), time.monotonic(), 0.0)
        session.push(frame.pixels, frame.received, frame.decode_ms)
        return outputs(session, selected, changed)

    def on_play(video, seed, use_sample, realtime, selected, smoothing, request: gr.Request):
        key = request.session_hash
        paths = chosen(selected)
        if not paths:
            raise user_error("Pick at least one artifact first.")
        truth = None
        if video:  # an upload always wins over the sample
            path, name = Path(video), Path(video).name
        elif use_sample:
            try:
                path, truth = samples.get(seed)
            except DemoInputError as exc:
                raise user_error(str(exc)) from None
            name = f"SynthMotion sample {check_seed(seed)}"
        else:
            raise user_error("Nothing to play: upload a video file, or tick 'use a generated SynthMotion sample'.")
        session = open_session(key, paths, smoothing)  # a new stream: fresh buffers
        if session is None:
            return
        session.truth, session.source, session.playing = truth, name, True
        shown = 0.0
        try:
            for manifest in {m.model: m for m in session.manifests.values()}.values():  # too short for a window: say so
                if (message := too_short_message(path, manifest.spec)):
                    gr.Warning(message.replace(str(path), name))
            # lazy: each classifier converts only the frames it keeps, scaled to its short side inside libswscale
            # (as edgevid eval converts a file); a full-size picture is made only for the frame shown
            # and frames no target's sampler keeps are decoded only when other frames refer to them
            intervals = [classifier.sampler.interval for classifier in session.classifiers.values()]
            for frame, seconds, decode_ms in iter_video_frames(path, realtime=realtime, lazy=True, sample_every=intervals):
                if session.closed or not session.playing:
                    return
                session.push(frame, seconds, decode_ms)
                if time.monotonic() - shown >= 0.1 and not isinstance(frame, SkippedFrame):
                    shown = time.monotonic()
                    yield [frame(), *outputs(session, selected)]
        except (EdgevidError, OSError, ValueError) as exc:
            raise user_error(file_error(exc, path, name)) from None
        except Exception as exc:  # PyAV's decoding errors (av.FFmpegError and kin)
            if type(exc).__module__.split(".")[0] != "av":
                raise
            raise user_error(file_error(exc, path, name)) from None
        finally:
            session.playing = False
        if session.frames == 0:
            raise user_error(f"{name}: no frames could be decoded; re-encode it (e.g. H.264 or VP9) and upload it again.")
        session.drain()
        yield [gr.skip(), *outputs(session, selected, force=True)]

    def on_stop(selected, request: gr.Request):
        """After Stop: wait for the windows in flight, then refresh labels, table and chart together."""
        session = registry.get(request.session_hash)
        if session is None:
            return outputs(None, selected, force=True)
        session.playing = False
        session.drain()
        return outputs(session, selected, force=True)

    def on_select(selected, request: gr.Request):
        session = registry.get(request.session_hash)
        if session is None or not chosen(selected):
            return hint_html(selected)
        return gr.skip()

    def on_load(request: gr.Request) -> str:
        return request.session_hash

    def on_unload(request: gr.Request) -> None:
        """The tab closed (or reloaded): free its session now, and Gradio's per-session state with it
        (component copies, output caches), which Gradio otherwise keeps an hour after the tab closed."""
        key = request.session_hash
        registry.release(key, closed=True)
        holder = getattr(app, "state_holder", None)
        if holder is not None and key in holder:
            holder.delete_state(key)  # runs the State delete callbacks
            with holder.lock:
                holder.session_data.pop(key, None)
                holder.time_last_used.pop(key, None)

    with gr.Blocks(title="edgevid streaming demo") as app:
        gr.Markdown("## edgevid streaming demo\nLive top-k labels and FPS per built artifact; every selected "
                    "artifact sees the same frames.")
        session_key = gr.State(None, delete_callback=lambda key: registry.release(key, closed=True))
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                selected = gr.CheckboxGroup([p.name for p in artifacts], value=default, label="artifacts (target, precision)",
                                            elem_id="artifacts")
                smoothing = gr.Radio(["ema", "mean", "none"], value="ema", label="smoothing over windows", elem_id="smoothing")
                with gr.Tab("Webcam"):
                    webcam = CameraImage(sources=["webcam"], streaming=True, type="numpy", label="webcam",
                                         webcam_options=gr.WebcamOptions(mirror=False), elem_id="webcam")
                with gr.Tab("Video file / SynthMotion sample"):
                    video = gr.Video(label="video file (played instead of the sample when given)", sources=["upload"],
                                     elem_id="video")
                    with gr.Row():
                        use_sample = gr.Checkbox(True, label="use a generated SynthMotion sample", elem_id="use-sample",
                                                 min_width=200)
                        realtime = gr.Checkbox(True, label="real time", elem_id="realtime", min_width=100)
                    seed = gr.Number(1_000_000, precision=0, minimum=0, maximum=SEED_MAX,
                                     label="SynthMotion seed (class = seed % 8)", elem_id="seed")
                    with gr.Row():
                        play = gr.Button("Play", variant="primary", elem_id="play")
                        stop = gr.Button("Stop", elem_id="stop")
                    frame_view = gr.Image(label="frame", interactive=False, elem_id="frame")
            with gr.Column(scale=1, min_width=320):
                labels = [gr.Label(num_top_classes=3, label=f"target {i + 1}", visible=i < len(default), elem_id=f"topk-{i}")
                          for i in range(MAX_TARGETS)]
                charts = [gr.LinePlot(None, x="t", y="fps", color="series", title=f"{kind} FPS (windows/s), last 60 s",
                                      x_title="seconds", y_title="FPS", color_title="target", elem_id=f"fps-chart-{kind.split()[0]}")
                          for kind in KINDS]
        stats = gr.HTML(hint_html(default), elem_id="stats", css_template=TABLE_CSS)
        server = gr.HTML(server_html(registry), elem_id="server")
        common = [selected, smoothing]
        panels = [*labels, stats, *charts]
        webcam.stream(on_frame, [webcam, *common], panels, stream_every=STREAM_EVERY, time_limit=None,
                      concurrency_limit=MAX_SESSIONS, show_progress="hidden")
        playing = play.click(on_play, [video, seed, use_sample, realtime, *common], [frame_view, *panels],
                             concurrency_limit=MAX_SESSIONS, show_progress="hidden")
        stop.click(on_stop, [selected], panels, cancels=[playing], show_progress="hidden")
        selected.change(on_select, [selected], [stats], show_progress="hidden")
        video.upload(lambda: gr.update(value=False), None, [use_sample], show_progress="hidden")
        video.clear(lambda: gr.update(value=True), None, [use_sample], show_progress="hidden")
        gr.Timer(SERVER_EVERY).tick(lambda: server_html(registry), None, [server], show_progress="hidden")
        app.load(on_load, None, [session_key])
        app.unload(on_unload)
    app.edgevid_pool, app.edgevid_sessions, app.edgevid_samples = pool, registry, samples
    return app


def synth_sample(seed: int, samples: SampleCache) -> tuple[Path, str]:
    """A SynthMotion clip (H.264, 15 fps, 32 frames) and its class name, from ``samples``."""
    return samples.get(seed)


MALLOC_ARENAS = 2


def tune_process() -> None:
    """Every new Gradio handler thread took its own glibc heap arena and kept its freed pages:
    server RSS rose 70 MB over the first 16 tabs that played a sample, then stayed (measured with
    benchmarks/demo_sessions.py); with two arenas for the whole process it stays within a few MB."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def launch(paths: Iterable[str | Path], host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           threads: int | None = None, block: bool = True, max_sessions: int = MAX_SESSIONS):
    """Discover artifacts and serve the demo; 127.0.0.1 unless ``host`` / ``share`` say otherwise.

    The sample folder, the sessions and the runners are released when the server stops (Ctrl-C,
    SIGTERM, or at exit)."""
    artifacts = discover_artifacts(paths)
    tune_process()
    registry, samples = SessionRegistry(max_sessions), SampleCache()
    try:
        app = build_app(artifacts, threads, registry=registry, samples=samples)
    except BaseException:
        samples.close()
        raise

    def release() -> None:
        samples.close()  # first: files on disk must not outlive the server
        registry.close()
        app.edgevid_pool.close()

    log.info("sample clips in %s (removed when the server stops)", samples.folder)
    atexit.register(release)
    app.queue(default_concurrency_limit=MAX_TARGETS)
    if block and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the server as Ctrl-C does
    try:
        app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, show_error=True,
                   quiet=not block, footer_links=[])
    finally:
        if block:
            release()
    return app
