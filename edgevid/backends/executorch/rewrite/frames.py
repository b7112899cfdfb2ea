"""The 3-D-to-2-D pass: every clip-shaped (N, C, T, H, W) value becomes a frames tensor
(N*T, C, H, W) and every 3-D op on it a rank-4 op XNNPACK delegates.

Translated: Conv3d (any kernel/stride/padding/dilation/groups; a following inference BatchNorm3d
folded in), BatchNorm3d (per-channel affine), elementwise ops (broadcasts included), mean over
T/H/W, adaptive and plain 3-D average pooling, and slices. The pass keeps a value in frames
form from producer to consumer; an op it does not know gets the 5-D tensor back (one permute)
and is reported, so a model always stays correct and the report says what is left over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import fx

from .conv3d import (Conv3dSpec, cat_time, conv3d_frames, fold_batch_norm, from_frames, mean_time, take_time, time_ranges,
                     to_frames)
from .graph import GraphEditor, is_call, module_path, shape_of

log = logging.getLogger("edgevid")
aten = torch.ops.aten

UNARY = {
    aten.relu.default, aten.sigmoid.default, aten.silu.default, aten.gelu.default, aten.hardswish.default,
    aten.hardsigmoid.default, aten.tanh.default, aten.clamp.default, aten.hardtanh.default,
    aten.leaky_relu.default, aten.elu.default, aten.neg.default, aten.abs.default, aten.exp.default,
    aten.sqrt.default, aten.rsqrt.default, aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar,
    aten.div.Scalar, aten.pow.Tensor_Scalar,
}
BINARY = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.maximum.default,
          aten.minimum.default}
IDENTITY = {aten.clone.default, aten.alias.default, aten.contiguous.default, aten.detach.default}
#: 3-D ops that only run as 2-D ops on XNNPACK: reported when the pass cannot translate them
THREE_D = {aten.conv3d.default, aten.conv3d.padding, aten.batch_norm.default, aten.avg_pool3d.default,
           aten.adaptive_avg_pool3d.default, aten.max_pool3d.default, aten.max_pool3d_with_indices.default,
           aten.conv_transpose3d.input, aten.upsample_trilinear3d.vec, aten.mean.dim}

ChooseFn = Callable[[Conv3dSpec, str], str]


@dataclass
class Framed:
    """A clip held as frames: ``node`` is (n*t, c, h, w)."""

    node: fx.Node
    n: int
    c: int
    t: int
    h: int
    w: int


@dataclass
class FramesReport:
    convs: list[dict] = field(default_factory=list)
    folded_batch_norms: list[str] = field(default_factory=list)
    left_3d: list[dict] = field(default_factory=list)


def _dims(dims, rank: int) -> list[int]:
    dims = [dims] if isinstance(dims, int) else list(dims or range(rank))
    return sorted(d % rank for d in dims)


class FramesPass:
    def __init__(self, gm: fx.GraphModule, choose: ChooseFn):
        self.gm = gm
        self.editor = GraphEditor(gm)
        self.choose = choose
        self.framed: dict[fx.Node, Framed] = {}  # translated node -> its frames form
        self.views: dict[fx.Node, Framed] = {}  # untranslated 5-D node -> a frames copy
        self.five: dict[fx.Node, fx.Node] = {}  # translated node -> its 5-D form, for the rest
        self.report = FramesReport()

    # -- conversions ---------------------------------------------------------------------------

    def frames(self, node, user: fx.Node) -> Framed | None:
        if node in self.framed:
            return self.framed[node]
        if node in self.views:
            return self.views[node]
        shape = shape_of(node)
        if shape is None or len(shape) != 5:
            return None
        with self.editor.at(user):
            f = Framed(to_frames(self.editor, node, *shape), *shape)
        self.views[node] = f
        return f

    def materialize(self, user: fx.Node) -> None:
        """Give an untranslated node the 5-D values of its translated inputs."""
        for arg in list(user.all_input_nodes):
            if arg in self.framed:
                if arg not in self.five:
                    f = self.framed[arg]
                    with self.editor.at(user):
                        self.five[arg] = from_frames(self.editor, f.node, f.n, f.c, f.t, f.h, f.w)
                user.replace_input_with(arg, self.five[arg])

    # -- the pass ------------------------------------------------------------------------------

    def run(self) -> FramesReport:
        for node in list(self.gm.graph.nodes):
            if node.op == "output":
                self.materialize(node)
                continue
            if node.op != "call_function" or node in self.framed:
                continue
            try:
                done = self.translate(node)
            except _Untranslatable as exc:
                done = False
                self._left(node, str(exc))
            if not done:
                if node.target in THREE_D and _rank(node.args[0]) == 5:
                    if not any(d["node"] == node.name for d in self.report.left_3d):
                        self._left(node, "no 2-D form for these arguments")
                self.materialize(node)
        self.gm.graph.eliminate_dead_code()
        return self.report

    def _left(self, node: fx.Node, why: str) -> None:
        self.report.left_3d.append({"node": node.name, "op": str(node.target), "module": module_path(node),
                                    "reason": why})

    def translate(self, node: fx.Node) -> bool:
        target = node.target
        if target in (aten.conv3d.default, aten.conv3d.padding):
            return self.conv3d(node)
        inputs = node.all_input_nodes
        if not inputs:
            return False
        first = node.args[0] if node.args else None
        if target == aten.batch_norm.default and _rank(first) == 5:
            return self.batch_norm(node)
        if target in (aten.mean.dim, aten.adaptive_avg_pool3d.default, aten.avg_pool3d.default) and _rank(first) == 5:
            return self.pool(node)
        if target == aten.slice.Tensor and _rank(first) == 5 and (first in self.framed or first.op == "placeholder"):
            return self.slice(node)
        if not any(n in self.framed for n in inputs):
            return False
        if target in IDENTITY or (target == aten.dropout.default and not _arg(node, 2, "train", False)) or (
                target in (aten.to.dtype, aten.to.dtype_layout) and _same_dtype(node)):
            self.framed[node] = self.framed[first]
            return True
        if target in UNARY and isinstance(first, fx.Node) and first in self.framed:
            f = self.framed[first]
            with self.editor.at(node):
                out = self.editor.call(target, f.node, *node.args[1:], **node.kwargs)
            self.framed[node] = Framed(out, f.n, f.c, f.t, f.h, f.w)
            return True
        if target in BINARY:
            return self.binary(node)
        return False

    # -- rules ---------------------------------------------------------------------------------

    def conv3d(self, node: fx.Node) -> bool:
        x, w = node.args[0], node.args[1]
        args = list(node.args) + [None] * (7 - len(node.args))
        bias, stride, padding, dilation, groups = args[2:7]
        if w.op != "get_attr" or (bias is not None and bias.op != "get_attr"):
            raise _Untranslatable("the weight is computed at run time, not a constant")
        weight = self.editor.value(w)
        bias_t = self.editor.value(bias)
        shape = shape_of(x)
        if isinstance(padding, str):
            padding = _same_padding(padding, weight.shape[2:], dilation or [1, 1, 1])
        spec = Conv3dSpec.of(shape, weight.shape, stride or 1, padding or 0, dilation or 1, groups or 1)
        if list(spec.out_shape) != list(shape_of(node)):
            raise _Untranslatable(f"output shape {shape_of(node)} does not match {spec.out_shape}")
        out_node = node
        bn = _only_user(node)
        if bn is not None and is_call(bn, aten.batch_norm.default) and not _arg(bn, 5, "training", False):
            params = [bn.args[i] if len(bn.args) > i else None for i in (1, 2, 3, 4)]
            if all(p is None or p.op == "get_attr" for p in params) and params[2] is not None:
                gamma, beta, mean, var = (self.editor.value(p) for p in params)
                weight, bias_t = fold_batch_norm(weight, bias_t, mean, var, gamma, beta, float(bn.args[7]))
                out_node = bn
                self.report.folded_batch_norms.append(module_path(bn))
        f = self.frames(x, node)
        module = module_path(node)
        strategy = self.choose(spec, module) if spec.temporal else "taps"
        with self.editor.at(node):
            out = conv3d_frames(self.editor, f.node, spec, weight, bias_t, strategy)
        _, o, t, h, w_ = spec.out_shape
        result = Framed(out, spec.n, o, t, h, w_)
        self.framed[node] = result
        self.framed[out_node] = result
        self.report.convs.append({"module": module, "spec": spec, "strategy": strategy if spec.temporal else "frames",
                                  "bn_folded": out_node is not node})
        return True

    def batch_norm(self, node: fx.Node) -> bool:
        if _arg(node, 5, "training", False):
            raise _Untranslatable("BatchNorm in training mode")
        params = [node.args[i] for i in (1, 2, 3, 4)]
        if not all(p is None or p.op == "get_attr" for p in params) or params[2] is None:
            raise _Untranslatable("BatchNorm statistics are not constants")
        gamma, beta, mean, var = (self.editor.value(p) for p in params)
        scale = (gamma if gamma is not None else torch.ones_like(var)) / torch.sqrt(var + float(node.args[7]))
        shift = (beta if beta is not None else torch.zeros_like(mean)) - mean * scale
        f = self.frames(node.args[0], node)
        with self.editor.at(node):
            e = self.editor
            out = e.call(aten.mul.Tensor, f.node, e.const(scale.reshape(1, -1, 1, 1), "scale"))
            out = e.call(aten.add.Tensor, out, e.const(shift.reshape(1, -1, 1, 1), "shift"))
        self.framed[node] = Framed(out, f.n, f.c, f.t, f.h, f.w)
        return True

    def binary(self, node: fx.Node) -> bool:
        out_shape = shape_of(node)
        if out_shape is None or len(out_shape) != 5:
            return False
        n, c, t, h, w = out_shape
        operands = []
        for arg in node.args[:2]:
            if not isinstance(arg, fx.Node):
                operands.append((arg, None))
                continue
            shape = (1,) * (5 - len(shape_of(arg))) + shape_of(arg)
            if shape[2] not in (1, t) or shape[0] not in (1, n):
                return False
            operands.append((arg, shape))
        # Several clips and an operand constant over time but not over clips (SE gating): the
        # op runs on (N, T, C, H, W) views of the frames, broadcasting over T.
        per_clip = n > 1 and t > 1 and any(s is not None and s[2] == 1 and s[0] == n for _, s in operands)
        args = []
        with self.editor.at(node):
            e = self.editor
            for arg, shape in operands:
                if shape is None:
                    args.append(arg)
                    continue
                an, ac, at, ah, aw = shape
                f = self.framed.get(arg)
                if at == 1:  # constant over time
                    source = f.node if f is not None else arg
                    args.append(e.call(aten.reshape.default, source, [an, 1, ac, ah, aw] if per_clip else [an, ac, ah, aw]))
                else:
                    if len(shape_of(arg)) != 5:
                        return False
                    frames = self.frames(arg, node).node
                    args.append(e.call(aten.reshape.default, frames, [n, t, ac, ah, aw]) if per_clip else frames)
            out = e.call(node.target, *args, *node.args[2:], **node.kwargs)
            if per_clip:
                out = e.call(aten.reshape.default, out, [n * t, c, h, w])
        self.framed[node] = Framed(out, n, c, t, h, w)
        return True

    def pool(self, node: fx.Node) -> bool:
        x = node.args[0]
        n, c, t, h, w = shape_of(x)
        target = node.target
        keepdim = True
        if target == aten.mean.dim:
            dims = set(_dims(node.args[1] if len(node.args) > 1 else None, 5))
            keepdim = bool(_arg(node, 2, "keepdim", False))
            if node.kwargs.get("dtype") is not None or not dims <= {2, 3, 4} or dims & {3, 4} not in (set(), {3, 4}):
                return False
            out_t, spatial = (1 if 2 in dims else t), ("mean" if 3 in dims else None)
            plan = [("time_mean",)] if out_t == 1 and t > 1 else []
        elif target == aten.adaptive_avg_pool3d.default:
            ot, oh, ow = _triple_or_same(node.args[1], (t, h, w))
            if t % ot or h % oh or w % ow:
                raise _Untranslatable(f"adaptive pool {t}x{h}x{w} -> {ot}x{oh}x{ow} has uneven windows")
            spatial = "mean" if (oh, ow) == (1, 1) else (("avg", [h // oh, w // ow], [h // oh, w // ow], [0, 0], False) if (oh, ow) != (h, w) else None)
            plan = [] if ot == t else ([("time_mean",)] if ot == 1 else [("time_avg", t // ot, t // ot, 0)])
        else:
            kernel = _triple_list(node.args[1])
            stride = _triple_list(node.args[2]) if len(node.args) > 2 and node.args[2] else kernel
            padding = _triple_list(node.args[3]) if len(node.args) > 3 else [0, 0, 0]
            ceil_mode = bool(_arg(node, 4, "ceil_mode", False))
            include_pad = bool(_arg(node, 5, "count_include_pad", True))
            divisor = _arg(node, 6, "divisor_override", None)
            if ceil_mode or divisor is not None or (padding[0] and not include_pad):
                raise _Untranslatable("ceil_mode, divisor_override or uncounted temporal padding")
            spatial = ("avg", kernel[1:], stride[1:], padding[1:], include_pad and any(padding[1:]))
            spatial = None if (kernel[1:] == [1, 1] and stride[1:] == [1, 1]) else spatial
            plan = [("time_avg", kernel[0], stride[0], padding[0])] if kernel[0] > 1 or stride[0] > 1 else []
        f = self.frames(x, node)
        e = self.editor
        with e.at(node):
            out, ft = f.node, f.t
            if spatial == "mean":
                out = e.call(aten.mean.dim, out, [2, 3], True)
            elif spatial is not None:
                _, kernel2, stride2, pad2, include = spatial
                out = e.call(aten.avg_pool2d.default, out, list(kernel2), list(stride2), list(pad2), False, include)
            for step in plan:
                if step[0] == "time_mean":
                    out, ft = mean_time(e, out, n, ft), 1
                else:
                    _, kt, st, pt = step  # padding counts as zeros: the sum of real frames / kt
                    count = (ft + 2 * pt - kt) // st + 1
                    parts = []
                    for first, end, live in time_ranges(ft, count, st, [k - pt for k in range(kt)]):
                        total = None
                        for k in live:
                            tap = take_time(e, out, n, ft, first * st + k - pt, st, end - first)
                            total = tap if total is None else e.call(aten.add.Tensor, total, tap)
                        parts.append(e.call(aten.mul.Tensor, total, 1.0 / kt))
                    out, ft = cat_time(e, parts, n), count
            _, oc, oh, ow = e.shape(out)
            result = Framed(out, n, oc, ft, oh, ow)
            if keepdim:
                self.framed[node] = result
            else:
                five = from_frames(e, out, n, oc, ft, oh, ow)
                node.replace_all_uses_with(e.call(aten.reshape.default, five, list(shape_of(node))))
        return True

    def slice(self, node: fx.Node) -> bool:
        x = node.args[0]
        dim = _arg(node, 1, "dim", 0) % 5
        n, c, t, h, w = shape_of(x)
        size = (n, c, t, h, w)[dim]
        start = _arg(node, 2, "start", None) or 0
        end = _arg(node, 3, "end", None)
        step = _arg(node, 4, "step", 1)
        start = max(0, start + size if start < 0 else start)
        end = size if end is None else min(size, end + size if end < 0 else end)
        if dim == 0 or step != 1 or end <= start:
            return False
        f = self.frames(x, node)
        with self.editor.at(node):
            if dim == 2:
                out = take_time(self.editor, f.node, n, t, start, 1, end - start)
            else:
                out = self.editor.call(aten.slice.Tensor, f.node, {1: 1, 3: 2, 4: 3}[dim], start, end)
        _, oc, ot, oh, ow = shape_of(node)
        self.framed[node] = Framed(out, n, oc, ot, oh, ow)
        return True


class _Untranslatable(Exception):
    """A 3-D op with arguments the pass has no 2-D form for (the message says which)."""


def _rank(node) -> int | None:
    shape = shape_of(node) if isinstance(node, fx.Node) else None
    return None if shape is None else len(shape)


def _arg(node: fx.Node, index: int, name: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _same_dtype(node: fx.Node) -> bool:
    src, dst = node.args[0].meta.get("val"), node.meta.get("val")
    return src is not None and dst is not None and src.dtype == dst.dtype


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _triple_list(value) -> list[int]:
    value = [value] if isinstance(value, int) else list(value)
    return value * 3 if len(value) == 1 else value


def _triple_or_same(value, same) -> tuple[int, int, int]:
    value = _triple_list(value)
    return tuple(s if v is None else v for v, s in zip(value, same))  # type: ignore[return-value]


def _same_padding(mode: str, kernel, dilation) -> list[int]:
    if mode == "valid":
        return [0, 0, 0]
    dilation = _triple_list(dilation)
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if any(p % 2 for p in total):
        raise _Untranslatable("padding='same' with an even kernel pads unevenly")
    return [p // 2 for p in total]


def lower_frames(gm: fx.GraphModule, choose: ChooseFn) -> FramesReport:
    """Run the pass on ``gm`` in place."""
    report = FramesPass(gm, choose).run()
    gm.recompile()
    return report
