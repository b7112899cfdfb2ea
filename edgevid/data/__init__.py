"""Video data: decode (PyAV), clip sampling, preprocessing, dataset manifests, SynthMotion.

Names are re-exported lazily, so ``import edgevid.data.sampling`` or ``.transforms`` (the
on-device path) imports neither PyAV nor anything else heavy.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "read_video": "video", "write_video": "video", "write_y4m": "video", "probe_video": "video",
    "VideoInfo": "video", "VideoMeta": "video", "read_meta": "video", "decode_frames": "video",
    "plan_clips": "sampling", "resample": "sampling", "ClipPlan": "sampling",
    "clip_indices": "sampling", "random_clip_indices": "sampling", "segment_indices": "sampling",
    "random_segment_indices": "sampling",
    "short_side_resize": "transforms", "center_crop": "transforms", "three_crops": "transforms",
    "normalize": "transforms",
    "load_views": "views", "Views": "views", "resampled_frames": "views",
    "test_views": "views", "single_clip": "views", "train_clip": "views", "preprocess_frames": "views",
    "VideoDataset": "manifest", "load_dataset": "manifest", "write_csv": "manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
