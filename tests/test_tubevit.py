"""TubeViT: tube geometry, position embedding, interpolated kernels, checkpoints, export.

Unit tests use tiny widths/depths and small clips (same code paths as the full variants); the
full-size export is marked slow.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import edgevid.models.tubevit as tubevit  # registers the family
from edgevid.errors import CheckpointError
from edgevid.models.checkpoint import load_checkpoint
from edgevid.models.registry import create_model, get_spec, list_models
from edgevid.spec import KINETICS_NORM

VARIANTS = ("tubevit_b", "tubevit_l", "tubevit_synth")
# Same tubes and kernel as each variant; narrow, shallow, small clip (B/L: 44 tokens, synth: 102).
TINY = {
    "tubevit_b": dict(embed_dim=24, depth=2, num_heads=2, frames=32, crop=64),
    "tubevit_l": dict(embed_dim=24, depth=2, num_heads=2, frames=32, crop=64),
    "tubevit_synth": dict(embed_dim=24, depth=2, num_heads=2, frames=8, crop=32),
}


def tiny(name: str, seed: int = 0, **extra) -> tubevit.TubeViT:
    """Tiny model with every parameter and the position embedding randomised (seeded)."""
    torch.manual_seed(seed)
    model = create_model(name, **{**TINY[name], **extra})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        model.pos_embed.normal_()
    return model.eval()


def clip(name: str, batch: int = 1, seed: int = 1) -> torch.Tensor:
    cfg = TINY[name]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, cfg["frames"], cfg["crop"], cfg["crop"], generator=g)


# ---------------------------------------------------------------------------------------------
# Registry, geometry, sizes


def test_variants_registered_with_specs():
    assert set(VARIANTS) <= set(list_models())
    for name, top1 in (("tubevit_b", 88.6), ("tubevit_l", 90.2)):
        spec = get_spec(name)
        assert spec.family == "tubevit" and spec.num_classes == 400 and spec.label_set == "kinetics400"
        assert (spec.clip.frames, spec.clip.stride, spec.clip.crop) == (32, 2, 224)
        assert (spec.clip.test_clips, spec.clip.test_crops) == (4, 3)
        assert spec.published.top1 == top1
        assert "unofficial" in spec.checkpoint_layouts
    assert get_spec("tubevit_b").published.params_m == 90.0
    synth = get_spec("tubevit_synth")
    assert synth.num_classes == 8 and synth.label_set == "synthmotion" and synth.norm == KINETICS_NORM
    assert (synth.clip.frames, synth.clip.stride, synth.clip.crop, synth.clip.short_side) == (8, 3, 64, 73)
    assert (synth.clip.test_clips, synth.clip.test_crops) == (1, 1)
    assert synth.published.top1 is None and synth.published.params_m is None and synth.published.gflops is None
    assert synth.published.source == "edgevid reference model"


def test_token_count_of_the_paper_tubes_at_32x224():
    cfg = tubevit.BASE_CONFIG
    assert cfg.grids == ((2, 7, 7), (3, 7, 7), (2, 7, 7), (1, 14, 14))
    assert cfg.num_tokens == 539
    # the real tokenizer on a real-size clip (narrow and shallow so it is cheap)
    model = create_model("tubevit_b", embed_dim=12, depth=1, num_heads=2)
    x = torch.randn(1, 3, 32, 224, 224)
    with torch.no_grad():
        assert model.tube_embed(x).shape == (1, 539, 12)
        assert model(x).shape == (1, 400)


def test_tube_grid_is_the_conv_output_size():
    tube = tubevit.Tube((16, 4, 4), (6, 32, 32), (4, 8, 8))
    x = torch.zeros(1, 1, 32, 224, 224)[:, :, 4:, 8:, 8:]
    out = F.conv3d(x, torch.zeros(1, 1, 16, 4, 4), stride=(6, 32, 32))
    assert tuple(out.shape[2:]) == tube.grid(32, 224) == (3, 7, 7)
    with pytest.raises(ValueError):
        tubevit.TubeViTConfig(frames=16)  # the 16-frame tube after a 4-frame offset does not fit


def test_full_size_parameter_counts():
    with torch.device("meta"):
        b = create_model("tubevit_b")
        large = create_model("tubevit_l")
    n_b = sum(p.numel() for p in b.parameters())
    n_l = sum(p.numel() for p in large.parameters())
    assert abs(n_b / 90e6 - 1) <= 0.05  # paper: ~90M
    assert abs(n_l / 304e6 - 1) <= 0.05  # not in the notes: a ViT-L/16 encoder is 304M


def test_synth_is_the_same_architecture_and_small():
    cfg = tubevit.SYNTH_CONFIG
    assert len(cfg.tubes) == 4 and len({t.kernel for t in cfg.tubes}) == 4
    assert any(any(t.offset) for t in cfg.tubes) and len({t.stride for t in cfg.tubes}) > 1
    # the temporal tubes tile the frame: every pixel of every frame is in the (2, 8, 8) tube's view
    first = cfg.tubes[0]
    assert first.kernel == first.stride == (2, 8, 8) and cfg.grids[0] == (4, 8, 8)
    model = create_model("tubevit_synth")
    assert model.cls_token is None and isinstance(model.pool, tubevit.AttentionPool)
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(torch.randn(get_spec("tubevit_synth").input_shape(1)))
    flops = counter.get_total_flops()
    print(f"tubevit_synth: {cfg.num_tokens} tokens, {params / 1e6:.3f}M params, {flops / 1e9:.3f} GFLOPs, "
          f"{weight_bytes / 1e6:.1f} MB")
    assert out.shape == (1, 8)
    assert params <= 2.0e6 and flops <= 1.0e9 and weight_bytes <= 20e6  # dense temporal tubes: 418 tokens


# ---------------------------------------------------------------------------------------------
# Position embedding


def test_position_embedding_distinct_per_token():
    for cfg in (tubevit.BASE_CONFIG, tubevit.SYNTH_CONFIG, tubevit.LARGE_CONFIG):
        pos = tubevit.tube_position_embedding(cfg)
        assert pos.shape == (cfg.num_tokens, cfg.embed_dim)
        dist = torch.cdist(pos.double(), pos.double())
        dist.fill_diagonal_(float("inf"))
        assert dist.min() > 1e-3


def test_position_embedding_encodes_the_tube_centre():
    cfg = tubevit.BASE_CONFIG
    pos = tubevit.tube_position_embedding(cfg)
    # first token of tube 2 (16x4x4, offset (4, 8, 8)): centre t = 4 + 7.5, h = w = 8 + 1.5
    token = pos[98]
    # 768 channels: t 256, h 256, w 256; each half sine then half cosine, first frequency 1
    assert torch.allclose(token[[0, 128, 256, 384, 512, 640]],
                          torch.tensor([np.sin(11.5), np.cos(11.5), np.sin(9.5), np.cos(9.5), np.sin(9.5),
                                        np.cos(9.5)], dtype=torch.float32), atol=1e-6)
    # last token of tube 4 (1x16x16, stride 16): centre (0, 13 * 16 + 7.5, 13 * 16 + 7.5)
    last = pos[-1]
    assert torch.allclose(last[[0, 128, 256]], torch.tensor([0.0, 1.0, np.sin(215.5)], dtype=torch.float32),
                          atol=1e-5)


def test_position_embedding_depends_on_offset_and_stride():
    cfg = tubevit.BASE_CONFIG
    base = tubevit.tube_position_embedding(cfg)
    sl = slice(98, 98 + 147)  # tube 2
    moved = list(cfg.tubes)
    moved[1] = tubevit.Tube((16, 4, 4), (6, 32, 32), (4, 12, 12))
    shifted = tubevit.tube_position_embedding(tubevit.TubeViTConfig(tubes=tuple(moved)))
    assert not torch.allclose(shifted[sl], base[sl])
    assert torch.equal(shifted[:98], base[:98]) and torch.equal(shifted[245:], base[245:])
    restrided = list(cfg.tubes)
    restrided[1] = tubevit.Tube((16, 4, 4), (5, 32, 32), (4, 8, 8))  # 3 temporal steps still
    other = tubevit.tube_position_embedding(tubevit.TubeViTConfig(tubes=tuple(restrided)))
    assert other.shape == base.shape
    assert torch.equal(other[98], base[98])  # first temporal step at the same place
    assert not torch.allclose(other[98 + 49], base[98 + 49])  # second step moved by one frame


# ---------------------------------------------------------------------------------------------
# Interpolated kernels


def _linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """1-D linear interpolation with half-pixel centres, clamped at the borders."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(np.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += 1.0 - (src - lo)
        m[i, hi] += src - lo
    return m


@pytest.mark.parametrize("name", ["tubevit_b", "tubevit_synth"])
def test_frozen_kernels_are_the_trilinear_resize_of_the_learned_kernel(name):
    model = tiny(name)
    embed = model.tube_embed
    learned = embed.kernel.detach().double().numpy()
    for i, tube in enumerate(model.config.tubes):
        mt, mh, mw = (_linear_resize_matrix(a, b) for a, b in zip(learned.shape[2:], tube.kernel))
        expected = np.einsum("at,bh,cw,oithw->oiabc", mt, mh, mw, learned)
        frozen = getattr(embed, f"frozen_kernel_{i}")
        assert tuple(frozen.shape[2:]) == tube.kernel
        np.testing.assert_allclose(frozen.double().numpy(), expected, atol=1e-6)
        assert torch.equal(getattr(embed, f"frozen_bias_{i}"), embed.bias[i].detach())
    # the frozen kernels are derived state, not checkpoint content
    assert not any(k.startswith("tube_embed.frozen_") for k in model.state_dict())


def test_training_interpolates_on_the_fly_and_eval_refreezes():
    model = tiny("tubevit_synth")
    x = clip("tubevit_synth", batch=2)
    with torch.no_grad():
        eval_tokens = model.tube_embed(x)
    model.train()
    train_tokens = model.tube_embed(x)
    assert torch.allclose(train_tokens, eval_tokens, atol=1e-5)
    loss = model(x).square().mean()
    loss.backward()
    assert model.tube_embed.kernel.grad.abs().sum() > 0
    with torch.no_grad():
        model.tube_embed.kernel.add_(0.1 * model.tube_embed.kernel.grad.sign())
        stale = model.tube_embed.frozen_kernel_3.clone()
        moved_train = model.tube_embed(x)
    model.eval()
    assert not torch.equal(stale, model.tube_embed.frozen_kernel_3)
    with torch.no_grad():
        assert torch.allclose(model.tube_embed(x), moved_train, atol=1e-5)


def test_load_state_dict_refreshes_frozen_kernels_in_eval_mode():
    source, target = tiny("tubevit_synth", seed=0), tiny("tubevit_synth", seed=1)
    x = clip("tubevit_synth")
    with torch.no_grad():
        assert not torch.allclose(source(x), target(x))
        target.load_state_dict(source.state_dict())
        assert torch.equal(target(x), source(x))


# ---------------------------------------------------------------------------------------------
# Checkpoints in the unofficial (daniel-code/TubeViT) layout, built here from our model


def to_unofficial(sd: dict, depth: int, num_tubes: int, generation: str = "current") -> dict:
    """Our state dict -> daniel-code/TubeViT names.

    current: per-tube ``conv_proj_biases.{i}``, ``pos_embedding`` (tokens, D), no class token,
    torchvision ``mlp.0``/``mlp.3``. older: stacked ``conv_proj_bias``, ``class_token`` with a
    first ``pos_embedding`` row of its own, torchvision<0.13 ``mlp.linear_1``/``mlp.linear_2``.
    """
    sd = {k: v.clone() for k, v in sd.items()}
    used = set()

    def take(key):
        used.add(key)
        return sd[key]

    out = {"sparse_tubes_tokenizer.conv_proj_weight": take("tube_embed.kernel")}
    bias = take("tube_embed.bias")
    if generation == "current":
        for i in range(num_tubes):
            out[f"sparse_tubes_tokenizer.conv_proj_biases.{i}"] = bias[i]
        out["pos_embedding"] = take("pos_embed")
        fc1, fc2 = "mlp.0", "mlp.3"
    else:
        out["sparse_tubes_tokenizer.conv_proj_bias"] = bias
        row0 = torch.randn(1, bias.shape[1])  # their class token's position, added to it
        out["class_token"] = take("cls_token") - row0.reshape(1, 1, -1)
        out["pos_embedding"] = torch.cat((row0, take("pos_embed")), dim=0)
        fc1, fc2 = "mlp.linear_1", "mlp.linear_2"
    for i in range(depth):
        theirs, ours = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        for their_name, our_name in (
            ("ln_1.weight", "norm1.weight"), ("ln_1.bias", "norm1.bias"),
            ("self_attention.in_proj_weight", "attn.qkv.weight"), ("self_attention.in_proj_bias", "attn.qkv.bias"),
            ("self_attention.out_proj.weight", "attn.proj.weight"), ("self_attention.out_proj.bias", "attn.proj.bias"),
            ("ln_2.weight", "norm2.weight"), ("ln_2.bias", "norm2.bias"),
            (f"{fc1}.weight", "mlp.fc1.weight"), (f"{fc1}.bias", "mlp.fc1.bias"),
            (f"{fc2}.weight", "mlp.fc2.weight"), (f"{fc2}.bias", "mlp.fc2.bias"),
        ):
            out[theirs + their_name] = take(ours + our_name)
    for their_name, our_name in (
        ("encoder.ln.weight", "norm.weight"), ("encoder.ln.bias", "norm.bias"),
        ("attention_pooling.W.weight", "pool.score.weight"), ("attention_pooling.W.bias", "pool.score.bias"),
        ("heads.head.weight", "head.weight"), ("heads.head.bias", "head.bias"),
    ):
        out[their_name] = take(our_name)
    assert used == set(sd), f"table misses {set(sd) - used}"
    return out


def test_unofficial_lightning_checkpoint_loads_with_identical_outputs(tmp_path):
    source = tiny("tubevit_synth", seed=3)
    foreign = to_unofficial(source.state_dict(), depth=2, num_tubes=4)
    path = tmp_path / "tubevit.ckpt"
    torch.save({"epoch": 3, "state_dict": {"model." + k: v for k, v in foreign.items()}}, path)
    loaded = create_model("tubevit_synth", weights=str(path), **TINY["tubevit_synth"])
    x = clip("tubevit_synth", batch=2)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    fresh = create_model("tubevit_synth", **TINY["tubevit_synth"])
    assert load_checkpoint(fresh, str(path), family="tubevit") == "unofficial"


def test_older_unofficial_layout_with_class_token(tmp_path):
    source = tiny("tubevit_b", seed=4, class_token=True)
    foreign = to_unofficial(source.state_dict(), depth=2, num_tubes=4, generation="older")
    path = tmp_path / "tubevit_old.pt"
    torch.save(foreign, path)
    loaded = create_model("tubevit_b", weights=str(path), class_token=True, **TINY["tubevit_b"])
    x = clip("tubevit_b")
    with torch.no_grad():
        assert torch.allclose(loaded(x), source(x), atol=1e-5)
    with pytest.raises(CheckpointError, match="cls_token"):  # the paper's model has no class token
        create_model("tubevit_b", weights=str(path), **TINY["tubevit_b"])


def test_other_head_size_needs_num_classes(tmp_path):
    source = tiny("tubevit_synth", seed=5, num_classes=5)
    path = tmp_path / "five.pt"
    torch.save(to_unofficial(source.state_dict(), depth=2, num_tubes=4), path)
    with pytest.raises(CheckpointError, match="num-classes"):
        create_model("tubevit_synth", weights=str(path), **TINY["tubevit_synth"])
    model = create_model("tubevit_synth", num_classes=8, weights=str(path), **TINY["tubevit_synth"])
    assert model.head.weight.shape == (8, 24)
    theirs, ours = source.state_dict(), model.state_dict()
    for key in theirs:
        if key not in model.classifier_keys:
            assert torch.equal(theirs[key], ours[key]), key
    with torch.no_grad():
        assert torch.equal(model.forward_features(clip("tubevit_synth")),
                           source.forward_features(clip("tubevit_synth")))


def test_per_tube_kernel_checkpoint_is_refused(tmp_path):
    foreign = to_unofficial(tiny("tubevit_synth").state_dict(), depth=2, num_tubes=4)
    kernel = foreign.pop("sparse_tubes_tokenizer.conv_proj_weight")
    for i, tube in enumerate(tubevit.SYNTH_TUBES):
        foreign[f"sparse_tubes_tokenizer.conv_proj_weights.{i}"] = F.interpolate(kernel, size=tube.kernel)
    path = tmp_path / "independent.pt"
    torch.save(foreign, path)
    with pytest.raises(CheckpointError, match="per-tube kernels"):
        create_model("tubevit_synth", weights=str(path), **TINY["tubevit_synth"])


# ---------------------------------------------------------------------------------------------
# Export


def _onnx_checks(path, x: torch.Tensor, expected: torch.Tensor) -> float:
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"MatMul", "Softmax", "Conv"} <= ops and "Resize" not in ops, ops
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert len(convs) == 4 and all(node.input[1] in constants for node in convs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return float(np.abs(out - expected.numpy()).max())


@pytest.mark.parametrize("name", VARIANTS)
def test_export_tiny(name, tmp_path):
    model = tiny(name)
    x = clip(name)
    with torch.no_grad():
        expected = model(x)
    program = torch.export.export(model, (x,), strict=True)
    assert torch.allclose(program.module()(x), expected, atol=1e-5)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    assert _onnx_checks(path, x, expected) <= 1e-4


def test_export_dynamic_batch(tmp_path):
    model = tiny("tubevit_synth")
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(model, (clip("tubevit_synth", 2),), dynamic_shapes={"x": {0: batch}}, strict=True)
    x = clip("tubevit_synth", batch=3, seed=7)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_export_full_size(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(get_spec(name).input_shape(1))
    with torch.no_grad():
        expected = model(x)
    start = time.perf_counter()
    torch.export.export(model, (x,), strict=True)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    seconds = time.perf_counter() - start
    diff = _onnx_checks(path, x, expected)
    print(f"{name}: torch.export + ONNX export {seconds:.1f} s, ORT vs eager max-abs {diff:.2e}")
    assert diff <= 1e-4
