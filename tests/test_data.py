"""The video data layer: sampling, transforms, decode/encode, views, manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgevid.data.manifest import VideoDataset, load_dataset, write_csv
from edgevid.data.sampling import clip_indices, clip_span, random_clip_indices, random_segment_indices, segment_indices
from edgevid.data.transforms import center_crop, normalize, resize, scaled_size, short_side_resize, three_crops
from edgevid.data.video import probe_video, read_video, write_video, write_y4m
from edgevid.data.views import single_clip, test_views, train_clip
from edgevid.errors import DataError
from edgevid.spec import ClipSpec, ModelSpec, Normalization


def one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# --- sampling ---------------------------------------------------------------------------------------


def test_single_clip_is_the_centre_clip():
    indices = clip_indices(100, frames=8, stride=3)
    start = (100 - 22) // 2
    np.testing.assert_array_equal(indices, [np.arange(start, start + 22, 3)])


def test_uniform_clips_span_the_video_evenly():
    indices = clip_indices(100, frames=4, stride=2, num_clips=3)
    assert indices.shape == (3, 4)
    assert indices[0, 0] == 0 and indices[-1, -1] == 99  # first clip at the start, last at the end
    np.testing.assert_array_equal(indices[:, 0], [0, 46, 93])
    np.testing.assert_array_equal(np.diff(indices, axis=1), 2)


def test_short_video_clamps_to_last_frame():
    np.testing.assert_array_equal(clip_indices(10, frames=8, stride=3), [[0, 3, 6, 9, 9, 9, 9, 9]])
    np.testing.assert_array_equal(clip_indices(1, frames=3, stride=2, num_clips=2), np.zeros((2, 3)))


def test_random_clip_covers_every_start():
    rng = np.random.default_rng(0)
    starts = {int(random_clip_indices(30, 4, 5, rng)[0]) for _ in range(400)}
    assert starts == set(range(30 - clip_span(4, 5) + 1))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400), st.integers(1, 32), st.integers(1, 16), st.integers(1, 10))
def test_clip_indices_properties(num_frames, frames, stride, num_clips):
    indices = clip_indices(num_frames, frames, stride, num_clips)
    assert indices.shape == (num_clips, frames)
    assert indices.min() >= 0 and indices.max() < num_frames
    assert (np.diff(indices, axis=1) >= 0).all() and (np.diff(indices[:, 0]) >= 0).all()
    if num_frames >= clip_span(frames, stride):
        assert (np.diff(indices, axis=1) == stride).all()



def test_segment_sampling_takes_one_frame_per_segment_of_the_whole_video():
    """UniFormerV2's K400 recipe (kinetics_sparse): 8 segments of a 300-frame video, 4 test views
    offset by seg / 5 within each segment."""
    seg = 299 / 8
    indices = segment_indices(300, frames=8, num_clips=4)
    expected = np.round(seg * np.arange(8))[None, :] + np.floor(seg / 5 * np.arange(1, 5))[:, None]
    np.testing.assert_array_equal(indices, expected)
    assert indices[0, 0] > 0 and indices[-1, -1] < 299  # spread over the whole video, inside it
    rng = np.random.default_rng(0)
    draws = np.stack([random_segment_indices(300, 8, rng) for _ in range(500)])
    lows, highs = np.round(seg * np.arange(8)), np.round(seg * np.arange(1, 9))
    assert (draws >= lows).all() and (draws <= highs).all()
    assert (draws.min(0) == lows).all() and (draws.max(0) == highs).all()  # every frame of a segment is drawn


def test_views_follow_the_specs_sampling_mode():
    from edgevid.data.views import test_views
    from edgevid.spec import ClipSpec, ModelSpec, Normalization

    video = np.repeat(np.arange(60, dtype=np.uint8)[:, None, None, None], 3, axis=3) * np.ones((1, 8, 8, 3), np.uint8)
    norm = Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    views = {}
    for sampling in ("dense", "segment"):
        clip = ClipSpec(frames=4, stride=2, crop=8, short_side=8, test_clips=2, sampling=sampling)
        spec = ModelSpec(name="probe", family="probe", clip=clip, norm=norm, num_classes=2, label_set="probe")
        views[sampling] = np.rint(test_views(video, spec)[:, 0, :, 0, 0] * 255).astype(int)  # frame numbers
    np.testing.assert_array_equal(views["dense"], clip_indices(60, 4, 2, 2))
    np.testing.assert_array_equal(views["segment"], segment_indices(60, 4, 2))
    with pytest.raises(ValueError):
        ClipSpec(frames=4, stride=2, crop=8, short_side=8, sampling="sparse")

# --- transforms -------------------------------------------------------------------------------------


def coordinate_frames(height: int, width: int, frames: int = 2) -> np.ndarray:
    """Frames whose R holds the row, G the column, B the frame index."""
    image = np.zeros((frames, height, width, 3), np.uint8)
    image[..., 0] = np.arange(height)[:, None]
    image[..., 1] = np.arange(width)[None, :]
    image[..., 2] = np.arange(frames)[:, None, None]
    return image


def test_scaled_size_floors_the_long_side():
    assert scaled_size(256, 340, 128) == (128, 170)
    assert scaled_size(341, 256, 128) == (170, 128)
    assert scaled_size(128, 160, 128) == (128, 160)


@pytest.mark.parametrize("size_in, size_out", [((37, 53), (20, 28)), ((16, 24), (40, 60)), ((30, 30), (30, 17))])
def test_resize_matches_torch_bilinear(size_in, size_out):
    torch = pytest.importorskip("torch")
    frames = np.random.default_rng(1).integers(0, 256, (2, *size_in, 3), dtype=np.uint8)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=size_out, mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(resize(frames.astype(np.float32), *size_out), expected, atol=1e-3)
    assert np.abs(resize(frames, *size_out).astype(np.float32) - expected).max() <= 0.5 + 1e-3


def test_short_side_resize_shapes_and_no_op():
    frames = coordinate_frames(60, 80)
    assert short_side_resize(frames, 30).shape == (2, 30, 40, 3)
    assert short_side_resize(frames, 60) is frames


def test_center_crop_position_and_view():
    frames = coordinate_frames(11, 20)
    crop = center_crop(frames, 4)
    assert crop.shape == (2, 4, 4, 3)
    assert (crop[0, 0, 0, 0], crop[0, 0, 0, 1]) == (4, 8)  # ceil((11-4)/2), ceil((20-4)/2)
    assert np.shares_memory(crop, frames)
    with pytest.raises(ValueError):
        center_crop(frames, 12)


def test_three_crops_along_the_long_side():
    landscape = three_crops(coordinate_frames(10, 25), 10)
    assert [int(c[0, 0, 0, 1]) for c in landscape] == [0, 8, 15]
    assert all(int(c[0, 0, 0, 0]) == 0 for c in landscape)
    portrait = three_crops(coordinate_frames(25, 12), 10)
    assert [int(c[0, 0, 0, 0]) for c in portrait] == [0, 8, 15]
    assert all(int(c[0, 0, 0, 1]) == 1 for c in portrait)  # ceil((12-10)/2)


def test_normalize_values_and_layout():
    frames = np.zeros((2, 3, 4, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 0, 128, 255
    frames[1] = 51
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 0.5)
    out = normalize(frames, mean, std)
    assert out.shape == (3, 2, 3, 4) and out.dtype == np.float32
    for channel, level in enumerate((0, 128, 255)):
        np.testing.assert_allclose(out[channel, 0], (level / 255 - mean[channel]) / std[channel], rtol=1e-6)
        np.testing.assert_allclose(out[channel, 1], (51 / 255 - mean[channel]) / std[channel], rtol=1e-6)


# --- video files ------------------------------------------------------------------------------------


def moving_pattern(frames=24, height=64, width=96) -> np.ndarray:
    t = np.arange(frames)[:, None, None, None]
    y = np.arange(height)[None, :, None, None]
    x = np.arange(width)[None, None, :, None]
    phase = np.array([0.0, 0.5, 1.0])  # colours vary, as in natural video (4:2:0 keeps half the chroma)
    return (127.5 + 100 * np.sin(0.1 * x + 0.07 * y + 0.3 * t + phase)).astype(np.uint8)


@pytest.fixture(scope="module")
def pattern_video(tmp_path_factory):
    frames = moving_pattern()
    path = tmp_path_factory.mktemp("video") / "pattern.mp4"
    write_video(path, frames, 12.5)
    return path, frames


def test_mp4_round_trip(pattern_video):
    path, frames = pattern_video
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert fps == 12.5
    error = np.abs(decoded.astype(int) - frames)
    assert error.mean() < 3 and np.percentile(error, 99) < 10
    assert probe_video(path) == (24, 12.5, 96, 64)


def test_resize_while_decoding(pattern_video):
    path, frames = pattern_video
    small, _ = read_video(path, short_side=32)
    assert small.shape == (24, 32, 48, 3)
    assert np.abs(small.astype(int) - short_side_resize(frames, 32)).mean() < 2.5


def test_y4m(tmp_path):
    frames = moving_pattern(frames=5, height=16, width=24)
    path = write_y4m(tmp_path / "cam.y4m", frames, 30)
    data = path.read_bytes()
    header = b"YUV4MPEG2 W24 H16 F30:1 Ip A1:1 C420\n"
    assert data.startswith(header)
    assert len(data) == len(header) + 5 * (len(b"FRAME\n") + 24 * 16 * 3 // 2)
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and fps == 30
    assert np.abs(decoded.astype(int) - frames).mean() < 4


def test_write_video_rejects_odd_sizes(tmp_path):
    with pytest.raises(ValueError):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8), 10)


def test_missing_video_is_a_data_error(tmp_path):
    path = tmp_path / "nowhere.mp4"
    for read in (read_video, probe_video):
        with pytest.raises(DataError) as excinfo:
            read(path)
        one_line_error(excinfo, str(path), "not found")


def test_corrupt_video_is_a_data_error(tmp_path, pattern_video):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(pattern_video[0].read_bytes()[:2000])
    for path in (garbage, truncated):
        with pytest.raises(DataError) as excinfo:
            read_video(path)
        one_line_error(excinfo, str(path))


# --- views ------------------------------------------------------------------------------------------


def make_spec(training_fps: float = 0.0, **clip) -> ModelSpec:
    clip = {"frames": 4, "stride": 2, "crop": 32, "short_side": 40, **clip}
    return ModelSpec(
        name="tiny", family="test", clip=ClipSpec(**clip), num_classes=8, label_set="synthmotion",
        norm=Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)), training_fps=training_fps,
    )


def frame_numbered_video(frames=30, height=40, width=60) -> np.ndarray:
    """Channel 0 holds 5 x the frame index; channel 1 a horizontal ramp."""
    video = np.zeros((frames, height, width, 3), np.uint8)
    video[..., 0] = 5 * np.arange(frames)[:, None, None]
    video[..., 1] = np.linspace(0, 255, width)[None, None, :]
    return video


def test_test_views_three_crops():
    spec = make_spec(test_clips=2, test_crops=3, short_side=36)
    video = frame_numbered_video()
    views = test_views(video, spec)
    assert views.shape == (6, 3, 4, 32, 32) and views.dtype == np.float32
    frame_index = np.rint((views[:, 0, :, 0, 0] * 0.25 + 0.5) * 255 / 5).astype(int)
    expected = clip_indices(30, 4, 2, 2).repeat(3, axis=0)  # clip-major, crop-minor
    np.testing.assert_array_equal(frame_index, expected)
    ramp = views[:3, 1].mean(axis=(1, 2, 3))
    assert ramp[0] < ramp[1] < ramp[2]  # left, centre, right crops of the 32 x 48 frames


def test_test_views_single_crop_equals_single_clip():
    spec = make_spec()
    video = frame_numbered_video()
    views = test_views(video, spec)
    assert views.shape == (1, 3, 4, 32, 32)
    np.testing.assert_array_equal(views, single_clip(video, spec))
    sampled = video[clip_indices(30, 4, 2)[0]]
    manual = normalize(center_crop(short_side_resize(sampled, 40), 32), (0.5,) * 3, (0.25,) * 3)
    np.testing.assert_array_equal(views[0], manual)


def test_single_clip_from_file_matches_frames(pattern_video):
    path, _ = pattern_video
    # native size: nothing to scale; the file's rate is the training rate: nothing to resample
    spec = make_spec(short_side=64, crop=48, frames=8, stride=2, training_fps=12.5)
    decoded, _ = read_video(path)
    from_file = single_clip(path, spec)
    assert from_file.shape == (1, 3, 8, 48, 48)
    np.testing.assert_array_equal(from_file, single_clip(decoded, spec))


def test_train_clip_shapes_and_flip():
    spec = make_spec()
    video = frame_numbered_video()
    clip = train_clip(video, spec, np.random.default_rng(0))
    assert clip.shape == (3, 4, 32, 32)
    np.testing.assert_array_equal(clip, train_clip(video, spec, np.random.default_rng(0)))
    ramps = [train_clip(video, spec, np.random.default_rng(s))[1, 0, 0] for s in range(8)]
    assert all(np.all(np.diff(r) >= 0) for r in ramps)  # no flip by default
    flipped = [train_clip(video, spec, np.random.default_rng(s), flip=True)[1, 0, 0] for s in range(8)]
    assert any(np.all(np.diff(r) <= 0) for r in flipped)


def test_views_reject_unsupported_crops():
    with pytest.raises(ValueError):
        test_views(frame_numbered_video(), make_spec(test_crops=2))


# --- manifests --------------------------------------------------------------------------------------


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_csv_with_names_resolves_relative_paths(tmp_path, monkeypatch):
    touch(tmp_path / "clips/a.mp4", tmp_path / "clips/b.mp4")
    (tmp_path / "m.csv").write_text("path,label\nclips/a.mp4,walk\nclips/b.mp4,run\n")
    monkeypatch.chdir(tmp_path.parent)
    dataset = load_dataset(tmp_path / "m.csv")
    assert dataset.classes == ["run", "walk"]
    assert dataset.items == [(tmp_path / "clips/a.mp4", 1), (tmp_path / "clips/b.mp4", 0)]


def test_csv_with_indices_and_classes_file(tmp_path):
    touch(tmp_path / "a.mp4", tmp_path / "b.mp4")
    (tmp_path / "m.csv").write_text("label,path\n2,a.mp4\nwalk,b.mp4\n")
    (tmp_path / "classes.txt").write_text("walk\nrun\njump\n")
    dataset = load_dataset(tmp_path / "m.csv")
    assert dataset.classes == ["walk", "run", "jump"]
    assert dataset.labels == [2, 0]


def test_csv_with_indices_only(tmp_path):
    """Integer labels are the model's class indices: only the ones used become classes (a label of
    10**22 once built one class per integer up to it and was OOM-killed at 16.5 GB)."""
    touch(tmp_path / "a.mp4", tmp_path / "b.mp4")
    (tmp_path / "m.csv").write_text("path,label\na.mp4,3\nb.mp4,99999999999999999999999\n")
    dataset = load_dataset(tmp_path / "m.csv")
    assert dataset.classes == ["3", "99999999999999999999999"] and dataset.labels == [0, 1]


def test_folder_per_class(tmp_path):
    touch(*(tmp_path / name for name in ("b_class/2.MP4", "b_class/1.webm", "a_class/x.avi", "a_class/notes.txt")))
    dataset = load_dataset(tmp_path)
    assert dataset.classes == ["a_class", "b_class"]
    assert [(p.name, label) for p, label in dataset.items] == [("x.avi", 0), ("1.webm", 1), ("2.MP4", 1)]


def test_folder_with_manifest_and_write_csv_round_trip(tmp_path):
    touch(tmp_path / "up/1.mp4", tmp_path / "down/2.mp4")
    (tmp_path / "classes.txt").write_text("up\ndown\nleft\n")
    dataset = load_dataset(tmp_path)
    assert dataset.classes == ["up", "down", "left"]
    (tmp_path / "classes.txt").unlink()
    write_csv(dataset, tmp_path / "manifest.csv")
    assert (tmp_path / "manifest.csv").read_text().splitlines()[1] == "up/1.mp4,up"
    again = load_dataset(tmp_path)  # a folder holding manifest.csv reads the CSV
    assert again.classes == dataset.classes and again.items == dataset.items


@pytest.mark.parametrize(
    "csv_text, fragment",
    [
        ("", "empty"),
        ("path,label\n", "no videos"),
        ("a.mp4,walk\n", "header"),
        ("file,class\na.mp4,walk\n", "header"),
        ("path,label\na.mp4\n", "row 2"),
        ("path,label\na.mp4,walk\na.mp4,3\n", "mixes"),
    ],
)
def test_bad_csv(tmp_path, csv_text, fragment):
    touch(tmp_path / "a.mp4")
    (tmp_path / "m.csv").write_text(csv_text)
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path / "m.csv")
    one_line_error(excinfo, "m.csv", fragment)


@pytest.mark.parametrize("label", ["jump", "7"])
def test_unknown_label(tmp_path, label):
    touch(tmp_path / "a.mp4")
    (tmp_path / "classes.txt").write_text("walk\nrun\n")
    (tmp_path / "m.csv").write_text(f"path,label\na.mp4,walk\na.mp4,{label}\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path / "m.csv")
    one_line_error(excinfo, "m.csv", "row 3", repr(label))


def test_missing_videos_are_listed(tmp_path):
    touch(tmp_path / "ok.mp4")
    rows = "".join(f"gone{i}.mp4,walk\n" for i in range(5))
    (tmp_path / "m.csv").write_text(f"path,label\nok.mp4,walk\n{rows}")
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path / "m.csv")
    message = one_line_error(excinfo, "m.csv", "5 of 6", "gone0.mp4", "gone2.mp4", "and 2 more")
    assert "gone3.mp4" not in message


def test_dataset_not_found(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path / "nope.csv")
    one_line_error(excinfo, "nope.csv", "not found")


def test_empty_folder(tmp_path):
    touch(tmp_path / "walk/readme.txt")
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path)
    one_line_error(excinfo, str(tmp_path), "no videos")


def test_folder_class_not_in_classes_file(tmp_path):
    touch(tmp_path / "walk/a.mp4", tmp_path / "swim/b.mp4")
    (tmp_path / "classes.txt").write_text("walk\n")
    with pytest.raises(DataError) as excinfo:
        load_dataset(tmp_path)
    one_line_error(excinfo, "swim", "classes.txt")


def test_dataset_type():
    dataset = VideoDataset([(Path("a.mp4"), 1)], ["x", "y"])
    assert len(dataset) == 1 and dataset.labels == [1] and list(dataset) == [(Path("a.mp4"), 1)]


def test_sampling_and_transforms_do_not_import_pyav():
    code = "import sys, edgevid.data, edgevid.data.sampling, edgevid.data.transforms, edgevid.data.views; " \
           "print('av' in sys.modules, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_default_calibration_size_follows_the_recipe_per_backend_and_spec(tmp_path, monkeypatch):
    """--calib-size defaults to the recipe's count for the backend (transformer models may have their own)."""
    import edgevid.calibration as calibration

    assert calibration.default_size("synthmotion", "tensorrt", transformer=False) == 32  # the shipped recipe
    assert calibration.default_size("kinetics400", "executorch", transformer=True) == 100
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "toy.yaml").write_text(
        "clips: 300\nclips_by_backend:\n  onnxruntime: 32\n  executorch: 32\n  executorch/transformer: 100\n")
    monkeypatch.setattr(calibration, "data_file", lambda kind: tmp_path / kind)
    assert calibration.default_size("toy", "onnxruntime", transformer=True) == 32
    assert calibration.default_size("toy", "executorch", transformer=False) == 32
    assert calibration.default_size("toy", "executorch", transformer=True) == 100
    assert calibration.default_size("toy", "openvino", transformer=False) == 300  # not listed: the recipe's clips
    assert calibration.default_size("no-recipe", "onnxruntime") == calibration.DEFAULT_CLIPS


@pytest.mark.parametrize("transformer,clips", [(False, 32), (True, 100)])
def test_calibration_set_takes_the_transformer_count_from_the_spec(transformer, clips):
    """The spec's ``transformer`` field picks the recipe's ``executorch/transformer`` count (the error names it)."""
    from edgevid.calibration import calibration_set
    from edgevid.errors import EdgevidError
    from edgevid.spec import KINETICS_NORM

    spec = ModelSpec(name="k", family="any", clip=ClipSpec(frames=4, stride=2, crop=32, short_side=32),
                     norm=KINETICS_NORM, num_classes=400, label_set="kinetics400", transformer=transformer)
    with pytest.raises(EdgevidError, match=f"INT8 needs --calib with ~{clips} of its own"):
        calibration_set(None, spec, backend="executorch")
