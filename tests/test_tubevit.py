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
    assert abs(n_b / 86.55e6 - 1) <= 0.001  # the paper says 90 M (kept in the spec as published)
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
# Checkpoints in the unofficial layout: daniel-code/TubeViT's ``TubeViT.state_dict()`` as every
# revision of its tubevit/model.py writes it, built here from our model with a table of its names.


def to_unofficial(sd: dict, depth: int, mlp_names: tuple[str, str] = ("mlp.0", "mlp.3")) -> dict:
    """Our state dict (a model with a class token) -> daniel-code/TubeViT names.

    ``sparse_tubes_tokenizer.conv_proj_weight`` (one kernel) and ``conv_proj_bias`` (tubes, D);
    ``class_token`` (1, 1, D); ``pos_embedding`` (1 + tokens, D) whose first row is the class
    token's (zeros as they build it; random here, so folding it into the token is tested);
    torchvision ``EncoderBlock`` names (``mlp.0``/``mlp.3``; torchvision < 0.13
    ``mlp.linear_1``/``mlp.linear_2``); ``attention_pooling.W``; ``heads.head``.
    """
    sd = {k: v.clone() for k, v in sd.items()}
    used = set()

    def take(key):
        used.add(key)
        return sd[key]

    dim = sd["tube_embed.bias"].shape[1]
    row0 = torch.randn(1, dim)
    out = {
        "sparse_tubes_tokenizer.conv_proj_weight": take("tube_embed.kernel"),
        "sparse_tubes_tokenizer.conv_proj_bias": take("tube_embed.bias"),
        "class_token": take("cls_token") - row0.reshape(1, 1, -1),
        "pos_embedding": torch.cat((row0, take("pos_embed")), dim=0),
    }
    fc1, fc2 = mlp_names
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


def daniel_code_forward(sd: dict, x: torch.Tensor, tubes, num_heads: int) -> torch.Tensor:
    """daniel-code/TubeViT ``TubeViT.forward`` in eval mode, written from its tubevit/model.py on
    its own state dict: SparseTubesTokenizer (kernel 0 as is, the others ``F.interpolate(...,
    mode="trilinear")``, bias ``conv_proj_bias[i]``), class token prepended, ``+ pos_embedding``,
    torchvision EncoderBlocks (LayerNorm eps 1e-6, ``nn.MultiheadAttention(batch_first=True)``,
    Linear-GELU-Linear), ``encoder.ln``, SelfAttentionPooling, ``heads.head``."""
    n = x.shape[0]
    weight0 = sd["sparse_tubes_tokenizer.conv_proj_weight"]
    tokens = []
    for i, tube in enumerate(tubes):
        weight = weight0 if i == 0 else F.interpolate(weight0, tube.kernel, mode="trilinear")
        o = tube.offset
        out = F.conv3d(x[:, :, o[0]:, o[1]:, o[2]:], weight, bias=sd["sparse_tubes_tokenizer.conv_proj_bias"][i],
                       stride=tube.stride)
        tokens.append(out.reshape(n, weight0.shape[0], -1))
    h = torch.cat(tokens, dim=-1).permute(0, 2, 1)
    h = torch.cat([sd["class_token"].expand(n, -1, -1), h], dim=1) + sd["pos_embedding"]
    dim = h.shape[-1]
    ln = lambda t, p: F.layer_norm(t, (dim,), sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)  # noqa: E731
    i = 0
    while f"encoder.layers.encoder_layer_{i}.ln_1.weight" in sd:
        p = f"encoder.layers.encoder_layer_{i}."
        attention = torch.nn.MultiheadAttention(dim, num_heads, batch_first=True).eval()
        attention.load_state_dict({k[len(p + "self_attention."):]: v for k, v in sd.items()
                                   if k.startswith(p + "self_attention.")})
        y = ln(h, p + "ln_1")
        y, _ = attention(y, y, y, need_weights=False)
        h = h + y
        y = F.linear(ln(h, p + "ln_2"), sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"])
        h = h + F.linear(F.gelu(y), sd[p + "mlp.3.weight"], sd[p + "mlp.3.bias"])
        i += 1
    h = ln(h, "encoder.ln")
    att_w = F.softmax(F.linear(h, sd["attention_pooling.W.weight"], sd["attention_pooling.W.bias"]).squeeze(-1), -1)
    pooled = torch.sum(h * att_w.unsqueeze(-1), dim=1)
    return F.linear(pooled, sd["heads.head.weight"], sd["heads.head.bias"])


def test_registered_variants_have_the_class_token_of_the_public_implementation():
    with torch.device("meta"):
        for name in ("tubevit_b", "tubevit_l"):
            model = create_model(name)
            assert model.cls_token.shape == (1, 1, model.config.embed_dim)
            assert model.config.seq_len == 540 and model.pos_embed.shape[0] == 539
        assert create_model("tubevit_b", class_token=False).config.seq_len == 539  # the paper's model
    assert create_model("tubevit_synth").cls_token is None  # trained here without one


def test_unofficial_checkpoint_matches_daniel_code_forward_at_32x224(tmp_path):
    """Their layout at the real geometry (32x224, 540 rows of pos_embedding), narrow and shallow."""
    source = tiny("tubevit_b", seed=3, crop=224)
    foreign = to_unofficial(source.state_dict(), depth=2)
    assert foreign["pos_embedding"].shape == (540, 24) and foreign["class_token"].shape == (1, 1, 24)
    assert foreign["sparse_tubes_tokenizer.conv_proj_bias"].shape == (4, 24)
    path = tmp_path / "tubevit_b.pt"
    torch.save(foreign, path)
    loaded = create_model("tubevit_b", weights=str(path), **{**TINY["tubevit_b"], "crop": 224})
    x = torch.randn(2, 3, 32, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = loaded(x), daniel_code_forward(foreign, x, tubevit.PAPER_TUBES, num_heads=2)
    diff = float((ours - theirs).abs().max())
    print(f"tubevit_b layout at 32x224 (D=24, depth 2): max-abs vs daniel-code forward {diff:.2e}"
          f" (logit std {float(theirs.std()):.3f})")
    assert theirs.std() > 0.1 and diff <= 1e-4
    assert load_checkpoint(create_model("tubevit_b", **{**TINY["tubevit_b"], "crop": 224}), str(path),
                           family="tubevit") == "unofficial"


def test_lightning_checkpoint_with_trainer_state_loads_its_state_dict(tmp_path):
    """A Lightning checkpoint as daniel-code saves it: ``model.``-prefixed weights beside trainer
    state, here an old OneCycleLR's bound ``anneal_func`` (which ``weights_only=True`` refuses) and
    the optimizer it drags along."""
    source = tiny("tubevit_b", seed=6)
    foreign = to_unofficial(source.state_dict(), depth=2)
    optimizer = torch.optim.Adam(source.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-4, total_steps=10)
    scheduler_state = scheduler.state_dict()
    scheduler_state["anneal_func"] = scheduler._anneal_func  # what torch < 2.4 put there
    path = tmp_path / "tubevit.ckpt"
    torch.save({
        "epoch": 9, "global_step": 90, "pytorch-lightning_version": "2.0.0",
        "state_dict": {"model." + k: v for k, v in foreign.items()},
        "optimizer_states": [optimizer.state_dict()], "lr_schedulers": [scheduler_state],
        "hyper_parameters": {"num_classes": 400, "video_shape": torch.Size([3, 32, 64, 64])},
    }, path)
    with pytest.raises(Exception, match="getattr"):  # what a plain safe load says
        torch.load(path, weights_only=True)
    loaded = create_model("tubevit_b", weights=str(path), **TINY["tubevit_b"])
    x = clip("tubevit_b", batch=2)
    with torch.no_grad():
        assert torch.allclose(loaded(x), source(x), atol=1e-5)


class _WritesAFile:
    """A pickle whose loading would create ``target`` (as a malicious checkpoint would)."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("where", ["trainer_state", "state_dict"])
def test_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, where):
    foreign = to_unofficial(tiny("tubevit_b").state_dict(), depth=2)
    target = tmp_path / "written_by_the_checkpoint"
    checkpoint = {"state_dict": {"model." + k: v for k, v in foreign.items()}}
    if where == "trainer_state":
        checkpoint["callbacks"] = {"EvilCallback": _WritesAFile(target)}
    else:
        checkpoint["state_dict"]["model.heads.head.bias"] = _WritesAFile(target)
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as info:
        create_model("tubevit_b", weights=str(path), **TINY["tubevit_b"])
    message = str(info.value)
    assert "\n" not in message and "builtins.exec" in message and "never runs" in message
    assert not target.exists()


def test_pickled_module_is_refused_in_one_line(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(tiny("tubevit_synth"), path)  # torch.save(model): its weights need its classes' code
    with pytest.raises(CheckpointError) as info:
        create_model("tubevit_synth", weights=str(path), **TINY["tubevit_synth"])
    assert "\n" not in str(info.value) and "edgevid.models.tubevit.TubeViT" in str(info.value)


def test_torchvision_before_0_13_mlp_names(tmp_path):
    source = tiny("tubevit_b", seed=4)
    foreign = to_unofficial(source.state_dict(), depth=2, mlp_names=("mlp.linear_1", "mlp.linear_2"))
    path = tmp_path / "tubevit_old.pt"
    torch.save(foreign, path)
    loaded = create_model("tubevit_b", weights=str(path), **TINY["tubevit_b"])
    x = clip("tubevit_b")
    with torch.no_grad():
        assert torch.allclose(loaded(x), source(x), atol=1e-5)


def test_class_token_mismatch_is_named(tmp_path):
    path = tmp_path / "daniel.pt"
    torch.save(to_unofficial(tiny("tubevit_b").state_dict(), depth=2), path)
    with pytest.raises(CheckpointError, match="1 unexpected: cls_token"):  # the paper's model has none
        create_model("tubevit_b", weights=str(path), class_token=False, **TINY["tubevit_b"])


def test_class_token_readout_revisions_are_refused(tmp_path):
    """Before 633236b their head read the class token: no attention_pooling.W in the checkpoint."""
    foreign = to_unofficial(tiny("tubevit_b").state_dict(), depth=2)
    foreign = {k: v for k, v in foreign.items() if not k.startswith("attention_pooling.")}
    path = tmp_path / "early.pt"
    torch.save(foreign, path)
    with pytest.raises(CheckpointError, match="predates attention pooling"):
        create_model("tubevit_b", weights=str(path), **TINY["tubevit_b"])


def test_other_head_size_needs_num_classes(tmp_path):
    source = tiny("tubevit_b", seed=5, num_classes=5)
    path = tmp_path / "five.pt"
    torch.save(to_unofficial(source.state_dict(), depth=2), path)
    with pytest.raises(CheckpointError, match="num-classes"):
        create_model("tubevit_b", weights=str(path), **TINY["tubevit_b"])
    model = create_model("tubevit_b", num_classes=8, weights=str(path), **TINY["tubevit_b"])
    assert model.head.weight.shape == (8, 24)
    theirs, ours = source.state_dict(), model.state_dict()
    for key in theirs:
        if key not in model.classifier_keys:
            assert torch.allclose(theirs[key], ours[key]), key
    with torch.no_grad():
        assert torch.allclose(model.forward_features(clip("tubevit_b")), source.forward_features(clip("tubevit_b")),
                              atol=1e-6)


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
    assert (model.cls_token is not None) == (name != "tubevit_synth")
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
