"""SynthMotion: a seeded, procedurally generated video dataset that only motion can classify.

Each clip is 32 frames of 160x128 (W x H) at 15 fps: one textured foreground object (shape,
colours, texture, size, angle random) over a random static background (gradients, smooth noise,
stripes, checkerboards, static distractor shapes), with brightness changes and pixel noise. The
class is how the object moves: ``CLASSES``. Every object pose parameter that a class changes is
drawn at the clip's middle frame from one class-independent distribution (position in a box
around the frame centre, log-uniform size, uniform angle), so a frame shows an object that any
class could show; only the change over frames tells the class. (Frames away from the middle
still shift with the motion, so a frame's position *in* the clip plus the object's position
carries weak evidence; angles stay uniform at every frame.)

Motion (per source frame) is fast enough to see over 8 frames at stride 3 (21 frame steps):
shifts of 19-32 px, turns of 74-147 degrees, size changes of x1.4-2.0. The object stays inside
the frame, and inside the 112x112 centre crop over the centre test clip (frames 5-26).

Seeds: ``label = seed % 8``; the splits draw seeds from disjoint ranges (``SPLIT_SEEDS``):
train 0-999,999, val 1,000,000-1,999,999, calib 2,000,000-2,999,999, test 3,000,000-3,999,999.
Split ``<split>-<n>`` holds the first ``n`` seeds of its range, so classes are balanced.

``python -m edgevid.data.synthmotion --split val --n 16 --out DIR`` writes a split for viewing.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevid.errors import DataError

CLASSES = ("move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw", "grow", "shrink")
WIDTH, HEIGHT, FRAMES, FPS = 160, 128, 32, 15
VERSION = 1
"""Bumped when the generator's output changes; cached splits of another version are regenerated."""

SPLIT_SIZE = 1_000_000
SPLIT_SEEDS = {
    name: range(i * SPLIT_SIZE, (i + 1) * SPLIT_SIZE) for i, name in enumerate(("train", "val", "calib", "test"))
}

SPEED_PX = (0.9, 1.5)  # translation, pixels per frame
SPIN_DEG = (3.5, 7.0)  # rotation, degrees per frame
GROWTH = (np.log(1.4) / 21, np.log(2.0) / 21)  # log-scale change per frame
RADIUS_PX = (9.0, 17.0)  # circumradius at the middle frame, log-uniform
CENTER_BOX = 38.0  # |centre - frame centre| <= CENTER_BOX - radius, per axis, at the middle frame
MIDDLE = (FRAMES - 1) / 2

_DIRECTIONS = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1)}


# --- shapes: canonical coordinates u (right), v (down) in [-1, 1], inside the unit circle ----------


def _polygon(*points: tuple[float, float]):
    vertices = np.array(points, dtype=np.float64)

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        result = np.zeros(np.broadcast(u, v).shape, dtype=bool)
        for (u0, v0), (u1, v1) in zip(vertices, np.roll(vertices, -1, axis=0)):
            if v0 == v1:
                continue
            crosses = (v0 > v) != (v1 > v)
            result ^= crosses & (u < u0 + (v - v0) * (u1 - u0) / (v1 - v0))
        return result

    return inside


def _star(points: int, outer: float, inner: float):
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2, inner, outer)
    return _polygon(*zip(radii * np.cos(angles), radii * np.sin(angles)))


def _pacman(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v < 0.9**2) & ~((np.abs(np.arctan2(v, u)) < 0.55) & (u > 0))


SHAPES = {
    "square": _polygon((-0.68, -0.68), (0.68, -0.68), (0.68, 0.68), (-0.68, 0.68)),
    "triangle": _polygon((0.0, -0.95), (0.75, 0.6), (-0.75, 0.6)),
    "cross": _polygon(
        (-0.28, -0.9), (0.28, -0.9), (0.28, -0.28), (0.9, -0.28), (0.9, 0.28), (0.28, 0.28),
        (0.28, 0.9), (-0.28, 0.9), (-0.28, 0.28), (-0.9, 0.28), (-0.9, -0.28), (-0.28, -0.28),
    ),
    "star": _star(5, 0.95, 0.42),
    "l_shape": _polygon((-0.6, -0.7), (-0.15, -0.7), (-0.15, 0.3), (0.6, 0.3), (0.6, 0.7), (-0.6, 0.7)),
    "arrow": _polygon((-0.9, -0.2), (0.2, -0.2), (0.2, -0.55), (0.9, 0.0), (0.2, 0.55), (0.2, 0.2), (-0.9, 0.2)),
    "t_shape": _polygon(
        (-0.7, -0.65), (0.7, -0.65), (0.7, -0.28), (0.2, -0.28), (0.2, 0.72), (-0.2, 0.72), (-0.2, -0.28), (-0.7, -0.28)
    ),
    "pacman": _pacman,
    "hexagon": _star(3, 0.92, 0.92),
}


# --- drawing ----------------------------------------------------------------------------------------


def _colour(rng: np.random.Generator, away_from: np.ndarray, count: int = 16) -> np.ndarray:
    """A random RGB colour, preferring one far (> 90) from ``away_from``."""
    candidates = rng.uniform(0, 255, (count, 3))
    distance = np.linalg.norm(candidates - away_from, axis=1)
    far = np.flatnonzero(distance > 90)
    return candidates[far[0] if far.size else np.argmax(distance)]


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    padded = np.pad(mask, max(abs(dy), abs(dx)))
    pad = (padded.shape[0] - mask.shape[0]) // 2
    return padded[pad + dy : pad + dy + mask.shape[0], pad + dx : pad + dx + mask.shape[1]]


def _sprite(rng: np.random.Generator, max_radius: float, background_mean: np.ndarray) -> np.ndarray:
    """A random textured object as premultiplied RGBA ``[S + 2, S + 2, 4]`` over [-1, 1]^2, with a
    transparent 1-pixel border. Colours split by a half-plane, so every rotation shows."""
    size = int(np.clip(np.ceil(3 * max_radius), 32, 128))  # ~1.5 sprite pixels per screen pixel
    fine = 2 * size  # 2x2 supersampling
    grid = (np.arange(fine) + 0.5) / fine * 2 - 1
    u, v = grid[None, :], grid[:, None]
    shape = SHAPES[list(SHAPES)[rng.integers(len(SHAPES))]]
    mirror = rng.choice((-1.0, 1.0))
    mask = shape(mirror * u / rng.uniform(0.8, 1.0), v / rng.uniform(0.75, 1.0))

    first = _colour(rng, background_mean)
    second = _colour(rng, first)
    split = rng.uniform(0, 2 * np.pi)
    colour = np.where((u * np.cos(split) + v * np.sin(split) > rng.uniform(-0.25, 0.1))[..., None], second, first)
    texture = rng.integers(3)
    if texture == 1:  # stripes
        angle, cycles = rng.uniform(0, np.pi), rng.uniform(1.5, 3.5)
        wave = np.sin(np.pi * cycles * (u * np.cos(angle) + v * np.sin(angle)))
        colour = colour * np.where(wave > 0, 1.0, 0.6)[..., None]
    elif texture == 2:  # an off-centre dot
        at = rng.uniform(0, 2 * np.pi)
        dot = (u - 0.4 * np.cos(at)) ** 2 + (v - 0.4 * np.sin(at)) ** 2 < 0.22**2
        colour = np.where(dot[..., None], _colour(rng, first), colour)
    if rng.random() < 0.7:  # outline, ~1.5 screen pixels wide
        width = max(1, round(fine / max_radius * 0.75))
        eroded = mask.copy()
        for dy, dx in ((width, 0), (-width, 0), (0, width), (0, -width)):
            eroded &= _shift(mask, dy, dx)
        edge = np.full(3, 15.0 if background_mean.mean() > 110 else 240.0)
        colour = np.where((mask & ~eroded)[..., None], edge, colour)

    rgba = np.concatenate([colour * mask[..., None], mask[..., None]], axis=-1).astype(np.float32)
    rgba = rgba.reshape(size, 2, size, 2, 4).mean(axis=(1, 3))
    return np.pad(rgba, ((1, 1), (1, 1), (0, 0)))


def _paste(canvas: np.ndarray, sprite: np.ndarray, cx: float, cy: float, radius: float, angle: float,
           coverage: np.ndarray | None = None) -> None:
    """Composite ``sprite`` in place, centred at (cx, cy) pixels, scaled so [-1, 1] spans
    ``2 * radius`` and turned clockwise on screen by ``angle`` radians."""
    size = sprite.shape[0] - 2
    reach = radius + 1.5
    x0, x1 = max(int(cx - reach), 0), min(int(np.ceil(cx + reach)), canvas.shape[1])
    y0, y1 = max(int(cy - reach), 0), min(int(np.ceil(cy + reach)), canvas.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    dx = np.arange(x0, x1)[None, :] + 0.5 - cx
    dy = np.arange(y0, y1)[:, None] + 0.5 - cy
    cos, sin = np.cos(angle), np.sin(angle)
    scale = size / (2 * radius)
    su = np.clip((cos * dx + sin * dy) * scale + size / 2 + 0.5, 0, size + 0.999)
    sv = np.clip((cos * dy - sin * dx) * scale + size / 2 + 0.5, 0, size + 0.999)
    j0, i0 = su.astype(np.intp), sv.astype(np.intp)
    fx, fy = (su - j0)[..., None], (sv - i0)[..., None]
    top = sprite[i0, j0] * (1 - fx) + sprite[i0, j0 + 1] * fx
    bottom = sprite[i0 + 1, j0] * (1 - fx) + sprite[i0 + 1, j0 + 1] * fx
    sample = top * (1 - fy) + bottom * fy
    alpha = sample[..., 3:]
    region = canvas[y0:y1, x0:x1]
    region *= 1 - alpha
    region += sample[..., :3]
    if coverage is not None:
        coverage[y0:y1, x0:x1] = alpha[..., 0]


def _background(rng: np.random.Generator) -> np.ndarray:
    """A static RGB background ``[H, W, 3]`` float32 in 0-255."""
    y = (np.arange(HEIGHT, dtype=np.float32)[:, None] + 0.5) / HEIGHT
    x = (np.arange(WIDTH, dtype=np.float32)[None, :] + 0.5) / HEIGHT

    def pattern(kind: int) -> np.ndarray:
        angle = rng.uniform(0, 2 * np.pi)
        along = x * np.cos(angle) + y * np.sin(angle)
        across = -x * np.sin(angle) + y * np.cos(angle)
        if kind == 0:  # linear gradient
            return (along - along.min()) / (np.ptp(along) + 1e-6)
        if kind == 1:  # radial gradient
            cx, cy = rng.uniform(0, WIDTH / HEIGHT), rng.uniform(0, 1)
            distance = np.hypot(x - cx, y - cy)
            return distance / distance.max()
        if kind == 2:  # smooth noise: a few random plane waves
            waves = sum(
                np.sin(2 * np.pi * rng.uniform(0.5, 4) * (x * np.cos(a) + y * np.sin(a)) + rng.uniform(0, 2 * np.pi))
                for a in rng.uniform(0, 2 * np.pi, 6)
            )
            return (waves - waves.min()) / (np.ptp(waves) + 1e-6)
        if kind == 3:  # stripes, soft or hard
            wave = np.sin(2 * np.pi * along * HEIGHT / rng.uniform(6, 30) + rng.uniform(0, 2 * np.pi))
            return (wave > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * wave
        cell = rng.uniform(6, 24) / HEIGHT  # checkerboard
        return ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float32)

    def layer() -> np.ndarray:
        low = rng.uniform(20, 235, 3)
        high = low + (rng.uniform(20, 235, 3) - low) * rng.uniform(0.3, 1.0)
        return low + pattern(rng.integers(5))[..., None] * (high - low)

    image = layer()
    if rng.random() < 0.5:
        image += rng.uniform(0.3, 0.7) * (layer() - image)
    image += rng.uniform(0, 6) * rng.standard_normal(image.shape)  # static grain
    return image.astype(np.float32)


# --- clips ------------------------------------------------------------------------------------------


@dataclass
class SynthClip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    label: int
    center: np.ndarray  # float [T, 2], (x, y) pixels
    radius: np.ndarray  # float [T], circumradius in pixels
    angle: np.ndarray  # float [T], radians, clockwise on screen
    mask: np.ndarray | None = None  # float32 [T, H, W] object coverage in [0, 1]


def _poses(rng: np.random.Generator, label: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses at times ``t`` (in 15 fps frames from the middle frame)."""
    count = len(t)
    radius = np.full(count, np.exp(rng.uniform(*np.log(RADIUS_PX))))
    box = CENTER_BOX - radius[0]
    center = np.tile(np.array([WIDTH / 2, HEIGHT / 2]) + rng.uniform(-box, box, 2), (count, 1))
    angle = np.full(count, rng.uniform(0, 2 * np.pi))
    name = CLASSES[label]
    if name in _DIRECTIONS:
        center += np.outer(t, _DIRECTIONS[name]) * rng.uniform(*SPEED_PX)
    elif name.startswith("rotate"):
        angle += t * np.radians(rng.uniform(*SPIN_DEG)) * (1 if name == "rotate_cw" else -1)
    else:
        radius *= np.exp(t * rng.uniform(*GROWTH) * (1 if name == "grow" else -1))
    return center, radius, angle


def render_clip(seed: int, with_mask: bool = False, times: np.ndarray | None = None) -> SynthClip:
    """The clip of ``seed`` with its ground truth (object poses, and coverage masks if asked).

    ``times`` (seconds from the first frame; default ``arange(32) / 15``) renders the same motion at
    other instants: another frame rate, or a variable one (the background, object and motion stay;
    the per-frame gain and noise are drawn for the frames rendered)."""
    rng = np.random.default_rng(seed)
    label = seed % len(CLASSES)
    t = np.arange(FRAMES) - MIDDLE if times is None else np.asarray(times, np.float64) * FPS - MIDDLE
    count = len(t)
    center, radius, angle = _poses(rng, label, t)
    background = _background(rng)
    for _ in range(rng.integers(0, 4)):  # static distractors
        distractor_radius = rng.uniform(5, 13)
        sprite = _sprite(rng, distractor_radius, background.mean(axis=(0, 1)))
        x, y, turn = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(0, 2 * np.pi)
        _paste(background, sprite, x, y, distractor_radius, turn)
    sprite = _sprite(rng, radius.max(), background.mean(axis=(0, 1)))

    video = np.broadcast_to(background, (count, *background.shape)).copy()
    mask = np.zeros((count, HEIGHT, WIDTH), np.float32) if with_mask else None
    for i in range(count):
        _paste(video[i], sprite, *center[i], radius[i], angle[i], None if mask is None else mask[i])

    gain = rng.uniform(0.75, 1.25) * (1 + 0.02 * rng.standard_normal(count, dtype=np.float32))
    video *= gain[:, None, None, None]
    video += rng.uniform(-20, 20)
    noise = rng.integers(-128, 128, video.shape, dtype=np.int8)  # uniform: cheaper than Gaussian
    video += noise * np.float32(rng.uniform(1, 6) * np.sqrt(12) / 256)  # std 1-6 grey levels
    frames = np.clip(np.rint(video, out=video), 0, 255, out=video).astype(np.uint8)
    return SynthClip(frames, label, center, radius, angle, mask)


def generate_clip(seed: int) -> tuple[np.ndarray, int]:
    """Frames uint8 ``[32, 128, 160, 3]`` and the label (``seed % 8``) of the clip of ``seed``."""
    clip = render_clip(seed)
    return clip.frames, clip.label


# --- splits on disk ---------------------------------------------------------------------------------


def split_seeds(split: str, n: int) -> range:
    if split not in SPLIT_SEEDS:
        raise DataError(f"unknown SynthMotion split {split!r}; use one of {', '.join(SPLIT_SEEDS)}.")
    if not 0 < n <= SPLIT_SIZE:
        raise DataError(f"SynthMotion split size {n} is out of range; use 1 to {SPLIT_SIZE}.")
    return SPLIT_SEEDS[split][:n]


def _write_clips(seeds: list[int], folder: str) -> list[tuple[str, str]]:
    from edgevid.data.video import write_video

    rows = []
    for seed in seeds:
        frames, label = generate_clip(seed)
        name = f"{seed:07d}.mp4"
        write_video(Path(folder) / name, frames, FPS)
        rows.append((name, CLASSES[label]))
    return rows


def _is_current(folder: Path) -> bool:
    try:
        meta = json.loads((folder / "synthmotion.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("version") == VERSION and (folder / "manifest.csv").is_file()


def _remove_stale_temps(parent: Path, name: str) -> None:
    """Delete temp folders that an interrupted run (whose process is gone) left behind."""
    for temp in parent.glob(f".{name}.tmp-*"):
        pid = temp.name.rsplit("-", 2)[-2]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(temp, ignore_errors=True)
        except PermissionError:
            pass


def ensure_split(split: str, n: int, root: str | Path | None = None, workers: int | None = None) -> Path:
    """Path of ``manifest.csv`` of SynthMotion ``<split>-<n>``, generating it when missing.

    The folder is ``root/<split>-<n>`` (``root`` defaults to ``$EDGEVID_HOME/datasets/synthmotion``)
    with ``<seed>.mp4`` clips, ``manifest.csv``, ``classes.txt`` and ``synthmotion.json``. It is
    written in a temporary folder and renamed into place, so it is either complete or absent.
    ``workers`` processes encode in parallel (default: up to 2, one for small splits).
    """
    seeds = split_seeds(split, n)
    if root is None:
        from edgevid.paths import edgevid_home

        root = edgevid_home() / "datasets" / "synthmotion"
    folder = Path(root) / f"{split}-{n}"
    if _is_current(folder):
        return folder / "manifest.csv"
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(folder.parent, folder.name)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-{os.getpid()}-", dir=folder.parent))
    try:
        workers = workers or (1 if n < 64 else min(2, os.cpu_count() or 1))
        chunks = [list(seeds[i::workers]) for i in range(workers)]
        if workers == 1:
            rows = _write_clips(chunks[0], str(temp))
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                rows = [row for part in pool.map(_write_clips, chunks, [str(temp)] * workers) for row in part]
            rows.sort()
        with open(temp / "manifest.csv", "w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows([("path", "label"), *rows])
        (temp / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES), encoding="utf-8")
        meta = {"version": VERSION, "split": split, "n": n, "seeds": [seeds[0], seeds[-1]], "fps": FPS,
                "size": [WIDTH, HEIGHT], "frames": FRAMES, "classes": list(CLASSES)}
        (temp / "synthmotion.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():  # another version, or a concurrent run that finished first
            if _is_current(folder):
                return folder / "manifest.csv"
            old = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-old")
            folder.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            temp.rename(folder)
        except OSError:
            if not _is_current(folder):  # lost a race to a concurrent run only if that one is complete
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return folder / "manifest.csv"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edgevid.data.synthmotion", description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="val", choices=list(SPLIT_SEEDS))
    parser.add_argument("--n", type=int, default=16, help="number of clips")
    parser.add_argument("--out", type=Path, help="root folder (default $EDGEVID_HOME/datasets/synthmotion)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = ensure_split(args.split, args.n, args.out, args.workers)
    print(f"{manifest}  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
