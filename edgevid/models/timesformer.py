"""TimeSformer (Bertasius et al., "Is Space-Time Attention All You Need for Video Understanding?",
arXiv 2102.05095): a ViT over per-frame 16x16 patches with divided space-time attention.

Input is (N, C, T, H, W) like every edgevid model. Tokens are laid out ``b (h w t) m`` after a
leading CLS token, as in the official code, so the official checkpoints load without any
permutation. Three attention schemes share the parameter names of the official code:

* ``divided_space_time`` (the paper's default): per block, temporal attention among the T tokens
  of one patch position -> ``temporal_fc`` -> spatial attention among the patches of one frame,
  with the CLS token repeated per frame and its T results averaged -> MLP.
* ``joint_space_time``: one attention over all 1 + H*W*T tokens.
* ``space_only``: per-frame ViT (no time embedding); the per-frame CLS tokens are averaged.

Export notes: plain reshapes/permutes with sizes from the config (no einops), attention written
as MatMul -> Mul(scale) -> Softmax -> MatMul, no in-place writes on activations.

Checkpoints (``load_checkpoint`` / ``create_model(weights=...)``) load in three layouts:
edgevid (our names, which equal the official ones), "official" (facebookresearch/TimeSformer
``.pyth``: ``model_state`` with a ``model.`` prefix) and "huggingface"
(``TimesformerForVideoClassification``). Hugging Face's model takes ``(B, T, C, H, W)`` pixel
values; ours takes ``(N, C, T, H, W)``: permute the input, not the weights.

A checkpoint whose ``pos_embed`` / ``time_embed`` size differs from the variant (another crop or
frame count) is NOT silently resized: ``load_checkpoint`` reports them as mis-shaped. Resizing is
an explicit step, ``resize_embeddings(state_dict, model)``, which applies the nearest-neighbour
interpolation the official model applies at inference when its input size differs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import KINETICS_NORM, ClipSpec, ModelSpec, Published
from .checkpoint import StateDict, register_layout, rename_keys
from .layers import Attention, DropPath, Mlp
from .registry import register_model

ATTENTION_TYPES = ("divided_space_time", "space_only", "joint_space_time")
FAMILY = "timesformer"


class Block(nn.Module):
    """One transformer block; ``num_patches`` (H*W) and ``num_frames`` (T) come from the config."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_patches: int,
        num_frames: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        attention_type: str = "divided_space_time",
    ):
        super().__init__()
        self.dim = dim
        self.num_patches = num_patches
        self.num_frames = num_frames
        self.attention_type = attention_type
        # sequence length of ``attn`` outside divided attention: one frame, or the whole clip
        self.num_tokens = 1 + num_patches * (1 if attention_type == "space_only" else num_frames)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        if attention_type == "divided_space_time":
            self.temporal_norm1 = nn.LayerNorm(dim, eps=norm_eps)
            self.temporal_attn = Attention(dim, num_heads, qkv_bias)
            self.temporal_fc = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention_type == "divided_space_time":
            x = self._divided(x)
        else:
            x = x + self.drop_path(self.attn(self.norm1(x), self.num_tokens))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _divided(self, x: torch.Tensor) -> torch.Tensor:
        p, t, d = self.num_patches, self.num_frames, self.dim
        cls_token, patches = x[:, :1], x[:, 1:]  # (N, 1, D), (N, P*T, D) in (h w t) order

        # Temporal attention among the T tokens of each patch position.
        xt = patches.reshape(-1, t, d)  # (N*P, T, D)
        res_t = self.drop_path(self.temporal_attn(self.temporal_norm1(xt), t))
        patches = patches + self.temporal_fc(res_t.reshape(-1, p * t, d))

        # Spatial attention among the patches of each frame, CLS repeated per frame.
        xs = patches.reshape(-1, p, t, d).permute(0, 2, 1, 3).reshape(-1, p, d)  # (N*T, P, D)
        cls_per_frame = cls_token.expand(-1, t, -1).reshape(-1, 1, d)  # (N*T, 1, D)
        res_s = self.drop_path(self.attn(self.norm1(torch.cat((cls_per_frame, xs), dim=1)), 1 + p))
        # a slice, not res_s[:, 0]: OpenVINO 2026.4's CPU plugin turns Gather -> Reshape -> ReduceMean
        # behind an INT8 MatMul into an invalid Reshape and refuses to compile the model
        res_cls = res_s[:, :1].reshape(-1, t, d).mean(dim=1, keepdim=True)  # (N, 1, D)
        res_patches = res_s[:, 1:].reshape(-1, t, p, d).permute(0, 2, 1, 3).reshape(-1, p * t, d)
        return torch.cat((cls_token, patches), dim=1) + torch.cat((res_cls, res_patches), dim=1)


class PatchEmbed(nn.Module):
    """Conv2d patch embedding applied to every frame: (N, C, T, H, W) -> (N*T, H'*W', D)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.in_chans = in_chans
        self.img_size = img_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 1, 3, 4).reshape(-1, self.in_chans, self.img_size, self.img_size)
        return self.proj(x).flatten(2).transpose(1, 2)


@dataclass(frozen=True)
class TimeSformerConfig:
    """Architecture and input geometry (the official ``TimeSformer`` arguments); defaults are ViT-B/16
    with divided space-time attention on 8 x 224 clips."""

    img_size: int = 224
    patch_size: int = 16
    num_frames: int = 8
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    attention_type: str = "divided_space_time"

    def __post_init__(self):
        if self.attention_type not in ATTENTION_TYPES:
            choices = ", ".join(ATTENTION_TYPES)
            raise ValueError(f"attention_type must be one of {choices}, not {self.attention_type!r}")
        if self.img_size % self.patch_size or self.embed_dim % self.num_heads:
            raise ValueError("img_size must be a multiple of patch_size and embed_dim of num_heads")


class TimeSformer(nn.Module):
    """TimeSformer classifier: (N, 3, T, H, W) normalised clip -> (N, num_classes) logits."""

    classifier_keys = ("head.weight", "head.bias")

    def __init__(self, config: TimeSformerConfig, num_classes: int):
        super().__init__()
        self.config = config
        embed_dim, num_frames, attention_type = config.embed_dim, config.num_frames, config.attention_type
        self.attention_type = attention_type
        self.num_classes = num_classes
        self.num_frames = num_frames
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(config.img_size, config.patch_size, config.in_chans, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim))
        if attention_type != "space_only":
            self.time_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        depth = config.depth
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear decay rule
        self.blocks = nn.ModuleList(
            Block(embed_dim, config.num_heads, self.num_patches, num_frames, config.mlp_ratio, config.qkv_bias,
                  rates[i], config.norm_eps, attention_type)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=config.norm_eps)
        self.head = nn.Linear(embed_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: truncated normal 0.02, zero biases, zero ``temporal_fc``."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.attention_type == "divided_space_time":
            for block in self.blocks:
                nn.init.zeros_(block.temporal_fc.weight)
                nn.init.zeros_(block.temporal_fc.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip -> tokens: (N, 1 + P*T, D) in ``(h w t)`` order, or (N*T, 1 + P, D) for space_only."""
        p, t, d = self.num_patches, self.num_frames, self.embed_dim
        size = self.patch_embed.img_size
        if tuple(x.shape[1:]) != (self.patch_embed.in_chans, t, size, size):
            raise ValueError(f"expected clips of shape (N, {self.patch_embed.in_chans}, {t}, {size}, {size}),"
                             f" got {tuple(x.shape)}")
        patches = self.patch_embed(x) + self.pos_embed[:, 1:]  # (N*T, P, D)
        cls_token = self.cls_token + self.pos_embed[:, :1]  # (1, 1, D)
        if self.attention_type == "space_only":
            return torch.cat((cls_token.expand(patches.shape[0], -1, -1), patches), dim=1)
        patches = patches.reshape(-1, t, p, d).permute(0, 2, 1, 3) + self.time_embed.unsqueeze(1)
        patches = patches.reshape(-1, p * t, d)  # (N, P*T, D)
        return torch.cat((cls_token.expand(patches.shape[0], -1, -1), patches), dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip -> the final normalised CLS feature, (N, D)."""
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        cls_token = x[:, 0]
        if self.attention_type == "space_only":  # average the per-frame CLS tokens
            cls_token = cls_token.reshape(-1, self.num_frames, self.embed_dim).mean(dim=1)
        return self.norm(cls_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# --------------------------------------------------------------------------------------------
# Checkpoints


def resize_embeddings(state_dict: StateDict, model: TimeSformer) -> StateDict:
    """Return ``state_dict`` (our names) with ``pos_embed``/``time_embed`` resized to ``model``.

    Nearest-neighbour, as the official model does at inference when its input size differs from
    its embeddings: the patch position grid is resized in 2-D (the CLS position is kept), the time
    embedding in 1-D. Use it explicitly to run a checkpoint at another crop or frame count; the
    resized model is not the one the authors evaluated, so re-check its accuracy.
    """
    sd = dict(state_dict)
    pos = sd.get("pos_embed")
    if pos is not None and pos.shape[1] != model.num_patches + 1:
        old_grid = int(round((pos.shape[1] - 1) ** 0.5))
        if old_grid * old_grid != pos.shape[1] - 1:
            raise ValueError(f"pos_embed of {pos.shape[1] - 1} patches is not a square grid")
        grid = model.patch_embed.grid_size
        patches = pos[:, 1:].transpose(1, 2).reshape(1, pos.shape[2], old_grid, old_grid)
        patches = F.interpolate(patches, size=(grid, grid), mode="nearest").flatten(2).transpose(1, 2)
        sd["pos_embed"] = torch.cat((pos[:, :1], patches), dim=1)
    time = sd.get("time_embed")
    if time is not None and model.attention_type != "space_only" and time.shape[1] != model.num_frames:
        resized = F.interpolate(time.transpose(1, 2), size=model.num_frames, mode="nearest")
        sd["time_embed"] = resized.transpose(1, 2)
    return sd


def _is_official(sd) -> bool:
    return any(k.startswith("model.blocks.0.") for k in sd) and "model.cls_token" in sd


def _from_official(sd: StateDict) -> StateDict:
    return {k[len("model."):] if k.startswith("model.") else k: v for k, v in sd.items()}


def _is_huggingface(sd) -> bool:
    return any(k.startswith("timesformer.embeddings.") for k in sd)


# Hugging Face (TimesformerForVideoClassification) -> ours. Prefix rules first, then the
# per-block renames; ordered so that the temporal names are consumed before the spatial ones.
_HF_RULES = [
    ("^timesformer.embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("^timesformer.embeddings.position_embeddings", "pos_embed"),
    ("^timesformer.embeddings.time_embeddings", "time_embed"),
    ("^timesformer.embeddings.cls_token", "cls_token"),
    ("^timesformer.encoder.layer.", "blocks."),
    ("^timesformer.layernorm.", "norm."),
    ("^classifier.", "head."),
    (".temporal_attention.attention.qkv.", ".temporal_attn.qkv."),
    (".temporal_attention.output.dense.", ".temporal_attn.proj."),
    (".attention.attention.qkv.", ".attn.qkv."),
    (".attention.output.dense.", ".attn.proj."),
    (".temporal_layernorm.", ".temporal_norm1."),
    (".temporal_dense.", ".temporal_fc."),
    (".layernorm_before.", ".norm1."),
    (".layernorm_after.", ".norm2."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
]


def _from_huggingface(sd: StateDict) -> StateDict:
    return rename_keys(sd, _HF_RULES)


register_layout(FAMILY, "official", _is_official, _from_official)
register_layout(FAMILY, "huggingface", _is_huggingface, _from_huggingface)


# --------------------------------------------------------------------------------------------
# Variants

_PAPER = "Bertasius et al. 2021, arXiv 2102.05095"
_REPO = "https://github.com/facebookresearch/TimeSformer"
_FLOPS_NOTE = (
    "paper's inference TFLOPs for 1 clip x 3 crops divided by 3 views; fvcore convention "
    "(one multiply-add = one FLOP)"
)
_LAYOUTS = ("official", "huggingface")


def _spec(name: str, frames: int, stride: int, crop: int, gflops: float, top1: float, url: str,
          measured_params_m: float) -> ModelSpec:
    """The paper gives one size (121.4 M) for all three; their position embeddings differ in length."""
    return ModelSpec(
        name=name,
        family=FAMILY,
        params_m=measured_params_m,
        clip=ClipSpec(frames=frames, stride=stride, crop=crop, short_side=crop, test_clips=1, test_crops=3),
        norm=KINETICS_NORM,
        num_classes=400,
        label_set="kinetics400",
        published=Published(
            params_m=121.4,
            gflops=gflops,
            flops_note=_FLOPS_NOTE,
            top1=top1,
            source=f"{_PAPER} (params: ViT-B TimeSformer, Table 1; TFLOPs: Table 2); top-1: {_REPO} README",
        ),
        checkpoint_url=url,
        checkpoint_layouts=_LAYOUTS,
        transformer=True,
    )


_DROPBOX = "https://www.dropbox.com/s/"
_URL_B = _DROPBOX + "g5t24we9gl5yk88/TimeSformer_divST_8x32_224_K400.pyth"
_URL_HR = _DROPBOX + "6f0x172lpqy3oxt/TimeSformer_divST_16x16_448_K400.pyth"
_URL_L = _DROPBOX + "r1iuxahif3sgimo/TimeSformer_divST_96x4_224_K400.pyth"

B_CONFIG = TimeSformerConfig(img_size=224, num_frames=8)
HR_CONFIG = TimeSformerConfig(img_size=448, num_frames=16)
L_CONFIG = TimeSformerConfig(img_size=224, num_frames=96)
SYNTH_CONFIG = TimeSformerConfig(img_size=64, patch_size=8, num_frames=8, embed_dim=96, depth=4, num_heads=3)


def _build(config: TimeSformerConfig, num_classes: int, overrides: dict) -> TimeSformer:
    """The variant's config with ``overrides`` (any ``TimeSformerConfig`` field) applied."""
    return TimeSformer(replace(config, **overrides), num_classes)


@register_model(
    _spec("timesformer_b", 8, 32, 224, 590 / 3, 77.9, _URL_B, 121.57),
    aliases=("timesformer", "timesformer_8x224"),
)
def timesformer_b(num_classes: int = 400, **overrides) -> TimeSformer:
    """TimeSformer (ViT-B/16, divided space-time), 8 frames x 224, sampling rate 32."""
    return _build(B_CONFIG, num_classes, overrides)


@register_model(
    _spec("timesformer_hr", 16, 16, 448, 5110 / 3, 79.6, _URL_HR, 122.02),
    aliases=("timesformer_16x448",),
)
def timesformer_hr(num_classes: int = 400, **overrides) -> TimeSformer:
    """TimeSformer-HR: 16 frames x 448, sampling rate 16."""
    return _build(HR_CONFIG, num_classes, overrides)


@register_model(
    _spec("timesformer_l", 96, 4, 224, 7140 / 3, 80.6, _URL_L, 121.63),
    aliases=("timesformer_96x224",),
)
def timesformer_l(num_classes: int = 400, **overrides) -> TimeSformer:
    """TimeSformer-L: 96 frames x 224, sampling rate 4."""
    return _build(L_CONFIG, num_classes, overrides)


@register_model(
    ModelSpec(
        name="timesformer_synth",
        family=FAMILY,
        params_m=0.66,
        clip=ClipSpec(frames=8, stride=3, crop=64, short_side=73, test_clips=1, test_crops=1),
        norm=KINETICS_NORM,
        num_classes=8,
        label_set="synthmotion",
        published=Published(source="edgevid reference model"),
        transformer=True,
    )
)
def timesformer_synth(num_classes: int = 8, **overrides) -> TimeSformer:
    """Tiny divided space-time TimeSformer for the synthetic motion set (8x64, trains on a CPU)."""
    return _build(SYNTH_CONFIG, num_classes, overrides)
