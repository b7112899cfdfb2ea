"""Editing torch.export graphs: shape-aware node emission, constants, folding and clean-up.

Every rewrite in this package works on the ATen graph of ``torch.export.export(model).module()``
and emits ATen ops only, so the edited ``GraphModule`` can be exported again (for PT2E
quantization and lowering) and run eagerly (for the equality checks).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import fx

aten = torch.ops.aten

#: meta keys an emitted node inherits from the node it replaces (module names drive --keep-float)
INHERITED_META = ("nn_module_stack", "stack_trace", "source_fn_stack", "custom")


def export_graph(model: torch.nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """The model's ATen graph as an editable ``GraphModule`` (parameters stay attributes)."""
    from ....export import export_program

    return export_program(model.eval(), example).module()


class Ops:
    """Emits ops. This base class runs them eagerly on real tensors (tests, micro-benchmarks)."""

    def call(self, target, *args, **kwargs):
        return target(*args, **kwargs)

    def const(self, tensor: torch.Tensor, hint: str = "c"):
        return tensor

    def shape(self, value) -> tuple[int, ...]:
        return tuple(value.shape)


class GraphEditor(Ops):
    """Emits ATen nodes into a ``GraphModule`` with ``meta['val']`` (fake tensors) and the module
    names of the node being replaced."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.graph = gm.graph
        vals = [n.meta.get("val") for n in self.graph.nodes]
        self.fake_mode = torch._guards.detect_fake_mode([v for v in vals if isinstance(v, torch.Tensor)])
        if self.fake_mode is None:
            from torch._subclasses.fake_tensor import FakeTensorMode

            self.fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        self._source: fx.Node | None = None
        self._count = 0

    @contextlib.contextmanager
    def at(self, node: fx.Node, after: bool = False) -> Iterator["GraphEditor"]:
        """Insert before (or after) ``node``; new nodes inherit its module names."""
        previous = self._source
        self._source = node
        ctx = self.graph.inserting_after(node) if after else self.graph.inserting_before(node)
        with ctx:
            yield self
        self._source = previous

    def _meta(self, node: fx.Node, val) -> None:
        node.meta["val"] = val
        if self._source is not None:
            for key in INHERITED_META:
                if key in self._source.meta:
                    node.meta[key] = self._source.meta[key]

    def call(self, target, *args, **kwargs):
        node = self.graph.call_function(target, args, kwargs)
        fake_args, fake_kwargs = fx.node.map_arg((args, kwargs), lambda n: n.meta["val"])
        with self.fake_mode:
            val = target(*fake_args, **fake_kwargs)
        self._meta(node, val)
        return node

    def const(self, tensor: torch.Tensor, hint: str = "c") -> fx.Node:
        """A constant tensor as a new buffer of the GraphModule. Never shared between ops: the
        quantizer derives a conv's int32 bias scale from that conv's weight scales."""
        self._count += 1
        name = f"_rewrite_{hint}_{self._count}"
        self.gm.register_buffer(name, tensor.detach().contiguous().clone())
        node = self.graph.get_attr(name)
        self._meta(node, self.fake_mode.from_tensor(getattr(self.gm, name), static_shapes=True))
        return node

    def shape(self, value) -> tuple[int, ...]:
        return tuple(value.meta["val"].shape) if isinstance(value, fx.Node) else tuple(value.shape)

    def value(self, node: fx.Node | None) -> torch.Tensor | None:
        """The tensor behind a ``get_attr`` node (None stays None)."""
        if node is None:
            return None
        if node.op != "get_attr":
            raise ValueError(f"{node} is not a constant")
        return attr(self.gm, node.target)


def attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def shape_of(node) -> tuple[int, ...] | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def module_path(node: fx.Node) -> str:
    """The innermost module a node was traced in ('' for the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path[len("L['self']."):] if path.startswith("L['self'].") else path


# Ops whose value only depends on their inputs: safe to evaluate once when all inputs are constants.
_NOT_FOLDABLE = {aten._assert_tensor_metadata.default, aten.dropout.default, aten.rand.default,
                 aten.randn.default, aten.bernoulli.default}


def fold_constants(gm: fx.GraphModule, max_bytes: int = 64 << 20) -> int:
    """Replace every call whose inputs are all constants (parameters, buffers, earlier folds) by
    its value: class tokens expanded to the batch, sigmoid of a learned balance, and the like."""
    editor = GraphEditor(gm)
    known: dict[fx.Node, torch.Tensor] = {}
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op == "get_attr":
            value = attr(gm, node.target)
            if isinstance(value, torch.Tensor):
                known[node] = value
            continue
        if node.op != "call_function" or node.target in _NOT_FOLDABLE or not node.all_input_nodes:
            continue
        if not all(n in known for n in node.all_input_nodes):
            continue
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: known[n])
        with torch.no_grad():
            value = node.target(*args, **kwargs)
        if not isinstance(value, torch.Tensor) or value.numel() * value.element_size() > max_bytes:
            continue
        with editor.at(node):
            const = editor.const(value, "folded")
        node.replace_all_uses_with(const)
        gm.graph.erase_node(node)
        known[const] = value
        folded += 1
    return folded


def eliminate_dead_code(gm: fx.GraphModule) -> None:
    """Remove unused pure nodes and buffers nothing reads any more."""
    gm.graph.eliminate_dead_code()
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [name for name, _ in gm.named_buffers(recurse=False) if name.startswith("_rewrite_")]:
        if name not in used:
            delattr(gm, name)


_RESHAPES = (aten.reshape.default, aten.view.default, aten._unsafe_view.default)


def simplify_layout(gm: fx.GraphModule) -> int:
    """Peepholes on the layout ops the rewrites leave behind: chains of reshapes or permutes
    collapse, identities vanish, a permute that only moves size-1 dims becomes a reshape."""
    editor = GraphEditor(gm)
    changed_total = 0
    changed = True
    while changed:
        changed = False
        for node in list(gm.graph.nodes):
            if node.op != "call_function" or node.graph is not gm.graph:
                continue
            src = node.args[0] if node.args else None
            out_shape = shape_of(node)
            if node.target in _RESHAPES:
                if shape_of(src) == out_shape:
                    replace(node, src)
                elif is_call(src, *_RESHAPES):
                    node.update_arg(0, src.args[0])
                else:
                    continue
            elif node.target == aten.permute.default:
                perm = [d % len(out_shape) for d in node.args[1]]
                in_shape = shape_of(src)
                if perm == sorted(perm):
                    replace(node, src)
                elif is_call(src, aten.permute.default):
                    inner = [d % len(out_shape) for d in src.args[1]]
                    node.update_arg(0, src.args[0])
                    node.update_arg(1, [inner[d] for d in perm])
                elif [d for d in perm if in_shape[d] != 1] == [d for d in range(len(perm)) if in_shape[d] != 1]:
                    with editor.at(node):
                        replace(node, editor.call(aten.reshape.default, src, list(out_shape)))
                else:
                    continue
            else:
                continue
            changed = True
            changed_total += 1
        gm.graph.eliminate_dead_code()
    gm.recompile()
    return changed_total


def is_call(node, *targets) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in targets


def replace(node: fx.Node, new: fx.Node) -> None:
    node.replace_all_uses_with(new)
    if not node.users:
        node.graph.erase_node(node)


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """max |a - b| / max |a| (the scale of the reference; 0 when both are 0)."""
    scale = reference.abs().max().item()
    diff = (reference - other).abs().max().item()
    return diff / scale if scale else diff


def outputs(fn: Callable, *inputs) -> torch.Tensor:
    with torch.no_grad():
        out = fn(*inputs)
    return out[0] if isinstance(out, (tuple, list)) else out


__all__ = [
    "GraphEditor", "Ops", "attr", "eliminate_dead_code", "export_graph", "fold_constants", "is_call",
    "module_path", "outputs", "relative_error", "replace", "shape_of", "simplify_layout",
]
