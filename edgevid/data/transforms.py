"""Spatial preprocessing on uint8 RGB frames ``[T, H, W, 3]`` (numpy only).

Crops return views (no copy); only ``short_side_resize`` and ``normalize`` allocate.
Geometry follows SlowFast: crop offsets ``ceil((L - size) / 2)`` for the centre, and the three
test crops sit at the start, centre and end of the long side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side at ``short_side``, the long side scaled and floored."""
    if height <= width:
        return short_side, width * short_side // height
    return height * short_side // width, short_side


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of half-pixel-centred bilinear sampling (align_corners=False)."""
    source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    source = np.clip(source, 0, size_in - 1)
    low = np.floor(source).astype(np.intp)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (source - low).astype(np.float32)


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``[..., H, W, C]`` as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False, antialias=False)``; uint8 in gives rounded uint8 out, floats stay float32."""
    if frames.shape[-3:-1] == (height, width):
        return frames
    top, bottom, wy = _bilinear_taps(frames.shape[-3], height)
    left, right, wx = _bilinear_taps(frames.shape[-2], width)
    rows_top = frames[..., top, :, :].astype(np.float32)
    rows = rows_top + wy[:, None, None] * (frames[..., bottom, :, :] - rows_top)
    cols_left = rows[..., left, :]
    out = cols_left + wx[:, None] * (rows[..., right, :] - cols_left)
    if frames.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out


def short_side_resize(frames: np.ndarray, size: int) -> np.ndarray:
    """Scale ``[T, H, W, 3]`` so that the short side is ``size`` (bilinear; the input itself
    when it already is). For frames that were not already scaled while decoding."""
    return resize(frames, *scaled_size(frames.shape[-3], frames.shape[-2], size))


def _check_crop(frames: np.ndarray, size: int) -> tuple[int, int]:
    height, width = frames.shape[-3:-1]
    if size > height or size > width:
        raise ValueError(f"crop {size} does not fit frames of {height}x{width}")
    return height, width


def crop(frames: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """The ``size`` x ``size`` window at (top, left), as a view."""
    return frames[..., top : top + size, left : left + size, :]


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    height, width = _check_crop(frames, size)
    return crop(frames, -(-(height - size) // 2), -(-(width - size) // 2), size)


def three_crops(frames: np.ndarray, size: int) -> list[np.ndarray]:
    """SlowFast's 3-crop test views: start, centre and end of the long side, centred on the short."""
    height, width = _check_crop(frames, size)
    long_offsets = lambda length: (0, -(-(length - size) // 2), length - size)  # noqa: E731
    if height > width:
        left = -(-(width - size) // 2)
        return [crop(frames, top, left, size) for top in long_offsets(height)]
    top = -(-(height - size) // 2)
    return [crop(frames, top, left, size) for left in long_offsets(width)]


def random_crop(frames: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    height, width = _check_crop(frames, size)
    return crop(frames, int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1)), size)


def normalize(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` to float32 ``[3, T, H, W]`` holding ``(pixel / 255 - mean) / std``.

    Each channel goes through a 256-entry table computed in float64, so the values do not depend
    on the order of operations (bit-stable across machines).
    """
    if frames.dtype != np.uint8:
        raise ValueError(f"normalize expects uint8 frames, got {frames.dtype}")
    levels = np.arange(256, dtype=np.float64) / 255.0
    out = np.empty((3, *frames.shape[:-1]), dtype=np.float32)
    for channel in range(3):
        table = ((levels - mean[channel]) / std[channel]).astype(np.float32)
        np.take(table, frames[..., channel], out=out[channel])
    return out
