"""UniFormerV2: registry entries, sizes, faithfulness to the official forward, checkpoint layouts,
export. Unit tests run on tiny configurations of each variant (same code paths); full-size
export is the ``slow`` test at the end."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgevid.models.uniformerv2 as uv2
from edgevid.errors import CheckpointError
from edgevid.models.checkpoint import load_checkpoint
from edgevid.models.registry import create_model, get_entry, get_spec, list_models

VARIANTS = ("uniformerv2_b16", "uniformerv2_l14", "uniformerv2_b16_ssv2", "uniformerv2_synth")

# Tiny versions of each variant: only sizes change; stem kind, Local MHRA flags and t_size stay.
TINY = {
    "uniformerv2_b16": dict(input_resolution=32, width=32, layers=2, heads=2, return_list=(0, 1),
                            n_layers=2, n_dim=32, n_head=2),
    "uniformerv2_l14": dict(input_resolution=28, width=32, layers=2, heads=2, return_list=(0, 1),
                            n_layers=2, n_dim=32, n_head=2),
    "uniformerv2_b16_ssv2": dict(input_resolution=32, width=32, layers=2, heads=2, return_list=(0, 1),
                                 n_layers=2, n_dim=32, n_head=2),
    "uniformerv2_synth": dict(layers=2, return_list=(0, 1), n_layers=2),
}


def _clip(model: uv2.UniFormerV2, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = model.input_resolution
    return torch.randn(batch, 3, model.in_frames, size, size, generator=g)


@torch.no_grad()
def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded random values for every parameter and BN statistic, zero-initialised ones included."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(torch.randn(b.shape, generator=g) * 0.1)
        elif name.endswith("running_var"):
            b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


# ------------------------------------------------------------------------------------------
# Registry and sizes
# ------------------------------------------------------------------------------------------

def test_variants_registered_with_specs():
    assert set(VARIANTS) <= set(list_models())
    assert get_spec("uniformerv2_b").name == "uniformerv2_b16"
    assert get_spec("uniformerv2_l").name == "uniformerv2_l14"
    b = get_spec("uniformerv2_b16")
    assert (b.clip.frames, b.clip.stride, b.clip.crop, b.clip.short_side) == (8, 16, 224, 224)
    assert (b.clip.test_clips, b.clip.test_crops, b.num_classes, b.label_set) == (4, 3, 400, "kinetics400")
    assert b.norm.mean == (0.45,) * 3 and b.norm.std == (0.225,) * 3
    assert set(b.checkpoint_layouts) == {"official", "mmaction2"}
    s = get_spec("uniformerv2_b16_ssv2")
    assert (s.clip.frames, s.num_classes, s.label_set, s.clip.test_crops) == (16, 174, "ssv2", 3)
    syn = get_spec("uniformerv2_synth")
    assert (syn.clip.frames, syn.clip.stride, syn.clip.crop, syn.clip.short_side) == (8, 3, 112, 128)
    assert (syn.num_classes, syn.label_set, syn.clip.test_clips, syn.clip.test_crops) == (8, "synthmotion", 1, 1)
    assert syn.published.params_m is None and syn.published.source == "edgevid reference model"


def _meta_model(name: str, **kwargs) -> uv2.UniFormerV2:
    with torch.device("meta"):
        return get_entry(name).builder(num_classes=get_spec(name).num_classes, **kwargs)


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_full_size_configs_and_parameter_counts():
    b16, l14, ssv2 = (_meta_model(n) for n in VARIANTS[:3])
    counts = {n: _count(m) for n, m in zip(VARIANTS, (b16, l14, ssv2))}
    print({n: f"{c / 1e6:.2f}M" for n, c in counts.items()})
    # Notes: B/16 K400 ~114.5M (MMAction2 115M), L/14 ~354M.
    assert abs(counts["uniformerv2_b16"] / 1e6 - 114.5) / 114.5 < 0.01
    assert abs(counts["uniformerv2_l14"] / 1e6 - 354.0) / 354.0 < 0.01
    for name in VARIANTS[:2]:
        published = get_spec(name).published.params_m
        assert abs(counts[name] / 1e6 - published) / published < 0.01

    assert b16.patch_embed.kernel_size == (1, 16, 16) and b16.grid == (8, 14, 14)
    assert b16.blocks[0].lmhra1 is None and sorted(b16.global_after) == [8, 9, 10, 11]
    assert l14.patch_embed.kernel_size == (1, 14, 14) and len(l14.blocks) == 24
    assert sorted(l14.global_after) == [20, 21, 22, 23] and l14.pos_embed.shape == (257, 1024)
    assert ssv2.patch_embed.kernel_size == (3, 16, 16) and ssv2.patch_embed.stride == (2, 16, 16)
    assert ssv2.grid == (8, 14, 14) and sorted(ssv2.global_after) == list(range(4, 12))

    # SSv2 = K400 B/16 + 12x2 Local MHRA + 4 more global blocks + 3-frame stem - smaller head.
    c, inner = 768, 512
    lmhra = 2 * c + (c * inner + inner) + (inner * 3 + inner) + (inner * c + c)
    global_block = (27 * c + c) + 3 * 2 * c + (4 * c * c + 4 * c) + (2 * c * 4 * c + 4 * c + c)
    expected = counts["uniformerv2_b16"] + 24 * lmhra + 4 * global_block + 2 * (c * 3 * 16 * 16) - (400 - 174) * (c + 1)
    assert counts["uniformerv2_b16_ssv2"] == expected


def test_synth_budget_and_parts():
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("uniformerv2_synth")
    params = _count(model)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(get_spec("uniformerv2_synth").input_shape(1)))
    flops = counter.get_total_flops()  # 2 per multiply-add
    size_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
    print(f"uniformerv2_synth: {params / 1e6:.3f}M params, {flops / 1e9:.3f} GFLOPs"
          f" ({flops / 2e9:.3f} GMACs) per clip, {size_mb:.1f} MB")
    assert params <= 2.0e6 and flops <= 0.5e9 and size_mb <= 20
    assert len(model.global_blocks) >= 2 and model.blocks[0].lmhra1 is not None
    assert model.blocks[0].lmhra2 is not None and model.patch_embed.stride[0] == 2


def test_synth_trains_every_distinctive_part():
    """Gradients reach the global and local UniBlocks from the official zero-initialised start.
    (The last layer's second Local MHRA only acts through the zero-initialised extractor, so its
    gradient is zero until the extractor's output projection has moved: not checked.)"""
    torch.manual_seed(0)
    model = create_model("uniformerv2_synth").train()
    x = torch.randn(1, 3, 8, 112, 112)
    loss = F.cross_entropy(model(x), torch.tensor([5]))
    loss.backward()
    for name in ("global_query", "global_blocks.0.attn.proj.weight", "global_blocks.3.mlp.fc2.weight",
                 "blocks.0.lmhra1.expand.weight", "blocks.4.lmhra2.expand.weight", "balance", "patch_embed.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_config_errors_and_input_check():
    with pytest.raises(ValueError, match="return_list"):
        uv2.UniFormerV2Config(input_resolution=32, width=32, layers=2, heads=2, n_dim=32, n_head=2,
                              return_list=(1, 2), n_layers=2)
    with pytest.raises(ValueError, match="n_dim"):
        uv2.UniFormerV2Config(input_resolution=32, width=32, layers=2, heads=2, n_dim=64, n_head=2,
                              return_list=(1,), n_layers=1)
    with pytest.raises(ValueError, match="n_dim"):  # overrides of a variant are config fields, checked alike
        create_model("uniformerv2_b16", **dict(TINY["uniformerv2_b16"], n_dim=64))
    model = create_model("uniformerv2_b16", **TINY["uniformerv2_b16"])
    with pytest.raises(ValueError, match="expects clips"):
        model(torch.zeros(1, 3, 4, 32, 32))


def test_drop_path_is_identity_at_eval():
    model = _randomise(create_model("uniformerv2_b16_ssv2", **TINY["uniformerv2_b16_ssv2"]))
    assert model.blocks[-1].drop_path.drop_prob > 0 and model.global_blocks[-1].drop_path.drop_prob > 0
    x = _clip(model)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# ------------------------------------------------------------------------------------------
# Official key layout, written here independently of the loader
# ------------------------------------------------------------------------------------------

_OURS_TO_OFFICIAL = [
    (r"patch_embed\.weight", "conv1.weight"),
    (r"cls_token", "class_embedding"),
    (r"pos_embed", "positional_embedding"),
    (r"norm_pre\.(\w+)", r"ln_pre.\1"),
    (r"blocks\.(\d+)\.norm1\.(\w+)", r"transformer.resblocks.\1.ln_1.\2"),
    (r"blocks\.(\d+)\.norm2\.(\w+)", r"transformer.resblocks.\1.ln_2.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.weight", r"transformer.resblocks.\1.attn.in_proj_weight"),
    (r"blocks\.(\d+)\.attn\.qkv\.bias", r"transformer.resblocks.\1.attn.in_proj_bias"),
    (r"blocks\.(\d+)\.attn\.proj\.(\w+)", r"transformer.resblocks.\1.attn.out_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(\w+)", r"transformer.resblocks.\1.mlp.c_fc.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(\w+)", r"transformer.resblocks.\1.mlp.c_proj.\2"),
    (r"blocks\.(\d+)\.(lmhra[12])\.norm\.(\w+)", r"transformer.resblocks.\1.\2.pos_embed.0.\3"),
    (r"blocks\.(\d+)\.(lmhra[12])\.reduce\.(\w+)", r"transformer.resblocks.\1.\2.pos_embed.1.\3"),
    (r"blocks\.(\d+)\.(lmhra[12])\.temporal\.(\w+)", r"transformer.resblocks.\1.\2.pos_embed.2.\3"),
    (r"blocks\.(\d+)\.(lmhra[12])\.expand\.(\w+)", r"transformer.resblocks.\1.\2.pos_embed.3.\3"),
    (r"global_query", "transformer.temporal_cls_token"),
    (r"global_blocks\.(\d+)\.dpe\.(\w+)", r"transformer.dpe.\1.\2"),
    (r"global_blocks\.(\d+)\.norm_q\.(\w+)", r"transformer.dec.\1.ln_1.\2"),
    (r"global_blocks\.(\d+)\.norm_mlp\.(\w+)", r"transformer.dec.\1.ln_2.\2"),
    (r"global_blocks\.(\d+)\.norm_kv\.(\w+)", r"transformer.dec.\1.ln_3.\2"),
    (r"global_blocks\.(\d+)\.attn\.proj\.(\w+)", r"transformer.dec.\1.attn.out_proj.\2"),
    (r"global_blocks\.(\d+)\.mlp\.fc1\.(\w+)", r"transformer.dec.\1.mlp.c_fc.\2"),
    (r"global_blocks\.(\d+)\.mlp\.fc2\.(\w+)", r"transformer.dec.\1.mlp.c_proj.\2"),
    (r"balance", "transformer.balance"),
    (r"fc_norm\.(\w+)", r"transformer.proj.0.\1"),
    (r"head\.(\w+)", r"transformer.proj.2.\1"),
]
_MMACTION2_HEAD = {"transformer.proj.0.": "backbone.transformer.norm.", "transformer.proj.2.": "cls_head.fc_cls."}


def to_official(sd: dict, prefix: str = "backbone.") -> dict:
    """Our state dict -> the official OpenGVLab naming (extractor q/kv fused into in_proj)."""
    out = {}
    for key, value in sd.items():
        fused = re.fullmatch(r"global_blocks\.(\d+)\.attn\.q\.(weight|bias)", key)
        if fused:
            j, kind = fused.groups()
            out[f"{prefix}transformer.dec.{j}.attn.in_proj_{kind}"] = torch.cat(
                [value, sd[f"global_blocks.{j}.attn.kv.{kind}"]])
            continue
        if re.fullmatch(r"global_blocks\.\d+\.attn\.kv\.\w+", key):
            continue
        hits = [re.sub(f"^{ours}$", theirs, key) for ours, theirs in _OURS_TO_OFFICIAL if re.fullmatch(ours, key)]
        assert len(hits) == 1, (key, hits)
        out[prefix + hits[0]] = value
    return out


def to_mmaction2(sd: dict) -> dict:
    out = {}
    for key, value in to_official(sd).items():
        for old, new in _MMACTION2_HEAD.items():
            key = key.replace("backbone." + old, new)
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------
# Reference forward from the official state dict (sequence-first, torch's MHA), from the notes
# ------------------------------------------------------------------------------------------

def _ln(w, x, name):
    return F.layer_norm(x, x.shape[-1:], w[name + ".weight"], w[name + ".bias"])


def _mlp(w, x, name):
    h = F.linear(x, w[name + ".c_fc.weight"], w[name + ".c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)
    return F.linear(h, w[name + ".c_proj.weight"], w[name + ".c_proj.bias"])


def _mha(w, q, kv, name, heads):
    return F.multi_head_attention_forward(
        q, kv, kv, q.shape[-1], heads, w[name + ".in_proj_weight"], w[name + ".in_proj_bias"], None, None,
        False, 0.0, w[name + ".out_proj.weight"], w[name + ".out_proj.bias"], training=False, need_weights=False,
    )[0]


def _local_mhra(w, x, name, n, t, h, wd):
    """x (1+HW, N*T, C): BN -> 1x1x1 -> depthwise (3,1,1) -> 1x1x1 on the patch tokens, residual."""
    c = x.shape[-1]
    grid = x[1:].reshape(h, wd, n, t, c).permute(2, 4, 3, 0, 1)
    y = F.batch_norm(grid, w[name + ".0.running_mean"], w[name + ".0.running_var"],
                     w[name + ".0.weight"], w[name + ".0.bias"], False)
    y = F.conv3d(y, w[name + ".1.weight"], w[name + ".1.bias"])
    y = F.conv3d(y, w[name + ".2.weight"], w[name + ".2.bias"], padding=(1, 0, 0), groups=y.shape[1])
    y = F.conv3d(y, w[name + ".3.weight"], w[name + ".3.bias"])
    grid = grid + y
    return torch.cat([x[:1], grid.permute(3, 4, 0, 2, 1).reshape(h * wd, n * t, c)])


def reference_forward(w: dict, x: torch.Tensor, cfg: dict) -> torch.Tensor:
    w = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in w.items()}
    p, heads = cfg["patch_size"], cfg["heads"]
    td = cfg["temporal_downsample"]
    x = F.conv3d(x, w["conv1.weight"], stride=(2 if td else 1, p, p), padding=(1 if td else 0, 0, 0))
    n, c, t, h, wd = x.shape
    x = x.permute(0, 2, 3, 4, 1).reshape(n * t, h * wd, c)
    x = torch.cat([w["class_embedding"].expand(n * t, 1, c), x], dim=1) + w["positional_embedding"]
    x = _ln(w, x, "ln_pre").transpose(0, 1)  # (L, N*T, C)
    length = x.shape[0]
    query = w["transformer.temporal_cls_token"].repeat(1, n, 1)  # (1, N, C)
    j = 0
    for i in range(cfg["layers"]):
        b = f"transformer.resblocks.{i}."
        if not cfg["no_lmhra"]:
            x = _local_mhra(w, x, b + "lmhra1.pos_embed", n, t, h, wd)
        y = _ln(w, x, b + "ln_1")
        x = x + _mha(w, y, y, b + "attn", heads)
        if not cfg["no_lmhra"] and cfg["double_lmhra"]:
            x = _local_mhra(w, x, b + "lmhra2.pos_embed", n, t, h, wd)
        x = x + _mlp(w, _ln(w, x, b + "ln_2"), b + "mlp")
        if i in cfg["return_list"]:
            d = f"transformer.dec.{j}."
            tokens = x.reshape(length, n, t, c)
            feats = tokens[1:].permute(1, 3, 2, 0).reshape(n, c, t, h, wd)
            feats = F.conv3d(feats, w[f"transformer.dpe.{j}.weight"], w[f"transformer.dpe.{j}.bias"], padding=1, groups=c)
            tokens = torch.cat([tokens[:1], tokens[1:] + feats.reshape(n, c, t, h * wd).permute(3, 0, 2, 1)])
            context = tokens.permute(2, 0, 1, 3).reshape(t * length, n, c)
            query = query + _mha(w, _ln(w, query, d + "ln_1"), _ln(w, context, d + "ln_3"), d + "attn", cfg["n_head"])
            query = query + _mlp(w, _ln(w, query, d + "ln_2"), d + "mlp")
            j += 1
    weight = torch.sigmoid(w["transformer.balance"])
    feature = (1 - weight) * query[0] + weight * x.reshape(length, n, t, c)[0].mean(1)
    feature = _ln(w, feature, "transformer.proj.0")
    return F.linear(feature, w["transformer.proj.2.weight"], w["transformer.proj.2.bias"])


REFERENCE_CONFIGS = {
    "global_only_unsorted_return_list": dict(
        input_resolution=32, patch_size=16, width=32, layers=3, heads=2, t_size=4, temporal_downsample=False,
        no_lmhra=True, double_lmhra=True, return_list=(2, 0), n_layers=2, n_dim=32, n_head=4),
    "single_lmhra_temporal_downsample": dict(
        input_resolution=48, patch_size=16, width=24, layers=2, heads=3, t_size=6, temporal_downsample=True,
        no_lmhra=False, double_lmhra=False, return_list=(0, 1), n_layers=2, n_dim=24, n_head=2),
    "double_lmhra": dict(
        input_resolution=28, patch_size=14, width=32, layers=3, heads=4, t_size=4, temporal_downsample=False,
        no_lmhra=False, double_lmhra=True, dw_reduction=2.0, return_list=(1, 2), n_layers=2, n_dim=32,
        n_head=2, mlp_factor=2.0),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_CONFIGS))
def test_matches_official_forward(name):
    cfg = REFERENCE_CONFIGS[name]
    model = _randomise(uv2.UniFormerV2(uv2.UniFormerV2Config(**cfg), num_classes=7), seed=1)
    x = _clip(model, batch=2, seed=2)
    official = to_official(model.state_dict())
    with torch.no_grad():
        ours, ref = model(x), reference_forward(official, x, cfg)
    assert ours.shape == (2, 7)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_reference_detects_a_wrong_model():
    """The reference comparison can fail: swap k and v of one backbone layer and it must."""
    cfg = REFERENCE_CONFIGS["double_lmhra"]
    model = _randomise(uv2.UniFormerV2(uv2.UniFormerV2Config(**cfg), num_classes=7), seed=1)
    x = _clip(model, seed=2)
    official = to_official(model.state_dict())
    key = "backbone.transformer.resblocks.1.attn.in_proj_weight"
    c = cfg["width"]
    official[key] = torch.cat([official[key][:c], official[key][2 * c:], official[key][c:2 * c]])
    with torch.no_grad():
        assert (model(x) - reference_forward(official, x, cfg)).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------
# Checkpoint layouts through create_model(weights=...)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant,layout,wrapper", [
    ("uniformerv2_b16", "official", None),
    ("uniformerv2_b16_ssv2", "official", "model_state"),
    ("uniformerv2_l14", "mmaction2", "state_dict"),
    ("uniformerv2_synth", "mmaction2", None),
])
def test_checkpoint_layouts_load_through_registry(tmp_path, variant, layout, wrapper):
    source = _randomise(create_model(variant, **TINY[variant]), seed=3)
    sd = {k: v.clone() for k, v in source.state_dict().items()}
    foreign = to_official(sd) if layout == "official" else to_mmaction2(sd)
    assert not set(foreign) & set(sd)
    path = tmp_path / f"{variant}.pth"
    torch.save({wrapper: foreign, "epoch": 7} if wrapper else foreign, path)

    loaded = create_model(variant, weights=str(path), **TINY[variant])
    x = _clip(source, batch=2, seed=4)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    fresh = create_model(variant, **TINY[variant])
    assert load_checkpoint(fresh, str(path), family="uniformerv2") == layout


def test_other_num_classes_reinitialises_head_only_when_asked(tmp_path):
    variant = "uniformerv2_b16_ssv2"
    source = _randomise(create_model(variant, **TINY[variant]), seed=5)
    path = tmp_path / "ssv2.pyth"
    torch.save({"model_state": to_official(source.state_dict())}, path)

    model = create_model(variant, num_classes=5, weights=str(path), **TINY[variant])
    assert model.head.weight.shape == (5, 32)
    theirs = source.state_dict()
    for key, value in model.state_dict().items():
        if key not in model.classifier_keys:
            assert torch.equal(value, theirs[key]), key

    with pytest.raises(CheckpointError, match="--num-classes"):
        load_checkpoint(create_model(variant, num_classes=5, **TINY[variant]), str(path), family="uniformerv2")


def test_checkpoint_of_another_config_is_a_readable_error(tmp_path):
    source = create_model("uniformerv2_b16", **TINY["uniformerv2_b16"])
    path = tmp_path / "b16.pth"
    torch.save(to_official(source.state_dict()), path)
    other = dict(TINY["uniformerv2_b16"], no_lmhra=False)
    with pytest.raises(CheckpointError, match="missing"):
        create_model("uniformerv2_b16", weights=str(path), **other)


# ------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------

def _ort_run(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_export_clean_tiny(tmp_path, variant):
    import onnx

    model = _randomise(create_model(variant, **TINY[variant]), seed=6)
    x = _clip(model, seed=7)
    with torch.no_grad():
        expected = model(x)
    program = torch.export.export(model, (x,), strict=True)
    torch.testing.assert_close(program.module()(x), expected, rtol=1e-5, atol=1e-5)

    path = tmp_path / f"{variant}.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"MatMul", "Softmax"} <= ops and not ops & {"Einsum", "ScatterND", "Attention"}
    diff = np.abs(_ort_run(path, x) - expected.numpy()).max()
    assert diff <= 1e-4, diff


def test_export_dynamic_batch_through_pipeline(tmp_path):
    from edgevid.export import export_onnx

    variant = "uniformerv2_b16_ssv2"
    model = _randomise(create_model(variant, **dict(TINY[variant], layers=1, return_list=(0,), n_layers=1)), seed=8)
    path = export_onnx(model, _clip(model, batch=2), tmp_path / "dyn.onnx", dynamic_batch=(1, 4))
    x = _clip(model, batch=3, seed=9)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(_ort_run(path, x) - expected).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_export_full_size(tmp_path, variant):
    """Full-size export (run by `make bench`): prints export time and ORT-vs-eager max-abs diff."""
    torch.manual_seed(0)
    model = create_model(variant, weights="random")
    x = torch.randn(get_spec(variant).input_shape(1))
    with torch.no_grad():
        expected = model(x).numpy()
    start = time.perf_counter()
    torch.export.export(model, (x,), strict=True)
    strict_s = time.perf_counter() - start
    path = tmp_path / f"{variant}.onnx"
    start = time.perf_counter()
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    onnx_s = time.perf_counter() - start
    diff = float(np.abs(_ort_run(path, x) - expected).max())
    print(f"{variant}: torch.export {strict_s:.1f}s, ONNX export {onnx_s:.1f}s, ORT vs eager max-abs {diff:.2e}")
    assert diff <= 1e-4
