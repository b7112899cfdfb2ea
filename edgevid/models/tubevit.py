"""TubeViT (Piergiovanni, Kuo, Angelova, "Rethinking Video ViTs: Sparse Video Tubes for Joint Image
and Video Learning", arXiv 2212.03229): a plain ViT encoder fed by a few sparse 3-D "tubes".

Input is (N, C, T, H, W) like every edgevid model. Each tube is a strided Conv3d (no padding) that
starts at an offset into the clip and samples it sparsely; the tokens of all tubes are concatenated
(tube by tube, each in (t h w) order), get a fixed 3-D sin/cos position embedding, go through the
ViT encoder, are pooled by attention pooling and classified by one linear layer.

Tubes of the paper, (t, h, w) kernel / stride / offset, for 32x224x224 clips::

    8x8x8    stride (16, 32, 32)                       ->  2 x  7 x  7 =  98 tokens
    16x4x4   stride ( 6, 32, 32)  offset (4, 8, 8)     ->  3 x  7 x  7 = 147 tokens
    4x12x12  stride (16, 32, 32)  offset (0, 16, 16)   ->  2 x  7 x  7 =  98 tokens
    1x16x16  stride (32, 16, 16)                       ->  1 x 14 x 14 = 196 tokens
                                                                        539 tokens

Token count: each axis gives ``(size - offset - kernel) // stride + 1`` positions, so a 32x224x224
clip yields 539 tokens. The paper states 559; no tube arithmetic reaches that number: the first
three tubes have 7x7 spatial grids and the last one 14x14 (also with "SAME" padding), so any total
is a multiple of 49, and 559 = 11 * 49 + 20 is not. The unofficial implementation
(daniel-code/TubeViT) with these tubes also gets 539 (plus its class token); its ``exp/ucf101``
branch uses a 12x4x4 second tube and stride 16 for the last tube (735 tokens).

Interpolated kernels: the tubes share ONE learned kernel (8x8x8 per output channel, ``kernel`` in
the config) that is resized trilinearly (``align_corners=False``) to each tube's kernel shape, plus
one bias per tube. In training mode the resizing runs on the fly, so gradients reach the shared
kernel. In eval mode the resized kernels are precomputed buffers (``freeze_kernels``): ``eval()``
and ``load_state_dict`` refresh them, so an exported graph has every Conv weight as a constant
(TensorRT needs initializers) and no Resize node. Call ``freeze_kernels()`` yourself after editing
``tube_embed.kernel`` in place while in eval mode.

Position embedding: fixed sin/cos of the absolute centre of each token's receptive field in frames
and pixels, ``offset + index * stride + (kernel - 1) / 2`` per axis, so tokens of different tubes
share one coordinate system. ``embed_dim`` is split into t / h / w parts (h and w get ``2 * (D //
6)`` channels each, t the rest), each half sine, half cosine over geometric frequencies (base
10000). It is a persistent buffer, not a parameter: it is never trained, and a checkpoint carries
the embedding it was trained with (the unofficial code computes it slightly differently).

Pooling: attention pooling as in the paper: one linear score per token, softmax over tokens,
weighted sum.

Class token: the paper describes none, but the only public implementation, daniel-code/TubeViT,
prepends one in every revision of ``tubevit/model.py`` (its position-embedding row is the first,
all zeros, and attention pooling runs over it too). No official weights exist, so the registered
Kinetics variants follow that implementation (``class_token=True``, 540 tokens at 32x224): they
load its checkpoints as they are, and ``class_token=False`` builds the paper's 539-token model.
A class token is a fixed part of the graph (every attention shape depends on the sequence
length), so it is chosen when the model is built, not detected from a checkpoint; a checkpoint
that disagrees fails with one line naming ``cls_token``. ``tubevit_synth`` (trained here) keeps
its architecture: no class token.

Export notes: sequence length and tube geometry come from the config; attention is written as
MatMul -> Softmax -> MatMul; no einops, no in-place writes on activations.

Checkpoints load in two layouts: edgevid (our names) and "unofficial", daniel-code/TubeViT's
``TubeViT.state_dict()`` as every revision writes it: ``sparse_tubes_tokenizer.conv_proj_weight``
(the one interpolated kernel) and ``conv_proj_bias`` (tubes, D) stacked, ``class_token`` (1, 1, D),
``pos_embedding`` (1 + tokens, D) with the class token's row first, torchvision ``EncoderBlock``
names under ``encoder.layers.encoder_layer_{i}`` (``mlp.0``/``mlp.3``; torchvision < 0.13:
``mlp.linear_1``/``mlp.linear_2``), ``attention_pooling.W``, ``heads.head``; raw, or inside a
PyTorch Lightning checkpoint (``model.`` prefix), whose trainer state is read without running its
code (``edgevid.models.checkpoint``). Its revisions before 633236b (2023-03-25) classified the
class token instead of pooling; those are refused with one line. Its ``exp/ucf101`` branch uses
other tubes (735 tokens), which does not fit these variants' ``pos_embed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..spec import KINETICS_NORM, ClipSpec, ModelSpec, Normalization, Published
from .checkpoint import StateDict, register_layout, rename_module
from .layers import Attention, DropPath, Mlp
from .registry import register_model

FAMILY = "tubevit"

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Tube:
    """One sparse tube: a Conv3d ``kernel`` with ``stride`` starting at ``offset``, all (t, h, w)."""

    kernel: Triple
    stride: Triple
    offset: Triple = (0, 0, 0)

    def grid(self, frames: int, size: int) -> Triple:
        """Token grid (t, h, w) this tube produces on a ``frames`` x ``size`` x ``size`` clip."""
        dims = (frames, size, size)
        return tuple((n - o - k) // s + 1 for n, k, s, o in zip(dims, self.kernel, self.stride, self.offset))


PAPER_TUBES = (
    Tube((8, 8, 8), (16, 32, 32)),
    Tube((16, 4, 4), (6, 32, 32), (4, 8, 8)),
    Tube((4, 12, 12), (16, 32, 32), (0, 16, 16)),
    Tube((1, 16, 16), (32, 16, 16)),
)

# The paper's tubes for an 8-frame 112-px clip: spatial kernels/strides/offsets kept in pixels (the
# same sparse pattern tiles a smaller frame: 4x4, 4x4, 3x3 and 7x7 grids), temporal ones scaled
# by 8/32 and rounded up (6/4 -> 2). 32 + 32 + 18 + 49 = 131 tokens.
SYNTH_TUBES = (
    Tube((2, 8, 8), (2, 8, 8)),
    Tube((4, 4, 4), (4, 8, 8), (0, 2, 2)),
    Tube((1, 12, 12), (4, 16, 16), (0, 8, 8)),
    Tube((1, 16, 16), (8, 16, 16)),
)


@dataclass(frozen=True)
class TubeViTConfig:
    """Architecture and input geometry; every shape in the graph is derived from it."""

    frames: int = 32
    crop: int = 224
    tubes: tuple[Tube, ...] = PAPER_TUBES
    kernel: Triple = (8, 8, 8)  # the one learned kernel, resized to every tube's kernel
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    class_token: bool = True  # as daniel-code/TubeViT (the only public weights); the paper has none
    norm_eps: float = 1e-6
    drop_rate: float = 0.0  # dropout before the classifier
    drop_path_rate: float = 0.0
    grids: tuple[Triple, ...] = field(init=False, repr=False)

    def __post_init__(self):
        tubes = tuple(t if isinstance(t, Tube) else Tube(*t) for t in self.tubes)
        object.__setattr__(self, "tubes", tubes)
        object.__setattr__(self, "grids", tuple(t.grid(self.frames, self.crop) for t in tubes))
        for tube, grid in zip(tubes, self.grids):
            if min(grid) < 1:
                raise ValueError(f"{tube} does not fit a {self.frames}x{self.crop}x{self.crop} clip")
        if self.embed_dim % self.num_heads or self.embed_dim % 2 or self.embed_dim < 12:
            raise ValueError("embed_dim must be even, >= 12 and a multiple of num_heads")

    @property
    def tokens_per_tube(self) -> tuple[int, ...]:
        return tuple(t * h * w for t, h, w in self.grids)

    @property
    def num_tokens(self) -> int:
        """Tube tokens (without the class token)."""
        return sum(self.tokens_per_tube)

    @property
    def seq_len(self) -> int:
        return self.num_tokens + int(self.class_token)


def sincos_1d(positions: torch.Tensor, channels: int) -> torch.Tensor:
    """(M,) positions -> (M, channels): sines then cosines over geometric frequencies, base 10000."""
    half = channels // 2
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    angles = positions.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=1)


def tube_position_embedding(config: TubeViTConfig) -> torch.Tensor:
    """Fixed (num_tokens, embed_dim) embedding of every tube token's receptive-field centre."""
    dim = config.embed_dim
    spatial = 2 * (dim // 6)
    channels = (dim - 2 * spatial, spatial, spatial)  # t, h, w; all even
    parts = []
    for tube, grid in zip(config.tubes, config.grids):
        axes = [
            sincos_1d(torch.arange(n, dtype=torch.float64) * s + o + (k - 1) / 2, c)
            for n, k, s, o, c in zip(grid, tube.kernel, tube.stride, tube.offset, channels)
        ]
        t, h, w = grid
        emb_t = axes[0][:, None, None, :].expand(t, h, w, channels[0])
        emb_h = axes[1][None, :, None, :].expand(t, h, w, channels[1])
        emb_w = axes[2][None, None, :, :].expand(t, h, w, channels[2])
        parts.append(torch.cat((emb_t, emb_h, emb_w), dim=-1).reshape(t * h * w, dim))
    return torch.cat(parts, dim=0).float()


def _refresh_frozen_kernels(module: "SparseTubeEmbed", incompatible_keys) -> None:
    module.freeze_kernels()


class SparseTubeEmbed(nn.Module):
    """Clip (N, C, T, H, W) -> tokens (N, num_tokens, D) from the sparse tubes."""

    def __init__(self, tubes: tuple[Tube, ...], kernel: Triple, in_chans: int, embed_dim: int):
        super().__init__()
        self.tubes = tuple(tubes)
        self.kernel = nn.Parameter(torch.empty(embed_dim, in_chans, *kernel))
        self.bias = nn.Parameter(torch.zeros(len(self.tubes), embed_dim))
        for i, tube in enumerate(self.tubes):
            self.register_buffer(f"frozen_kernel_{i}", torch.zeros(embed_dim, in_chans, *tube.kernel), persistent=False)
            self.register_buffer(f"frozen_bias_{i}", torch.zeros(embed_dim), persistent=False)
        self.register_load_state_dict_post_hook(_refresh_frozen_kernels)

    def resized_kernel(self, index: int) -> torch.Tensor:
        """The learned kernel resized trilinearly to tube ``index``'s kernel shape."""
        size = self.tubes[index].kernel
        if tuple(self.kernel.shape[2:]) == size:
            return self.kernel
        return F.interpolate(self.kernel, size=size, mode="trilinear", align_corners=False)

    @torch.no_grad()
    def freeze_kernels(self) -> None:
        """Precompute every tube's resized kernel and bias for inference and export."""
        for i in range(len(self.tubes)):  # assigned, not copied: follows the kernel's device and dtype
            setattr(self, f"frozen_kernel_{i}", self.resized_kernel(i).detach().clone())
            setattr(self, f"frozen_bias_{i}", self.bias[i].detach().clone())

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode:
            self.freeze_kernels()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = []
        for i, tube in enumerate(self.tubes):
            if self.training:
                weight, bias = self.resized_kernel(i), self.bias[i]
            else:
                weight, bias = getattr(self, f"frozen_kernel_{i}"), getattr(self, f"frozen_bias_{i}")
            t0, h0, w0 = tube.offset
            clip = x[:, :, t0:, h0:, w0:] if any(tube.offset) else x
            tokens.append(F.conv3d(clip, weight, bias, stride=tube.stride).flatten(2))
        return torch.cat(tokens, dim=2).transpose(1, 2)


class Block(nn.Module):
    """Pre-norm ViT encoder block."""

    def __init__(self, dim: int, num_heads: int, seq_len: int, mlp_ratio: float, drop_path: float, norm_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, seq_len=seq_len)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class AttentionPool(nn.Module):
    """(N, L, D) -> (N, D): softmax over one learned score per token, then the weighted sum."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.score(x).transpose(1, 2).softmax(dim=-1)  # (N, 1, L)
        return torch.matmul(weights, x).flatten(1)


class TubeViT(nn.Module):
    """TubeViT classifier: (N, 3, T, H, W) normalised clip -> (N, num_classes) logits."""

    classifier_keys = ("head.weight", "head.bias")

    def __init__(self, config: TubeViTConfig, num_classes: int):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        dim = config.embed_dim
        self.tube_embed = SparseTubeEmbed(config.tubes, config.kernel, config.in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.class_token else None
        self.register_buffer("pos_embed", tube_position_embedding(config))
        rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.Sequential(
            *(Block(dim, config.num_heads, config.seq_len, config.mlp_ratio, r, config.norm_eps) for r in rates)
        )
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps)
        self.pool = AttentionPool(dim)
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT initialisation (truncated normal 0.02, zero biases); LeCun normal for the tube kernel."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        kernel = self.tube_embed.kernel
        nn.init.trunc_normal_(kernel, std=(kernel[0].numel()) ** -0.5)
        nn.init.zeros_(self.tube_embed.bias)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.tube_embed.freeze_kernels()

    def freeze_kernels(self) -> None:
        """Recompute the per-tube resized kernels used in eval mode and by export."""
        self.tube_embed.freeze_kernels()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip -> pooled, normalised feature (N, D)."""
        x = self.tube_embed(x) + self.pos_embed
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.norm(self.blocks(x))
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x)))


# --------------------------------------------------------------------------------------------
# Checkpoints: the unofficial layout (daniel-code/TubeViT)

_UNOFFICIAL_BLOCK = {
    "ln_1": "norm1",
    "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj": "attn.proj",
    "ln_2": "norm2",
    "mlp.0": "mlp.fc1",
    "mlp.3": "mlp.fc2",
    "mlp.linear_1": "mlp.fc1",  # torchvision < 0.13 names
    "mlp.linear_2": "mlp.fc2",
}
_UNOFFICIAL_TOP = {
    "sparse_tubes_tokenizer.conv_proj_weight": "tube_embed.kernel",
    "encoder.ln": "norm",
    "attention_pooling.W": "pool.score",
    "heads.head": "head",
}


def _strip_lightning(sd: StateDict) -> StateDict:
    if any(k.startswith("model.sparse_tubes_tokenizer.") for k in sd):
        return {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    return sd


def _is_unofficial(sd) -> bool:
    return any(k.startswith(("sparse_tubes_tokenizer.", "model.sparse_tubes_tokenizer.")) for k in sd)


def convert_unofficial(sd: StateDict) -> StateDict:
    """daniel-code/TubeViT state dict -> edgevid names.

    Their class token is prepended before ``pos_embedding`` is added, so its position row (zeros
    as they build it) is folded into ``cls_token``; the other rows are ``pos_embed``.
    """
    sd = _strip_lightning(dict(sd))
    if "attention_pooling.W.weight" not in sd and any(k.startswith("encoder.layers.") for k in sd):
        raise CheckpointError(
            "this daniel-code/TubeViT checkpoint predates attention pooling (their commit 633236b, 2023-03-25) and"
            " classifies the class token; edgevid's TubeViT pools by attention as the paper and later revisions do"
        )
    out: StateDict = {}
    pos = sd.get("pos_embedding")
    if pos is not None:
        pos = pos.reshape(-1, pos.shape[-1])
        if "class_token" in sd:
            out["cls_token"] = sd["class_token"] + pos[:1].reshape(1, 1, -1)
            pos = pos[1:]
        out["pos_embed"] = pos
    elif "class_token" in sd:
        out["cls_token"] = sd["class_token"]
    for key, value in sd.items():
        if key in ("pos_embedding", "class_token"):
            continue
        if key == "sparse_tubes_tokenizer.conv_proj_bias":
            out["tube_embed.bias"] = value
            continue
        if key.startswith("encoder.layers.encoder_layer_"):
            index, rest = key[len("encoder.layers.encoder_layer_"):].split(".", 1)
            new = rename_module(rest, _UNOFFICIAL_BLOCK)
            out[f"blocks.{index}.{new}" if new else key] = value
            continue
        out[rename_module(key, _UNOFFICIAL_TOP) or key] = value
    return out


register_layout(FAMILY, "unofficial", _is_unofficial, convert_unofficial)


# --------------------------------------------------------------------------------------------
# Variants

_PAPER = "Piergiovanni et al. 2023, arXiv 2212.03229"
# The unofficial implementation (the only public weights) normalises with ImageNet statistics.
IMAGENET_NORM = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

BASE_CONFIG = TubeViTConfig(embed_dim=768, depth=12, num_heads=12)
LARGE_CONFIG = TubeViTConfig(embed_dim=1024, depth=24, num_heads=16)
SYNTH_CONFIG = TubeViTConfig(  # trained here without a class token (not a daniel-code layout)
    frames=8, crop=64, tubes=SYNTH_TUBES, kernel=(2, 8, 8), embed_dim=96, depth=4, num_heads=3, class_token=False
)


def _build(config: TubeViTConfig, num_classes: int, overrides: dict) -> TubeViT:
    """The variant's config with ``overrides`` (any ``TubeViTConfig`` field) applied."""
    return TubeViT(replace(config, **overrides), num_classes)


def _spec(name: str, top1: float, params_m: float | None, measured_params_m: float) -> ModelSpec:
    return ModelSpec(
        name=name,
        family=FAMILY,
        params_m=measured_params_m,
        clip=ClipSpec(frames=32, stride=2, crop=224, short_side=224, test_clips=4, test_crops=3),
        norm=IMAGENET_NORM,
        num_classes=400,
        label_set="kinetics400",
        published=Published(
            params_m=params_m,
            top1=top1,
            flops_note="not published in a form recorded here; count with edgevid.models.flops",
            source=f"{_PAPER}, Kinetics-400 top-1 with 4x3 views",
        ),
        checkpoint_layouts=("unofficial",),
        transformer=True,
    )


# The paper's 90.0 M is not this network's 86.55 M (daniel-code's has the same trainable layers); kept as published.
@register_model(_spec("tubevit_b", 88.6, 90.0, 86.55), aliases=("tubevit",))
def tubevit_b(num_classes: int = 400, **overrides) -> TubeViT:
    """TubeViT-B: ViT-B/16 encoder (768 wide, 12 blocks, 12 heads), the paper's four tubes, 32x224,
    class token as daniel-code/TubeViT (``class_token=False``: the paper's model)."""
    return _build(BASE_CONFIG, num_classes, overrides)


@register_model(_spec("tubevit_l", 90.2, None, 304.30))
def tubevit_l(num_classes: int = 400, **overrides) -> TubeViT:
    """TubeViT-L: ViT-L/16 encoder (1024 wide, 24 blocks, 16 heads), the paper's four tubes, 32x224.

    No daniel-code/TubeViT checkpoint of this size can exist: its position-encoding helper
    (``get_3d_sincos_pos_embed``) gives ``1024 // 3 = 341`` channels to time and asserts they are
    even, so the official code cannot build a 1024-wide model. The class token and layout follow
    ``tubevit_b`` for consistency; weights would have to come from elsewhere (e.g. trained with
    edgevid).
    """
    return _build(LARGE_CONFIG, num_classes, overrides)


@register_model(
    ModelSpec(
        name="tubevit_synth",
        family=FAMILY,
        params_m=0.49,
        clip=ClipSpec(frames=8, stride=3, crop=64, short_side=73, test_clips=1, test_crops=1),
        norm=KINETICS_NORM,
        num_classes=8,
        label_set="synthmotion",
        published=Published(source="edgevid reference model"),
        checkpoint_layouts=("unofficial",),
        transformer=True,
    )
)
def tubevit_synth(num_classes: int = 8, **overrides) -> TubeViT:
    """Tiny TubeViT for the synthetic motion set: the same four tubes fitted to 8x64 (418 tokens)."""
    return _build(SYNTH_CONFIG, num_classes, overrides)
