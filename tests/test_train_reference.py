"""scripts/train_reference.py's training-only aids: token geometry, motion targets, the step-by-step forward."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevid.data.synthmotion import CLASSES, clip_poses, render_clip
from edgevid.data.transforms import short_side_resize
from edgevid.models import create_model, get_spec

_SPEC = importlib.util.spec_from_file_location("train_reference", Path(__file__).parent.parent / "scripts" / "train_reference.py")
tr = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tr)


@pytest.mark.parametrize("name", ["timesformer_synth", "tubevit_synth"])
def test_forward_with_tokens_is_the_model(name):
    model = create_model(name).eval()
    spec = get_spec(name)
    x = torch.randn(spec.input_shape(2))
    logits, tokens = tr.forward_with_tokens(model, x)
    assert torch.equal(logits, model(x))
    assert tokens.shape[1] == len(tr.token_points(model, spec))


def test_token_grid_is_each_tokens_centre():
    model, spec = create_model("timesformer_synth"), get_spec("timesformer_synth")
    grid = tr.token_grid(tr.token_points(model, spec), spec.clip.frames, spec.clip.crop).view(-1, 3)
    # tokens are (h w t): the first is the top-left 8x8 patch of frame 0, the next the same patch of frame 1
    assert grid[0].tolist() == pytest.approx([-1 + 1 / 8, -1 + 1 / 8, -1 + 1 / 8])
    assert grid[1].tolist() == pytest.approx([-1 + 1 / 8, -1 + 1 / 8, -1 + 3 / 8])
    assert grid[8].tolist() == pytest.approx([-1 + 3 / 8, -1 + 1 / 8, -1 + 1 / 8])  # next patch to the right


def test_motion_targets_follow_the_rendered_object():
    model, spec = create_model("timesformer_synth"), get_spec("timesformer_synth")
    points = tr.token_points(model, spec)
    grid = model.patch_embed.grid_size
    for seed in (0, 1, 2, 4, 6):
        clip = render_clip(seed, with_mask=True)
        mask = short_side_resize((clip.mask[..., None] * 255).astype(np.uint8).repeat(3, -1), spec.clip.short_side)[..., 0]
        where: list = []
        frames = np.zeros((1, 32, *mask.shape[1:], 3), np.uint8)
        tr.batch_clips(frames, spec, np.random.default_rng(seed), where)
        indices, tops, lefts = where
        poses = [p[None] for p in clip_poses(seed)[1:]]
        target = tr.motion_targets(poses, where, points, mask.shape[1:]).numpy()[0]
        true = np.array([mask[indices[0][t], tops[0] + (hw // grid) * 8:tops[0] + (hw // grid) * 8 + 8,
                              lefts[0] + (hw % grid) * 8:lefts[0] + (hw % grid) * 8 + 8].mean() / 255
                         for hw in range(grid * grid) for t in range(spec.clip.frames)])
        assert np.corrcoef(true, target[:, 0])[0, 1] > 0.85  # coverage where the object is drawn
        flow = target[:, 1:].sum(0)
        name = CLASSES[seed % 8]
        if name == "move_left":
            assert flow[0] < 0 and abs(flow[1]) < 1e-6
        elif name == "move_right":
            assert flow[0] > 0 and abs(flow[1]) < 1e-6
        elif name == "move_up":
            assert flow[1] < 0 and abs(flow[0]) < 1e-6


def _motion_signature(center, radius, angle):
    """Signs of the object's x and y velocity, spin and growth over the clip."""
    return tuple(int(np.sign(round(float(v), 6))) for v in
                 (*(center[-1] - center[0]), angle[-1] - angle[0], np.log(radius[-1] / radius[0])))


def test_mirrored_labels_match_the_mirrored_motion():
    from edgevid.data.synthmotion import WIDTH

    for label in range(len(CLASSES)):
        _, center, radius, angle = clip_poses(label + 8 * 5)
        mirrored = _motion_signature(np.stack((WIDTH - center[:, 0], center[:, 1]), 1), radius, -angle)
        _, *other = clip_poses(int(tr.MIRRORED[label]) + 8 * 7)  # a clip of the label the mirror swaps to
        assert mirrored == _motion_signature(*other), CLASSES[label]


def test_batch_clips_mirrors_only_the_chosen_clips():
    spec = get_spec("timesformer_synth")
    frames = np.random.default_rng(0).integers(0, 255, (2, 32, 73, 91, 3), np.uint8)
    plain = tr.batch_clips(frames, spec, np.random.default_rng(1))
    mirrored = tr.batch_clips(frames, spec, np.random.default_rng(1), mirror=np.array([True, False]))
    assert torch.equal(mirrored[0], plain[0].flip(-1)) and torch.equal(mirrored[1], plain[1])


def test_spin_targets_sign_the_coverage_by_the_spin_direction():
    motion = torch.rand(3, 5, 3)
    angles = np.array([[0.0, 0.1], [0.0, -0.1], [0.3, 0.3]])  # rotate_cw, rotate_ccw, no spin
    spun = tr.spin_targets(motion, angles)
    assert spun.shape == (3, 5, 1)
    assert torch.equal(spun[0, :, 0], motion[0, :, 0]) and torch.equal(spun[1, :, 0], -motion[1, :, 0])
    assert not spun[2].any()
    for seed, sign in ((4, 1), (5, -1)):  # the generator's rotate_cw turns clockwise (angle grows)
        assert CLASSES[seed % 8] == ("rotate_cw" if sign > 0 else "rotate_ccw")
        assert np.sign(clip_poses(seed)[3][1] - clip_poses(seed)[3][0]) == sign
