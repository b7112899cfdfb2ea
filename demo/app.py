"""edgevid streaming demo: live top-k labels and per-target FPS from one or more built artifacts.

Sources: the browser's webcam (Gradio's streaming image input), a video file, or a generated
SynthMotion sample played at its real frame rate. Every selected artifact sees the same frames;
each has its own ``StreamClassifier`` (ring buffer, sampler, smoother) inside the browser
session's ``gr.State``, so sessions never share stream state. Runners are opened once per
artifact and shared by sessions behind a lock.

FPS: *model-only* = windows per second of inference time alone (1000 / runner ms);
*end-to-end* = windows per second of the whole per-window work: decoding the frames (the
browser's JPEG for the webcam, H.264 for files), sampling, preprocessing, inference and
smoothing. Time spent waiting for the camera is not counted, so both say what the pipeline can
sustain, not the camera's rate (shown separately).

Run it with ``edgevid demo [ARTIFACT ...]`` (binds to 127.0.0.1; ``--host``/``--share`` opt in).
"""

from __future__ import annotations

import html
import logging
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger("edgevid")

MAX_TARGETS = 4
STREAM_EVERY = 1 / 15  # seconds between webcam frames the browser sends (it waits for the previous one)
STATS_EVERY = 0.25  # seconds between stats refreshes of one session
CHART_EVERY = 1.0
CHART_SECONDS = 60.0


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


class RunnerPool:
    """One open runner per artifact for the whole server, each behind its own lock."""

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._runners: dict[Path, tuple[object, threading.Lock, object]] = {}
        self._guard = threading.Lock()

    def get(self, path: Path):
        """(runner, lock, manifest) of ``path``, opened (hash-checked, warmed up) on first use."""
        with self._guard:
            if path not in self._runners:
                from edgevid.artifact import Artifact
                from edgevid.backends import open_runner

                artifact = Artifact(path)
                runner = open_runner(artifact, threads=self.threads, mode="latency")
                runner(np.zeros(artifact.manifest.input_shape, np.float32))  # first-run compilation out of the stream
                self._runners[path] = (runner, threading.Lock(), artifact.manifest)
            return self._runners[path]

    def close(self) -> None:
        with self._guard:
            for runner, _, _ in self._runners.values():
                runner.close()
            self._runners.clear()


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

    def __init__(self, pool: RunnerPool, selected: list[Path], smoothing: str = "ema"):
        from edgevid.streaming import BackgroundClassifier, StreamClassifier

        self.selected, self.smoothing = list(selected), smoothing
        self.classifiers, self.manifests, self.streams = {}, {}, {}
        for path in self.selected:
            runner, lock, manifest = pool.get(path)
            classifier = StreamClassifier(runner, manifest.spec, manifest.labels, smoothing=smoothing, lock=lock)
            self.classifiers[path], self.manifests[path] = classifier, manifest
            self.streams[path] = BackgroundClassifier(classifier, "drop", lambda result, path=path: self._record(path, result),
                                                      name=f"edgevid-{path.name}")
        self.lock = threading.Lock()  # guards latest / fresh / history between workers and rendering
        self.latest: dict[Path, object] = {}
        self.fresh: set[Path] = set()
        self.history: deque = deque()  # (seconds since start, artifact name, model fps, e2e fps)
        self.arrivals: deque = deque(maxlen=30)  # stream timestamps of the last frames
        self.started = time.monotonic()
        self.frames = 0
        self.last_stats = self.last_chart = 0.0
        self.truth: str | None = None

    def matches(self, selected: list[Path], smoothing: str) -> bool:
        return self.selected == list(selected) and self.smoothing == smoothing

    def push(self, pixels: np.ndarray, timestamp: float, decode_ms: float) -> None:
        self.frames += 1
        self.arrivals.append(timestamp)
        for stream in self.streams.values():
            stream.push(pixels, timestamp, decode_ms)

    def _record(self, path: Path, result) -> None:
        stats = self.classifiers[path].stats
        with self.lock:
            self.latest[path] = result
            self.fresh.add(path)
            now = time.monotonic() - self.started
            self.history.append((now, path.name, stats.model_fps(recent=True), stats.e2e_fps(recent=True)))
            while self.history and self.history[0][0] < now - CHART_SECONDS:
                self.history.popleft()

    def dropped(self, path: Path) -> int:
        return self.streams[path].dropped

    def error(self, path: Path) -> str | None:
        exc = self.streams[path].error
        return f"{type(exc).__name__}: {exc}"[:200] if exc else None

    def drain(self) -> None:
        """Wait until every submitted window is classified."""
        for stream in self.streams.values():
            stream.drain()

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()

    def source_fps(self) -> float | None:
        """Frames per second reaching the classifiers, over the last 30 frames."""
        if len(self.arrivals) < 2 or self.arrivals[-1] <= self.arrivals[0]:
            return None
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])


# --- rendering ---------------------------------------------------------------------------------------

def stats_html(session: Session | None) -> str:
    if session is None or not session.classifiers:
        return "<div id='edgevid-stats'><p>Pick one or more artifacts, then start the webcam or play a sample.</p></div>"
    rows = []
    with session.lock:
        latest = dict(session.latest)
    for path, classifier in session.classifiers.items():
        m = session.manifests[path]
        result = latest.get(path)
        stats = classifier.stats
        model_fps, e2e_fps = stats.model_fps(recent=True), stats.e2e_fps(recent=True)
        label, score = (result.top_k[0] if result else ("(filling the window)", 0.0))
        if session.error(path):
            label = f"error: {session.error(path)}"
        fmt = lambda v: f"{v:.1f}" if v else "-"  # noqa: E731
        rows.append(
            f"<tr data-artifact='{html.escape(path.name)}'><td title='{m.backend}'>{html.escape(m.target)}</td>"
            f"<td>{m.precision}</td><td class='top1'>{html.escape(label)}</td><td>{score:.2f}</td>"
            f"<td class='fps-model' data-value='{model_fps or 0:.3f}'>{fmt(model_fps)}</td>"
            f"<td class='fps-e2e' data-value='{e2e_fps or 0:.3f}'>{fmt(e2e_fps)}</td>"
            f"<td class='windows'>{stats.windows}{f' ({session.dropped(path)} dropped)' if session.dropped(path) else ''}</td><td class='sampled'>{stats.sampled}/{stats.frames}</td></tr>")
    first = next(iter(session.classifiers.values()))
    source = session.source_fps()
    truth = f" &middot; ground truth: <b class='truth'>{html.escape(session.truth)}</b>" if session.truth else ""
    return (
        f"<div id='edgevid-stats' data-source-fps='{source or 0:.2f}'><table style='font-size: 0.85em'><thead><tr><th>target</th><th>precision</th>"
        "<th>top-1</th><th>p</th><th>model-only FPS</th><th>end-to-end FPS</th><th>windows</th><th>sampled / frames</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<p>source: {session.frames} frames, {f'{source:.1f} fps' if source else '-'} &middot; keeping one frame every "
        f"{first.sampler.interval:.3f} s (stride {first.spec.clip.stride} at {first.train_fps:g} fps training) &middot; "
        f"window {first.frames} frames{truth}</p>"
        "<p><small>FPS = windows per second: model-only counts inference time alone; end-to-end counts decode + "
        "sampling + preprocessing + inference + smoothing (waiting for frames excluded).</small></p></div>")


def chart_frame(session: Session | None, names: Iterable[str] = ()):
    """The FPS history as a DataFrame (None before the first window). Gradio's LinePlot fixes its
    colour legend at the first data it draws, so every series of ``names`` is always present
    (a NaN point where it has no data yet)."""
    import pandas as pd

    rows = []
    if session is not None:
        with session.lock:
            history = list(session.history)
    for t, name, model_fps, e2e_fps in (history if session else ()):
        if model_fps:
            rows.append({"t": round(t, 2), "fps": model_fps, "series": f"{name} model-only"})
        if e2e_fps:
            rows.append({"t": round(t, 2), "fps": e2e_fps, "series": f"{name} end-to-end"})
    if not rows:
        return None
    present = {row["series"] for row in rows}
    rows += [{"t": 0.0, "fps": float("nan"), "series": f"{name} {kind}"} for name in names
             for kind in ("model-only", "end-to-end") if f"{name} {kind}" not in present]
    return pd.DataFrame(rows)


def label_values(session: Session | None, force: bool = False) -> list:
    """Per-slot gr.Label values (a skip where nothing changed)."""
    import gradio as gr

    values = []
    paths = list(session.classifiers) if session else []
    latest, fresh = {}, set()
    if session is not None:
        with session.lock:
            latest, fresh = dict(session.latest), set(session.fresh)
            session.fresh.clear()
    for slot in range(MAX_TARGETS):
        if slot < len(paths) and (force or paths[slot] in fresh):
            result = latest.get(paths[slot])
            values.append(gr.update(value={k: v for k, v in result.top_k} if result else None,
                                    label=session.manifests[paths[slot]].target + " " + session.manifests[paths[slot]].precision,
                                    visible=True))
        elif slot >= len(paths) and force:
            values.append(gr.update(value=None, visible=False))
        else:
            values.append(gr.skip())
    return values


# --- the app -----------------------------------------------------------------------------------------

def build_app(artifacts: list[Path], threads: int | None = None, pool: RunnerPool | None = None):
    """The Gradio Blocks app over ``artifacts`` (paths of artifact folders)."""
    import gradio as gr

    from edgevid.errors import EdgevidError
    from edgevid.streaming import iter_video_frames, too_short_message

    pool = pool or RunnerPool(threads)
    by_name = {path.name: path for path in artifacts}
    default = [path.name for path in artifacts[:2]]
    for name in default:  # open before the first visitor: no compile pause in the first stream
        pool.get(by_name[name])

    class CameraImage(gr.Image):
        """gr.Image whose streamed frames arrive with their arrival time and decode cost."""

        is_template = True  # drawn by the frontend as a plain Image

        def preprocess(self, payload):
            received, started = time.monotonic(), time.perf_counter()
            image = super().preprocess(payload)
            if image is None:
                return None
            return CameraFrame(np.ascontiguousarray(image[..., :3]), received, (time.perf_counter() - started) * 1e3)

    def session_for(session: Session | None, selected: list[str], smoothing: str) -> Session | None:
        paths = [by_name[name] for name in selected if name in by_name][:MAX_TARGETS]
        if not paths:
            return None
        if session is None or not session.matches(paths, smoothing):
            if session is not None:
                session.close()
            session = Session(pool, paths, smoothing)
        return session

    def outputs(session: Session | None, force: bool = False):
        now = time.monotonic()
        stats = chart = gr.skip()
        if session is None or force or now - session.last_stats >= STATS_EVERY:
            stats = stats_html(session)
            if session:
                session.last_stats = now
        if session is not None and (force or now - session.last_chart >= CHART_EVERY):
            frame = chart_frame(session, by_name)
            if frame is not None:
                chart, session.last_chart = frame, now
        return [*label_values(session, force), stats, chart]

    def on_frame(frame, selected, smoothing, session):
        previous, session = session, session_for(session, selected, smoothing)
        changed = session is not previous  # a new selection: relabel and show/hide the label slots
        if session is None or frame is None:
            return [*outputs(session, changed), session]
        started = time.perf_counter()
        if not isinstance(frame, CameraFrame):
            frame = CameraFrame(np.ascontiguousarray(np.asarray(frame)[..., :3]), time.monotonic(), 0.0)
        session.push(frame.pixels, frame.received, frame.decode_ms)
        result = [*outputs(session, changed), session]
        log.debug("frame %d %s at %.3f: decoded in %.1f ms, %.1f ms in the handler", session.frames, frame.pixels.shape,
                  frame.received, frame.decode_ms, (time.perf_counter() - started) * 1e3)
        return result

    def on_play(video, seed, use_sample, realtime, selected, smoothing, session):
        if session is not None:
            session.close()
        session = session_for(None, selected, smoothing)  # a new stream: fresh buffers
        if session is None:
            raise gr.Error("Pick at least one artifact first.")
        if use_sample or not video:
            path, truth = synth_sample(int(seed))
            session.truth = truth
        else:
            path = video
        shown = 0.0
        try:
            for manifest in {m.model: m for m in session.manifests.values()}.values():  # too short for a window: say so
                if (message := too_short_message(path, manifest.spec)):
                    gr.Warning(message)
            for pixels, seconds, decode_ms in iter_video_frames(path, realtime=realtime):
                session.push(pixels, seconds, decode_ms)
                if time.monotonic() - shown >= 0.1:
                    shown = time.monotonic()
                    yield [pixels, *outputs(session), session]
        except EdgevidError as exc:  # not a readable video: one line, no traceback
            raise gr.Error(str(exc)) from None
        session.drain()
        yield [gr.skip(), *outputs(session, force=True), session]

    with gr.Blocks(title="edgevid streaming demo") as app:
        gr.Markdown("## edgevid streaming demo\nLive top-k labels and FPS per built artifact; every selected "
                    "artifact sees the same frames.")
        session = gr.State(None, time_to_live=3600, delete_callback=lambda s: s is not None and s.close())
        with gr.Row():
            with gr.Column(scale=1):
                selected = gr.CheckboxGroup([p.name for p in artifacts], value=default, label="artifacts (target, precision)",
                                            elem_id="artifacts")
                smoothing = gr.Radio(["ema", "mean", "none"], value="ema", label="smoothing over windows", elem_id="smoothing")
                with gr.Tab("Webcam"):
                    webcam = CameraImage(sources=["webcam"], streaming=True, type="numpy", label="webcam",
                                         webcam_options=gr.WebcamOptions(mirror=False), elem_id="webcam")
                with gr.Tab("Video file / SynthMotion sample"):
                    video = gr.Video(label="video file", sources=["upload"])
                    with gr.Row():
                        use_sample = gr.Checkbox(True, label="use a generated SynthMotion sample")
                        seed = gr.Number(1_000_000, precision=0, label="SynthMotion seed (class = seed % 8)")
                        realtime = gr.Checkbox(True, label="real time")
                    with gr.Row():
                        play = gr.Button("Play", variant="primary", elem_id="play")
                        stop = gr.Button("Stop")
                    frame_view = gr.Image(label="frame", interactive=False, elem_id="frame")
            with gr.Column(scale=1):
                labels = [gr.Label(num_top_classes=3, label=f"target {i + 1}", visible=i < len(default), elem_id=f"topk-{i}")
                          for i in range(MAX_TARGETS)]
                stats = gr.HTML(stats_html(None), elem_id="stats")
                chart = gr.LinePlot(None, x="t", y="fps", color="series", title="FPS (windows/s)",
                                    x_title="seconds", y_title="FPS", elem_id="fps-chart")
        common = [selected, smoothing, session]
        webcam.stream(on_frame, [webcam, *common], [*labels, stats, chart, session], stream_every=STREAM_EVERY,
                      time_limit=None, concurrency_limit=MAX_TARGETS, show_progress="hidden")
        playing = play.click(on_play, [video, seed, use_sample, realtime, *common], [frame_view, *labels, stats, chart, session],
                             concurrency_limit=MAX_TARGETS, show_progress="hidden")
        stop.click(None, None, None, cancels=[playing])
    app.edgevid_pool = pool
    return app


def synth_sample(seed: int) -> tuple[Path, str]:
    """A SynthMotion clip (H.264, 15 fps, 32 frames) and its class name."""
    from edgevid.data.synthmotion import CLASSES, FPS, generate_clip
    from edgevid.data.video import write_video

    frames, label = generate_clip(seed)
    path = Path(tempfile.gettempdir()) / f"edgevid-synthmotion-{seed}.mp4"
    if not path.is_file():
        write_video(path, frames, FPS)
    return path, CLASSES[label]


def launch(paths: Iterable[str | Path], host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           threads: int | None = None, block: bool = True):
    """Discover artifacts and serve the demo; 127.0.0.1 unless ``host`` / ``share`` say otherwise."""
    artifacts = discover_artifacts(paths)
    app = build_app(artifacts, threads)
    app.queue(default_concurrency_limit=MAX_TARGETS)
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, show_error=True,
               quiet=not block, footer_links=[])
    return app
