"""Rank <= 4 rewrites so XNNPACK takes the whole graph (as checked against executorch 1.4.1's
XnnpackPartitioner configs):

* LayerNorm (no XNNPACK op): mean and variance over the last dim as a Linear with a constant
  1/C row, then sub/mul/rsqrt/add. Its nodes are tagged to stay float under INT8.
* matmul: expand + view + bmm in the Edge dialect, and ``expand_copy`` is not delegated; written
  here as reshape + ``bmm`` (or ``linear`` when the right side is a constant).
* select (``x[:, 0]``; ``select_copy`` is not delegated) -> slice + reshape; squeeze -> reshape.
* expand that really broadcasts -> add of a broadcast zero tensor; mean over any dims -> the one mean XNNPACK has
  (dims 2, 3 of a rank-4 tensor, keepdim).
* no-ops dropped: same-dtype casts, ``_assert_tensor_metadata``, eval dropout, clone.
"""

from __future__ import annotations

import math

import torch
from torch import fx

from .graph import GraphEditor, is_call, module_path, replace, shape_of

aten = torch.ops.aten
FLOAT_TAG = "edgevid_keep_float"


def tag_float(node: fx.Node) -> None:
    custom = dict(node.meta.get("custom") or {})
    custom[FLOAT_TAG] = True
    node.meta["custom"] = custom


def is_tagged_float(node: fx.Node) -> bool:
    return bool((node.meta.get("custom") or {}).get(FLOAT_TAG))


def make_delegable(gm: fx.GraphModule) -> dict[str, list[str]]:
    """Rewrite ``gm`` in place; returns which modules each rewrite touched."""
    editor = GraphEditor(gm)
    touched: dict[str, list[str]] = {}

    def note(kind: str, node: fx.Node) -> None:
        touched.setdefault(kind, []).append(module_path(node) or node.name)

    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        target = node.target
        if target == aten._assert_tensor_metadata.default:
            gm.graph.erase_node(node)
        elif target in (aten.clone.default, aten.alias.default, aten.detach.default) or (
            target == aten.dropout.default and not _arg(node, 2, False)
        ) or (target in (aten.to.dtype, aten.to.dtype_layout) and _same_dtype(node)):
            replace(node, node.args[0])
        elif target == aten.layer_norm.default:
            if _layer_norm(editor, node):
                note("layer_norm", node)
        elif target == aten.matmul.default:
            if _matmul(editor, node):
                note("matmul", node)
        elif target == aten.select.int:
            with editor.at(node):
                dim = node.args[1] % len(shape_of(node.args[0]))
                index = node.args[2] % shape_of(node.args[0])[dim]
                sliced = editor.call(aten.slice.Tensor, node.args[0], dim, index, index + 1)
                replace(node, editor.call(aten.reshape.default, sliced, list(shape_of(node))))
        elif target in (aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.flatten.using_ints,
                        aten.unflatten.int, aten.view.default):
            with editor.at(node):
                replace(node, editor.call(aten.reshape.default, node.args[0], list(shape_of(node))))
        elif target == aten.expand.default:
            _expand(editor, node)
        elif target == aten.mean.dim:
            if _mean(editor, node):
                note("mean", node)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return touched


def _arg(node: fx.Node, index: int, default):
    return node.args[index] if len(node.args) > index else default


def _same_dtype(node: fx.Node) -> bool:
    src, dst = node.args[0].meta.get("val"), node.meta.get("val")
    return src is not None and dst is not None and src.dtype == dst.dtype


def _layer_norm(editor: GraphEditor, node: fx.Node) -> bool:
    x, normalized = node.args[0], list(node.args[1])
    weight, bias = _arg(node, 2, None), _arg(node, 3, None)
    eps = float(_arg(node, 4, 1e-5))
    if len(normalized) != 1 or shape_of(x) is None:
        return False
    c = normalized[0]
    row = torch.full((1, c), 1.0 / c)
    start = len(editor.graph.nodes)
    with editor.at(node):
        e = editor
        ones = e.const(row, "ln_mean")
        mean = e.call(aten.linear.default, x, ones)
        centred = e.call(aten.sub.Tensor, x, mean)
        var = e.call(aten.linear.default, e.call(aten.mul.Tensor, centred, centred), ones)
        out = e.call(aten.mul.Tensor, centred, e.call(aten.rsqrt.default, e.call(aten.add.Tensor, var, eps)))
        if weight is not None:
            out = e.call(aten.mul.Tensor, out, weight)
        if bias is not None:
            out = e.call(aten.add.Tensor, out, bias)
    _tag_new(editor, node, start)
    replace(node, out)
    return True


def _tag_new(editor: GraphEditor, node: fx.Node, start: int) -> None:
    """Tag the nodes just inserted before ``node`` as float-only."""
    if len(editor.graph.nodes) == start:
        return
    cursor = node.prev
    for _ in range(len(editor.graph.nodes) - start):
        tag_float(cursor)
        cursor = cursor.prev


def _matmul(editor: GraphEditor, node: fx.Node) -> bool:
    a, b = node.args[0], node.args[1]
    sa, sb, so = shape_of(a), shape_of(b), shape_of(node)
    if sa is None or sb is None or len(sa) < 2 or len(sb) < 2:
        return False
    with editor.at(node):
        e = editor
        if b.op == "get_attr" and len(sb) == 2:  # x @ W: a Linear with weight W^T
            weight = e.const(e.value(b).t().contiguous(), "matmul_w")
            replace(node, e.call(aten.linear.default, a, weight))
            return True
        if sa[:-2] != sb[:-2]:
            return False
        batch = math.prod(sa[:-2])
        a3 = e.call(aten.reshape.default, a, [batch, *sa[-2:]])
        b3 = e.call(aten.reshape.default, b, [batch, *sb[-2:]])
        out = e.call(aten.bmm.default, a3, b3)
        replace(node, e.call(aten.reshape.default, out, list(so)))
    return True


def _expand(editor: GraphEditor, node: fx.Node) -> None:
    """A broadcasting expand as ``x + zeros`` (XNNPACK broadcasts in add; a cat of copies of one
    tensor is not delegated: the partitioner counts distinct inputs)."""
    x = node.args[0]
    src, dst = shape_of(x), shape_of(node)
    if src is None or dst is None:
        return
    if src == dst:
        replace(node, x)
        return
    src = (1,) * (len(dst) - len(src)) + src
    zeros = torch.zeros([want if have == 1 else 1 for have, want in zip(src, dst)], dtype=node.meta["val"].dtype)
    with editor.at(node):
        replace(node, editor.call(aten.add.Tensor, x, editor.const(zeros, "expand")))


def _mean(editor: GraphEditor, node: fx.Node) -> bool:
    x = node.args[0]
    shape = shape_of(x)
    if shape is None or node.kwargs.get("dtype") is not None:
        return False
    rank = len(shape)
    dims = sorted(d % rank for d in (node.args[1] if len(node.args) > 1 and node.args[1] is not None else range(rank)))
    keepdim = bool(_arg(node, 2, False))
    if rank == 4 and dims == [2, 3] and keepdim:
        return False  # already XNNPACK's global average pool
    kept = [d for d in range(rank) if d not in dims]
    with editor.at(node):
        e = editor
        y = x
        if kept + dims != list(range(rank)):
            y = e.call(aten.permute.default, y, kept + dims)
        outer = math.prod(shape[d] for d in kept)
        reduced = math.prod(shape[d] for d in dims)
        y = e.call(aten.reshape.default, y, [1, outer, reduced, 1])
        y = e.call(aten.mean.dim, y, [2, 3], True)
        replace(node, e.call(aten.reshape.default, y, list(shape_of(node))))
    return True


def layer_norm_modules(gm: fx.GraphModule) -> list[str]:
    return sorted({module_path(n) for n in gm.graph.nodes if n.op == "call_function" and is_tagged_float(n)})


__all__ = ["FLOAT_TAG", "is_tagged_float", "layer_norm_modules", "make_delegable", "tag_float", "is_call"]
