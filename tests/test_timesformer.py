"""TimeSformer: registry entries, published figures, semantics against a naive reference,
checkpoint layouts, embedding resizing and export (tiny configurations; full size is `slow`)."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import edgevid.models.timesformer as ts
from edgevid.errors import CheckpointError
from edgevid.models import create_model, get_spec, list_models
from edgevid.models.checkpoint import load_checkpoint
from edgevid.spec import KINETICS_NORM

FULL = ("timesformer_b", "timesformer_hr", "timesformer_l")
TINY = dict(img_size=32, patch_size=16, num_frames=3, embed_dim=24, depth=2, num_heads=2)
# Small enough for create_model round trips: the synth variant with a reduced width/depth.
SMALL_SYNTH = dict(embed_dim=32, depth=2, num_heads=2)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded random values in every parameter (LayerNorm scales around 1) so that nothing is
    zero-initialised and any mis-mapped key changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            values = torch.randn(p.shape, generator=gen) * 0.1
            if "norm" in name and name.endswith("weight"):
                values += 1.0
            p.copy_(values)
    return model.eval()


def tiny(attention_type: str = "divided_space_time", seed: int = 0, **overrides) -> ts.TimeSformer:
    model = ts.TimeSformer(ts.TimeSformerConfig(attention_type=attention_type, **{**TINY, **overrides}), num_classes=5)
    return randomize(model, seed)


def clip(shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def macs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-adds of one forward (FlopCounterMode counts 2 FLOPs per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return counter.get_total_flops() / 2


# ------------------------------------------------------------------------------------------
# Registry and published figures


def test_variants_registered_with_specs():
    assert set(FULL) | {"timesformer_synth"} <= set(list_models())
    expected = {  # frames, sampling stride, crop, top-1 (official README, K400, 1x3 views)
        "timesformer_b": (8, 32, 224, 77.9),
        "timesformer_hr": (16, 16, 448, 79.6),
        "timesformer_l": (96, 4, 224, 80.6),
    }
    for name, (frames, stride, crop, top1) in expected.items():
        spec = get_spec(name)
        assert spec.family == "timesformer" and spec.num_classes == 400 and spec.label_set == "kinetics400"
        c = spec.clip
        assert (c.frames, c.stride, c.crop, c.short_side) == (frames, stride, crop, crop)
        assert (c.test_clips, c.test_crops) == (1, 3)
        assert spec.norm == KINETICS_NORM and spec.layout == "NCTHW"
        assert spec.published.top1 == top1 and spec.published.params_m == 121.4
        assert set(spec.checkpoint_layouts) == {"official", "huggingface"}
        assert spec.checkpoint_url.endswith(f"{frames}x{stride}_{crop}_K400.pyth")
    assert get_spec("timesformer").name == "timesformer_b"

    synth = get_spec("timesformer_synth")
    # 8x8-pixel patches on a 64-px crop (short side 73: the 112/128 field of view of the other references)
    assert (synth.clip.frames, synth.clip.stride, synth.clip.crop, synth.clip.short_side) == (8, 3, 64, 73)
    assert (synth.clip.test_clips, synth.clip.test_crops, synth.num_classes) == (1, 1, 8)
    assert synth.label_set == "synthmotion" and synth.norm == KINETICS_NORM
    assert synth.published.params_m is None and synth.published.gflops is None
    assert synth.published.top1 is None
    assert synth.published.source == "edgevid reference model"


@pytest.mark.parametrize("name", FULL)
def test_full_size_params_and_gflops_match_the_paper(name):
    spec = get_spec(name)
    with torch.device("meta"):
        model = create_model(name)
        x = torch.empty(spec.input_shape())
        gmacs = macs(model, x) / 1e9
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{name}: {params_m:.3f}M params, {gmacs:.1f} GMACs/view (published {spec.published.gflops:.1f})")
    assert abs(params_m - spec.published.params_m) / spec.published.params_m < 0.01
    # The paper's TFLOPs for 3 views (0.59 / 5.11 / 7.14), per view, count multiply-adds.
    assert abs(gmacs - spec.published.gflops) / spec.published.gflops < 0.02


def test_synth_variant_fits_the_budget():
    model = create_model("timesformer_synth")
    spec = get_spec("timesformer_synth")
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    gmacs = macs(model, torch.zeros(spec.input_shape())) / 1e9
    print(f"timesformer_synth: {params} params, {gmacs:.3f} GMACs ({2 * gmacs:.3f} GFLOPs at 2/MAC)/clip,",
          f"{weight_bytes / 1e6:.2f} MB")
    assert params <= 2_000_000 and gmacs <= 0.5 and weight_bytes <= 20e6
    assert model.attention_type == "divided_space_time"
    assert model(torch.zeros(spec.input_shape(2))).shape == (2, 8)


def test_bad_attention_type_and_clip_shape_are_rejected():
    with pytest.raises(ValueError, match="attention_type"):
        ts.TimeSformerConfig(attention_type="axial", **TINY)
    with pytest.raises(ValueError, match="attention_type"):
        create_model("timesformer_synth", attention_type="axial")  # overrides are config fields, checked alike
    with pytest.raises(ValueError, match=r"shape \(N, 3, 3, 32, 32\), got \(1, 3, 4, 32, 32\)"):
        tiny()(torch.zeros(1, 3, 4, 32, 32))


# ------------------------------------------------------------------------------------------
# Semantics: an independent per-token reference written with loops and SDPA


def ref_attention(attn, seq: torch.Tensor) -> torch.Tensor:
    """(L, D) -> (L, D) with the module's weights, computed head by head with SDPA."""
    q, k, v = F.linear(seq, attn.qkv.weight, attn.qkv.bias).chunk(3, dim=-1)
    n = attn.num_heads
    heads = [
        F.scaled_dot_product_attention(qh[None], kh[None], vh[None])[0]
        for qh, kh, vh in zip(q.chunk(n, -1), k.chunk(n, -1), v.chunk(n, -1))
    ]
    return F.linear(torch.cat(heads, dim=-1), attn.proj.weight, attn.proj.bias)


def ref_forward(model: ts.TimeSformer, video: torch.Tensor) -> torch.Tensor:
    """One clip (C, T, H, W) -> logits, token by token: patches indexed [p][t], p = row-major (h, w)."""
    ps = model.patch_embed.proj.kernel_size[0]
    grid = model.patch_embed.grid_size
    frames = video.shape[1]
    conv_w = model.patch_embed.proj.weight.flatten(1)
    conv_b = model.patch_embed.proj.bias
    pos = model.pos_embed[0]

    def patch(t, p):
        h, w = divmod(p, grid)
        pixels = video[:, t, h * ps:(h + 1) * ps, w * ps:(w + 1) * ps].flatten()
        return conv_w @ pixels + conv_b + pos[1 + p]

    def ln(mod, x):
        return F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps)

    def mlp(block, x):
        return x + block.mlp.fc2(F.gelu(block.mlp.fc1(ln(block.norm2, x))))

    cls0 = model.cls_token[0, 0] + pos[0]
    num_p = grid * grid
    if model.attention_type == "space_only":
        cls_out = []
        for t in range(frames):
            seq = torch.stack([cls0] + [patch(t, p) for p in range(num_p)])
            for block in model.blocks:
                seq = mlp(block, seq + ref_attention(block.attn, ln(block.norm1, seq)))
            cls_out.append(seq[0])
        return model.head(ln(model.norm, torch.stack(cls_out).mean(0)))

    tok = [[patch(t, p) + model.time_embed[0, t] for t in range(frames)] for p in range(num_p)]
    cls = cls0
    for block in model.blocks:
        if model.attention_type == "joint_space_time":
            seq = torch.stack([cls] + [tok[p][t] for p in range(num_p) for t in range(frames)])
            seq = mlp(block, seq + ref_attention(block.attn, ln(block.norm1, seq)))
            cls = seq[0]
            tok = [[seq[1 + p * frames + t] for t in range(frames)] for p in range(num_p)]
            continue
        for p in range(num_p):  # temporal attention per patch position
            res = ref_attention(block.temporal_attn, ln(block.temporal_norm1, torch.stack(tok[p])))
            tok[p] = [tok[p][t] + block.temporal_fc(res[t]) for t in range(frames)]
        cls_res = []
        for t in range(frames):  # spatial attention per frame, with its own copy of CLS
            seq = torch.stack([cls] + [tok[p][t] for p in range(num_p)])
            res = ref_attention(block.attn, ln(block.norm1, seq))
            cls_res.append(res[0])
            for p in range(num_p):
                tok[p][t] = tok[p][t] + res[1 + p]
        cls = cls + torch.stack(cls_res).mean(0)
        cls = mlp(block, cls[None])[0]
        tok = [[mlp(block, tok[p][t][None])[0] for t in range(frames)] for p in range(num_p)]
    return model.head(ln(model.norm, cls))


@pytest.mark.parametrize("attention_type", ts.ATTENTION_TYPES)
def test_forward_matches_naive_reference(attention_type):
    model = tiny(attention_type, seed=3)
    x = clip((2, 3, TINY["num_frames"], 32, 32))
    with torch.no_grad():
        out = model(x)
        ref = torch.stack([ref_forward(model, v) for v in x])
    assert out.shape == (2, 5)
    assert ref.abs().max() > 0.1  # logits are not trivially small
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_tokens_are_laid_out_h_w_t():
    model = tiny(seed=4)
    x = clip((1, 3, 3, 32, 32))
    with torch.no_grad():
        tokens = model.embed(x)[0]
        conv = model.patch_embed.proj(x[0].permute(1, 0, 2, 3))  # (T, D, 2, 2)
    frames, grid = 3, 2
    for h in range(grid):
        for w in range(grid):
            for t in range(frames):
                p = h * grid + w
                expected = conv[t, :, h, w] + model.pos_embed[0, 1 + p] + model.time_embed[0, t]
                torch.testing.assert_close(tokens[1 + p * frames + t], expected)
    torch.testing.assert_close(tokens[0], model.cls_token[0, 0] + model.pos_embed[0, 0])


def test_frame_order_matters_except_for_space_only():
    x = clip((1, 3, 3, 32, 32))
    reversed_x = x.flip(2)
    with torch.no_grad():
        space = tiny("space_only", seed=5)
        torch.testing.assert_close(space(x), space(reversed_x))
        divided = tiny("divided_space_time", seed=5)
        assert (divided(x) - divided(reversed_x)).abs().max() > 1e-3


def test_drop_path_is_identity_at_eval():
    plain = tiny(seed=6)
    dropped = ts.TimeSformer(ts.TimeSformerConfig(drop_path_rate=0.5, **TINY), num_classes=5)
    dropped.load_state_dict(plain.state_dict())
    x = clip((2, 3, 3, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(dropped.eval()(x), plain(x))
        assert not torch.allclose(dropped.train()(x), plain(x))


# ------------------------------------------------------------------------------------------
# Checkpoints. Layouts are written here independently of the loader, from the notes and the
# official / Hugging Face naming.


def official_keys(depth: int, divided: bool = True) -> list[str]:
    """Key names of facebookresearch/TimeSformer's VisionTransformer (the notes' list)."""
    keys = ["cls_token", "pos_embed", "time_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "norm.weight", "norm.bias", "head.weight", "head.bias"]
    parts = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    if divided:
        parts += ["temporal_norm1", "temporal_attn.qkv", "temporal_attn.proj", "temporal_fc"]
    keys += [f"blocks.{i}.{part}.{wb}" for i in range(depth) for part in parts for wb in ("weight", "bias")]
    return keys


def hf_key(official: str) -> str:
    """Official name -> TimesformerForVideoClassification name, step by step as HF's converter does."""
    fixed = {
        "cls_token": "timesformer.embeddings.cls_token",
        "pos_embed": "timesformer.embeddings.position_embeddings",
        "time_embed": "timesformer.embeddings.time_embeddings",
        "norm.weight": "timesformer.layernorm.weight",
        "norm.bias": "timesformer.layernorm.bias",
        "head.weight": "classifier.weight",
        "head.bias": "classifier.bias",
    }
    if official in fixed:
        return fixed[official]
    if official.startswith("patch_embed.proj."):
        return "timesformer.embeddings.patch_embeddings.projection." + official.split(".")[-1]
    _, index, *module, param = official.split(".")
    per_block = {
        "attn.qkv": "attention.attention.qkv",
        "attn.proj": "attention.output.dense",
        "temporal_attn.qkv": "temporal_attention.attention.qkv",
        "temporal_attn.proj": "temporal_attention.output.dense",
        "temporal_norm1": "temporal_layernorm",
        "temporal_fc": "temporal_dense",
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }
    return f"timesformer.encoder.layer.{index}.{per_block['.'.join(module)]}.{param}"


def small_synth(seed: int, **overrides) -> ts.TimeSformer:
    return randomize(ts.timesformer_synth(**{**SMALL_SYNTH, **overrides}), seed)


def synth_clip(batch: int = 1) -> torch.Tensor:
    return clip(get_spec("timesformer_synth").input_shape(batch), seed=7)


@pytest.mark.parametrize("attention_type", ts.ATTENTION_TYPES)
def test_official_layout_loads_through_create_model(tmp_path, attention_type):
    source = small_synth(seed=8, attention_type=attention_type)
    ours = source.state_dict()
    divided = attention_type == "divided_space_time"
    expected = [k for k in official_keys(SMALL_SYNTH["depth"], divided)
                if not (k == "time_embed" and attention_type == "space_only")]
    assert sorted(ours) == sorted(expected)  # our names are the official names
    path = tmp_path / "TimeSformer_official.pyth"
    torch.save({"model_state": {"model." + k: ours[k].clone() for k in expected}, "epoch": 15}, path)

    loaded = create_model("timesformer_synth", weights=str(path), attention_type=attention_type,
                          **SMALL_SYNTH)
    x = synth_clip(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


@pytest.mark.parametrize("attention_type", ["divided_space_time", "joint_space_time"])
def test_huggingface_layout_loads_through_create_model(tmp_path, attention_type):
    source = small_synth(seed=9, attention_type=attention_type)
    hf = {hf_key(k): v.clone() for k, v in source.state_dict().items()}
    assert "timesformer.encoder.layer.0.attention.attention.qkv.weight" in hf
    if attention_type == "divided_space_time":
        assert "timesformer.encoder.layer.1.temporal_attention.output.dense.bias" in hf
    path = tmp_path / "pytorch_model.bin"
    torch.save(hf, path)

    loaded = create_model("timesformer_synth", weights=str(path), attention_type=attention_type,
                          **SMALL_SYNTH)
    x = synth_clip()
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    # Hugging Face's model takes (B, T, C, H, W): the same clip, permuted.
    assert x.permute(0, 2, 1, 3, 4).shape == (1, 8, 3, 64, 64)


def test_other_head_size_needs_num_classes(tmp_path):
    source = small_synth(seed=10, num_classes=5)
    path = tmp_path / "five.pyth"
    torch.save({"model_state": {"model." + k: v for k, v in source.state_dict().items()}}, path)

    with pytest.raises(CheckpointError, match="head.weight.*num-classes"):
        create_model("timesformer_synth", weights=str(path), **SMALL_SYNTH)

    loaded = create_model("timesformer_synth", num_classes=8, weights=str(path), **SMALL_SYNTH)
    assert loaded.head.weight.shape == (8, SMALL_SYNTH["embed_dim"])
    src, new = source.state_dict(), loaded.state_dict()
    for key in src:
        if key not in ts.TimeSformer.classifier_keys:
            assert torch.equal(src[key], new[key]), key
    with torch.no_grad():
        x = synth_clip()
        torch.testing.assert_close(loaded.forward_features(x), source.forward_features(x))


def test_embedding_size_mismatch_is_an_error_unless_resized():
    # A checkpoint trained at 2 frames x 32 px (grid 2x2) into a 4-frame x 64 px model (grid 4x4).
    source = tiny(seed=11, num_frames=2)
    target = ts.TimeSformer(ts.TimeSformerConfig(**{**TINY, "num_frames": 4, "img_size": 64}), num_classes=5)
    with pytest.raises(CheckpointError, match=r"pos_embed \(1, 5, 24\) vs model \(1, 17, 24\)") as err:
        load_checkpoint(target, source.state_dict(), family="timesformer")
    assert "time_embed (1, 2, 24) vs model (1, 4, 24)" in str(err.value)

    resized = ts.resize_embeddings(source.state_dict(), target)
    assert load_checkpoint(target, resized, family="timesformer") == "edgevid"
    time_embed = source.time_embed.detach()
    torch.testing.assert_close(target.time_embed.detach(), time_embed.repeat_interleave(2, dim=1))
    grid = source.pos_embed.detach()[0, 1:].reshape(2, 2, -1)
    expected = grid.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1).reshape(1, 16, -1)
    torch.testing.assert_close(target.pos_embed.detach()[:, 1:], expected)
    torch.testing.assert_close(target.pos_embed.detach()[:, 0], source.pos_embed.detach()[:, 0])
    for key, value in source.state_dict().items():
        if key not in ("pos_embed", "time_embed"):
            assert torch.equal(target.state_dict()[key], value), key


def test_foreign_layout_is_rejected():
    model = tiny()
    with pytest.raises(CheckpointError, match="no known timesformer layout"):
        load_checkpoint(model, {"backbone.conv1.weight": torch.zeros(1)}, family="timesformer")


# ------------------------------------------------------------------------------------------
# Export


def export_and_compare(model: torch.nn.Module, x: torch.Tensor, path) -> tuple[float, float, set[str]]:
    """torch.export (strict) and dynamo ONNX export; return (export seconds, ORT max-abs diff, op types)."""
    import onnx
    import onnxruntime as ort

    start = time.perf_counter()
    torch.export.export(model, (x,), strict=True)
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    return seconds, float(abs(got - expected).max()), ops


@pytest.mark.parametrize("attention_type", ts.ATTENTION_TYPES)
def test_tiny_exports_match_onnxruntime(tmp_path, attention_type):
    pytest.importorskip("onnxruntime")
    model = tiny(attention_type, seed=12)
    x = clip((1, 3, TINY["num_frames"], 32, 32))
    _, diff, ops = export_and_compare(model, x, tmp_path / "tiny.onnx")
    assert diff <= 1e-4
    assert {"MatMul", "Softmax"} <= ops and not any("Attention" in op for op in ops)


def test_synth_variant_exports_match_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    model = randomize(create_model("timesformer_synth"), seed=13)
    _, diff, _ = export_and_compare(model, synth_clip(), tmp_path / "synth.onnx")
    assert diff <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_export(tmp_path, name):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model(name, weights="random")
    x = torch.randn(get_spec(name).input_shape())
    seconds, diff, _ = export_and_compare(model, x, tmp_path / f"{name}.onnx")
    print(f"{name}: export {seconds:.1f} s, ORT vs eager max-abs {diff:.2e}")
    assert diff <= 1e-4 and math.isfinite(diff)
