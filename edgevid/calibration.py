"""Calibration clips for INT8: sampled and preprocessed exactly as at inference."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import yaml

from .errors import DataError, EdgevidError
from .paths import data_file
from .spec import ModelSpec

log = logging.getLogger("edgevid")

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov"}


@dataclass
class CalibrationSet:
    clips: list[np.ndarray]  # each [1, C, T, H, W] float32
    source: str
    digest: str


#: clips per INT8 calibration when neither --calib-size nor the recipe says, per backend: the size at
#: which the reference models' INT8 accuracy stops changing (benchmarks/results/calib_size.md)
DEFAULT_CLIPS = 300


def recipe(label_set: str) -> dict:
    """The calibration recipe in ``calibration/<label_set>.yaml`` (defaults if there is none)."""
    path = data_file("calibration") / f"{label_set}.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {"clips": DEFAULT_CLIPS}


def default_size(label_set: str, backend: str | None = None, transformer: bool = False) -> int:
    """The recipe's clip count for ``backend`` (``clips_by_backend``: keys ``backend``, or
    ``backend/transformer`` for models whose spec says ``transformer``), else its ``clips``."""
    book = recipe(label_set)
    by_backend = book.get("clips_by_backend") or {}
    fallback = book.get("clips", DEFAULT_CLIPS)
    if not backend:
        return int(fallback)
    if transformer and f"{backend}/transformer" in by_backend:
        return int(by_backend[f"{backend}/transformer"])
    return int(by_backend.get(backend, fallback))


def digest_clips(clips: Iterable[np.ndarray]) -> str:
    sha = hashlib.sha256()
    for clip in clips:
        sha.update(np.ascontiguousarray(clip, dtype=np.float32).tobytes())
    return sha.hexdigest()


def _video_paths(source: Path) -> list[Path]:
    """Videos of a folder (flat, or folder-per-class) or a dataset manifest."""
    if source.is_dir():
        videos = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise DataError(f"--calib {source}: the folder has no videos ({', '.join(sorted(VIDEO_SUFFIXES))})")
        return videos
    from .data.manifest import load_dataset

    return [path for path, _ in load_dataset(source).items]


def calibration_set(
    calib: str | None,
    spec: ModelSpec,
    size: int | None = None,
    track: Callable[[Iterable, str, int], Iterable] | None = None,
    backend: str | None = None,
) -> CalibrationSet:
    """Load ``size`` clips from ``calib`` ('synthetic', a folder or a manifest) for ``spec``
    (default: the recipe's count for ``backend``).

    Without ``calib``, only models trained on SynthMotion default to its calibration split; a
    model trained on real video would be mis-calibrated by synthetic clips, so that is an error.
    """
    size = size or default_size(spec.label_set, backend, spec.transformer)
    if size <= 0:
        raise EdgevidError(f"--calib-size must be positive, got {size}")
    if calib is None:
        if spec.label_set != "synthmotion":
            raise EdgevidError(
                f"{spec.name} was trained on {spec.label_set}: INT8 needs --calib with ~{size} of its own"
                f" training clips (see calibration/{spec.label_set}.yaml); synthetic clips have other"
                " activation ranges and would mis-calibrate it (--calib synthetic is accepted for speed work)"
            )
        calib = "synthetic"
    if calib == "synthetic":
        if spec.label_set != "synthmotion":
            log.warning("calibrating %s on synthetic clips: fine for speed work, not for accuracy", spec.name)
        from .data.synthmotion import ensure_split

        manifest = ensure_split("calib", size)
        videos = _video_paths(manifest)
        source = f"synthmotion:calib-{size}"
    else:
        path = Path(calib).expanduser()
        if not path.exists():
            raise DataError(f"--calib {calib}: no such file or folder; pass a folder of videos, a manifest or 'synthetic'")
        videos = _video_paths(path)
        source = str(path)
    if len(videos) < size:
        log.warning("calibration set %s has %d videos, fewer than the %d asked for: using all of them", source, len(videos), size)
    videos = videos[:size]

    from .data.views import load_views

    clips, failed, noted = [], [], {}
    iterator = track(videos, "calibration clips", len(videos)) if track else videos
    for video in iterator:
        try:
            views = load_views(video, spec, "center")
        except DataError as exc:
            failed.append(f"{video.name} ({exc})")
            continue
        clips.append(views.inputs)
        for note in views.notes:  # one line per kind of note, not one per video
            noted.setdefault(note.split(" (")[0], []).append(f"{video.name}: {note}")
    for kind, lines in noted.items():
        log.warning("%d of %d calibration videos: %s; e.g. %s", len(lines), len(videos), kind, lines[0])
    if failed:
        log.warning("skipped %d unusable calibration videos, e.g. %s", len(failed), failed[0])
    if not clips:
        raise DataError(f"--calib {calib}: none of its {len(videos)} videos could be decoded; first error: {failed[0]}")
    return CalibrationSet(clips=clips, source=source, digest=digest_clips(clips))


DEFAULT_VAL_SIZE = 200


def validation_clips(spec, source: str | None, size: int | None) -> list[tuple[np.ndarray, int]]:
    """Labelled centre clips for accuracy-aware quantization: ``source`` or, for SynthMotion models, its val split."""
    from .data.manifest import load_dataset
    from .data.views import single_clip
    from .harness.eval import class_mapping
    from .labels import labels_for

    size = int(size or DEFAULT_VAL_SIZE)
    if source is None:
        if spec.label_set != "synthmotion":
            raise DataError(f"--max-drop needs labelled validation videos of {spec.label_set}: pass --val-data FOLDER_OR_CSV")
        from .data.synthmotion import ensure_split

        source = ensure_split("val", size)
    dataset = load_dataset(source)
    mapping = class_mapping(dataset.classes, labels_for(spec.label_set, spec.num_classes), str(source))
    items = [(single_clip(path, spec), int(mapping[label])) for path, label in dataset.items[:size]]
    if not items:
        raise DataError(f"--val-data {source}: no videos to validate on")
    return items
