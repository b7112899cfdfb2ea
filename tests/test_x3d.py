"""X3D: architecture facts, official checkpoint layouts, loader errors, export.

Checkpoint tests write state dicts in the official key layouts with a table written here, from
our names to theirs (the loader maps theirs to ours with its own rules), fill every parameter and
BN statistic with seeded random values, load them back, and compare outputs.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgevid.errors import CheckpointError
from edgevid.models import create_model, get_spec, list_models, load_checkpoint
from edgevid.models.x3d import TRAIN_CROPS, X3D, SqueezeExcite, X3DBlock, average_positions, head_pool_size, round_width

KINETICS_VARIANTS = ("x3d_xs", "x3d_s", "x3d_m", "x3d_l")
ALL_VARIANTS = KINETICS_VARIANTS + ("x3d_synth",)
SMALL_CLIP = (2, 3, 4, 48, 48)


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights, BN affine parameters and BN running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("num_batches_tracked"):
                b.fill_(int(torch.randint(1, 10_000, (1,), generator=g)))
    return model.eval()


def random_clip(shape=SMALL_CLIP, seed=123) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---- our names -> official names, written independently of edgevid.models.x3d's rules ----------

SLOWFAST_NAMES = {
    "stem": {"spatial": "s1.pathway0_stem.conv_xy", "temporal": "s1.pathway0_stem.conv",
             "norm": "s1.pathway0_stem.bn"},
    "stage": "s{stage_plus_2}.pathway0_res{block}",
    "block": {"conv1": "branch2.a", "norm1": "branch2.a_bn", "conv2": "branch2.b", "norm2": "branch2.b_bn",
              "se.reduce": "branch2.se.fc1", "se.expand": "branch2.se.fc2", "conv3": "branch2.c",
              "norm3": "branch2.c_bn", "shortcut.conv": "branch1", "shortcut.norm": "branch1_bn"},
    "head": {"conv": "head.conv_5", "norm": "head.conv_5_bn", "fc": "head.lin_5", "classifier": "head.projection"},
}

PYTORCHVIDEO_NAMES = {
    # pytorchvideo calls the 1x3x3 spatial conv conv_t and the 5x1x1 temporal conv conv_xy.
    "stem": {"spatial": "blocks.0.conv.conv_t", "temporal": "blocks.0.conv.conv_xy", "norm": "blocks.0.norm"},
    "stage": "blocks.{stage_plus_1}.res_blocks.{block}",
    "block": {"conv1": "branch2.conv_a", "norm1": "branch2.norm_a", "conv2": "branch2.conv_b",
              "norm2": "branch2.norm_b.0", "se.reduce": "branch2.norm_b.1.block.0",
              "se.expand": "branch2.norm_b.1.block.2", "conv3": "branch2.conv_c", "norm3": "branch2.norm_c",
              "shortcut.conv": "branch1_conv", "shortcut.norm": "branch1_norm"},
    "head": {"conv": "blocks.5.pool.pre_conv", "norm": "blocks.5.pool.pre_norm",
             "fc": "blocks.5.pool.post_conv", "classifier": "blocks.5.proj"},
}


def to_official(sd: dict[str, torch.Tensor], names: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        module, leaf = key.rsplit(".", 1)
        part, _, rest = module.partition(".")
        if part == "stem":
            new = names["stem"][rest]
        elif part == "head":
            new = names["head"][rest]
        else:
            stage, block, inner = re.fullmatch(r"(\d+)\.(\d+)\.(.+)", rest).groups()
            prefix = names["stage"].format(stage_plus_1=int(stage) + 1, stage_plus_2=int(stage) + 2,
                                           block=block)
            new = f"{prefix}.{names['block'][inner]}"
        out[f"{new}.{leaf}"] = value.clone()
    return out


def slowfast_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return to_official(model.state_dict(), SLOWFAST_NAMES)


def pytorchvideo_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """pytorchvideo has no BN on the first block's shortcut (24 -> 24 channels, stride 2)."""
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("stages.0.0.shortcut.norm.")}
    return to_official(sd, PYTORCHVIDEO_NAMES)


@pytest.fixture(scope="module")
def xs_source() -> nn.Module:
    return randomize_(create_model("x3d_xs"), seed=7)


# ---- architecture ------------------------------------------------------------------------------


def test_registry_and_specs():
    assert set(ALL_VARIANTS) <= set(list_models())
    expected = {"x3d_xs": (4, 12, 182), "x3d_s": (13, 6, 182), "x3d_m": (16, 5, 256), "x3d_l": (16, 5, 356)}
    for name, (frames, stride, crop) in expected.items():
        spec = get_spec(name)
        assert (spec.clip.frames, spec.clip.stride, spec.clip.crop, spec.clip.short_side) == (frames, stride, crop, crop)
        assert (spec.clip.test_clips, spec.clip.test_crops) == (10, 3)
        assert spec.family == "x3d" and spec.num_classes == 400 and spec.label_set == "kinetics400"
        assert spec.norm.mean == (0.45,) * 3 and spec.norm.std == (0.225,) * 3
        assert spec.checkpoint_url == f"https://dl.fbaipublicfiles.com/pyslowfast/x3d_models/{name}.pyth"
        assert spec.checkpoint_layouts == ("slowfast", "pytorchvideo")
    synth = get_spec("x3d_synth")
    assert (synth.clip.frames, synth.clip.stride, synth.clip.test_clips, synth.clip.test_crops) == (8, 3, 1, 1)
    assert 32 <= synth.clip.crop <= synth.clip.short_side
    assert (synth.num_classes, synth.label_set, synth.published.params_m) == (8, "synthmotion", None)


def test_round_width_gives_official_se_widths():
    assert [round_width(c, 0.0625) for c in (54, 108, 216, 432)] == [8, 8, 16, 32]
    assert round_width(12, 2.0) == 24


def test_xs_structure():
    with torch.device("meta"):
        model = create_model("x3d_xs")
    assert [len(stage) for stage in model.stages] == [3, 5, 11, 7]
    assert model.stem.spatial.weight.shape == (24, 3, 1, 3, 3) and model.stem.spatial.stride == (1, 2, 2)
    assert model.stem.temporal.weight.shape == (24, 1, 5, 1, 1)
    for stage, (width, inner, se_width) in zip(model.stages, [(24, 54, 8), (48, 108, 8), (96, 216, 16), (192, 432, 32)]):
        for i, block in enumerate(stage):
            assert isinstance(block, X3DBlock)
            assert block.conv2.weight.shape == (inner, 1, 3, 3, 3)
            assert block.conv2.stride == ((1, 2, 2) if i == 0 else (1, 1, 1))
            assert block.conv3.out_channels == width
            assert (block.shortcut is not None) == (i == 0)
            assert isinstance(block.act2, nn.SiLU)
            if i % 2 == 0:
                assert isinstance(block.se, SqueezeExcite) and block.se.reduce.out_channels == se_width
            else:
                assert isinstance(block.se, nn.Identity)
    assert model.head.conv.weight.shape == (432, 192, 1, 1, 1)
    assert model.head.fc.weight.shape == (2048, 432, 1, 1, 1) and model.head.fc.bias is None
    assert model.head.classifier.weight.shape == (400, 2048)
    assert all(k in model.state_dict() for k in X3D.classifier_keys)


@pytest.mark.parametrize("name", KINETICS_VARIANTS)
def test_param_count_matches_published(name):
    with torch.device("meta"):
        model = create_model(name)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    published = get_spec(name).published.params_m
    print(f"{name}: {params_m:.4f}M parameters (published {published}M)")
    assert abs(params_m - published) / published < 0.01


# GFLOPs in SlowFast's model zoo are multiply-adds at the training crop: 160 (XS, S), 224 (M), 312 (L).
@pytest.mark.parametrize("name,shape", [
    ("x3d_xs", (1, 3, 4, 160, 160)), ("x3d_s", (1, 3, 13, 160, 160)),
    ("x3d_m", (1, 3, 16, 224, 224)), ("x3d_l", (1, 3, 16, 312, 312)),
])
def test_macs_match_published(name, shape):
    gmacs = _gmacs(name, shape)
    published = get_spec(name).published.gflops
    print(f"{name} {shape[2:]}: {gmacs:.3f} GMACs (published {published})")
    assert abs(gmacs - published) / published < 0.01


def _gmacs(name: str, shape) -> float:
    with torch.device("meta"):
        model = create_model(name)
        counter = FlopCounterMode(display=False)
        with counter:
            out = model(torch.empty(shape))
    assert out.shape == (shape[0], model.num_classes)
    return counter.get_total_flops() / 2e9


def test_synth_budget_and_forward():
    spec = get_spec("x3d_synth")
    with torch.device("meta"):
        params_m = sum(p.numel() for p in create_model("x3d_synth").parameters()) / 1e6
    gmacs = _gmacs("x3d_synth", (1, 3, 8, 112, 112))  # the budget: <= 0.3 GMACs at 8x112x112
    gmacs_spec = _gmacs("x3d_synth", spec.input_shape())
    print(f"x3d_synth: {params_m:.4f}M parameters, {gmacs:.3f} GMACs per 8x112x112 clip,"
          f" {gmacs_spec:.3f} GMACs at its spec input {spec.input_shape()[2:]}")
    assert params_m <= 1.5 and gmacs <= 0.3 and gmacs_spec <= 0.3
    model = create_model("x3d_synth")
    with torch.no_grad():
        logits = model(random_clip((2,) + spec.input_shape()[1:]))
    assert logits.shape == (2, 8) and torch.isfinite(logits).all()


# ---- official layouts --------------------------------------------------------------------------


def test_official_key_facts(xs_source):
    sf = slowfast_state(xs_source)
    assert sf["s1.pathway0_stem.conv_xy.weight"].shape == (24, 3, 1, 3, 3)
    assert sf["s1.pathway0_stem.conv.weight"].shape == (24, 1, 5, 1, 1)
    assert sf["s2.pathway0_res0.branch2.se.fc1.weight"].shape == (8, 54, 1, 1, 1)
    assert sf["s5.pathway0_res6.branch2.se.fc2.weight"].shape == (432, 32, 1, 1, 1)
    assert "s2.pathway0_res1.branch2.se.fc1.weight" not in sf
    assert "s2.pathway0_res0.branch1_bn.running_var" in sf and "s2.pathway0_res1.branch1.weight" not in sf
    assert sf["head.lin_5.weight"].shape == (2048, 432, 1, 1, 1) and sf["head.projection.bias"].shape == (400,)
    ptv = pytorchvideo_state(xs_source)
    assert ptv["blocks.0.conv.conv_t.weight"].shape == (24, 3, 1, 3, 3)
    assert ptv["blocks.0.conv.conv_xy.weight"].shape == (24, 1, 5, 1, 1)
    assert ptv["blocks.4.res_blocks.0.branch2.norm_b.1.block.0.weight"].shape == (32, 432, 1, 1, 1)
    assert "blocks.1.res_blocks.0.branch1_norm.weight" not in ptv
    assert "blocks.2.res_blocks.0.branch1_norm.weight" in ptv
    assert ptv["blocks.5.proj.weight"].shape == (400, 2048)


def test_slowfast_checkpoint_loads_identically(xs_source, tmp_path):
    path = tmp_path / "x3d_xs.pyth"
    torch.save({"model_state": slowfast_state(xs_source), "epoch": 300}, path)
    loaded = create_model("x3d_xs", weights=str(path))
    assert load_checkpoint(create_model("x3d_xs"), str(path), family="x3d") == "slowfast"
    x = random_clip()
    with torch.no_grad():
        expected, got = xs_source(x), loaded(x)
        other = randomize_(create_model("x3d_xs"), seed=8)(x)
    assert expected.std() > 0 and not torch.allclose(expected, other)
    assert torch.equal(got, expected)
    for key, value in xs_source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_pytorchvideo_checkpoint_loads_identically(xs_source, tmp_path):
    sd = pytorchvideo_state(xs_source)
    # Also exercise checkpoints saved without BN counters: the loader fills them in.
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "X3D_XS.pyth"
    torch.save({"model_state": sd}, path)  # pytorchvideo's hub files wrap it like SlowFast's
    model = create_model("x3d_xs")
    assert load_checkpoint(model, str(path), family="x3d") == "pytorchvideo"
    # The reference: the source network as pytorchvideo builds it (no BN on that shortcut).
    reference = randomize_(create_model("x3d_xs"), seed=7)
    reference.stages[0][0].shortcut.norm = nn.Identity()
    x = random_clip()
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert expected.std() > 0
    assert torch.equal(got, expected)


# ---- loader errors -----------------------------------------------------------------------------


def _load_error(sd, tmp_path, name="x3d_xs", **kwargs) -> str:
    path = tmp_path / "bad.pyth"
    torch.save({"model_state": sd}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(create_model(name), str(path), family="x3d", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_key_is_named(xs_source, tmp_path):
    sd = slowfast_state(xs_source)
    del sd["s4.pathway0_res3.branch2.b.weight"]
    message = _load_error(sd, tmp_path)
    assert "1 missing" in message and "stages.2.3.conv2.weight" in message


def test_unexpected_key_is_named(xs_source, tmp_path):
    sd = slowfast_state(xs_source)
    sd["head.lin_5_bn.weight"] = torch.ones(2048)  # a BN_LIN5=True model: not this architecture
    message = _load_error(sd, tmp_path)
    assert "1 unexpected" in message and "head.lin_5_bn.weight" in message


def test_misshaped_key_is_named(xs_source, tmp_path):
    sd = slowfast_state(xs_source)
    sd["s1.pathway0_stem.conv.weight"] = torch.zeros(24, 1, 3, 1, 1)
    message = _load_error(sd, tmp_path)
    assert "mis-shaped" in message and "stem.temporal.weight" in message and "(24, 1, 3, 1, 1)" in message


def test_other_head_size_needs_reinit(xs_source, tmp_path):
    path = tmp_path / "x3d_xs.pyth"
    torch.save({"model_state": slowfast_state(xs_source)}, path)
    with pytest.raises(CheckpointError, match="head.classifier.weight.*--num-classes"):
        load_checkpoint(create_model("x3d_xs", num_classes=10), str(path), family="x3d")

    torch.manual_seed(0)
    fresh = create_model("x3d_xs", num_classes=10)
    torch.manual_seed(0)
    loaded = create_model("x3d_xs", num_classes=10, weights=str(path))  # num_classes given: reinit
    source_sd, loaded_sd = xs_source.state_dict(), loaded.state_dict()
    for key, value in loaded_sd.items():
        if key in X3D.classifier_keys:
            assert value.shape[0] == 10 and torch.equal(value, fresh.state_dict()[key]), key
        else:
            assert torch.equal(value, source_sd[key]), key


def test_corrupt_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.pyth"
    garbage.write_bytes(b"\x00not a checkpoint at all" * 10)
    truncated = tmp_path / "truncated.pyth"
    torch.save({"model_state": create_model("x3d_synth").state_dict()}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    for path in (garbage, truncated):
        with pytest.raises(CheckpointError) as info:
            create_model("x3d_synth", weights=str(path))
        assert "\n" not in str(info.value)
    foreign = tmp_path / "foreign.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(3), "cls_head.fc.weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="no known x3d layout"):
        create_model("x3d_synth", weights=str(foreign))


# ---- the official test-time head -----------------------------------------------------------------


def official_head(head, features: torch.Tensor, train_crop: int, frames: int):
    """SlowFast ``X3DHead.forward`` in eval mode, on our head's weights, written from its code:
    pool ``AvgPool3d([NUM_FRAMES, ceil(TRAIN_CROP_SIZE / 32), ...], stride=1)`` (video_model_builder),
    ``lin_5``, ReLU, permute to (N, T, H, W, C), ``projection`` at every position; then SlowFast's
    ``Softmax(dim=4)`` + ``mean([1, 2, 3])`` and pytorchvideo's ``AdaptiveAvgPool3d(1)`` on logits.
    Returns (pytorchvideo logits, SlowFast probabilities, positions)."""
    x = torch.relu(head.norm(head.conv(features)))
    side = int(math.ceil(train_crop / 32.0))
    x = nn.AvgPool3d([frames, side, side], stride=1)(x)
    x = torch.relu(nn.functional.conv3d(x, head.fc.weight))
    x = nn.functional.linear(x.permute((0, 2, 3, 4, 1)), head.classifier.weight, head.classifier.bias)
    return x.mean([1, 2, 3]), nn.Softmax(dim=4)(x).mean([1, 2, 3]), tuple(x.shape[1:4])


def head_input(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the features the head received) from one forward pass."""
    seen = []
    handle = model.head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    return logits, seen[0]


def test_head_window_comes_from_the_training_crop():
    expected = {"x3d_xs": (4, 5, 5), "x3d_s": (13, 5, 5), "x3d_m": (16, 7, 7), "x3d_l": (16, 10, 10),
                "x3d_synth": (8, 3, 3)}
    assert TRAIN_CROPS == {"x3d_xs": 160, "x3d_s": 160, "x3d_m": 224, "x3d_l": 312, "x3d_synth": 80}
    for name, window in expected.items():
        with torch.device("meta"):
            model = create_model(name)
        assert model.head.pool_size == window == head_pool_size(get_spec(name).clip.frames, TRAIN_CROPS[name])
        assert model.head.position_average == "logits"
    assert create_model("x3d_xs", head_pool_size=None).head.pool_size is None  # global pooling on request


# X3D-XS/S at 182 and X3D-M at 256 leave 2x2 positions, X3D-L at 356 3x3; one at the training crop.
@pytest.mark.parametrize("name,positions", [
    ("x3d_xs", (1, 2, 2)), ("x3d_l", (1, 3, 3)),
    pytest.param("x3d_s", (1, 2, 2), marks=pytest.mark.slow), pytest.param("x3d_m", (1, 2, 2), marks=pytest.mark.slow),
])
def test_head_is_the_official_head_at_the_test_crop(name, positions):
    torch.set_num_threads(1)
    spec = get_spec(name)
    model = randomize_(create_model(name), seed=11)
    x = random_clip(spec.input_shape(1), seed=5)
    logits, features = head_input(model, x)
    with torch.no_grad():
        ptv, slowfast, seen = official_head(model.head, features, TRAIN_CROPS[name], spec.clip.frames)
        probabilities = create_model(name, position_average="softmax").eval()
        probabilities.load_state_dict(model.state_dict())
        scores = probabilities.head(features).softmax(-1)
        global_pool = create_model(name, head_pool_size=None).eval()
        global_pool.load_state_dict(model.state_dict())
        pooled = global_pool.head(features)
    assert seen == positions
    logit_err, prob_err = float((logits - ptv).abs().max()), float((scores - slowfast).abs().max())
    print(f"{name} at {tuple(x.shape[2:])}: positions {seen}; logits vs pytorchvideo head max-abs {logit_err:.2e}"
          f" (logit std {float(ptv.std()):.3f}); position_average='softmax' vs SlowFast head max-abs {prob_err:.2e};"
          f" a global pool would differ by {float((pooled - ptv).abs().max()):.2e}")
    assert logit_err <= 1e-5 * max(1.0, float(ptv.abs().max())) and prob_err <= 1e-7
    assert float((pooled - ptv).abs().max()) > 100 * logit_err  # the window matters here


def test_training_crop_is_one_position_and_a_global_pool():
    """At the training crop the window covers the map: the head is the global-pool head, so the
    shipped x3d_synth weights (trained and tested at 80 px) compute exactly what they did."""
    for name, shape in (("x3d_xs", (1, 3, 4, 160, 160)), ("x3d_synth", get_spec("x3d_synth").input_shape(1))):
        model = randomize_(create_model(name), seed=2)
        logits, features = head_input(model, random_clip(shape))
        _, _, seen = official_head(model.head, features, TRAIN_CROPS[name], shape[2])
        global_pool = create_model(name, head_pool_size=None).eval()
        global_pool.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert seen == (1, 1, 1) and torch.equal(global_pool.head(features), logits)


def test_average_positions():
    z = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.allclose(average_positions(z, "logits"), z.mean(1))
    assert torch.allclose(average_positions(z, "softmax").softmax(-1), z.softmax(-1).mean(1), atol=1e-7)
    assert torch.allclose(average_positions(z, "softmax").exp().sum(-1), torch.ones(3))  # log-probabilities
    with pytest.raises(ValueError, match="position_average"):
        average_positions(z, "probs")
    with pytest.raises(ValueError, match="position_average"):
        create_model("x3d_synth", position_average="mean")


def test_inputs_smaller_than_the_window_pool_whole():
    model = randomize_(create_model("x3d_xs"), seed=4)
    logits, features = head_input(model, random_clip((1, 3, 2, 64, 64)))  # 2x2 map, 5x5 window; 2 < 4 frames
    assert features.shape[2:] == (2, 2, 2) and model.head.window(features.shape[2:]) == (2, 2, 2)
    global_pool = create_model("x3d_xs", head_pool_size=None).eval()
    global_pool.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(global_pool.head(features), logits)


def test_official_test_shape_through_the_executorch_rewrite_and_openvino():
    """X3D-XS at its test clip (4x182x182): the frames rewrite turns the window pool into rank-4
    ops with nothing left in 3-D, and OpenVINO's IR pools 5x5 at stride 1 on the 6x6 map; both
    compute the eager logits."""
    import numpy as np

    from edgevid.backends.openvino import convert
    from edgevid.backends.executorch.rewrite import rewrite_for_xnnpack
    from edgevid.targets import ShapePolicy

    torch.set_num_threads(1)
    spec = get_spec("x3d_xs")
    model = randomize_(create_model("x3d_xs"), seed=9)
    x = random_clip(spec.input_shape(1), seed=3)
    with torch.no_grad():
        expected = model(x)
    rewritten = rewrite_for_xnnpack(model, x, strategy="taps")
    assert rewritten.error <= 1e-5 and rewritten.frames.left_3d == []
    pools = [n for n in rewritten.graph_module.graph.nodes if n.target == torch.ops.aten.avg_pool2d.default]
    assert [(list(n.args[1]), list(n.args[2]), tuple(n.args[0].meta["val"].shape[2:])) for n in pools] == [
        ([5, 5], [1, 1], (6, 6))]
    assert not [n for n in rewritten.graph_module.graph.nodes if n.op == "call_function"
                and isinstance(n.meta.get("val"), torch.Tensor) and n.meta["val"].dim() == 5
                and n.target not in (torch.ops.aten.permute.default, torch.ops.aten.reshape.default,
                                     torch.ops.aten.slice.Tensor, torch.ops.aten.cat.default,
                                     torch.ops.aten.constant_pad_nd.default)]

    import openvino as ov

    ir = convert(model, spec, ShapePolicy())
    pools = [op for op in ir.get_ops() if op.get_type_name() == "AvgPool"]
    assert [(list(op.get_attributes()["kernel"]), list(op.get_attributes()["strides"]),
             list(op.input(0).get_shape())[2:], list(op.output(0).get_shape())[2:]) for op in pools] == [
        ([1, 5, 5], [1, 1, 1], [1, 6, 6], [1, 2, 2])]
    assert list(ir.input(0).get_shape()) == [1, 3, 4, 182, 182] and list(ir.output(0).get_shape()) == [1, 400]
    got = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
    err = float(np.abs(got - expected.numpy()).max())
    print(f"x3d_xs 4x182x182: OpenVINO FP32 vs eager max-abs {err:.2e}; rewrite relative error {rewritten.error:.2e}")
    assert err <= 1e-4


# ---- export ------------------------------------------------------------------------------------

# No temporal stride and a total spatial stride of 32: T=2 (temporal kernels see a neighbour) and
# 32x32 (one pixel left after the last stage) is the smallest clip that exercises every kernel.
EXPORT_CLIP = (1, 3, 2, 32, 32)


def test_s_and_m_are_the_xs_network():
    """X3D-S and X3D-M differ from X3D-XS only in their clip spec (frames, crop): same network."""
    with torch.device("meta"):
        reference = repr(create_model("x3d_xs"))
        assert repr(create_model("x3d_s")) == reference and repr(create_model("x3d_m")) == reference


# x3d_s and x3d_m export the very network of x3d_xs (asserted above): marked slow to keep `make test` fast.
@pytest.mark.parametrize("name", [
    "x3d_xs", "x3d_l", "x3d_synth", "x3d_xs:windowed", "x3d_xs:softmax",
    pytest.param("x3d_s", marks=pytest.mark.slow), pytest.param("x3d_m", marks=pytest.mark.slow),
])
def test_export(name, tmp_path):
    name, _, head = name.partition(":")
    if head:  # a 2x2 window on a 3x3 map: 2x2 head positions in the exported graph (both averages)
        kwargs = dict(head_pool_size=(2, 2, 2), position_average="softmax" if head == "softmax" else "logits")
        model, x = randomize_(create_model(name, **kwargs), seed=3), random_clip((1, 3, 2, 96, 96))
    else:
        model, x = randomize_(create_model(name), seed=3), random_clip(EXPORT_CLIP)
    program = torch.export.export(model, (x,), strict=True)
    onnx_program = torch.onnx.export(program, (x,), dynamo=True, verbose=False)
    graph = onnx_program.model_proto.graph
    assert {node.domain for node in graph.node} == {""}  # standard ONNX ops only
    if name not in ("x3d_xs", "x3d_synth"):
        return
    import onnxruntime as ort

    path = tmp_path / f"{name}.onnx"
    onnx_program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    err = abs(got - expected).max()
    print(f"{name}: ONNX Runtime vs eager max-abs {err:.2e} (logit std {expected.std():.3f})")
    assert expected.std() > 0 and err < 1e-4
