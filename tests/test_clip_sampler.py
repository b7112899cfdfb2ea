"""The clip sampler: one rule in stream time for every path (resampled to the training fps), each
family's official test protocol, rotation, codecs, decoding only what a clip needs, degenerate
inputs. Real files written with PyAV."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
import torch

from edgevid.data.sampling import (
    clip_frames_needed, plan_clips, protocol_view_indices, resample, segment_indices, slowfast_clip_indices,
)
from edgevid.data.synthmotion import CLASSES, FPS, FRAMES, render_clip
from edgevid.data.video import decode_frames, read_meta, read_video, write_video
from edgevid.data.views import load_views, resampled_frames
from edgevid.errors import DataError
from edgevid.harness.metrics import video_record
from edgevid.models import create_model, get_spec, list_models
from edgevid.streaming import FrameSampler, StreamClassifier, iter_video_frames
from helpers import assert_one_line_error, reference_weights, run_cli

SYNTH = get_spec("x3d_synth")  # 8 frames, stride 3, trained on 15 fps: a 0.2 s interval
SEEDS = [3_000_000 + i for i in range(len(CLASSES))]  # one clip per class, from the test split's seeds
DURATION = FRAMES / FPS  # 2.13 s


# --- the official formulas, written from the official code (torch, as it runs) ------------------


def slowfast_official(video_size, num_frames, sampling_rate, clip_idx, num_clips, fps=30.0, target_fps=30.0):
    """SlowFast/TimeSformer decoder.py: get_start_end_idx (no offset) + temporal_sampling."""
    clip_size = sampling_rate * num_frames / target_fps * fps
    delta = max(video_size - clip_size, 0)
    start = delta * clip_idx / num_clips
    index = torch.linspace(start, start + clip_size - 1, num_frames)
    return torch.clamp(index, 0, video_size - 1).long().numpy(), index.numpy()


def uniformerv2_official(video_size, num_frames, clip_idx, num_clips):
    """UniFormerV2 decoder.py get_seq_frames (test branch)."""
    seg_size = max(0.0, float(video_size - 1) / num_frames)
    duration = seg_size / (num_clips + 1)
    return [min(int(np.round(seg_size * i)) + int(duration * (clip_idx + 1)), video_size - 1) for i in range(num_frames)]


def _variants(family):
    return [n for n in list_models() if get_spec(n).family == family and get_spec(n).label_set != "synthmotion"]


@pytest.mark.parametrize("family", ["x3d", "timesformer"])
def test_dense_views_follow_the_official_formula(family):
    """X3D (SlowFast): 10 clips at delta * i / 10; TimeSformer: one clip from frame 0. The index
    arithmetic is torch's float32 linspace: where a value lies within 1e-4 of an integer, its
    vectorised lanes may truncate one frame lower; everywhere else the indices are equal."""
    clips = mismatched = 0
    for name in _variants(family):
        spec = get_spec(name)
        assert spec.protocol.starts == "uniform" and spec.protocol.spacing == "linspace" and spec.training_fps == 30
        for video_size in range(1, 700, 3):
            ours = protocol_view_indices(video_size, spec)
            assert ours.shape == (spec.clip.test_clips, spec.clip.frames)
            for i in range(spec.clip.test_clips):
                official, values = slowfast_official(video_size, spec.clip.frames, spec.clip.stride, i, spec.clip.test_clips)
                clips += 1
                if not np.array_equal(ours[i], official):
                    mismatched += 1
                    near = np.abs(values - np.rint(values)) < 1e-4
                    assert np.all((ours[i] == official) | near) and np.abs(ours[i] - official).max() <= 1, (name, video_size, i)
    assert mismatched <= clips // 500, (mismatched, clips)
    if family == "timesformer":
        assert all(protocol_view_indices(400, get_spec(n))[0, 0] == 0 for n in _variants(family))  # starts at frame 0


def test_segment_views_follow_uniformerv2():
    for name in _variants("uniformerv2"):
        spec = get_spec(name)
        assert spec.clip.sampling == "segment" and spec.protocol.combine == "sum_softmax"
        for video_size in range(1, 500, 7):
            ours = protocol_view_indices(video_size, spec)
            for i in range(spec.clip.test_clips):
                assert list(ours[i]) == uniformerv2_official(video_size, spec.clip.frames, i, spec.clip.test_clips)


def test_other_rates_follow_the_official_clip_size_within_a_frame():
    """SlowFast scales the clip size by fps / target_fps in source frames; the sampler resamples
    the video to 30 fps instead (which handles a variable rate too). The chosen frame times agree
    within one frame at the training rate plus one source frame (the two quantisations)."""
    spec = get_spec("x3d_s")
    for fps in (24.0, 25.0, 50.0, 60.0):
        n = int(10 * fps)
        plan = plan_clips(np.arange(n) / fps, spec)
        for i in range(spec.clip.test_clips):
            official, _ = slowfast_official(n, spec.clip.frames, spec.clip.stride, i, spec.clip.test_clips, fps=fps)
            assert np.abs(plan.indices[i] - official).max() / fps <= 1 / 30 + 1 / fps + 1e-9, (fps, i)


def test_views_combine_as_each_family_does():
    """TimeSformer sums logits; SlowFast's X3D and UniFormerV2 sum softmax probabilities. Views on
    which the two disagree: one very confident in class 0, two moderately in class 1."""
    logits = np.array([[20.0, 0.0], [0.0, 2.0], [0.0, 2.0]], np.float32)
    assert get_spec("timesformer_b").protocol.combine == "sum_logits"
    assert get_spec("x3d_s").protocol.combine == get_spec("uniformerv2_b16").protocol.combine == "sum_softmax"
    assert video_record(0, "v", 0, logits, logits, get_spec("timesformer_b").protocol.combine)["pred"] == 0
    for name in ("x3d_s", "uniformerv2_b16"):
        record = video_record(0, "v", 0, logits, logits, get_spec(name).protocol.combine)
        assert record["pred"] == record["ref_pred"] == 1


def test_reference_models_keep_their_own_protocol():
    for name in ("x3d_synth", "uniformerv2_synth", "timesformer_synth", "tubevit_synth"):
        spec = get_spec(name)
        assert spec.training_fps == 15 and spec.protocol.starts == "centre" and spec.protocol.spacing == "stride"


# --- the same motion at any frame rate -----------------------------------------------------------


def _times(kind) -> np.ndarray:
    if kind == "vfr":  # 20-60 fps, drawn per frame
        gaps = np.random.default_rng(7).uniform(1 / 60, 1 / 20, 200)
        times = np.concatenate([[0.0], np.cumsum(gaps)])
        return times[times < DURATION]
    return np.arange(int(round(DURATION * kind))) / kind


RATES = [5, 15, 30, 60, 120, "vfr"]


@pytest.fixture(scope="module")
def motion_files(tmp_path_factory):
    """Each class's motion rendered and encoded at each rate."""
    folder = tmp_path_factory.mktemp("rates")
    files = {}
    for rate in RATES:
        times = _times(rate)
        for seed in SEEDS:
            frames = render_clip(seed, times=times).frames
            files[rate, seed] = write_video(folder / f"{seed}-{rate}.mp4", frames, 30 if rate == "vfr" else rate,
                                            times=times if rate == "vfr" else None)
    return files


def test_same_motion_at_any_rate_gives_the_same_frame_times(motion_files):
    for seed in SEEDS:
        reference = load_views(motion_files[15, seed], SYNTH).plan.times
        for rate in RATES:
            meta = read_meta(motion_files[rate, seed])
            times = load_views(motion_files[rate, seed], SYNTH).plan.times
            if rate in (15, 30, 60, 120):
                np.testing.assert_allclose(times, reference, atol=1e-3, err_msg=str(rate))
            else:  # each time is the first frame at or after the 15 fps one: at most one source gap later
                gap = np.diff(meta.times).max()
                assert np.all(times >= reference - 1e-3) and np.all(times - reference < gap + 1e-3), (rate, times, reference)
                assert np.isin(np.round(times, 6), np.round(meta.times, 6)).all()


def test_streaming_keeps_the_offline_resampling_frames(motion_files):
    """FrameSampler, fed the decoded stream, keeps the frames sampling.resample picks (every
    stride-th resampled frame), at every rate and at a variable one."""
    for rate in RATES:
        path = motion_files[rate, SEEDS[0]]
        stamps = np.array([seconds for _, seconds, _ in iter_video_frames(path)])
        sampler = FrameSampler(SYNTH.clip.stride / SYNTH.training_fps)
        kept = np.repeat(np.arange(len(stamps)), [sampler.take(t) for t in stamps])
        offline = resample(stamps, SYNTH.training_fps)[::SYNTH.clip.stride]
        assert np.array_equal(kept, offline[: len(kept)]) and len(offline) - len(kept) <= 1, rate


@pytest.mark.skipif(reference_weights("x3d_synth") is None, reason="x3d_synth reference weights not shipped")
def test_same_motion_at_any_rate_gives_the_same_class_offline_and_streaming(motion_files):
    model = create_model("x3d_synth", weights=str(reference_weights("x3d_synth")))

    def runner(clip):
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(clip))).numpy()

    runner.input_shape = SYNTH.input_shape(1)
    labels = list(CLASSES)
    for seed in SEEDS:
        label = seed % len(CLASSES)
        for rate in RATES:
            views = load_views(motion_files[rate, seed], SYNTH).inputs
            assert int(runner(views).mean(0).argmax()) == label, ("offline", seed, rate)
            stream = StreamClassifier(runner, SYNTH, labels, smoothing="none")
            windows = [r for pixels, t, ms in iter_video_frames(motion_files[rate, seed], lazy=True)
                       if (r := stream.push(pixels, t, ms))]
            assert windows and windows[len(windows) // 2].raw_top1 == labels[label], ("streaming", seed, rate)


def test_a_slow_source_repeats_frames_in_the_stream_as_offline():
    """A 5 fps camera and a model sampled every 1/30 s (stride 1 at 30 fps): each frame fills 6 slots."""
    sampler = FrameSampler(1 / 30)
    assert [sampler.take(i / 5) for i in range(4)] == [1, 6, 6, 6]
    assert list(resample(np.arange(4) / 5, 30)[:13]) == [0] + [1] * 6 + [2] * 6
    restart = FrameSampler(0.2, max_gap=1.0)
    assert [restart.take(t) for t in (0.0, 0.2, 3.0, 3.2)] == [1, 1, 1, 1]  # a stalled camera restarts the grid


# --- rotation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_rotation_from_the_display_matrix(tmp_path, turns):
    """A phone writes the sensor's picture and a display matrix; every path shows the picture turned."""
    shown = render_clip(SEEDS[3]).frames  # move_down, as displayed
    coded = np.ascontiguousarray(np.rot90(shown, -turns, axes=(1, 2)))
    rotated = write_video(tmp_path / "rotated.mp4", coded, FPS, rotation=90 * turns)
    upright = write_video(tmp_path / "upright.mp4", shown, FPS)
    error = lambda a, b: np.abs(a.astype(int) - b).mean()  # noqa: E731
    noise = error(read_video(upright)[0], shown)  # H.264's own error on this noisy content
    decoded, _ = read_video(rotated)
    assert decoded.shape == shown.shape and error(decoded, shown) < 1.2 * noise + 0.5
    assert error(decoded, shown[:, ::-1, ::-1]) > 3 * noise  # and not upside down
    first = next(iter_video_frames(rotated))[0]
    assert first.shape == shown.shape[1:] and error(first, shown[0]) < 1.2 * noise + 1
    lazy = next(iter_video_frames(rotated, lazy=True))[0]()
    assert np.array_equal(lazy, first)
    for kind in ("test", "center"):
        a, b = load_views(rotated, SYNTH, kind).inputs, load_views(upright, SYNTH, kind).inputs
        close = np.abs(a - b).mean()  # two encodes' noise: ~3 grey levels
        assert a.shape == b.shape and close < 0.1 and np.abs(a - b[..., ::-1, ::-1]).mean() > 3 * close, kind
    if reference_weights("x3d_synth") is not None:
        model = create_model("x3d_synth", weights=str(reference_weights("x3d_synth")))
        with torch.inference_mode():
            predicted = model(torch.from_numpy(load_views(rotated, SYNTH).inputs)).mean(0).argmax()
        assert CLASSES[int(predicted)] == "move_down"


# --- codecs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec,suffix", [("libx264", "mp4"), ("libx265", "mp4"), ("libvpx-vp9", "webm"), ("mjpeg", "mkv")])
@pytest.mark.parametrize("rate", [30, "vfr"])
def test_codecs_at_several_rates(tmp_path, codec, suffix, rate):
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV here has no {codec} encoder")
    times = _times(rate)
    frames = render_clip(SEEDS[1], times=times).frames
    vfr = times if rate == "vfr" else None
    path = write_video(tmp_path / f"clip.{suffix}", frames, 30, codec=codec, times=vfr, rotation=90)
    meta = read_meta(path)
    assert meta.frames == len(times) and np.abs(meta.times - (times - times[0])).max() < 2e-3
    views = load_views(path, SYNTH)
    shown = np.ascontiguousarray(np.rot90(frames, 1, axes=(1, 2)))  # what the display matrix shows
    reference = load_views(write_video(tmp_path / "ref.mp4", shown, 30, times=vfr), SYNTH)
    np.testing.assert_allclose(views.plan.times, reference.plan.times, atol=2e-3)
    assert np.abs(views.inputs - reference.inputs).mean() < 0.1  # codec noise only


# --- decoding only what a clip needs -------------------------------------------------------------


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """20 s at 30 fps, a keyframe every 30 frames."""
    frames = np.random.default_rng(0).integers(0, 256, (600, 48, 64, 3), dtype=np.uint8)
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", frames, 30, keyframe_interval=30)


def test_only_the_sampled_frames_are_converted_and_far_ones_are_reached_by_seeking(long_file):
    meta = read_meta(long_file)
    everything, _ = read_video(long_file)
    for wanted in (segment_indices(600, 8, 1).ravel(), np.array([590, 10, 10, 300]), np.arange(0, 600, 150)):
        stats: dict = {}
        frames, where, decodable, _ = decode_frames(meta, wanted, None, stats=stats)
        assert decodable == 600 and np.array_equal(frames[where], everything[wanted])
        assert stats["converted"] == len(np.unique(wanted)) and stats["seeks"] >= 1
        assert stats["packets"] < 600 and stats["decoded"] < 400, stats
    through: dict = {}
    decode_frames(meta, np.array([5, 590]), None, seek=False, stats=through)
    assert through["seeks"] == 0 and through["packets"] >= 590  # decoded through to frame 590


def test_resampled_frames_at_the_training_rate_are_the_decoded_frames(tmp_path):
    frames = render_clip(SEEDS[0]).frames
    path = write_video(tmp_path / "c.mp4", frames, FPS)
    np.testing.assert_array_equal(resampled_frames(path, SYNTH), read_video(path, SYNTH.clip.short_side)[0])
    assert len(resampled_frames(write_video(tmp_path / "c60.mp4", np.repeat(frames, 4, axis=0), 60), SYNTH)) == FRAMES


# --- degenerate inputs ----------------------------------------------------------------------------


def _faststart_mp4(path, frames, fps):
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def _png_named_mp4(path, image):
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_short_videos_are_padded_as_the_official_loaders_and_say_so(tmp_path):
    frames = render_clip(SEEDS[0]).frames
    for count in (1, 3):
        views = load_views(write_video(tmp_path / f"{count}.mp4", frames[:count], FPS), SYNTH)
        assert views.padded and views.plan.indices.max() == count - 1  # clamped to the last frame
        assert views.notes[0].startswith("shorter than one clip") and views.inputs.shape == (1, 3, 8, 80, 80)
    x3d_s = get_spec("x3d_s")
    three = load_views(write_video(tmp_path / "s.mp4", frames[:3], FPS), x3d_s)
    official, _ = slowfast_official(6, 13, 6, 0, 10)  # 3 frames at 15 fps = 6 at 30 fps
    assert three.padded and np.array_equal(three.plan.indices[0], resample(np.arange(3) / 15, 30)[official])
    assert not load_views(write_video(tmp_path / "ok.mp4", frames, FPS), SYNTH).notes


def test_degenerate_files_get_a_warning_or_a_one_line_error(tmp_path):
    frames = render_clip(SEEDS[0]).frames
    errors = {
        "2x2.mp4": (write_video(tmp_path / "2x2.mp4", np.zeros((10, 2, 2, 3), np.uint8), 15), "smaller than 8 px"),
        "wide.mp4": (write_video(tmp_path / "wide.mp4", np.zeros((20, 8, 8192, 3), np.uint8), 15), "aspect 1024:1"),
        "still.mp4": (_png_named_mp4(tmp_path / "still.mp4", frames[0]), "still image"),
        "empty.mp4": (tmp_path / "empty.mp4", "not a readable video"),
    }
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name, (path, fragment) in errors.items():
        with pytest.raises(DataError, match=fragment) as caught:
            load_views(path, SYNTH)
        assert "\n" not in str(caught.value) and name in str(caught.value)
    small = load_views(write_video(tmp_path / "16.mp4", np.full((30, 16, 16, 3), 90, np.uint8), 15), SYNTH)
    assert any("upscaled" in note for note in small.notes)
    full = _faststart_mp4(tmp_path / "full.mp4", np.concatenate([frames, frames[:13]]), FPS)
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.4)])
    truncated = load_views(cut, SYNTH)
    assert any("truncated" in note for note in truncated.notes), truncated.notes
    with pytest.raises(DataError, match="not a readable video|cannot be decoded|no frame decodes|no decodable"):
        list(iter_video_frames(_truncated_to(full, tmp_path, 0.02)))
    assert len(list(iter_video_frames(cut))) < 45  # the stream ends early, with a warning, no traceback


def _truncated_to(path, folder, share):
    out = folder / f"cut-{share}.mp4"
    out.write_bytes(path.read_bytes()[: int(path.stat().st_size * share)])
    return out


def test_eval_counts_padded_videos_in_the_report_and_on_the_console(tmp_path):
    from edgevid.build import build_artifact

    artifact = build_artifact("x3d_synth", "torch-cpu", weights="random", out=tmp_path)
    frames = render_clip(SEEDS[0]).frames
    data = tmp_path / "data" / "move_left"
    data.mkdir(parents=True)
    for count in (1, 3, 5, 32):
        write_video(data / f"{count}.mp4", frames[:count], FPS)
    proc = run_cli("eval", str(artifact.path), "--data", str(tmp_path / "data"), "--no-reference")
    assert proc.returncode == 0, proc.stderr
    assert "3 videos shorter than one clip were padded" in " ".join(proc.stderr.split()), proc.stderr
    report = artifact.read_report()["eval"]
    assert report["padded_videos"] == 3 and sum(1 for r in report["per_video"] if r.get("padded")) == 3


def test_cli_one_line_errors_for_bad_data(tmp_path):
    video = write_video(tmp_path / "clip.mp4", render_clip(SEEDS[0]).frames, FPS)
    utf16 = tmp_path / "m16.csv"
    utf16.write_text("path,label\nclip.mp4,move_left\n", encoding="utf-16")
    superscript = tmp_path / "sup.csv"
    superscript.write_text("path,label\nclip.mp4,\u00b2\n", encoding="utf-8")
    cases = [(video, "is a video, not a dataset"), (utf16, "UTF-16"), (superscript, "is not one of the model's 8 labels")]
    for data, fragment in cases:
        proc = run_cli("golden", "make", "--model", "x3d_synth", "--data", str(data), "--clips", "1",
                       "--out", str(tmp_path / "pack"))
        assert_one_line_error(proc, fragment)
        assert not (tmp_path / "pack").exists()


def test_clip_frames_needed_per_protocol():
    assert clip_frames_needed(get_spec("x3d_synth")) == 22  # (8 - 1) * 3 + 1
    assert clip_frames_needed(get_spec("x3d_s")) == 78  # 13 * 6, SlowFast's clip size
    assert clip_frames_needed(get_spec("uniformerv2_b16")) == 8
    assert math.isclose(get_spec("uniformerv2_b16_ssv2").training_fps, 30)
    assert slowfast_clip_indices(300, 13, 6, 1)[0, 0] == 0


def test_the_demo_is_told_when_a_file_is_too_short(tmp_path):
    from edgevid.streaming import too_short_message, window_seconds

    frames = render_clip(SEEDS[0]).frames
    assert window_seconds(SYNTH) == pytest.approx(1.4)  # 7 gaps of 0.2 s
    message = too_short_message(write_video(tmp_path / "short.mp4", frames[:10], FPS), SYNTH)
    assert message.startswith("short.mp4 lasts 0.67 s, shorter than one 8-frame window of x3d_synth (1.40 s)")
    assert too_short_message(write_video(tmp_path / "long.mp4", frames, FPS), SYNTH) is None


@pytest.mark.parametrize("codec,suffix", [("libx264", "mp4"), ("libx265", "mp4"), ("libvpx-vp9", "webm"), ("mjpeg", "mkv")])
def test_seeking_and_skipping_give_the_frames_decoding_through_gives(tmp_path, codec, suffix):
    """Random frames of a 10-s file with 25-frame GOPs (x265: open GOPs), fetched by seeking and
    skipping non-reference frames, are the frames of a full decode."""
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV here has no {codec} encoder")
    frames = render_clip(SEEDS[2], times=np.arange(300) / 30).frames
    path = write_video(tmp_path / f"seek.{suffix}", frames, 30, codec=codec, keyframe_interval=25)
    meta, (everything, _) = read_meta(path), read_video(path)
    rng = np.random.default_rng(1)
    for _ in range(4):
        wanted = rng.integers(0, 300, 12)
        stats: dict = {}
        decoded, where, _, _ = decode_frames(meta, wanted, None, stats=stats)
        assert np.array_equal(decoded[where], everything[wanted]) and stats["seeks"] >= 1 and stats["packets"] < 300
