"""SynthMotion: determinism, balance, disjoint splits, atomic caching, and that only motion tells."""

from __future__ import annotations

import numpy as np
import pytest

from edgevid.data import synthmotion
from edgevid.data.manifest import load_dataset
from edgevid.data.synthmotion import CLASSES, SPLIT_SEEDS, ensure_split, generate_clip, render_clip, split_seeds
from edgevid.data.video import read_video
from edgevid.errors import DataError


def test_clip_format_and_determinism():
    frames, label = generate_clip(12345)
    assert frames.shape == (32, 128, 160, 3) and frames.dtype == np.uint8
    assert label == 12345 % 8
    again, _ = generate_clip(12345)
    np.testing.assert_array_equal(frames, again)
    other, _ = generate_clip(12345 + 8)
    assert np.abs(other.astype(int) - frames).mean() > 5


def test_classes():
    assert CLASSES[:8] == (
        "move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw", "grow", "shrink"
    )


@pytest.mark.parametrize("split, n", [("train", 80), ("val", 13), ("test", 3)])
def test_class_balance(split, n):
    counts = np.bincount([seed % len(CLASSES) for seed in split_seeds(split, n)], minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1


def test_splits_are_disjoint():
    ranges = list(SPLIT_SEEDS.values())
    assert set(SPLIT_SEEDS) == {"train", "val", "calib", "test"}
    for i, first in enumerate(ranges):
        for second in ranges[i + 1 :]:
            assert first.stop <= second.start or second.stop <= first.start
    with pytest.raises(DataError):
        split_seeds("holdout", 4)
    with pytest.raises(DataError):
        split_seeds("train", len(SPLIT_SEEDS["train"]) + 1)


def test_ensure_split_writes_reads_and_reuses(tmp_path, monkeypatch):
    manifest = ensure_split("val", 8, root=tmp_path)
    assert manifest == tmp_path / "val-8" / "manifest.csv"
    dataset = load_dataset(manifest)
    assert dataset.classes == list(CLASSES)
    assert dataset.labels == list(range(8))
    frames, fps = read_video(dataset.items[3][0])
    assert frames.shape == (32, 128, 160, 3) and fps == 15
    original, _ = generate_clip(SPLIT_SEEDS["val"][3])
    blocks = lambda video: video.reshape(32, 16, 8, 20, 8, 3).mean(axis=(2, 4))  # noqa: E731 (noise averages out)
    assert np.abs(blocks(frames.astype(float)) - blocks(original.astype(float))).mean() < 3

    monkeypatch.setattr(synthmotion, "_write_clips", lambda *args: pytest.fail("regenerated a complete split"))
    assert ensure_split("val", 8, root=tmp_path) == manifest


def test_ensure_split_is_atomic(tmp_path, monkeypatch):
    real_write = synthmotion._write_clips

    def write_then_die(seeds, folder):
        real_write(seeds[:2], folder)
        raise KeyboardInterrupt

    stale = tmp_path / ".calib-4.tmp-999999999-abc"  # left by a process that no longer exists
    stale.mkdir()
    monkeypatch.setattr(synthmotion, "_write_clips", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        ensure_split("calib", 4, root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no final folder, no temp folder, the stale one gone

    monkeypatch.setattr(synthmotion, "_write_clips", real_write)
    manifest = ensure_split("calib", 4, root=tmp_path)
    assert len(load_dataset(manifest)) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["calib-4"]


def test_ensure_split_regenerates_another_version(tmp_path, monkeypatch):
    manifest = ensure_split("test", 2, root=tmp_path)
    monkeypatch.setattr(synthmotion, "VERSION", synthmotion.VERSION + 1)
    calls = []
    monkeypatch.setattr(synthmotion, "_write_clips", lambda seeds, folder: calls.append(seeds) or [])
    ensure_split("test", 2, root=tmp_path)
    assert calls == [[SPLIT_SEEDS["test"][0], SPLIT_SEEDS["test"][1]]]
    assert manifest.is_file()


def test_parallel_generation_matches_serial(tmp_path):
    serial = ensure_split("train", 3, root=tmp_path / "one", workers=1).read_text()
    parallel = ensure_split("train", 3, root=tmp_path / "two", workers=2).read_text()
    assert serial == parallel


@pytest.fixture(scope="module")
def truth():
    """Per-frame object statistics of 12 clips per class, from the ground-truth masks."""
    clips = [render_clip(seed, with_mask=True) for seed in range(8 * 12)]
    ys, xs = np.mgrid[0:128, 0:160]
    stats = []
    for clip in clips:
        area = clip.mask.sum(axis=(1, 2))
        cx = (clip.mask * xs).sum(axis=(1, 2)) / area
        cy = (clip.mask * ys).sum(axis=(1, 2)) / area
        stats.append(np.stack([cx, cy, np.log(area), np.cos(clip.angle), np.sin(clip.angle)], axis=1))
    return np.array(stats), np.array([clip.label for clip in clips]), clips  # stats [clips, T, 5]


def nearest_mean_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Fit class means on half the clips of each class, classify the other half (standardised features)."""
    features = (features - features.mean(0)) / (features.std(0) + 1e-9)
    fit = np.arange(len(labels)) // len(CLASSES) % 2 == 0  # labels cycle through the classes
    held = ~fit
    means = np.array([features[fit & (labels == c)].mean(0) for c in range(len(CLASSES))])
    predicted = np.argmin(((features[held, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return float((predicted == labels[held]).mean())


def test_a_single_frame_does_not_tell_the_class(truth):
    stats, labels, _ = truth
    for t in (5, 15, 26):  # first, middle and last frame of the centre clip; chance is 0.125
        assert nearest_mean_accuracy(stats[:, t], labels) < 0.35, t
    for t in range(5, 27):  # every frame of the centre clip: all classes share a common range
        for feature in range(3):
            per_class = [stats[labels == c, t, feature] for c in range(len(CLASSES))]
            assert max(v.min() for v in per_class) < min(v.max() for v in per_class), (t, feature)


def test_the_change_over_time_tells_the_class(truth):
    stats, labels, _ = truth
    first, last = stats[:, 5], stats[:, 26]
    cross = first[:, 3] * last[:, 4] - first[:, 4] * last[:, 3]
    turn = np.arctan2(cross, first[:, 3] * last[:, 3] + first[:, 4] * last[:, 4])  # signed angle change
    change = np.stack([last[:, 0] - first[:, 0], last[:, 1] - first[:, 1], last[:, 2] - first[:, 2], turn], axis=1)
    assert nearest_mean_accuracy(change, labels) >= 0.95


def test_object_stays_in_the_centre_crop(truth):
    _, _, clips = truth
    for clip in clips:
        window = clip.mask[5:27]
        inside = window[:, 8:120, 24:136].sum()
        assert inside / window.sum() > 0.99
        assert clip.mask.sum(axis=(1, 2)).min() > 20  # always visible (pixels covered)


def test_table_splits_extend_the_fast_splits():
    from edgevid.data.synthmotion import FAST_CLIPS, TABLE_CLIPS, table_split

    assert TABLE_CLIPS == 1000 and FAST_CLIPS == 200
    assert list(split_seeds("test", TABLE_CLIPS))[:FAST_CLIPS] == list(split_seeds("test", FAST_CLIPS))
    with pytest.raises(DataError, match="val or test"):
        table_split("train")


def test_clip_poses_are_the_rendered_ground_truth():
    for seed in (0, 5, 1_000_003):
        label, center, radius, angle = synthmotion.clip_poses(seed)
        clip = render_clip(seed)
        assert label == clip.label
        np.testing.assert_array_equal(center, clip.center)
        np.testing.assert_array_equal(radius, clip.radius)
        np.testing.assert_array_equal(angle, clip.angle)
