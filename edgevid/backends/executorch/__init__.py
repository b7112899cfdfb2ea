"""ExecuTorch ``.pte`` for phones: the XNNPACK delegate (Android and iOS CPUs), FP32 or PT2E INT8,
and on the ``ios`` target optionally a Core ML delegated ``.pte`` as well (export only).

Build: ``edgevid.backends.executorch.rewrite`` turns the video model into 2-D ops (XNNPACK has no Conv3d, 3-D
pooling or LayerNorm) -> ``torch.export`` -> INT8: PT2E with ``XNNPACKQuantizer`` (per-channel
symmetric weights, per-tensor activations from the calibration clips; LayerNorm, softmax and
GELU stay float, as do the modules named in the ``keep_float`` option) ->
``to_edge_transform_and_lower(XnnpackPartitioner)`` -> ``model.pte``. The build writes
``delegation.json`` (every op node, delegated or not, and the share of conv/linear/matmul FLOPs
in the delegate), runs the ``.pte`` once and fails if it cannot run.

Run: ``executorch.runtime`` with the thread count set before the program loads. The Python
bindings of ExecuTorch import torch themselves (``portable_lib`` does ``import torch``), so this
runner needs torch; on a phone the same ``.pte`` runs under the C++/Java/Swift runtime.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ...errors import DataError, EdgevidError, first_line
from ..base import Backend, BuildRequest, BuildResult, QuantLayer, Runner
from .options import ExecuTorchOptions

from .runner import ExecuTorchRunner

log = logging.getLogger("edgevid")

MODEL_FILE = "model.pte"
COREML_FILE = "model_coreml.pte"
DELEGATION_FILE = "delegation.json"


class ExecuTorchBackend(Backend):
    name = "executorch"
    options_model = ExecuTorchOptions
    requirements = {"executorch": "executorch==1.4.1", "torch": "torch==2.13.0"}
    build_requirements = {"torchao": "torchao"}
    extra = "executorch"
    build_extra = "build-executorch"
    precisions = ("fp32", "int8")

    def build(self, request: BuildRequest) -> BuildResult:
        import torch

        from .rewrite import RewriteError, StrategyChooser, rewrite_for_xnnpack
        from .rewrite import xnnpack as xnn

        target, spec = request.target, request.spec
        options = {**target.options, **request.options}
        policy = target.input_shape
        if policy.dynamic:
            raise EdgevidError(f"target {target.name}: an XNNPACK .pte here has a static batch; drop min_batch/"
                               f"max_batch from targets/{target.name}.yaml")
        example = torch.zeros(spec.input_shape(policy.batch))
        threads = int(options.get("threads") or target.threads or 1)
        bench_threads = max(1, min(threads, usable_cores()))  # a pinned build (taskset) times on the cores it has
        keep_float = _keep_float(options.get("keep_float"), request.model)
        strategy = options.get("conv3d_strategy", default_conv3d_strategy(request.precision))
        chooser = StrategyChooser(request.precision, bench_threads) if strategy == "auto" else strategy
        notes: list[str] = []

        try:
            with request.stages.stage("rewrite"):
                rewritten = rewrite_for_xnnpack(request.model, example, strategy=chooser)
        except RewriteError as exc:
            raise EdgevidError(str(exc)) from None
        except ValueError as exc:
            raise EdgevidError(f"target option conv3d_strategy: {exc}") from None
        measured = [d for d in getattr(chooser, "decisions", []) if not d["cached"]]
        if measured:  # part of the rewrite: the per-shape micro-benchmarks that the cache did not answer
            request.stages.add("strategy benchmarks", sum(d.get("measure_s", 0.0) for d in measured))
        log.info("conv3d strategy: %d shapes from the cache, %d measured",
                 sum(d["cached"] for d in getattr(chooser, "decisions", [])), len(measured))
        for left in rewritten.frames.left_3d:
            notes.append(f"{left['op']} in module {left['module'] or '(root)'} stays 3-D ({left['reason']}):"
                         " it runs outside XNNPACK on the portable kernels")
        summary = rewritten.summary()
        log.info("rewrite: %s", {k: v for k, v in summary.items() if k != "conv3d_decisions"})
        log.debug("rewrite decisions (build.log): %s", json.dumps(summary.get("conv3d_decisions"), default=str))
        with request.stages.stage("export"):
            program = xnn.export(rewritten.graph_module, example)

        if request.precision == "int8":
            clips = _calibration_batches(request.calib, example.shape)
            observer = options.get("activation_observer", "histogram")
            int8_adds = bool(options.get("int8_adds", True))
            program = xnn.quantize(program, example, clips, keep_float, request.stages, observer, int8_adds)
            quant = {
                "scheme": "PT2E static INT8 (XNNPACKQuantizer): per-channel symmetric int8 weights,"
                          f" per-tensor affine int8 activations ({observer} observer)",
                "activation_observer": observer,
                "adds": "int8" if int8_adds else "float",
                "calibration_clips": len(request.calib or []),
                "kept_float": keep_float,
                "float_ops": "LayerNorm (decomposed, in " + (", ".join(rewritten.float_modules) or "no module") + "),"
                             " softmax, GELU, sigmoid, bmm, mean: XNNPACKQuantizer leaves them unannotated",
            }
        else:
            quant = {"scheme": "none (FP32)"}
        with request.stages.stage("lowering"):
            lowered = xnn.lower(program)
            report = xnn.delegation_report(lowered)
            pte = xnn.pte_bytes(lowered)
        path = request.out_dir / MODEL_FILE
        path.write_bytes(pte)

        with request.stages.stage("check"):
            check = _smoke_run(path, example, rewritten.graph_module, report)
        if request.precision == "fp32":
            notes.extend(check.pop("notes", []))
        undelegated = sorted({(e["op"], e["module"]) for e in report["not_delegated"]
                              if not e["op"].startswith(("quantize_per", "dequantize_per"))})
        if undelegated:
            notes.append("not delegated to XNNPACK: " + ", ".join(f"{op} ({m or 'root'})" for op, m in undelegated[:12]))
        share = report["gemm_flops_delegated_share"]
        summary = {k: v for k, v in report.items() if k not in ("all_nodes",)}
        (request.out_dir / DELEGATION_FILE).write_text(json.dumps(
            {"rewrite": rewritten.summary(), "strategy_decisions": getattr(chooser, "decisions", []),
             **summary, "nodes": report["all_nodes"], "run_check": check}, indent=1, default=str))
        status = {"delegation": f"{share:.1%} of conv/linear/matmul FLOPs in XNNPACK,"
                                f" {report['delegated_nodes']}/{report['nodes']} op nodes"}

        if options.get("coreml"):
            status["coreml"] = _export_coreml(request, example, notes)

        return BuildResult(
            quantization=quant,
            versions=_versions(),
            fingerprint={"delegate": "XnnpackBackend", "threads": threads},
            status=status,
            notes=notes,
            input_name="input",
        )

    def quantizable_layers(self, request: BuildRequest) -> list[QuantLayer]:
        """The modules whose Conv2d/Linear ops the INT8 build quantizes (``keep_float`` takes these)."""
        import torch

        from .rewrite import rewrite_for_xnnpack
        from .rewrite.delegable import is_tagged_float
        from .rewrite.graph import module_path

        aten = torch.ops.aten
        example = torch.zeros(request.spec.input_shape(request.target.input_shape.batch))
        graph = rewrite_for_xnnpack(request.model, example, strategy="taps", check=False).graph_module.graph
        layers: dict[str, QuantLayer] = {}
        for node in graph.nodes:
            if node.op == "call_function" and node.target in (aten.conv2d.default, aten.linear.default) \
                    and not is_tagged_float(node) and module_path(node):
                op = "Conv" if node.target == aten.conv2d.default else "Linear"
                layers.setdefault(module_path(node), QuantLayer(name=module_path(node), op=op, scope=module_path(node)))
        return list(layers.values())

    def open(self, artifact, threads=None, mode="latency") -> Runner:
        m = artifact.manifest
        threads = threads or m.fingerprint.get("threads")
        threads = max(1, min(int(threads), os.cpu_count() or 1)) if threads else None
        return ExecuTorchRunner(artifact.file(MODEL_FILE), m.input_shape, threads,
                                f"ExecuTorch XNNPACK {m.precision.upper()}")


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_conv3d_strategy(precision: str) -> str:
    """INT8: ``channels`` - each temporal Conv3d one Conv2d, so one int8 requantization instead of one
    per temporal tap and partial sum (1,000 val clips: x3d_synth agreement 99.0% vs 98.6% with the
    timed choice, logits SQNR 24.7 vs 23.0 dB; uniformerv2_synth 98.0% vs 97.9%), and no per-shape
    micro-benchmarks in the build; it costs X3D-S 13% latency on one x86 thread (41.2 vs 36.5 ms:
    ``--option conv3d_strategy=auto`` picks the fastest per layer). FP32: ``auto`` (timed, cached)."""
    return "channels" if precision == "int8" else "auto"


def _keep_float(value, model) -> list[str]:
    """Module names from the ``keep_float`` option (list or comma-separated), checked against the model."""
    if not value:
        return []
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v and v.strip()]
    known = {name for name, _ in model.named_modules()}
    unknown = [n for n in names if n not in known]
    if unknown:
        from ...errors import suggest

        hint = suggest(unknown[0], known) or f" Names look like {', '.join(sorted(known - {''})[:3])}."
        raise EdgevidError(f"--keep-float {unknown[0]}: the model has no module of that name.{hint}")
    return names


def _calibration_batches(calib, shape):
    """Calibration clips ([1, C, T, H, W] each) as tensors of the program's input shape."""
    import torch

    if not calib:
        raise DataError("INT8 needs calibration clips: pass --calib (a folder, a manifest or 'synthetic')")
    want = tuple(shape[1:])
    clips = []
    for i, clip in enumerate(calib):
        array = np.asarray(clip, dtype=np.float32)
        if array.ndim == 4:
            array = array[None]
        if tuple(array.shape[1:]) != want:
            raise DataError(f"calibration clip {i} has shape {tuple(array.shape)}; the model takes (N, {', '.join(map(str, want))})"
                            " (preprocess clips as at inference)")
        if not np.isfinite(array).all():
            raise DataError(f"calibration clip {i} holds NaN/Inf values")
        clips.append(torch.from_numpy(np.ascontiguousarray(array)))
    frames = torch.cat(clips)
    batch = shape[0]
    return [frames[i:i + batch] for i in range(0, len(frames) - batch + 1, batch)] or [frames[:1].expand(batch, *want)]


def _smoke_run(path: Path, example, graph_module, report) -> dict:
    """Run the written .pte once; fail the build (naming what is not delegated) if it cannot run."""
    import torch

    from .rewrite.graph import outputs, relative_error
    from .rewrite.xnnpack import load_method

    x = torch.randn(example.shape, generator=torch.Generator().manual_seed(7))
    try:
        got = load_method(str(path)).execute([x])[0]
    except Exception as exc:  # noqa: BLE001
        left = sorted({f"{e['op']} ({e['module'] or 'root'})" for e in report["not_delegated"]})
        raise EdgevidError(f"the .pte does not run ({first_line(exc, 120)}); ops outside XNNPACK:"
                           f" {', '.join(left[:10]) or 'none'}") from None
    error = relative_error(outputs(graph_module, x), got)
    result = {"max_rel_error_vs_rewritten_fp32": error}
    if error > 1e-3:
        result["notes"] = [f"FP32 .pte differs from PyTorch by {error:.1e} (relative)"]
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "executorch", "torchao", "coremltools"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def _export_coreml(request: BuildRequest, example, notes: list[str]) -> str:
    """A Core ML delegated .pte of the original model (Core ML has Conv3d): export only."""
    import importlib.util

    if importlib.util.find_spec("coremltools") is None:
        notes.append("coreml: coremltools is not installed (pip install coremltools); only the XNNPACK .pte was built")
        return "skipped: coremltools not installed"
    import torch

    try:
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner
        from executorch.exir import to_edge_transform_and_lower

        program = torch.export.export(request.model.eval(), (example,), strict=False)
        lowered = to_edge_transform_and_lower(program, partitioner=[CoreMLPartitioner()])
        (request.out_dir / COREML_FILE).write_bytes(lowered.to_executorch().buffer)
    except Exception as exc:  # noqa: BLE001 - Core ML export is optional: report, keep the XNNPACK build
        reason = first_line(exc, 200)
        notes.append(f"coreml: export failed ({reason}); only the XNNPACK .pte was built")
        return f"failed: {reason}"
    precision = "FP16 compute (Core ML's default)" if request.precision == "fp32" else \
        "FP16 compute (INT8 for Core ML is not built here)"
    notes.append(f"coreml: {COREML_FILE} written ({precision}); it runs only on Apple hardware, not checked here")
    return f"exported {COREML_FILE} (not run: needs Apple hardware)"


BACKEND = ExecuTorchBackend()
