"""The device half of the TensorRT backend: engine build and runner (TensorRT >= 10 + pycuda, no torch).

Only imported where ``import tensorrt`` and a CUDA GPU work. Precision comes from the ONNX
(explicit Q/DQ INT8, AutoCast FP16): the network is strongly typed, so there are no precision
builder flags and no calibrators (removed in TensorRT 11; the flag is accepted and ignored there).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import ArtifactError, EdgevidError
from ..base import Runner
from . import jetpack_from_tegra_release, parser_error_lines

log = logging.getLogger("edgevid")


def _trt_logger():
    """A TensorRT logger that forwards into edgevid's log (and so into build.log)."""
    import tensorrt as trt

    levels = {trt.Logger.INTERNAL_ERROR: logging.ERROR, trt.Logger.ERROR: logging.ERROR,
              trt.Logger.WARNING: logging.WARNING, trt.Logger.INFO: logging.DEBUG, trt.Logger.VERBOSE: logging.DEBUG}

    class Forward(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            log.log(levels.get(severity, logging.DEBUG), "tensorrt: %s", msg)

    return Forward()


def machine_fingerprint() -> dict[str, Any]:
    """GPU name, compute capability, TensorRT and CUDA versions, and JetPack on a Jetson."""
    import pycuda.driver as cuda
    import tensorrt as trt

    cuda.init()
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    fp: dict[str, Any] = {
        "gpu": device.name(),
        "compute_capability": f"{major}.{minor}",
        "tensorrt": trt.__version__,
        "cuda": ".".join(str(v) for v in cuda.get_version()[:2]),
        "cuda_driver": f"{cuda.get_driver_version() // 1000}.{cuda.get_driver_version() % 1000 // 10}",
    }
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        parsed = jetpack_from_tegra_release(release.read_text(errors="replace"))
        if parsed:
            fp["l4t"], fp["jetpack"] = parsed
    return fp


def _network_flags(trt) -> int:
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # 10.x opt-in; 11.x accepts and ignores it
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def _parser_errors(parser, onnx_path: Path) -> list[tuple[str, str, str]]:
    """(node name, op type, description) for every parser error; node names looked up when TRT gives an index."""
    nodes = None
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        name = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        if not name and err.node() >= 0:
            if nodes is None:
                try:
                    import onnx

                    nodes = list(onnx.load(str(onnx_path), load_external_data=False).graph.node)
                except Exception:
                    nodes = []
            if err.node() < len(nodes):
                name, op = nodes[err.node()].name, nodes[err.node()].op_type
        errors.append((name, op, err.desc()))
    return errors


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    cache_path: Path,
    shapes: Sequence[Sequence[int]],
    workspace_mb: int = 2048,
    dla_core: int | None = None,
    timing_cache: bytes | None = None,
) -> dict[str, Any]:
    """Parse the ONNX into a strongly typed network and serialize an engine plus its timing cache."""
    import tensorrt as trt

    started = time.perf_counter()
    logger = _trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if dla_core is not None and hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "ADJUST_FOR_DLA"):
        parser.set_flag(trt.OnnxParserFlag.ADJUST_FOR_DLA)
    if not parser.parse_from_file(str(onnx_path)):
        lines = parser_error_lines(_parser_errors(parser, onnx_path))
        for line in lines:
            log.error("TensorRT ONNX parser: %s", line)
        more = f" (+{len(lines) - 1} more in build.log)" if len(lines) > 1 else ""
        raise EdgevidError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: "
                           f"{lines[0] if lines else 'unknown parser error'}{more}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        profile.set_shape(network.get_input(i).name, *[tuple(s) for s in shapes])
    config.add_optimization_profile(profile)

    cache = config.create_timing_cache(timing_cache or b"")
    reused = bool(config.set_timing_cache(cache, ignore_mismatch=False)) and bool(timing_cache)
    if timing_cache and not reused:
        log.warning("the previous timing cache does not fit this GPU/TensorRT; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise EdgevidError(f"--dla-core {dla_core}: this device has {builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    on_dla = sum(config.can_run_on_DLA(network.get_layer(i)) for i in range(network.num_layers)) if dla_core is not None else 0

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EdgevidError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path.name}; see build.log")
    plan_path.write_bytes(bytes(plan))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    details = {
        "tensorrt": trt.__version__, "strongly_typed": True, "profile": {"min": list(shapes[0]), "opt": list(shapes[1]),
                                                                        "max": list(shapes[2])},
        "workspace_mb": int(workspace_mb), "timing_cache": "reused" if reused else "new",
        "build_seconds": round(time.perf_counter() - started, 2), "layers": network.num_layers,
    }
    if dla_core is not None:
        details.update(dla_core=dla_core, layers_dla_capable=int(on_dla), gpu_fallback=True)
    log.info("TensorRT %s engine built in %.1f s (timing cache %s)", trt.__version__, details["build_seconds"],
             details["timing_cache"])
    return details


class TensorRTRunner(Runner):
    """One engine, one execution context, one CUDA stream, pinned host buffers."""

    def __init__(self, plan_path: Path, input_shape: Sequence[int], rebuild: str, description: str = "TensorRT"):
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda, self._trt = cuda, trt
        cuda.init()
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        try:
            self._runtime = trt.Runtime(_trt_logger())
            try:
                self.engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
            except Exception:  # some releases raise instead of returning None
                self.engine = None
            if self.engine is None:
                raise ArtifactError(f"{plan_path} is not a TensorRT {trt.__version__} engine (corrupt, or built by"
                                    f" another TensorRT); rebuild it with `{rebuild}`")
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(inputs) != 1 or len(outputs) != 1:
                raise ArtifactError(f"{plan_path} has {len(inputs)} inputs and {len(outputs)} outputs, expected 1 and 1;"
                                    f" rebuild it with `{rebuild}`")
            self.input_name, self.output_name = inputs[0], outputs[0]
            lo, _, hi = (tuple(d) for d in self.engine.get_tensor_profile_shape(self.input_name, 0))
            self.min_batch, self.max_batch = lo[0], hi[0]
            self.input_shape = tuple(input_shape)
            self.context.set_input_shape(self.input_name, tuple(hi))
            self._host_in = cuda.pagelocked_empty(int(np.prod(hi)), trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
            out_max = tuple(self.context.get_tensor_shape(self.output_name))
            self._host_out = cuda.pagelocked_empty(int(np.prod(out_max)),
                                                   trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
            self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
            self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
            self.context.set_tensor_address(self.input_name, int(self._dev_in))
            self.context.set_tensor_address(self.output_name, int(self._dev_out))
            self._batch = None
            self.description = description
            self.runtime = f"tensorrt {trt.__version__} ({cuda.Device(0).name()})"
        finally:
            self._ctx.pop()

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        clip = np.ascontiguousarray(clip, dtype=self._host_in.dtype)
        n = clip.shape[0]
        if not self.min_batch <= n <= self.max_batch:
            raise EdgevidError(f"batch {n} is outside this engine's profile [{self.min_batch}, {self.max_batch}]")
        self._ctx.push()
        try:
            if self._batch != clip.shape:
                self.context.set_input_shape(self.input_name, clip.shape)
                self._batch = clip.shape
            out_shape = tuple(self.context.get_tensor_shape(self.output_name))
            host_in = self._host_in[: clip.size]
            host_in[:] = clip.ravel()
            self._cuda.memcpy_htod_async(self._dev_in, host_in, self.stream)
            if not self.context.execute_async_v3(self.stream.handle):
                raise EdgevidError("TensorRT execute_async_v3 failed; see the log above")
            size = int(np.prod(out_shape))
            self._cuda.memcpy_dtoh_async(self._host_out[:size], self._dev_out, self.stream)
            self.stream.synchronize()
            return self._host_out[:size].reshape(out_shape).astype(np.float32, copy=True)
        finally:
            self._ctx.pop()

    def close(self) -> None:
        if getattr(self, "_ctx", None) is None:
            return
        self._ctx.push()
        try:
            for name in ("_dev_in", "_dev_out"):
                buf = getattr(self, name, None)
                if buf is not None:
                    buf.free()
            self.context = self.engine = self._runtime = None
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
