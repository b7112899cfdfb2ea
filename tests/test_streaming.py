"""edgevid.streaming: preprocessing identical to offline, sampling at the training interval, windows
in order, smoothing, no per-frame allocation, and a real runner fed from a video file."""

import tracemalloc

import numpy as np
import pytest

from edgevid.data.synthmotion import FPS, generate_clip
from edgevid.data.views import preprocess_frames, single_clip
from edgevid.models import get_spec
from edgevid.streaming import FramePreprocessor, FrameSampler, Smoother, StreamClassifier, iter_video_frames, training_fps

SPEC = get_spec("x3d_synth")  # 8 frames, stride 3, short side 92, crop 80, trained on 15 fps
LABELS = [f"class{i}" for i in range(SPEC.num_classes)]


class Recorder:
    """A stand-in model for testing the stream logic: records each window, returns fixed logits."""

    def __init__(self, shape=SPEC.input_shape(1), logits=None):
        self.input_shape = shape
        self.inputs = []
        self.logits = np.arange(SPEC.num_classes, dtype=np.float32)[None] if logits is None else logits

    def __call__(self, clip):
        self.inputs.append(clip.copy())
        return self.logits


@pytest.mark.parametrize("name", ["x3d_synth", "timesformer_synth"])
def test_preprocessor_equals_offline_preprocessing(name):
    spec = get_spec(name)
    preprocess = FramePreprocessor(spec)
    out = np.empty((3, spec.clip.crop, spec.clip.crop), np.float32)
    rng = np.random.default_rng(0)
    frames = [generate_clip(7)[0][3], rng.integers(0, 256, (480, 640, 3), np.uint8),
              rng.integers(0, 256, (720, 405, 3), np.uint8), rng.integers(0, 256, (spec.clip.short_side,) * 2 + (3,), np.uint8)]
    for frame in frames + frames[:1]:  # and back to a size seen before
        preprocess(frame, out)
        assert np.array_equal(out, preprocess_frames(frame[None], spec)[:, 0]), frame.shape


def test_preprocessor_rejects_bad_frames():
    preprocess = FramePreprocessor(SPEC)
    out = np.empty((3, 80, 80), np.float32)
    with pytest.raises(ValueError, match="RGB uint8"):
        preprocess(np.zeros((128, 160, 3), np.float32), out)
    with pytest.raises(ValueError, match="RGB uint8"):
        preprocess(np.zeros((128, 160), np.uint8), out)


@pytest.mark.parametrize("fps,expected_step", [(15, 3), (30, 6), (60, 12), (5, 1)])
def test_sampler_keeps_the_training_interval_at_the_camera_rate(fps, expected_step):
    sampler = FrameSampler(SPEC.clip.stride / training_fps(SPEC))
    kept = [i for i in range(300) if sampler.accept(i / fps)]
    assert np.all(np.diff(kept) == expected_step), kept[:10]


def test_sampler_averages_the_interval_at_rates_that_do_not_divide_and_under_jitter():
    rng = np.random.default_rng(0)
    for fps in (25.0, 24.0, 7.5):
        sampler = FrameSampler(0.2)
        times = np.arange(600) / fps + rng.uniform(-0.01, 0.01, 600)  # arrival jitter
        kept = times[[sampler.accept(t) for t in times]]
        assert abs(np.diff(kept).mean() - 0.2) < 0.01, fps
    with pytest.raises(ValueError):
        FrameSampler(0)


def test_windows_hold_the_last_sampled_frames_in_order():
    frames, _ = generate_clip(1_000_002)
    recorder = Recorder()
    stream = StreamClassifier(recorder, SPEC, LABELS, window_stride=2)
    results = [stream.push(frame, i / FPS) for i, frame in enumerate(frames)]
    windows = [r for r in results if r is not None]
    sampled = list(range(0, 32, 3))  # 15 fps source, stride 3 at 15 fps: every 3rd frame
    # first window after 8 sampled frames, then every 2nd sampled frame
    assert [w.frame_index for w in windows] == [sampled[7], sampled[9]]
    for window, clip in zip(windows, recorder.inputs):
        last = sampled[sampled.index(window.frame_index) - 7: sampled.index(window.frame_index) + 1]
        assert np.array_equal(clip[0], preprocess_frames(frames[last], SPEC))
    assert stream.stats.frames == 32 and stream.stats.sampled == len(sampled) and stream.stats.windows == 2


def test_first_window_equals_the_offline_centre_clip():
    frames, _ = generate_clip(1_000_005)
    recorder = Recorder()
    stream = StreamClassifier(recorder, SPEC, LABELS)
    for i, frame in enumerate(frames[5:]):  # the centre clip of 32 frames starts at frame 5
        stream.push(frame, i / FPS)
    assert np.array_equal(recorder.inputs[0], single_clip(frames, SPEC))


def test_results_carry_smoothed_top_k_and_timing():
    logits = np.array([[0.0, 3.0, 1.0, 0, 0, 0, 0, 2.0]], np.float32)
    stream = StreamClassifier(Recorder(logits=logits), SPEC, LABELS, top_k=3)
    frames, _ = generate_clip(3)
    results = [r for i, f in enumerate(frames) if (r := stream.push(f, i / FPS, decode_ms=1.0))]
    last = results[-1]
    assert [name for name, _ in last.top_k] == ["class1", "class7", "class2"] and last.label == last.raw_top1 == "class1"
    probs = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert last.top_k[0][1] == pytest.approx(probs[1], rel=1e-5)
    assert last.model_ms > 0 and last.pipeline_ms > last.model_ms
    # decode time of every frame since the previous window is counted: 3 frames a window here
    assert last.pipeline_ms >= 3 * 1.0
    assert stream.stats.e2e_fps() < stream.stats.model_fps()


def test_smoothing():
    ema = Smoother(2, "ema", alpha=0.25)
    ema.update(np.array([1.0, 0.0], np.float32))
    assert ema.update(np.array([0.0, 1.0], np.float32)).tolist() == pytest.approx([0.75, 0.25])
    mean = Smoother(2, "mean", window=2)
    for p in ([1.0, 0.0], [0.0, 1.0], [0.0, 1.0]):
        value = mean.update(np.array(p, np.float32))
    assert value.tolist() == pytest.approx([0.0, 1.0])  # only the last 2 windows
    none = Smoother(2, "none")
    none.update(np.array([1.0, 0.0], np.float32))
    assert none.update(np.array([0.2, 0.8], np.float32)).tolist() == pytest.approx([0.2, 0.8])
    for bad in ({"kind": "median"}, {"alpha": 0.0}, {"window": 0}):
        with pytest.raises(ValueError):
            Smoother(2, **bad)


def test_no_allocation_per_frame_and_flat_memory():
    frames, _ = generate_clip(11)
    stream = StreamClassifier(Recorder(logits=np.zeros((1, 8), np.float32)), SPEC, LABELS)
    stream.runner.__call__ = None  # keep no copies: use a runner that returns a preallocated array
    logits = np.zeros((1, 8), np.float32)

    class Fixed:
        input_shape = SPEC.input_shape(1)

        def __call__(self, clip):
            return logits

    stream.runner = Fixed()
    for i, frame in enumerate(frames):  # warm: buffers for this frame size, the recent-stats deque
        stream.push(frame, i / FPS)
    for i in range(100):
        stream.push(frames[i % 32], (32 + i) / FPS)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(300):  # 100 windows
            stream.push(frames[i % 32], (132 + i) / FPS)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    frame_bytes = frames[0].nbytes  # 61 kB: one copied frame would show
    assert current - before < 4096, current - before
    assert peak - before < frame_bytes // 4, peak - before


def test_a_real_runner_streams_a_video_file(tmp_path):
    """A torch-cpu artifact (random weights) fed frame by frame from an H.264 file."""
    from edgevid.backends import open_runner
    from edgevid.build import build_artifact
    from edgevid.data.video import read_video, write_video

    artifact = build_artifact("x3d_synth", "torch-cpu", weights="random", out=tmp_path)
    frames, _ = generate_clip(1_000_004)
    path = write_video(tmp_path / "clip.mp4", frames, FPS)
    decoded, fps = read_video(path)
    with open_runner(artifact, threads=1) as runner:
        stream = StreamClassifier(runner, artifact.manifest.spec, artifact.labels, smoothing="none")
        windows = [r for pixels, seconds, decode_ms in iter_video_frames(path) if (r := stream.push(pixels, seconds, decode_ms))]
        assert fps == FPS and len(windows) == 11 - 8 + 1  # 11 sampled frames of 32
        expected = runner(single_clip(decoded[9:], artifact.manifest.spec))  # window 3 = sampled frames 3..10 = 9..30
    probs = np.exp(expected[0] - expected[0].max())
    probs /= probs.sum()
    assert windows[3].top_k[0] == (artifact.labels[int(probs.argmax())], pytest.approx(float(probs.max()), rel=1e-5))
    assert stream.stats.model_fps() > 0 and stream.stats.e2e_fps() > 0


class Slow(Recorder):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def __call__(self, clip):
        import time

        time.sleep(self.seconds)
        return super().__call__(clip)


class ClipDependent(Slow):
    """Slow, and its logits depend on the window, so a smoothed result depends on the order of windows."""

    def __call__(self, clip):
        super().__call__(clip)
        return (np.sin(np.arange(SPEC.num_classes) * (1 + float(clip.mean()))) * 3)[None].astype(np.float32)


def test_background_wait_classifies_every_window_as_the_serial_stream_does():
    import threading

    from edgevid.streaming import BackgroundClassifier

    frames, _ = generate_clip(1_000_006)
    serial, slow = ClipDependent(0.0), ClipDependent(0.1)  # the intake is far ahead: a backlog
    serial_stream = StreamClassifier(serial, SPEC, LABELS)
    expected, results, finished_on = [], [], []

    def keep(result):
        results.append(result)
        finished_on.append(threading.get_ident())

    background = BackgroundClassifier(StreamClassifier(slow, SPEC, LABELS), "wait", on_result=keep)
    for i, frame in enumerate(frames):
        if (result := serial_stream.push(frame, i / FPS)) is not None:
            expected.append(result)
        background.push(frame, i / FPS)
    background.drain()
    background.close()
    assert len(results) == len(serial.inputs) == 4 and background.dropped == 0
    assert all(np.array_equal(a, b) for a, b in zip(slow.inputs, serial.inputs))
    assert [r.frame_index for r in results] == [21, 24, 27, 30]
    # the worker hands a window to the intake when the next one already waits: finished in order all the same
    assert [r.top_k for r in results] == [r.top_k for r in expected]
    assert threading.get_ident() in finished_on


def test_a_window_finished_later_counts_only_its_own_work():
    import time

    stream = StreamClassifier(ClipDependent(0.02), SPEC, LABELS)
    frames, _ = generate_clip(1_000_006)
    for i, frame in enumerate(frames):
        if stream.feed(frame, i / FPS):
            break
    stream.snapshot()
    inferred = stream.infer()
    time.sleep(0.5)  # handed over: finished at the intake's next push, not straight after inference
    result = stream.finish(inferred)
    assert 20 <= result.model_ms < result.pipeline_ms < 400, (result.model_ms, result.pipeline_ms)


def test_background_drop_skips_windows_while_the_model_is_busy_and_keeps_errors():
    from edgevid.streaming import BackgroundClassifier

    frames, _ = generate_clip(1_000_007)
    results = []
    background = BackgroundClassifier(StreamClassifier(Slow(0.5), SPEC, LABELS), "drop", on_result=results.append)
    started = [background.push(frame, i / FPS) for i, frame in enumerate(frames)]  # as fast as it goes
    background.drain()
    assert sum(started) == len(results) >= 1 and background.dropped == 4 - len(results) > 0

    class Broken(Recorder):
        def __call__(self, clip):
            raise RuntimeError("device lost")

    broken = BackgroundClassifier(StreamClassifier(Broken(), SPEC, LABELS), "drop")
    for i, frame in enumerate(frames):
        broken.push(frame, i / FPS)
    with pytest.raises(RuntimeError, match="device lost"):
        broken.drain()
    with pytest.raises(ValueError):
        BackgroundClassifier(StreamClassifier(Recorder(), SPEC, LABELS), "queue")


def test_lazy_frames_convert_only_the_kept_ones(tmp_path):
    from edgevid.data.video import write_video

    frames, _ = generate_clip(1_000_008)
    path = write_video(tmp_path / "clip.mp4", frames, FPS)
    eager_rec, lazy_rec = Recorder(), Recorder()
    eager, lazy = StreamClassifier(eager_rec, SPEC, LABELS), StreamClassifier(lazy_rec, SPEC, LABELS)
    conversions = []

    for pixels, seconds, decode_ms in iter_video_frames(path):
        eager.push(pixels, seconds, decode_ms)
    for convert, seconds, decode_ms in iter_video_frames(path, lazy=True):
        lazy.push(lambda convert=convert: conversions.append(1) or convert(), seconds, decode_ms)
    assert len(conversions) == lazy.stats.sampled == 11 < lazy.stats.frames == 32
    assert len(lazy_rec.inputs) == 4 and all(np.array_equal(a, b) for a, b in zip(lazy_rec.inputs, eager_rec.inputs))


def test_first_window_is_the_warm_up_and_end_to_end_is_steady_state():
    """The first window's time holds decoding every frame that fills it (22 here): it is reported
    apart, and end-to-end FPS counts windows 2.. over their own time (3 frames each)."""
    frames, _ = generate_clip(1_000_001)
    stream = StreamClassifier(Recorder(), SPEC, LABELS)
    results = [r for i, f in enumerate(frames) if (r := stream.push(f, i / FPS, decode_ms=10.0))]
    stats = stream.stats
    assert len(results) == stats.windows == 4 and stats.steady_windows == 3
    assert results[0].frames_fed == stats.warmup_frames == 22 and stats.warmup_ms >= 220
    assert [r.frames_fed for r in results[1:]] == [3, 3, 3]
    assert all(r.decode_ms == 30.0 for r in results[1:])
    # steady state: ~30 ms of decoding a window; counting the warm-up in would give 4 / ~310 ms = ~13 FPS
    assert 25 < stats.e2e_fps() < 1000 / 30 and 25 < stats.e2e_fps(recent=True) < 1000 / 30
    breakdown = stats.breakdown()
    assert breakdown["decode_ms"] == pytest.approx(30.0) and 0 < breakdown["preprocess_ms"] < 30
    assert breakdown["model_ms"] > 0 and breakdown["pipeline_ms"] == pytest.approx(
        breakdown["decode_ms"] + breakdown["preprocess_ms"] + breakdown["model_ms"], rel=0.2)
    one = StreamClassifier(Recorder(), SPEC, LABELS)
    for i, f in enumerate(frames[:22]):
        one.push(f, i / FPS)
    assert one.stats.windows == 1 and one.stats.e2e_fps() is None and one.stats.model_fps() > 0  # warm-up only


def test_queue_wait_is_measured_apart_from_end_to_end():
    """A window waiting for a runner another stream holds: the wait is reported, not counted."""
    import threading

    from edgevid.streaming import BackgroundClassifier

    frames, _ = generate_clip(1_000_002)
    lock = threading.Lock()
    results = []
    background = BackgroundClassifier(StreamClassifier(Recorder(), SPEC, LABELS, lock=lock), "wait", on_result=results.append)
    for i, frame in enumerate(frames[:25]):  # two windows: 8th and 9th sampled frames
        if i == 24:
            background.drain()  # the first window is classified (a worker may not have started it yet on one core)
            lock.acquire()
            threading.Timer(0.3, lock.release).start()
        background.push(frame, i / FPS)
    background.drain()
    background.close()
    assert len(results) == 2
    assert results[1].wait_ms >= 250 and results[1].pipeline_ms < 250 and results[0].wait_ms < 250


def test_streamed_frames_equal_read_video(tmp_path):
    """The reused RGB converter gives the pixels read_video (and so offline evaluation) gets."""
    from edgevid.data.video import read_video, write_video

    frames, _ = generate_clip(1_000_009)
    path = write_video(tmp_path / "clip.mp4", frames, FPS)
    decoded, _ = read_video(path)
    streamed = [pixels for pixels, _, _ in iter_video_frames(path)]
    lazy = [convert() for convert, _, _ in iter_video_frames(path, lazy=True)]
    assert len(streamed) == len(decoded) == 32
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(decoded, streamed, lazy))


def test_a_lazily_streamed_file_holds_evals_pixels(tmp_path):
    """A file's kept frames are scaled to the short side inside libswscale while converting, as
    edgevid eval's decoder does, then only cropped and normalised: each window is, bit for bit,
    eval's centre view of the same frames (no full-size RGB frame, no numpy resize)."""
    from edgevid.data.video import decode_frames, read_meta, write_video
    from edgevid.data.views import _offsets, _tables, crop_normalize

    frames, _ = generate_clip(1_000_010)
    path = write_video(tmp_path / "clip.mp4", frames, FPS)
    recorder = Recorder()
    stream = StreamClassifier(recorder, SPEC, LABELS)
    for frame, seconds, decode_ms in iter_video_frames(path, lazy=True):
        stream.push(frame, seconds, decode_ms)
    sampled = np.arange(0, 32, 3)  # 15 fps file, stride 3 at 15 fps
    decoded, where, _, _ = decode_frames(read_meta(path), sampled, SPEC.clip.short_side)
    assert min(decoded.shape[1:3]) == SPEC.clip.short_side and len(recorder.inputs) == len(sampled) - 8 + 1
    offsets = _offsets(*decoded.shape[1:3], SPEC.clip.crop, 1)
    for k, clip in enumerate(recorder.inputs):
        expected = crop_normalize(decoded, where[None, k:k + 8], offsets, SPEC.clip.crop, _tables(SPEC))[0]
        assert np.array_equal(clip[0], expected), k


def test_frames_no_sampler_keeps_are_not_decoded_and_windows_are_unchanged(tmp_path):
    """With ``sample_every``, frames that no classifier's sampler keeps and that nothing refers to
    (non-reference B-frames) are not decoded; every frame still comes, in order, with its time, and
    the classified windows are those of a full decode, bit for bit."""
    from edgevid.data.video import write_video
    from edgevid.streaming import SkippedFrame

    frames = np.concatenate([generate_clip(seed)[0] for seed in (1_000_011, 1_000_012, 1_000_013)])
    path = write_video(tmp_path / "clip.mp4", frames, FPS)
    full, skipping = Recorder(), Recorder()
    full_stream, skip_stream = StreamClassifier(full, SPEC, LABELS), StreamClassifier(skipping, SPEC, LABELS)
    every = list(iter_video_frames(path, lazy=True))
    some = list(iter_video_frames(path, lazy=True, sample_every=[skip_stream.sampler.interval]))
    assert [t for _, t, _ in some] == [t for _, t, _ in every] and len(some) == len(frames) == 96
    skipped = [i for i, (frame, _, _) in enumerate(some) if isinstance(frame, SkippedFrame)]
    assert skipped and all(i % 3 for i in skipped)  # some frames skipped, never a kept one (every 3rd at 15 fps)
    for (a, t, ms), (b, _, _) in zip(every, some):
        full_stream.push(a, t, ms)
        skip_stream.push(b, t, ms)
    assert skip_stream.stats.frames == full_stream.stats.frames and skip_stream.stats.sampled == full_stream.stats.sampled
    assert len(skipping.inputs) == len(full.inputs) == 32 - 8 + 1
    assert all(np.array_equal(x, y) for x, y in zip(skipping.inputs, full.inputs))
    with pytest.raises(RuntimeError, match="not decoded"):
        some[skipped[0]][0]()
    with pytest.raises(ValueError, match="lazy"):
        next(iter_video_frames(path, sample_every=[0.2]))
