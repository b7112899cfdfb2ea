"""The 3-D-to-2-D rewrite (edgevid.backends.executorch.rewrite): every rewrite computes what the original computes.

FP32 outputs must agree within 1e-5 (max-abs error relative to the output's scale). The property
tests draw random Conv3d configurations (depthwise, grouped, strided, padded, dilated, batch > 1)
and run both strategies eagerly; the graph tests go through torch.export and the full pass.
"""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from edgevid.backends.executorch.rewrite import STRATEGIES, Conv3dSpec, banded_weight, conv3d_frames, from_frames, rewrite_for_xnnpack, to_frames
from edgevid.backends.executorch.rewrite.graph import Ops, relative_error
from helpers import random_model

TOL = 1e-5
aten = torch.ops.aten
NOT_DELEGABLE = {aten.conv3d.default, aten.batch_norm.default, aten.layer_norm.default, aten.matmul.default,
                 aten.select.int, aten.expand.default, aten.adaptive_avg_pool3d.default, aten.avg_pool3d.default}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is fastest, and spinning OpenMP threads on a shared machine are slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # torch's trace logger emits DEBUG records for every traced op; captured by pytest's logging
    # plugin they slow exports down by 50x. They are not ours to assert on.
    trace_log = logging.getLogger("torch.__trace")
    propagate, trace_log.propagate = trace_log.propagate, False
    yield
    trace_log.propagate = propagate
    torch.set_num_threads(threads)


def conv3d_via_frames(conv_args: dict, x: torch.Tensor, weight, bias, strategy: str) -> torch.Tensor:
    spec = Conv3dSpec.of(x.shape, weight.shape, **conv_args)
    f = to_frames(Ops(), x, *x.shape)
    y = conv3d_frames(Ops(), f, spec, weight, bias, strategy)
    n, o, t, h, w = spec.out_shape
    return from_frames(Ops(), y, n, o, t, h, w)


@st.composite
def conv3d_configs(draw):
    groups_kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    groups = {"dense": 1, "grouped": 2, "depthwise": draw(st.integers(2, 5))}[groups_kind]
    c = groups * (1 if groups_kind == "depthwise" else draw(st.integers(1, 3)))
    o = groups * (draw(st.integers(1, 2)) if groups_kind == "depthwise" else draw(st.integers(1, 3)))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), 1)
    padding = tuple(draw(st.integers(0, k * d // 2 + 1)) for k, d in zip(kernel, dilation))
    t = draw(st.integers(max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]), 7))
    h = draw(st.integers(max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]), 7))
    w = draw(st.integers(max(1, kernel[2] - 2 * padding[2]), 6))
    n = draw(st.integers(1, 2))
    return dict(n=n, c=c, o=o, t=t, h=h, w=w, groups=groups, kernel=kernel, stride=stride, padding=padding,
                dilation=dilation, bias=draw(st.booleans()), strategy=draw(st.sampled_from(STRATEGIES)),
                seed=draw(st.integers(0, 2**16)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv3d_configs())
def test_conv3d_strategies_equal_conv3d(cfg):
    generator = torch.Generator().manual_seed(cfg["seed"])
    conv = nn.Conv3d(cfg["c"], cfg["o"], cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"],
                     bias=cfg["bias"])
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    x = torch.randn(cfg["n"], cfg["c"], cfg["t"], cfg["h"], cfg["w"], generator=generator)
    with torch.no_grad():
        expected = conv(x)
        got = conv3d_via_frames(dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                                     groups=cfg["groups"]), x, conv.weight, conv.bias, cfg["strategy"])
    assert got.shape == expected.shape
    assert relative_error(expected, got) <= TOL


def test_banded_weight_is_the_conv_as_one_grouped_conv2d():
    spec = Conv3dSpec.of((1, 4, 6, 5, 5), (4, 1, 3, 3, 3), stride=(2, 1, 1), padding=(1, 1, 1), groups=4)
    weight = torch.randn(4, 1, 3, 3, 3)
    band = banded_weight(spec, weight)
    assert band.shape == (4 * spec.t_out, 6, 3, 3)
    # output frame 0 with stride 2 and padding 1 reads frames -1 (padding), 0 and 1
    assert torch.equal(band[0, 0], weight[0, 0, 1]) and torch.equal(band[0, 1], weight[0, 0, 2])
    assert not band[0, 2:].any()


def test_macs_count_the_banded_cost():
    spec = Conv3dSpec.of((1, 8, 13, 10, 10), (8, 1, 3, 3, 3), padding=1, groups=8)
    assert spec.macs("channels") == spec.macs("taps") * 13 // 3


class TinyX3D(nn.Module):
    """X3D's ingredients at toy size: stem (1x3x3 + depthwise 5x1x1), bottleneck with depthwise
    3x3x3 (spatial stride 2), SE, SiLU, BN everywhere, residual, pooled head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False),
                                  nn.Conv3d(8, 8, (5, 1, 1), padding=(2, 0, 0), groups=8, bias=False),
                                  nn.BatchNorm3d(8), nn.ReLU())
        self.conv1 = nn.Conv3d(8, 12, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(12)
        self.conv2 = nn.Conv3d(12, 12, 3, (1, 2, 2), 1, groups=12, bias=False)
        self.bn2 = nn.BatchNorm3d(12)
        self.se_pool = nn.AdaptiveAvgPool3d(1)
        self.se_reduce = nn.Conv3d(12, 4, 1)
        self.se_expand = nn.Conv3d(4, 12, 1)
        self.conv3 = nn.Conv3d(12, 8, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(8)
        self.short = nn.Sequential(nn.Conv3d(8, 8, 1, (1, 2, 2), bias=False), nn.BatchNorm3d(8))
        self.pool = nn.AvgPool3d((2, 2, 2), stride=(1, 2, 2))
        self.head = nn.Linear(8, 5)
        for m in self.modules():  # non-trivial BN statistics so folding is tested
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)

    def forward(self, x):
        x = self.stem(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        gate = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(self.se_pool(y)))))
        y = self.bn3(self.conv3(nn.functional.silu(y * gate)))
        y = torch.relu(y + self.short(x))
        y = self.pool(y)
        return self.head(y.mean((2, 3, 4)))


def _ops(gm) -> set:
    return {n.target for n in gm.graph.nodes if n.op == "call_function"}


LAYOUT = {aten.permute.default, aten.reshape.default, aten.slice.Tensor, aten.cat.default, aten.constant_pad_nd.default}


def _five_d(gm) -> list[str]:
    """Compute ops on 5-D tensors (layout ops are fine: XNNPACK moves up to 6-D data)."""
    return [n.name for n in gm.graph.nodes if n.op == "call_function" and isinstance(n.meta.get("val"), torch.Tensor)
            and n.meta["val"].dim() == 5 and n.target not in LAYOUT]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batch", [1, 2])
def test_tiny_x3d_rewrite_is_equal_and_fully_2d(strategy, batch):
    torch.manual_seed(0)
    model = TinyX3D().eval()
    result = rewrite_for_xnnpack(model, torch.randn(batch, 3, 6, 16, 16), strategy=strategy)
    assert result.error <= TOL
    assert result.frames.left_3d == []
    assert len(result.frames.folded_batch_norms) == 5  # stem, bn1, bn2, bn3, shortcut
    assert not _ops(result.graph_module) & NOT_DELEGABLE
    if batch == 1:  # several clips: per-clip time shifts and SE gating work on (N, T, ...) views
        assert _five_d(result.graph_module) == []
    temporal = [c for c in result.frames.convs if c["strategy"] != "frames"]
    assert {c["strategy"] for c in temporal} == {strategy} and len(temporal) == 2


class Attention(nn.Module):
    """LayerNorm, matmul attention, a class token via select/expand: the ops XNNPACK lacks."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.heads = heads
        self.out = nn.Linear(dim, 4)

    def forward(self, x):  # x (N, C, T, H, W) -> tokens (N, T*H*W, C)
        tokens = x.flatten(2).transpose(1, 2)
        first = tokens[:, :1].expand(-1, 3, -1)  # a data-dependent expand
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens, first], 1)
        n, length, dim = tokens.shape
        q, k, v = self.qkv(self.norm(tokens)).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * 0.5).softmax(-1)
        tokens = (attn @ v).transpose(1, 2).reshape(n, length, dim)
        return self.out(tokens[:, 0] + tokens.mean(1))


@pytest.mark.parametrize("batch", [1, 2])
def test_transformer_ops_become_delegable_and_stay_equal(batch):
    torch.manual_seed(0)
    result = rewrite_for_xnnpack(Attention().eval(), torch.randn(batch, 16, 2, 3, 3))
    assert result.error <= TOL
    assert not _ops(result.graph_module) & NOT_DELEGABLE
    assert result.delegable["layer_norm"] == ["norm"] and len(result.delegable["matmul"]) == 2
    assert result.float_modules == ["norm"]  # the decomposed LayerNorm stays float under INT8


class Pools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x):
        y = self.conv(x)
        a = nn.functional.avg_pool3d(y, (3, 2, 2), stride=(2, 2, 2), padding=(1, 0, 0))  # counted temporal padding
        b = nn.functional.adaptive_avg_pool3d(y, (2, 1, 1))
        c = y.mean(2, keepdim=True) * y.mean((3, 4), keepdim=True)
        return a.sum() + b.flatten(1).sum(1) + c.mean((2, 3, 4)).sum(1) + y[:, :, 1:3, :, 1:].mean()


def test_pools_means_and_slices_become_rank_4():
    torch.manual_seed(0)
    result = rewrite_for_xnnpack(Pools().eval(), torch.randn(1, 3, 4, 4, 4))
    assert result.error <= TOL
    assert result.frames.left_3d == []
    assert not _ops(result.graph_module) & NOT_DELEGABLE


class Leftovers(nn.Module):
    """Ops with no 2-D form: a max pool, and a Conv3d whose weight is computed at run time."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool3d(2)
        self.weight = nn.Parameter(torch.randn(2, 3, 1, 1, 1))

    def forward(self, x):
        return nn.functional.conv3d(self.pool(x), self.weight * x.mean())


def test_untranslatable_ops_are_reported_and_the_graph_stays_correct():
    result = rewrite_for_xnnpack(Leftovers().eval(), torch.randn(1, 3, 4, 4, 4))
    assert result.error <= TOL
    left = {entry["op"]: entry for entry in result.frames.left_3d}
    assert "aten.max_pool3d.default" in left
    assert "computed at run time" in left["aten.conv3d.default"]["reason"]


FAST = [("x3d_synth", "taps"), ("x3d_synth", "channels"), ("uniformerv2_synth", "taps"),
        ("timesformer_synth", "taps"), ("tubevit_synth", "channels")]
SLOW = [("uniformerv2_synth", "channels"), ("tubevit_synth", "taps")]


@pytest.mark.parametrize("name,strategy", FAST + [pytest.param(*p, marks=pytest.mark.slow) for p in SLOW])
def test_every_family_rewrites_exactly(name, strategy):
    model, spec = random_model(name)
    result = rewrite_for_xnnpack(model, torch.randn(spec.input_shape(1)), strategy=strategy)
    assert result.error <= TOL, f"{name}: relative error {result.error:.2e}"
    assert result.frames.left_3d == []
    assert not _ops(result.graph_module) & NOT_DELEGABLE
    assert _five_d(result.graph_module) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["x3d_s", "uniformerv2_b16", "uniformerv2_b16_ssv2", "timesformer_b", "tubevit_b"])
def test_full_size_models_rewrite_exactly(name):
    model, spec = random_model(name)
    result = rewrite_for_xnnpack(model, torch.randn(spec.input_shape(1)), strategy="taps")
    assert result.error <= TOL and result.frames.left_3d == []


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown Conv3d strategy"):
        rewrite_for_xnnpack(TinyX3D().eval(), torch.randn(1, 3, 6, 16, 16), strategy="fast")
