"""The XNNPACK flow: rewrite -> torch.export -> (PT2E INT8) -> to_edge_transform_and_lower -> .pte,
plus the delegation report and an in-process timer for ``.pte`` bytes.

Checked against executorch 1.4.1 / torchao 0.18: ``XNNPACKQuantizer`` lives in
``executorch.backends.xnnpack.quantizer.xnnpack_quantizer``, ``prepare_pt2e``/``convert_pt2e`` in
``torchao.quantization.pt2e.quantize_pt2e``; ``set_module_name(name, None)`` is refused by this
quantizer ("quantization_config == None is not supported yet"), so float-kept modules go through
``set_filter_function``. Its static config observes activations per tensor (affine, histogram)
and weights per output channel (symmetric, int8 in [-127, 127]).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import fx

from .conv3d import STRATEGIES, Conv3dSpec
from .delegable import is_tagged_float, make_delegable
from .frames import FramesReport, lower_frames
from .graph import (eliminate_dead_code, export_graph, fold_constants, module_path, outputs, relative_error,
                    shape_of, simplify_layout)

log = logging.getLogger("edgevid")

#: FP32 agreement the rewrite must reach with the original model (max-abs relative to the output scale)
REWRITE_TOLERANCE = 1e-5


@dataclass
class Rewritten:
    """A rewritten graph and what was done to it."""

    graph_module: fx.GraphModule
    frames: FramesReport
    delegable: dict[str, list[str]]
    folded_constants: int
    error: float | None = None
    float_modules: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        convs = self.frames.convs
        return {
            "conv3d": len(convs),
            "conv3d_by_strategy": {s: sum(c["strategy"] == s for c in convs) for s in ("frames", *STRATEGIES)},
            "conv3d_decisions": [{"module": c["module"], "strategy": c["strategy"], "bn_folded": c["bn_folded"],
                                  "kernel": list(c["spec"].kernel), "groups": c["spec"].groups,
                                  "input": [c["spec"].n, c["spec"].c, c["spec"].t, c["spec"].h, c["spec"].w]}
                                 for c in convs],
            "batch_norms_folded": len(self.frames.folded_batch_norms),
            "left_3d": self.frames.left_3d,
            "rewritten_ops": {k: len(v) for k, v in self.delegable.items()},
            "folded_constants": self.folded_constants,
            "max_rel_error_fp32": self.error,
        }


def rewrite_for_xnnpack(
    model: torch.nn.Module,
    example: torch.Tensor,
    strategy: str | Callable[[Conv3dSpec, str], str] = "taps",
    check: bool = True,
    tolerance: float = REWRITE_TOLERANCE,
) -> Rewritten:
    """Export ``model`` at ``example``'s shape and rewrite it into ops XNNPACK delegates.

    ``strategy``: 'taps', 'channels', or a callable ``(spec, module_name) -> strategy`` (see
    ``edgevid.backends.executorch.rewrite.choose.StrategyChooser`` for the measured choice). With ``check`` the
    rewritten graph is run against the model on random inputs and must agree to ``tolerance``.
    """
    choose = strategy if callable(strategy) else _fixed(strategy)
    gm = export_graph(model, example)
    folded = fold_constants(gm)
    frames = lower_frames(gm, choose)
    touched = make_delegable(gm)
    simplify_layout(gm)
    eliminate_dead_code(gm)
    gm.recompile()
    result = Rewritten(gm, frames, touched, folded)
    result.float_modules = sorted({module_path(n) for n in gm.graph.nodes if n.op == "call_function" and is_tagged_float(n)})
    if check:
        result.error = check_equal(model, gm, example)
        if result.error > tolerance:
            raise RewriteError(f"the rewritten graph differs from the model by {result.error:.2e} (relative, FP32),"
                               f" more than {tolerance:.0e}; this is an edgevid bug, please report it")
    return result


class RewriteError(RuntimeError):
    """The rewritten graph does not compute what the model computes."""


def _fixed(strategy: str):
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown Conv3d strategy {strategy!r}; choose auto, {', '.join(STRATEGIES)}")
    return lambda spec, module: strategy


def check_equal(model: torch.nn.Module, gm: fx.GraphModule, example: torch.Tensor, trials: int = 2) -> float:
    """Worst relative error of ``gm`` against ``model`` over random inputs of ``example``'s shape."""
    generator = torch.Generator().manual_seed(1234)
    worst = 0.0
    for _ in range(trials):
        x = torch.randn(example.shape, generator=generator, dtype=example.dtype)
        worst = max(worst, relative_error(outputs(model.eval(), x), outputs(gm, x)))
    return worst


# ---- export, quantize, lower ----------------------------------------------------------------


def export(gm: torch.nn.Module, example: torch.Tensor):
    return torch.export.export(gm, (example,), strict=False)


def keep_float_filter(modules: Sequence[str]) -> Callable[[fx.Node], bool]:
    """Quantizer filter: False for nodes tagged float or traced inside one of ``modules``."""
    prefixes = [m for m in modules if m]

    def quantize_node(node: fx.Node) -> bool:
        if is_tagged_float(node):
            return False
        path = module_path(node)
        return not any(path == m or path.startswith(m + ".") for m in prefixes)

    return quantize_node


#: layout ops whose output must keep their input's quantization parameters: XNNPACK refuses a
#: quantized slice/reshape whose input and output scales differ, and ``XNNPACKQuantizer``'s own
#: propagation misses ``slice.Tensor`` (the op a torch.export graph holds; it lists
#: ``slice_copy``) and everything downstream of it, since it runs once before we can add them
_aten = torch.ops.aten
SHARED_QPARAM_OPS = (_aten.slice.Tensor, _aten.reshape.default, _aten.view.default, _aten.permute.default,
                     _aten.transpose.int, _aten.unsqueeze.default, _aten.squeeze.dims, _aten.squeeze.dim,
                     _aten.flatten.using_ints, _aten.clone.default, _aten.alias.default)


def share_qparams(model: fx.GraphModule, ops=SHARED_QPARAM_OPS) -> None:
    """Annotate layout ops to reuse their input's qparams (after the quantizer's own pass)."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in ops or not isinstance(node.args[0], fx.Node):
            continue
        previous = node.args[0].meta.get(Q_ANNOTATION_KEY)
        if previous is None or previous.output_qspec is None:
            continue
        if Q_ANNOTATION_KEY in node.meta and node.meta[Q_ANNOTATION_KEY]._annotated:
            continue
        shared = SharedQuantizationSpec(node.args[0])
        node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map={node.args[0]: shared},
                                                             output_qspec=shared, _annotated=True)


ACTIVATION_OBSERVERS = ("histogram", "minmax")
"""How calibration picks each activation's range: ``histogram`` (XNNPACKQuantizer's default, the
range minimising the L2 quantization error of a histogram of every value seen; counted with
``bincount_histogram_observer``) or ``minmax`` (the
observed extremes: several times cheaper per calibration forward, less robust to outliers)."""


ADD_OPS = (_aten.add.Tensor, _aten.add_.Tensor)


@functools.cache
def bincount_histogram_observer():
    """``HistogramObserver`` whose per-call histogram is a ``bincount`` of the bin indices instead
    of ``torch.histc``: 2.5x faster on CPU (``torch.histc`` was 3.6 of the 8.6 s a UniFormerV2-B
    calibration forward took on one core, 40% of an android build) and equal to it count for
    count: the index is histc's own (``(x - min) * bins / (max - min)`` in float32, truncated, the
    top edge in the last bin; ATen's linear-interpolation binning without local search). Same
    running range, merge and L2 range search, so the same ranges (``tests/test_executorch.py``).
    Non-finite inputs, an empty range and the first call go through the original."""
    from torchao.quantization.pt2e import HistogramObserver

    class BincountHistogramObserver(HistogramObserver):
        def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
            if x_orig.numel() == 0 or self.min_val == float("inf") or self.max_val == float("-inf"):
                return super().forward(x_orig)
            x = x_orig.detach()
            x_min, x_max = torch.aminmax(x)
            if not (torch.isfinite(x_min) and torch.isfinite(x_max)):
                return super().forward(x_orig)
            current_min, current_max = self.min_val, self.max_val
            new_min, new_max = torch.min(current_min, x_min), torch.max(current_max, x_max)
            update = self._bincount(x, new_min, new_max)
            if new_min == current_min and new_max == current_max:
                self.histogram.add_(update)
                return x_orig
            combined = self._combine_histograms(self.histogram, current_min, current_max, update, new_min, new_max)
            self.histogram.detach_().resize_(combined.shape).copy_(combined)
            self.min_val.detach_().resize_(new_min.shape).copy_(new_min)
            self.max_val.detach_().resize_(new_max.shape).copy_(new_max)
            return x_orig

        def _bincount(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
            if not high > low:  # one value: histc widens the range itself
                return torch.histc(x, self.bins, min=low, max=high)  # type: ignore[arg-type]
            index = ((x.reshape(-1) - low) * self.bins / (high - low)).to(torch.int32).clamp_(0, self.bins - 1)
            return torch.bincount(index, minlength=self.bins).to(self.histogram.dtype)

    return BincountHistogramObserver


def xnnpack_quantizer(keep_float: Sequence[str] = (), activation_observer: str = "histogram", int8_adds: bool = True):
    """``XNNPACKQuantizer`` (per-channel symmetric) that also shares qparams through slices and
    skips float-kept nodes; ``activation_observer`` one of ``ACTIVATION_OBSERVERS``; ``int8_adds``
    False leaves every tensor add (residual sums, the Conv3d taps' partial sums) unannotated, as
    ``keep_float`` does: it runs in float on its producers' dequantized outputs, and only a sum
    that feeds an int8 op is quantized, as that op's input."""
    import dataclasses

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import MinMaxObserver

    class Quantizer(XNNPACKQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            share_qparams(model)
            return model

    if activation_observer not in ACTIVATION_OBSERVERS:
        raise ValueError(f"activation_observer {activation_observer!r}: choose one of {', '.join(ACTIVATION_OBSERVERS)}")
    config = get_symmetric_quantization_config(is_per_channel=True)
    observer_class = MinMaxObserver if activation_observer == "minmax" else bincount_histogram_observer()
    observer = observer_class.with_args(eps=2**-12)  # the eps XNNPACK's default config gives its observer
    spec = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=observer)
    config = dataclasses.replace(config, input_activation=spec, output_activation=spec)
    quantizer = Quantizer().set_global(config)
    keep = keep_float_filter(keep_float)
    quantizer.set_filter_function(keep if int8_adds else (lambda node: node.target not in ADD_OPS and keep(node)))
    return quantizer


def quantize(program, example: torch.Tensor, calib: Sequence[torch.Tensor], keep_float: Sequence[str] = (),
             stages=None, activation_observer: str = "histogram", int8_adds: bool = True):
    """PT2E static INT8 for XNNPACK: per-channel symmetric weights, per-tensor activations."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from ....stages import BuildStages

    stages = stages or BuildStages()
    if not len(calib):
        raise ValueError("no calibration clips")
    with stages.stage("calibration", total=len(calib)) as stage:
        prepared = prepare_pt2e(program.module(), xnnpack_quantizer(keep_float, activation_observer, int8_adds))
        with torch.no_grad():
            for clip in calib:
                prepared(clip)
                stage.advance()
    with stages.stage("quantize"):
        converted = convert_pt2e(prepared)
        return export(converted, example)


def lower(program):
    """``to_edge_transform_and_lower`` with the XNNPACK partitioner (same program, less build time:
    see ``_shared_provenance`` and ``_skip_idle_xnnpack_passes``)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with _shared_provenance(), _skip_idle_xnnpack_passes():
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def pte_bytes(lowered) -> bytes:
    with _shared_provenance():
        return lowered.to_executorch().buffer


@contextlib.contextmanager
def _shared_provenance():
    """Deep copies share ``NodeSource`` objects instead of copying them, while this is entered.

    Every retrace (each ExportPass of ``to_edge`` and of the XNNPACK delegate) gives each new node a
    ``NodeSource`` that deep-copies the old node's whole provenance chain, one level longer each
    pass: about a fifth of the lowering time of an X3D-S graph. A ``NodeSource`` is never mutated
    after it is built (torch 2.13: its constructor and ``_from_dict`` set its fields, the rest only
    caches derived strings), so sharing one is the same as copying it; the lists holding them are
    still copied. The ``.pte`` is byte-identical (``tests/test_executorch.py``)."""
    try:
        from torch.fx.traceback import NodeSource
    except ImportError:  # pragma: no cover - older torch: nothing to share
        yield
        return
    if "__deepcopy__" in NodeSource.__dict__:  # entered already (nested), or torch defines its own
        yield
        return
    NodeSource.__deepcopy__ = _same_node_source
    try:
        yield
    finally:
        del NodeSource.__deepcopy__


def _same_node_source(node_source, memo):
    return node_source


def _targets(graph_module: fx.GraphModule) -> set:
    return {n.target for n in graph_module.graph.nodes if n.op == "call_function"}


def _target_names(graph_module: fx.GraphModule) -> set[str]:
    """Op names (equal ops have equal names, so comparing names never misses a match)."""
    return {getattr(t, "__name__", str(t)) for t in _targets(graph_module)}


def _xnnpack_pass_triggers() -> dict[type, Callable[[fx.GraphModule], bool]]:
    """XNNPACK delegate passes that only rewrite nodes of given ops, each with a test of whether the
    graph holds such a node (the same condition the pass checks first). Without one, the pass
    would only retrace the graph unchanged (about 2 s each on X3D-S)."""
    from executorch.backends.transforms.remove_getitem_op import RemoveGetItemPass
    from executorch.backends.xnnpack._passes import (
        Conv1dUnsqueezePass,
        ConvertToSDPAPass,
        ConvertToUpsampleBilinear2d,
        DecomposeBatchNorm,
        FuseBatchNormPass,
        PReLUReshapePass,
    )
    from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa
    from executorch.exir.dialects._ops import ops as exir_ops

    def holds_pattern(patterns):
        # a subgraph match needs every op of the pattern in the graph
        return lambda gm: any(_target_names(p) <= _target_names(gm) for p in patterns())

    def holds(names):
        return lambda gm: bool(_target_names(gm) & names)

    def holds_conv1d(gm):
        return any(n.op == "call_function" and getattr(n.target, "__name__", None) == "aten.convolution.default"
                   and len(list(n.args[3])) == 1 for n in gm.graph.nodes)

    batch_norm = holds({getattr(op, "__name__", str(op)) for op in DecomposeBatchNorm.BATCH_NORM_OPS})
    return {
        ConvertToUpsampleBilinear2d: holds_pattern(lambda: list(bilinear_2d.get_graphs_dict())),
        ConvertToSDPAPass: holds_pattern(sdpa.get_graphs),
        FuseBatchNormPass: batch_norm,
        DecomposeBatchNorm: batch_norm,
        RemoveGetItemPass: holds({"aten.max_pool2d_with_indices.default", "aten.max.dim"}),
        Conv1dUnsqueezePass: holds_conv1d,
        PReLUReshapePass: holds({exir_ops.edge.aten._prelu_kernel.default.__name__}),
    }


@contextlib.contextmanager
def _skip_idle_xnnpack_passes():
    """While entered, the XNNPACK delegate skips a pass of ``_xnnpack_pass_triggers`` when the graph
    it would run on (checked just before it, after the passes before it) holds none of its ops."""
    import executorch.backends.xnnpack._passes as xnnpack_passes

    run_pass = xnnpack_passes._transform
    triggers = _xnnpack_pass_triggers()

    def transform(program, *passes, **kwargs):
        if len(passes) == 1 and type(passes[0]) in triggers and not triggers[type(passes[0])](program.graph_module):
            log.debug("XNNPACK pass %s skipped: nothing to rewrite", type(passes[0]).__name__)
            return program
        return run_pass(program, *passes, **kwargs)

    xnnpack_passes._transform = transform
    try:
        yield
    finally:
        xnnpack_passes._transform = run_pass


# ---- delegation report ----------------------------------------------------------------------

_GEMM = ("convolution", "linear", "mm", "bmm", "addmm", "matmul")


def _op_name(node: fx.Node) -> str:
    """'convolution' for aten.convolution.default (ATen and Edge dialect alike)."""
    parts = getattr(node.target, "__name__", str(node.target)).split(".")
    return parts[1] if len(parts) >= 2 and parts[0] in ("aten", "quantized_decomposed", "dim_order_ops") else parts[0]


def node_flops(node: fx.Node) -> int:
    """2 x multiply-adds of a conv / linear / matmul node (0 for every other op)."""
    op = _op_name(node)
    out = node.meta.get("val")
    if op not in _GEMM or not isinstance(out, torch.Tensor):
        return 0
    if op == "convolution":
        weight = shape_of(node.args[1])
        return 2 * out.numel() * (int(torch.tensor(weight[1:]).prod()) if weight else 0)
    if op == "linear":
        return 2 * out.numel() * shape_of(node.args[1])[-1]
    if op == "addmm":
        return 2 * out.numel() * shape_of(node.args[1])[-1]
    return 2 * out.numel() * shape_of(node.args[0])[-1]


def delegation_report(lowered) -> dict[str, Any]:
    """Every op node of the lowered program, delegated to XNNPACK or not, and the share of the
    conv/linear/matmul FLOPs that runs in the delegate."""
    gm = lowered.exported_program().graph_module
    nodes: list[dict[str, Any]] = []

    def record(node: fx.Node, delegated: bool) -> None:
        op = _op_name(node)
        if op in ("getitem", "executorch_call_delegate") or op.startswith(("quantize_per", "dequantize_per")):
            if op.startswith(("quantize_per", "dequantize_per")):
                nodes.append({"op": op, "delegated": delegated, "module": module_path(node), "flops": 0})
            return
        val = node.meta.get("val")
        entry = {"op": op, "delegated": delegated, "module": module_path(node), "flops": node_flops(node),
                 "shape": list(val.shape) if isinstance(val, torch.Tensor) else None}
        if entry["flops"]:
            weight = node.args[1] if len(node.args) > 1 else None
            entry["int8"] = isinstance(weight, fx.Node) and _op_name(weight).startswith("dequantize_per")
        nodes.append(entry)

    subgraphs = 0
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            subgraphs += 1
            for inner in getattr(gm, node.name).original_module.graph.nodes:
                if inner.op == "call_function":
                    record(inner, True)
        elif node.op == "call_function":
            record(node, False)
    by_op: dict[str, dict[str, int]] = {}
    for entry in nodes:
        counts = by_op.setdefault(entry["op"], {"delegated": 0, "not_delegated": 0})
        counts["delegated" if entry["delegated"] else "not_delegated"] += 1
    total = sum(e["flops"] for e in nodes)
    delegated = sum(e["flops"] for e in nodes if e["delegated"])
    int8 = sum(e["flops"] for e in nodes if e.get("int8"))
    return {
        "delegated_subgraphs": subgraphs,
        "nodes": len(nodes),
        "delegated_nodes": sum(e["delegated"] for e in nodes),
        "not_delegated": [e for e in nodes if not e["delegated"]],
        "by_op": dict(sorted(by_op.items())),
        "gemm_flops": total,
        "gemm_flops_delegated": delegated,
        "gemm_flops_delegated_share": (delegated / total) if total else 1.0,
        "gemm_flops_int8_share": (int8 / total) if total else 0.0,
        "all_nodes": nodes,
    }


# ---- running .pte bytes in process ----------------------------------------------------------


def set_threads(threads: int | None) -> None:
    """Size ExecuTorch's thread pool. Only safe before any method is loaded: XNNPACK delegates
    keep the pool they were initialised with (a reset afterwards corrupts their runs)."""
    if threads:
        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

        if _threadpool_get_thread_count() != int(threads):
            _unsafe_reset_threadpool(int(threads))


class LoadedPte:
    """A loaded program and its forward method (the method needs its program alive)."""

    def __init__(self, source: bytes | str):
        from executorch.runtime import Runtime

        self.program = Runtime.get().load_program(source)
        self.method = self.program.load_method("forward")

    def execute(self, inputs: list):
        return self.method.execute(inputs)


def load_method(source: bytes | str) -> LoadedPte:
    return LoadedPte(source)


def time_method(method, inputs: list, min_seconds: float = 0.3, min_runs: int = 3, max_runs: int = 50) -> float:
    """Best wall time in ms of ``method.execute(inputs)`` after one warm-up run."""
    method.execute(inputs)
    best, runs, started = float("inf"), 0, time.perf_counter()
    while runs < max_runs and (runs < min_runs or time.perf_counter() - started < min_seconds):
        t0 = time.perf_counter()
        method.execute(inputs)
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return best * 1e3
