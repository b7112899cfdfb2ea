"""UniFormerV2 (Li et al., ICCV 2023, arXiv 2211.09552): a CLIP ViT armed with UniFormer blocks.

The architecture follows the official OpenGVLab/UniFormerV2 model:

* stem: Conv3d patch embedding without bias, kernel (1, p, p); with ``temporal_downsample`` kernel
  (3, p, p), temporal stride 2, temporal padding 1 (T halved). A class token is prepended to each
  frame, the positional embedding added, then ``ln_pre``;
* backbone: CLIP residual attention blocks (LayerNorm -> attention -> LayerNorm -> MLP with
  QuickGELU) whose attention is per frame. Local UniBlocks add a Local MHRA (BatchNorm3d ->
  1x1x1 conv -> depthwise (3,1,1) temporal conv -> 1x1x1 conv, zero-initialised) on the patch
  tokens before the attention and, with ``double_lmhra``, a second one before the MLP;
* global UniBlocks after the layers in ``return_list``: a dynamic position encoding (depthwise
  3x3x3 Conv3d added to the patch tokens of a copy of the features), then a cross-attention
  "extractor" from one learnable query onto all T*(1+HW) tokens of the clip, and an MLP. The
  query output of one global block is the query of the next (serial multi-stage fusion);
* head: ``(1 - sigmoid(balance)) * query + sigmoid(balance) * mean_T(backbone CLS)`` ->
  LayerNorm -> Dropout -> Linear. The model returns logits.

Token layout: batch-first ``(N*T, 1+H*W, C)`` with frames of one clip adjacent (row ``n*T + t``)
and the class token first. The official code keeps CLIP's sequence-first ``(1+HW, N*T, C)``;
only the axis order differs. For a global block the clip's tokens are the contiguous
view ``(N, T*(1+HW), C)`` (t-major), exactly the official key/value order.

Every MLP in the official model (backbone and extractor) uses CLIP's QuickGELU
``x * sigmoid(1.702 x)``. Every LayerNorm here computes in fp32 (input cast in, result cast
back): the official backbone norms do so, its global-block and head norms are plain LayerNorms,
which is the same thing in fp32 and less accurate in half precision. Attention is plain matmul +
softmax, and every shape comes from the config, so the model exports with torch.export and to
ONNX (dynamic batch) without data-dependent shapes.

Checkpoints: the official SlowFast-style files (``backbone.*`` keys, raw or under
``model_state``) and MMAction2's port (head LayerNorm ``backbone.transformer.norm``, classifier
``cls_head.fc_cls``, under ``state_dict``) are registered layouts. MMAction2 orders the Kinetics
classes of its checkpoints differently from the official ones and remaps them by label name; that
remap is out of scope here, so pair an MMAction2 checkpoint with MMAction2's label list.

Not supported: the official ``frozen`` variant (head on the query alone, no ``balance``) and its
checkpoints; activation checkpointing (a training feature).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..spec import KINETICS_NORM, ClipSpec, ModelSpec, Published
from .checkpoint import StateDict, register_layout, rename_module
from .layers import DropPath, Mlp
from .registry import register_model

__all__ = [
    "UniFormerV2", "UniFormerV2Config", "B16_CONFIG", "L14_CONFIG", "B16_SSV2_CONFIG", "SYNTH_CONFIG",
    "LocalUniBlock", "GlobalUniBlock", "LocalMHRA", "LayerNorm", "QuickGELU",
    "uniformerv2_b16", "uniformerv2_l14", "uniformerv2_b16_ssv2", "uniformerv2_synth",
    "convert_official", "convert_mmaction2",
]

FAMILY = "uniformerv2"


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (as CLIP does), cast back after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``; the checkpoints were trained with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the tokens of one frame; fused qkv as in CLIP's in_proj."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, dim = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, tokens, dim)
        return self.proj(out)


class CrossAttention(nn.Module):
    """Multi-head attention from a few query tokens onto many key/value tokens."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"n_dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n_query, dim = query.shape[1], query.shape[2]
        n_context = context.shape[1]
        q = self.q(query).reshape(-1, n_query, self.heads, self.head_dim).transpose(1, 2)
        kv = self.kv(context).reshape(-1, n_context, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, n_query, dim)
        return self.proj(out)


class LocalMHRA(nn.Module):
    """Local multi-head relation aggregator on a (N, C, T, H, W) map: temporal depthwise conv in a
    bottleneck. The last conv starts at zero so a CLIP-initialised block starts as CLIP."""

    def __init__(self, dim: int, dw_reduction: float = 1.5, kernel_size: int = 3) -> None:
        super().__init__()
        inner = int(dim // dw_reduction)
        self.norm = nn.BatchNorm3d(dim)
        self.reduce = nn.Conv3d(dim, inner, kernel_size=1)
        self.temporal = nn.Conv3d(inner, inner, kernel_size=(kernel_size, 1, 1),
                                  padding=(kernel_size // 2, 0, 0), groups=inner)
        self.expand = nn.Conv3d(inner, dim, kernel_size=1)
        nn.init.zeros_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.temporal(self.reduce(self.norm(x))))


def _patches_to_map(patches: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
    """(N*T, H*W, C) -> (N, C, T, H, W)."""
    return patches.reshape(-1, t, h, w, patches.shape[-1]).permute(0, 4, 1, 2, 3)


def _map_to_patches(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> (N*T, H*W, C)."""
    c, t, h, w = x.shape[1:]
    return x.permute(0, 2, 3, 4, 1).reshape(-1, h * w, c)


class LocalUniBlock(nn.Module):
    """CLIP residual attention block with optional Local MHRA before the attention and the MLP.

    Works on tokens (N*T, 1+H*W, C); ``t, h, w`` are the token grid of one clip.
    """

    def __init__(self, dim: int, heads: int, t: int, h: int, w: int, drop_path: float = 0.0,
                 lmhra: bool = False, double_lmhra: bool = False, dw_reduction: float = 1.5) -> None:
        super().__init__()
        self.grid = (t, h, w)
        self.lmhra1 = LocalMHRA(dim, dw_reduction) if lmhra else None
        self.norm1 = LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.lmhra2 = LocalMHRA(dim, dw_reduction) if lmhra and double_lmhra else None
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim, QuickGELU)
        self.drop_path = DropPath(drop_path)

    def _local(self, x: torch.Tensor, lmhra: LocalMHRA) -> torch.Tensor:
        cls, patches = x[:, :1], x[:, 1:]
        grid = _patches_to_map(patches, *self.grid)
        grid = grid + self.drop_path(lmhra(grid))
        return torch.cat([cls, _map_to_patches(grid)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lmhra1 is not None:
            x = self._local(x, self.lmhra1)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        if self.lmhra2 is not None:
            x = self._local(x, self.lmhra2)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class GlobalUniBlock(nn.Module):
    """Dynamic position encoding + query-to-clip cross-attention extractor + MLP.

    ``norm_q``, ``norm_kv`` and ``norm_mlp`` are the official ``ln_1``, ``ln_3`` and ``ln_2``.
    """

    def __init__(self, dim: int, heads: int, t: int, h: int, w: int, mlp_factor: float = 4.0,
                 dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.grid = (t, h, w)
        self.dpe = nn.Conv3d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm_q = LayerNorm(dim)
        self.norm_kv = LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.norm_mlp = LayerNorm(dim)
        self.mlp = Mlp(dim, round(mlp_factor * dim), QuickGELU, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """query (N, 1, C); tokens (N*T, 1+H*W, C) from the backbone, left unchanged."""
        t, h, w = self.grid
        cls, patches = tokens[:, :1], tokens[:, 1:]
        patches = patches + _map_to_patches(self.dpe(_patches_to_map(patches, t, h, w)))
        context = torch.cat([cls, patches], dim=1).reshape(-1, t * (1 + h * w), tokens.shape[-1])
        query = query + self.drop_path(self.attn(self.norm_q(query), self.norm_kv(context)))
        return query + self.drop_path(self.mlp(self.norm_mlp(query)))


def _per_layer(value: float | Sequence[float], n: int, name: str) -> list[float]:
    values = [float(value)] * n if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) < n:
        raise ValueError(f"{name} has {len(values)} entries for {n} global blocks")
    return values[:n]


def _linspace(stop: float, n: int) -> list[float]:
    """Drop-path rates rising from 0 to ``stop`` over ``n`` blocks (plain Python: meta-safe)."""
    return [stop * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


@dataclass(frozen=True)
class UniFormerV2Config:
    """Architecture and input geometry, under the official names; defaults are the Kinetics-400 B/16.

    ``t_size`` is the number of input frames (halved inside when ``temporal_downsample``).
    ``return_list`` names the backbone layers followed by a global UniBlock (``n_layers`` of them,
    applied in layer order). ``mlp_dropout`` is one rate per global block (or one for all).
    ``n_dim`` must equal ``width``, as in every official configuration.
    """

    input_resolution: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    t_size: int = 8
    kernel_size: int = 3
    temporal_downsample: bool = False
    dw_reduction: float = 1.5
    no_lmhra: bool = True
    double_lmhra: bool = True
    return_list: tuple[int, ...] = (8, 9, 10, 11)
    n_layers: int = 4
    n_dim: int = 768
    n_head: int = 12
    mlp_factor: float = 4.0
    backbone_drop_path_rate: float = 0.0
    drop_path_rate: float = 0.0
    mlp_dropout: float | tuple[float, ...] = 0.5
    cls_dropout: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "return_list", tuple(self.return_list))
        if not isinstance(self.mlp_dropout, (int, float)):
            object.__setattr__(self, "mlp_dropout", tuple(self.mlp_dropout))
        return_list, n_layers, layers = self.return_list, self.n_layers, self.layers
        if self.input_resolution % self.patch_size:
            raise ValueError(f"input_resolution {self.input_resolution} is not a multiple of patch_size {self.patch_size}")
        if self.n_dim != self.width:
            raise ValueError(f"n_dim ({self.n_dim}) must equal width ({self.width}): global blocks read backbone tokens")
        if len(return_list) != n_layers or len(set(return_list)) != n_layers:
            raise ValueError(f"return_list {list(return_list)} must hold n_layers={n_layers} distinct layers")
        if not all(0 <= i < layers for i in return_list):
            raise ValueError(f"return_list {list(return_list)} names layers outside 0..{layers - 1}")
        _per_layer(self.mlp_dropout, n_layers, "mlp_dropout")


class UniFormerV2(nn.Module):
    """UniFormerV2 video classifier; input (N, 3, T, H, W) with T = ``t_size``, H = W =
    ``input_resolution`` of its ``UniFormerV2Config``; output logits (N, num_classes)."""

    classifier_keys = ("head.weight", "head.bias")

    def __init__(self, config: UniFormerV2Config, num_classes: int) -> None:
        super().__init__()
        self.config = c = config
        self.num_classes = num_classes
        self.in_frames = c.t_size
        self.input_resolution = c.input_resolution
        width, patch, grid = c.width, c.patch_size, c.input_resolution // c.patch_size
        if c.temporal_downsample:
            pad = (c.kernel_size - 1) // 2
            self.patch_embed = nn.Conv3d(3, width, (c.kernel_size, patch, patch),
                                         stride=(2, patch, patch), padding=(pad, 0, 0), bias=False)
            t = (c.t_size + 2 * pad - c.kernel_size) // 2 + 1
        else:
            self.patch_embed = nn.Conv3d(3, width, (1, patch, patch), stride=(1, patch, patch), bias=False)
            t = c.t_size
        self.grid = (t, grid, grid)

        scale = width ** -0.5
        self.cls_token = nn.Parameter(scale * torch.randn(width))
        self.pos_embed = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.norm_pre = LayerNorm(width)

        backbone_dpr = _linspace(c.backbone_drop_path_rate, c.layers)
        self.blocks = nn.ModuleList(
            LocalUniBlock(width, c.heads, t, grid, grid, drop_path=backbone_dpr[i], lmhra=not c.no_lmhra,
                          double_lmhra=c.double_lmhra, dw_reduction=c.dw_reduction)
            for i in range(c.layers)
        )

        # The official code numbers global blocks in layer order, whatever order return_list has.
        self.global_after = {layer: j for j, layer in enumerate(sorted(c.return_list))}
        dropouts = _per_layer(c.mlp_dropout, c.n_layers, "mlp_dropout")
        global_dpr = _linspace(c.drop_path_rate, c.n_layers)
        self.global_query = nn.Parameter(torch.zeros(1, 1, c.n_dim))
        self.global_blocks = nn.ModuleList(
            GlobalUniBlock(c.n_dim, c.n_head, t, grid, grid, mlp_factor=c.mlp_factor, dropout=dropouts[j],
                           drop_path=global_dpr[j])
            for j in range(c.n_layers)
        )
        self.balance = nn.Parameter(torch.zeros(c.n_dim))
        self.fc_norm = LayerNorm(c.n_dim)
        self.head_drop = nn.Dropout(c.cls_dropout)
        self.head = nn.Linear(c.n_dim, num_classes)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """The official initialisation for everything a CLIP checkpoint does not provide; the CLIP
        parts get nn.MultiheadAttention's (xavier in_proj, zero biases) and PyTorch defaults."""
        for block in self.blocks:
            nn.init.xavier_uniform_(block.attn.qkv.weight)
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.zeros_(block.attn.proj.bias)
        for block in self.global_blocks:
            dim = block.attn.q.weight.shape[1]
            bound = (6.0 / (3 * dim + dim)) ** 0.5  # xavier over the fused [3C, C] in_proj
            nn.init.uniform_(block.attn.q.weight, -bound, bound)
            nn.init.uniform_(block.attn.kv.weight, -bound, bound)
            nn.init.zeros_(block.attn.q.bias)
            nn.init.zeros_(block.attn.kv.bias)
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.attn.proj.bias)
            nn.init.xavier_uniform_(block.mlp.fc1.weight)
            nn.init.zeros_(block.mlp.fc2.weight)
            nn.init.zeros_(block.mlp.fc2.bias)
            nn.init.zeros_(block.dpe.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip (N, 3, T, H, W) -> the pre-classifier feature (N, C), after ``fc_norm``."""
        if x.shape[1:] != (3, self.in_frames, self.input_resolution, self.input_resolution):
            raise ValueError(
                f"UniFormerV2 expects clips of shape (N, 3, {self.in_frames}, {self.input_resolution},"
                f" {self.input_resolution}), got {tuple(x.shape)}"
            )
        n = x.shape[0]
        x = _map_to_patches(self.patch_embed(x))  # (N*T, HW, C)
        dim = x.shape[-1]
        cls = self.cls_token.reshape(1, 1, dim).expand(x.shape[0], 1, dim)
        x = self.norm_pre(torch.cat([cls, x], dim=1) + self.pos_embed)

        query = self.global_query.expand(n, 1, dim)
        for i, block in enumerate(self.blocks):
            x = block(x)
            j = self.global_after.get(i)
            if j is not None:
                query = self.global_blocks[j](query, x)

        frame_cls = x[:, 0].reshape(-1, self.grid[0], dim).mean(dim=1)
        weight = torch.sigmoid(self.balance)
        return self.fc_norm((1 - weight) * query[:, 0] + weight * frame_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x)))


# --------------------------------------------------------------------------------------------
# Variants. Configurations: the official exp/*/config.yaml and run/test scripts (as mirrored by
# MMAction2's configs). Top-1: OpenGVLab/UniFormerV2 MODEL_ZOO.md. Params/FLOPs: MMAction2's
# model card, whose counter rounds to one digit and misses nn.MultiheadAttention's fused
# projections; edgevid's own counts are in the flops_note.
# --------------------------------------------------------------------------------------------

_ZOO = "https://pjlab-gvm-data.oss-cn-shanghai.aliyuncs.com/uniformerv2"
_SOURCE = "OpenGVLab/UniFormerV2 MODEL_ZOO.md (top-1); MMAction2 UniFormerV2 model card (params, FLOPs)"
_LAYOUTS = ("official", "mmaction2")

B16_CONFIG = UniFormerV2Config(
    input_resolution=224, patch_size=16, width=768, layers=12, heads=12, t_size=8,
    temporal_downsample=False, no_lmhra=True, double_lmhra=True, dw_reduction=1.5,
    return_list=(8, 9, 10, 11), n_layers=4, n_dim=768, n_head=12, mlp_factor=4.0,
    mlp_dropout=(0.5,) * 4, cls_dropout=0.5,
)
L14_CONFIG = replace(
    B16_CONFIG, patch_size=14, width=1024, layers=24, heads=16,
    return_list=(20, 21, 22, 23), n_dim=1024, n_head=16,
)
B16_SSV2_CONFIG = replace(
    B16_CONFIG, t_size=16, temporal_downsample=True, no_lmhra=False, double_lmhra=True,
    return_list=tuple(range(4, 12)), n_layers=8, mlp_dropout=(0.5,) * 8,
    backbone_drop_path_rate=0.2, drop_path_rate=0.4,
)
SYNTH_CONFIG = UniFormerV2Config(
    input_resolution=112, patch_size=16, width=96, layers=6, heads=4, t_size=8,
    temporal_downsample=True, no_lmhra=False, double_lmhra=True, dw_reduction=1.5,
    return_list=(2, 3, 4, 5), n_layers=4, n_dim=96, n_head=4, mlp_factor=4.0,
    mlp_dropout=0.0, cls_dropout=0.2,
)

#: what the backends' INT8 recipes read (ModelSpec fields): attention blocks; SmoothQuant off (on the trained
#: uniformerv2_synth it cost 5.5 top-1 points on OpenVINO, see ModelSpec.smooth_quant)
_INT8_FACTS = dict(transformer=True, smooth_quant=False)


def _kinetics_spec(name: str, params_m: float, gflops: float, flops_note: str, top1: float,
                   url: str, measured_params_m: float) -> ModelSpec:
    return ModelSpec(
        name=name,
        family=FAMILY,
        params_m=measured_params_m,
        # the official K400 recipe samples with the `kinetics_sparse` loader: one frame from each of 8
        # equal segments of the whole video (its SAMPLING_RATE 16 only sets how a live stream samples)
        clip=ClipSpec(frames=8, stride=16, crop=224, short_side=224, test_clips=4, test_crops=3, sampling="segment"),
        norm=KINETICS_NORM,
        num_classes=400,
        label_set="kinetics400",
        published=Published(params_m=params_m, gflops=gflops, flops_note=flops_note, top1=top1,
                            dataset="Kinetics-400", source=_SOURCE),
        checkpoint_url=url,
        checkpoint_layouts=_LAYOUTS,
        **_INT8_FACTS,
    )


def _build(config: UniFormerV2Config, num_classes: int, overrides: dict) -> UniFormerV2:
    """The variant's config with ``overrides`` (any ``UniFormerV2Config`` field) applied."""
    return UniFormerV2(replace(config, **overrides), num_classes)


@register_model(
    _kinetics_spec(
        "uniformerv2_b16", 115.0, 100.0,
        "MMAction2: 0.1 TFLOPs per 8x224 view; edgevid counts 148 G multiply-adds per view;"
        " 4 clips x 3 crops at test",
        84.4, f"{_ZOO}/k400/k400_uniformerv2_b16_8x224.pyth", 114.55,
    ),
    aliases=("uniformerv2_b",),
)
def uniformerv2_b16(num_classes: int = 400, **overrides) -> UniFormerV2:
    """UniFormerV2-B/16, Kinetics-400 8x224 (CLIP-400M): global UniBlocks on layers 8-11 only,
    no Local MHRA, no temporal downsampling.

    The official loader samples the 8 frames sparsely over the whole video (one per segment);
    the ClipSpec stride is the config's SAMPLING_RATE (16).
    """
    return _build(B16_CONFIG, num_classes, overrides)


@register_model(
    _kinetics_spec(
        "uniformerv2_l14", 354.0, 700.0,
        "MMAction2: 0.7 TFLOPs per 8x224 view; edgevid counts 666 G multiply-adds per view;"
        " 4 clips x 3 crops at test",
        88.8, f"{_ZOO}/k400/k400_k710_uniformerv2_l14_8x224.pyth", 354.10,
    ),
    aliases=("uniformerv2_l",),
)
def uniformerv2_l14(num_classes: int = 400, **overrides) -> UniFormerV2:
    """UniFormerV2-L/14, Kinetics-400 8x224 (CLIP-400M + K710): global UniBlocks on layers 20-23,
    no Local MHRA, no temporal downsampling. Frame sampling as for ``uniformerv2_b16``.
    """
    return _build(L14_CONFIG, num_classes, overrides)


@register_model(
    ModelSpec(
        name="uniformerv2_b16_ssv2",
        family=FAMILY,
        params_m=162.99,
        # SSv2 is sampled in 16 equal segments per video (~45 frames at 12 fps: a stream samples at stride 3)
        clip=ClipSpec(frames=16, stride=3, crop=224, short_side=224, test_clips=1, test_crops=3, sampling="segment"),
        norm=KINETICS_NORM,
        num_classes=174,
        label_set="ssv2",
        published=Published(top1=69.5, dataset="Something-Something V2",
                            flops_note="edgevid counts 187 G multiply-adds per 16x224 view; 1 clip x 3 crops at test",
                            source="OpenGVLab/UniFormerV2 MODEL_ZOO.md"),
        checkpoint_url=f"{_ZOO}/sthv2/sthv2_uniformerv2_b16_16x224.pyth",
        checkpoint_layouts=_LAYOUTS,
        **_INT8_FACTS,
    ),
)
def uniformerv2_b16_ssv2(num_classes: int = 174, **overrides) -> UniFormerV2:
    """UniFormerV2-B/16, Something-Something V2 16x224 (CLIP-400M): temporal downsampling stem,
    Local UniBlocks with double Local MHRA in all 12 layers, global UniBlocks on layers 4-11.

    The official sth loader takes one frame from each of 16 equal segments of the video; the
    ClipSpec stride approximates that for a typical SSv2 clip.
    """
    return _build(B16_SSV2_CONFIG, num_classes, overrides)


@register_model(
    ModelSpec(
        name="uniformerv2_synth",
        family=FAMILY,
        params_m=1.51,
        clip=ClipSpec(frames=8, stride=3, crop=112, short_side=128, test_clips=1, test_crops=1),
        norm=KINETICS_NORM,
        num_classes=8,
        label_set="synthmotion",
        published=Published(dataset="SynthMotion", source="edgevid reference model"),
        **_INT8_FACTS,
    )
)
def uniformerv2_synth(num_classes: int = 8, **overrides) -> UniFormerV2:
    """Tiny UniFormerV2 for the synthetic motion set (8x112, trains from scratch on a CPU).

    Same architecture as the SSv2 variant: temporal-downsampling stem (8 -> 4 steps), 6 Local
    UniBlocks of width 96 with double Local MHRA, global UniBlocks on layers 2-5.
    """
    return _build(SYNTH_CONFIG, num_classes, overrides)


# --------------------------------------------------------------------------------------------
# Official checkpoint layouts -> our names.
# --------------------------------------------------------------------------------------------

_LMHRA_PARTS = {"0": "norm", "1": "reduce", "2": "temporal", "3": "expand"}
_BLOCK_RENAMES = {
    "ln_1": "norm1", "ln_2": "norm2", "attn.out_proj": "attn.proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
_DEC_RENAMES = {
    "ln_1": "norm_q", "ln_3": "norm_kv", "ln_2": "norm_mlp", "attn.out_proj": "attn.proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
_TOP_RENAMES = {
    "conv1.weight": "patch_embed.weight",
    "class_embedding": "cls_token",
    "positional_embedding": "pos_embed",
    "transformer.temporal_cls_token": "global_query",
    "transformer.balance": "balance",
}


def _strip_backbone(sd: StateDict) -> StateDict:
    return {(k[len("backbone."):] if k.startswith("backbone.") else k): v for k, v in sd.items()}


def _convert_backbone(sd: StateDict) -> StateDict:
    """Official backbone names (without ``backbone.``) -> ours; heads are left to the caller."""
    out: StateDict = {}
    for key, value in sd.items():
        parts = key.split(".")
        if key in _TOP_RENAMES:
            out[_TOP_RENAMES[key]] = value
        elif key.startswith("ln_pre."):
            out["norm_pre." + key[len("ln_pre."):]] = value
        elif key.startswith("transformer.resblocks."):
            i, rest = parts[2], ".".join(parts[3:])
            prefix = f"blocks.{i}."
            if rest.startswith(("lmhra1.pos_embed.", "lmhra2.pos_embed.")):
                which, index, tail = parts[3], parts[5], ".".join(parts[6:])
                out[f"{prefix}{which}.{_LMHRA_PARTS[index]}.{tail}"] = value
            elif rest == "attn.in_proj_weight":
                out[prefix + "attn.qkv.weight"] = value
            elif rest == "attn.in_proj_bias":
                out[prefix + "attn.qkv.bias"] = value
            else:
                out[prefix + (rename_module(rest, _BLOCK_RENAMES) or rest)] = value
        elif key.startswith("transformer.dpe."):
            out[f"global_blocks.{parts[2]}.dpe.{'.'.join(parts[3:])}"] = value
        elif key.startswith("transformer.dec."):
            j, rest = parts[2], ".".join(parts[3:])
            prefix = f"global_blocks.{j}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]  # weight | bias
                dim = value.shape[0] // 3
                out[f"{prefix}attn.q.{kind}"] = value[:dim]
                out[f"{prefix}attn.kv.{kind}"] = value[dim:]
            else:
                out[prefix + (rename_module(rest, _DEC_RENAMES) or rest)] = value
        else:
            out[key] = value  # reported as unexpected by load_checkpoint
    return out


_HEAD = {"proj.0.": "fc_norm.", "proj.2.": "head."}


def convert_official(sd: StateDict) -> StateDict:
    """OpenGVLab/UniFormerV2 (SlowFast) names -> ours. Head: ``transformer.proj.{0,2}``."""
    sd = _strip_backbone(sd)
    head = {}
    for key in [k for k in sd if k.startswith("transformer.proj.")]:
        rest = key[len("transformer."):]
        for old, new in _HEAD.items():
            if rest.startswith(old):
                head[new + rest[len(old):]] = sd.pop(key)
    return {**_convert_backbone(sd), **head}


def convert_mmaction2(sd: StateDict) -> StateDict:
    """MMAction2 port -> ours: ``backbone.transformer.norm`` is the head LayerNorm and
    ``cls_head.fc_cls`` the classifier. Class order is taken as is (no label remap)."""
    sd = {k: v for k, v in sd.items() if not k.startswith("data_preprocessor.")}
    head = {}
    for key in list(sd):
        if key.startswith("cls_head.fc_cls."):
            head["head." + key[len("cls_head.fc_cls."):]] = sd.pop(key)
        elif key.startswith("backbone.transformer.norm."):
            head["fc_norm." + key[len("backbone.transformer.norm."):]] = sd.pop(key)
    return {**_convert_backbone(_strip_backbone(sd)), **head}


def _has_stem(sd) -> bool:
    return "backbone.conv1.weight" in sd or "conv1.weight" in sd


def _is_mmaction2(sd) -> bool:
    return _has_stem(sd) and ("cls_head.fc_cls.weight" in sd or "backbone.transformer.norm.weight" in sd)


def _is_official(sd) -> bool:
    return _has_stem(sd) and not _is_mmaction2(sd) and any(".resblocks." in k for k in sd)


register_layout(FAMILY, "official", _is_official, convert_official)
register_layout(FAMILY, "mmaction2", _is_mmaction2, convert_mmaction2)
