"""X3D (Feichtenhofer, CVPR 2020, arXiv 2004.04730): channel-wise 3D ResNets expanded from a tiny base.

The architecture follows the reference implementation in facebookresearch/SlowFast:

* stem: 1x3x3 conv (spatial stride 2) -> depthwise 5x1x1 temporal conv -> BN -> ReLU;
* four stages of bottleneck blocks: 1x1x1 conv -> BN -> ReLU -> depthwise 3x3x3 conv (spatial
  stride 2 in each stage's first block) -> BN -> squeeze-excitation (blocks 0, 2, 4, ...) -> SiLU
  -> 1x1x1 conv -> BN, plus a projection shortcut (1x1x1 conv + BN) on each stage's first block,
  ReLU after the residual sum;
* head (SlowFast ``X3DHead``, pytorchvideo ``create_x3d_head``): 1x1x1 conv -> BN -> ReLU ->
  average pool with the *training* window at stride 1 -> 1x1x1 conv (no bias) -> ReLU -> dropout
  -> linear classifier at every pooled position -> the average over positions. The model returns
  logits.

The head's window is ``(frames, ceil(train_crop / 32), ceil(train_crop / 32))``, as both official
builders size it. At the training crop it covers the whole feature map (one position, a global
pool); at the larger test crops of the model zoo it leaves several: 2x2 for X3D-XS/S (6x6 map at
182) and X3D-M (8x8 at 256), 3x3 for X3D-L (12x12 at 356). Pooling globally instead moves the
logits there by 5-11% of their scale (measured on seeded random weights against the official
models), so the window is part of the model.

Which average: the logits follow **pytorchvideo** (``head_activation=None``, then
``AdaptiveAvgPool3d(1)``): the mean of the position logits. SlowFast's test head instead takes a
softmax at each position and averages the probabilities. We keep logits because everything
downstream compares logits (INT8 vs FP32 cosine, SQNR, max-abs; calibration; the view combiner's
softmax); because the mean of logits is linear, so it runs before the classifier as one pooled
vector, the same graph as at the training crop, clean for every backend; and because pytorchvideo's
hub models, which load here too, are defined that way. To reproduce SlowFast's published protocol
(accuracy comparisons with its model zoo), build with ``position_average="softmax"``: the model
then returns ``log(mean softmax)`` over positions (``average_positions``), whose softmax is exactly
SlowFast's per-view score, so a view combiner that averages (or, as SlowFast's ``ENSEMBLE_METHOD:
sum``, adds) softmax over views ranks classes as SlowFast does.

Official checkpoints load from SlowFast ``.pyth`` files and from pytorchvideo's hub files; both
layouts are registered below.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from ..spec import KINETICS_NORM, ClipSpec, ModelSpec, Published
from .checkpoint import StateDict, register_layout
from .registry import register_model

__all__ = ["X3D", "X3DConfig", "X3DBlock", "X3DHead", "SqueezeExcite", "round_width", "head_pool_size",
           "average_positions", "TRAIN_CROPS", "XS_CONFIG", "S_CONFIG", "M_CONFIG", "L_CONFIG", "SYNTH_CONFIG",
           "x3d_xs", "x3d_s", "x3d_m", "x3d_l", "x3d_synth"]


def round_width(width: float, multiplier: float = 1.0, min_width: int = 8, divisor: int = 8) -> int:
    """X3D's channel rounding: ``width * multiplier`` to the nearest multiple of ``divisor``,
    never below ``min_width`` nor more than 10% under the unrounded value."""
    width = width * multiplier
    rounded = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * width:
        rounded += divisor
    return int(rounded)


class SqueezeExcite(nn.Module):
    """Channel gating: global average -> 1x1x1 conv -> ReLU -> 1x1x1 conv -> sigmoid -> scale."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = round_width(channels, ratio)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.reduce = nn.Conv3d(channels, hidden, kernel_size=1, bias=True)
        self.act = nn.ReLU()
        self.expand = nn.Conv3d(hidden, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class X3DBlock(nn.Module):
    """Bottleneck residual block with a depthwise 3x3x3 conv, optional SE, and SiLU inside."""

    def __init__(self, in_width: int, inner_width: int, out_width: int, spatial_stride: int = 1,
                 se_ratio: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_width, inner_width, kernel_size=1, bias=False)
        self.norm1 = nn.BatchNorm3d(inner_width)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv3d(inner_width, inner_width, kernel_size=3, padding=1, groups=inner_width,
                               stride=(1, spatial_stride, spatial_stride), bias=False)
        self.norm2 = nn.BatchNorm3d(inner_width)
        self.se = SqueezeExcite(inner_width, se_ratio) if se_ratio > 0 else nn.Identity()
        self.act2 = nn.SiLU()
        self.conv3 = nn.Conv3d(inner_width, out_width, kernel_size=1, bias=False)
        self.norm3 = nn.BatchNorm3d(out_width)
        self.shortcut = None
        if in_width != out_width or spatial_stride != 1:
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv3d(in_width, out_width, kernel_size=1, bias=False,
                               stride=(1, spatial_stride, spatial_stride)),
                norm=nn.BatchNorm3d(out_width),
            ))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.se(self.norm2(self.conv2(out))))
        out = self.norm3(self.conv3(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act(out + identity)


PositionAverage = Literal["logits", "softmax"]
POSITION_AVERAGES = ("logits", "softmax")


def _check_position_average(average: str) -> None:
    if average not in POSITION_AVERAGES:
        raise ValueError(f"position_average must be one of {', '.join(POSITION_AVERAGES)}, got {average!r}")


def head_pool_size(frames: int, train_crop: int, spatial_stride: int = 32) -> tuple[int, int, int]:
    """The official head's pooling window: all training frames, ``ceil(train_crop / 32)`` pixels
    (SlowFast ``video_model_builder.X3D``: ``spat_sz = ceil(TRAIN_CROP_SIZE / 32.0)``)."""
    side = int(math.ceil(train_crop / spatial_stride))
    return (frames, side, side)


def average_positions(position_logits: torch.Tensor, average: PositionAverage = "logits") -> torch.Tensor:
    """(N, P, K) class scores at the head's P pooled positions -> (N, K) logits of the view.

    ``"logits"``: the mean of the logits (pytorchvideo). ``"softmax"``: ``log`` of the mean softmax
    probability (SlowFast's test head); its softmax is exactly SlowFast's view score.
    """
    if average == "logits":
        return position_logits.mean(1)
    if average == "softmax":
        return torch.logsumexp(torch.log_softmax(position_logits, -1), 1) - math.log(position_logits.shape[1])
    raise ValueError(f"position_average must be one of {', '.join(POSITION_AVERAGES)}, got {average!r}")


class X3DHead(nn.Module):
    """1x1x1 conv -> BN -> ReLU -> window pool (stride 1) -> 1x1x1 conv -> ReLU -> dropout ->
    linear per position -> average over positions.

    ``pool_size`` is the official ``(T, h, w)`` window (``head_pool_size``); None pools globally.
    A feature map smaller than the window along an axis is pooled whole along it (the official
    head raises there), so small probe inputs still run.
    """

    def __init__(self, in_width: int, conv_width: int, fc_width: int, num_classes: int,
                 dropout: float, pool_size: tuple[int, int, int] | None = None,
                 position_average: PositionAverage = "logits") -> None:
        super().__init__()
        _check_position_average(position_average)
        self.pool_size = None if pool_size is None else tuple(int(k) for k in pool_size)
        self.position_average = position_average
        self.conv = nn.Conv3d(in_width, conv_width, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm3d(conv_width)
        self.act = nn.ReLU()
        self.fc = nn.Conv3d(conv_width, fc_width, kernel_size=1, bias=False)
        self.fc_act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(fc_width, num_classes)

    def window(self, feature_size) -> tuple[int, int, int]:
        """The pooling window used on a (T, H, W) feature map."""
        size = tuple(int(s) for s in feature_size)
        return size if self.pool_size is None else tuple(min(k, s) for k, s in zip(self.pool_size, size))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """``avg_pool3d(x, window, stride=1)``, written as a time mean plus a 2-D-shaped spatial pool
        (equal; the forms the ExecuTorch frames rewrite and OpenVINO map to single rank-4 ops)."""
        t, h, w = x.shape[2:]
        kt, kh, kw = self.window((t, h, w))
        if (kt, kh, kw) == (t, h, w):
            return x.mean((2, 3, 4), keepdim=True)
        if kt == t:
            x, kt = x.mean(2, keepdim=True), 1
        if (kh, kw) == (h, w) and kt == 1:
            return x.mean((3, 4), keepdim=True)
        return nn.functional.avg_pool3d(x, (kt, kh, kw), stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.conv(x)))
        x = self.dropout(self.fc_act(self.fc(self.pool(x))))  # (N, C, t, h, w): one vector per position
        if self.position_average == "logits":
            # The mean of the position logits is the classifier of the mean position vector.
            x = torch.flatten(x, 1) if x.shape[2:] == (1, 1, 1) else x.mean((2, 3, 4))
            return self.classifier(x)
        return average_positions(self.classifier(x.flatten(2).transpose(1, 2)), self.position_average)


@dataclass(frozen=True)
class X3DConfig:
    """Architecture of one X3D (SlowFast's ``MODEL`` / ``X3D`` settings); every layer size comes from it.

    Defaults are X3D-XS/S/M's network (they differ only in their clip) with a global head pool.
    """

    stem_width: int = 24
    stage_widths: tuple[int, ...] = (24, 48, 96, 192)
    stage_depths: tuple[int, ...] = (3, 5, 11, 7)
    bottleneck_factor: float = 2.25
    se_ratio: float = 0.0625
    head_conv_width: int | None = None  # None: bottleneck_factor x the last stage's width
    head_fc_width: int = 2048
    stem_temporal_kernel: int = 5
    dropout: float = 0.5
    in_channels: int = 3
    head_pool_size: tuple[int, int, int] | None = None  # the official window (``head_pool_size``); None: global
    position_average: PositionAverage = "logits"

    def __post_init__(self):
        object.__setattr__(self, "stage_widths", tuple(self.stage_widths))
        object.__setattr__(self, "stage_depths", tuple(self.stage_depths))
        if self.head_pool_size is not None:
            object.__setattr__(self, "head_pool_size", tuple(int(k) for k in self.head_pool_size))
        if len(self.stage_widths) != len(self.stage_depths):
            raise ValueError("stage_widths and stage_depths must have the same length")
        _check_position_average(self.position_average)


class X3D(nn.Module):
    """X3D network on clips of shape (N, 3, T, H, W); returns logits (N, num_classes).

    There is no temporal striding and the total spatial stride is 32, so any T >= 1 and H, W >= 1
    are accepted; H = W = 32 is the smallest size at which the last stage sees one full pixel.
    ``head_pool_size`` / ``position_average``: see ``X3DHead`` and the module docstring.
    """

    classifier_keys = ("head.classifier.weight", "head.classifier.bias")

    def __init__(self, config: X3DConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        stem_width = config.stem_width
        self.stem = nn.Sequential(OrderedDict(
            spatial=nn.Conv3d(config.in_channels, stem_width, kernel_size=(1, 3, 3), stride=(1, 2, 2),
                              padding=(0, 1, 1), bias=False),
            temporal=nn.Conv3d(stem_width, stem_width, kernel_size=(config.stem_temporal_kernel, 1, 1),
                               padding=(config.stem_temporal_kernel // 2, 0, 0), groups=stem_width, bias=False),
            norm=nn.BatchNorm3d(stem_width),
            act=nn.ReLU(),
        ))
        stages, width = [], stem_width
        for out_width, depth in zip(config.stage_widths, config.stage_depths):
            inner = int(config.bottleneck_factor * out_width)
            blocks = [
                X3DBlock(width if i == 0 else out_width, inner, out_width, spatial_stride=2 if i == 0 else 1,
                         se_ratio=config.se_ratio if i % 2 == 0 else 0.0)
                for i in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            width = out_width
        self.stages = nn.Sequential(*stages)
        head_conv_width = config.head_conv_width or int(config.bottleneck_factor * width)
        self.head = X3DHead(width, head_conv_width, config.head_fc_width, num_classes, config.dropout,
                            pool_size=config.head_pool_size, position_average=config.position_average)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """SlowFast's initialisation: MSRA convs, BN 1/0 with the residual branch's last BN at 0,
        classifier N(0, 0.01)."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, X3DBlock):
                nn.init.zeros_(module.norm3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


# --------------------------------------------------------------------------------------------
# Variants. Figures: SlowFast MODEL_ZOO.md (params rounded to 0.1M; GFLOPs = multiply-adds per
# view as counted by SlowFast/fvcore), top-1 on Kinetics-400 with 30 views (10 clips x 3 crops).
# --------------------------------------------------------------------------------------------

_ZOO = "https://dl.fbaipublicfiles.com/pyslowfast/x3d_models"
_SOURCE = "SlowFast MODEL_ZOO.md; Feichtenhofer, X3D, CVPR 2020 (arXiv 2004.04730)"
_LAYOUTS = ("slowfast", "pytorchvideo")


def _kinetics_spec(name: str, frames: int, stride: int, crop: int, params_m: float, gflops: float,
                   train_crop: int, ptv_gflops: float, top1: float, measured_params_m: float) -> ModelSpec:
    return ModelSpec(
        name=name,
        family="x3d",
        params_m=measured_params_m,
        clip=ClipSpec(frames=frames, stride=stride, crop=crop, short_side=crop, test_clips=10, test_crops=3),
        norm=KINETICS_NORM,
        num_classes=400,
        label_set="kinetics400",
        published=Published(
            params_m=params_m,
            gflops=gflops,
            flops_note=(f"SlowFast count, multiply-adds per {frames}x{train_crop}x{train_crop} view;"
                        f" pytorchvideo's model zoo lists {ptv_gflops} GFLOPs"),
            top1=top1,
            dataset="Kinetics-400",
            source=_SOURCE,
        ),
        checkpoint_url=f"{_ZOO}/{name}.pyth",
        checkpoint_layouts=_LAYOUTS,
        transformer=False,
    )


_DEPTHS_XS_S_M = (3, 5, 11, 7)  # ceil(2.2 * (1, 2, 5, 3))
_DEPTHS_L = (5, 10, 25, 15)  # ceil(5.0 * (1, 2, 5, 3))


#: Training crops (SlowFast configs/Kinetics/X3D_*.yaml TRAIN_CROP_SIZE); they size the head's window.
TRAIN_CROPS = {"x3d_xs": 160, "x3d_s": 160, "x3d_m": 224, "x3d_l": 312, "x3d_synth": 80}


def _official(name: str, frames: int, **fields) -> X3DConfig:
    """A variant's network with the official head window of its training clip (``frames`` x train crop)."""
    return X3DConfig(head_pool_size=head_pool_size(frames, TRAIN_CROPS[name]), **fields)


XS_CONFIG = _official("x3d_xs", 4, stage_depths=_DEPTHS_XS_S_M)
S_CONFIG = _official("x3d_s", 13, stage_depths=_DEPTHS_XS_S_M)
M_CONFIG = _official("x3d_m", 16, stage_depths=_DEPTHS_XS_S_M)
L_CONFIG = _official("x3d_l", 16, stage_depths=_DEPTHS_L)
#: X3D-XS widths, depths (1, 2, 3, 2), a 512-wide head; trained at its test crop (80), so the window is
#: the whole 3x3 map: one position
SYNTH_CONFIG = _official("x3d_synth", 8, stage_depths=(1, 2, 3, 2), head_fc_width=512, dropout=0.2)


def _build(config: X3DConfig, num_classes: int, overrides: dict) -> X3D:
    """The variant's config with ``overrides`` (any ``X3DConfig`` field) applied."""
    return X3D(replace(config, **overrides), num_classes)


@register_model(_kinetics_spec("x3d_xs", 4, 12, 182, 3.8, 0.60, TRAIN_CROPS["x3d_xs"], 0.91, 69.5, 3.79))
def x3d_xs(num_classes: int = 400, **overrides) -> X3D:
    return _build(XS_CONFIG, num_classes, overrides)


@register_model(_kinetics_spec("x3d_s", 13, 6, 182, 3.8, 1.96, TRAIN_CROPS["x3d_s"], 2.96, 73.5, 3.79))
def x3d_s(num_classes: int = 400, **overrides) -> X3D:
    return _build(S_CONFIG, num_classes, overrides)


@register_model(_kinetics_spec("x3d_m", 16, 5, 256, 3.8, 4.73, TRAIN_CROPS["x3d_m"], 6.72, 76.2, 3.79))
def x3d_m(num_classes: int = 400, **overrides) -> X3D:
    return _build(M_CONFIG, num_classes, overrides)


@register_model(_kinetics_spec("x3d_l", 16, 5, 356, 6.2, 18.37, TRAIN_CROPS["x3d_l"], 26.64, 77.5, 6.15))
def x3d_l(num_classes: int = 400, **overrides) -> X3D:
    return _build(L_CONFIG, num_classes, overrides)


SYNTH_SPEC = ModelSpec(
    name="x3d_synth",
    family="x3d",
    params_m=0.86,
    clip=ClipSpec(frames=8, stride=3, crop=80, short_side=92, test_clips=1, test_crops=1),
    norm=KINETICS_NORM,
    num_classes=8,
    label_set="synthmotion",
    published=Published(dataset="SynthMotion", source="edgevid reference model"),
    transformer=False,
)


@register_model(SYNTH_SPEC)
def x3d_synth(num_classes: int = 8, **overrides) -> X3D:
    """Small X3D for the synthetic motion set (``SYNTH_CONFIG``). Temporal receptive field: 5 (stem)
    + 2 per block x 8 blocks = 21 frames, more than a clip."""
    return _build(SYNTH_CONFIG, num_classes, overrides)


# --------------------------------------------------------------------------------------------
# Official checkpoint layouts -> our names.
# --------------------------------------------------------------------------------------------

_BN_EPS = 1e-5  # BatchNorm eps in SlowFast, pytorchvideo and here

_SLOWFAST_RULES = [
    (r"^s1\.pathway0_stem\.conv_xy\.", "stem.spatial."),
    (r"^s1\.pathway0_stem\.conv\.", "stem.temporal."),
    (r"^s1\.pathway0_stem\.bn\.", "stem.norm."),
    (r"^s(\d+)\.pathway0_res(\d+)\.", lambda m: f"stages.{int(m[1]) - 2}.{m[2]}."),
    (r"\.branch1\.", ".shortcut.conv."),
    (r"\.branch1_bn\.", ".shortcut.norm."),
    (r"\.branch2\.a\.", ".conv1."),
    (r"\.branch2\.a_bn\.", ".norm1."),
    (r"\.branch2\.b\.", ".conv2."),
    (r"\.branch2\.b_bn\.", ".norm2."),
    (r"\.branch2\.se\.fc1\.", ".se.reduce."),
    (r"\.branch2\.se\.fc2\.", ".se.expand."),
    (r"\.branch2\.c\.", ".conv3."),
    (r"\.branch2\.c_bn\.", ".norm3."),
    (r"^head\.conv_5\.", "head.conv."),
    (r"^head\.conv_5_bn\.", "head.norm."),
    (r"^head\.lin_5\.", "head.fc."),
    (r"^head\.projection\.", "head.classifier."),
]

_PYTORCHVIDEO_RULES = [
    # pytorchvideo names the 1x3x3 spatial conv ``conv_t`` and the 5x1x1 temporal one ``conv_xy``.
    (r"^blocks\.0\.conv\.conv_t\.", "stem.spatial."),
    (r"^blocks\.0\.conv\.conv_xy\.", "stem.temporal."),
    (r"^blocks\.0\.norm\.", "stem.norm."),
    (r"^blocks\.(\d+)\.res_blocks\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.{m[2]}."),
    (r"\.branch1_conv\.", ".shortcut.conv."),
    (r"\.branch1_norm\.", ".shortcut.norm."),
    (r"\.branch2\.conv_a\.", ".conv1."),
    (r"\.branch2\.norm_a\.", ".norm1."),
    (r"\.branch2\.conv_b\.", ".conv2."),
    (r"\.branch2\.norm_b\.0\.", ".norm2."),
    (r"\.branch2\.norm_b\.1\.block\.0\.", ".se.reduce."),
    (r"\.branch2\.norm_b\.1\.block\.2\.", ".se.expand."),
    (r"\.branch2\.conv_c\.", ".conv3."),
    (r"\.branch2\.norm_c\.", ".norm3."),
    (r"^blocks\.\d+\.pool\.pre_conv\.", "head.conv."),
    (r"^blocks\.\d+\.pool\.pre_norm\.", "head.norm."),
    (r"^blocks\.\d+\.pool\.post_conv\.", "head.fc."),
    (r"^blocks\.\d+\.proj\.", "head.classifier."),
]


def _apply_rules(sd: StateDict, rules) -> StateDict:
    """Rename every key by the ordered regex rules; keys no rule touches are kept (and reported
    as unexpected by the loader)."""
    out = {}
    for key, value in sd.items():
        new = key
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


def _fill_bn_counters(sd: StateDict) -> StateDict:
    """Add ``num_batches_tracked`` (unused at inference) to BN layers saved without it."""
    for key in [k for k in sd if k.endswith(".running_mean")]:
        sd.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return sd


def _identity_bn(channels: int, prefix: str) -> StateDict:
    """BatchNorm parameters that compute the identity in eval mode."""
    return {
        prefix + "weight": torch.ones(channels),
        prefix + "bias": torch.zeros(channels),
        prefix + "running_mean": torch.zeros(channels),
        prefix + "running_var": torch.full((channels,), 1.0 - _BN_EPS),
        prefix + "num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }


def _detect_slowfast(sd) -> bool:
    return any(k.startswith("s1.pathway0_stem.") for k in sd)


def _convert_slowfast(sd: StateDict) -> StateDict:
    return _fill_bn_counters(_apply_rules(sd, _SLOWFAST_RULES))


def _detect_pytorchvideo(sd) -> bool:
    return any(k.startswith("blocks.0.conv.conv_t.") for k in sd)


def _convert_pytorchvideo(sd: StateDict) -> StateDict:
    out = _fill_bn_counters(_apply_rules(sd, _PYTORCHVIDEO_RULES))
    # pytorchvideo puts no BN on a strided shortcut whose width does not change (the first block
    # of the first stage, 24 -> 24 channels); SlowFast and this model do. Use an identity BN.
    for key in [k for k in out if k.endswith(".shortcut.conv.weight")]:
        weight = out[key]
        norm = key[: -len("conv.weight")] + "norm."
        if weight.shape[0] == weight.shape[1] and norm + "weight" not in out:
            out.update(_identity_bn(weight.shape[0], norm))
    return out


register_layout("x3d", "slowfast", _detect_slowfast, _convert_slowfast)
register_layout("x3d", "pytorchvideo", _detect_pytorchvideo, _convert_pytorchvideo)
