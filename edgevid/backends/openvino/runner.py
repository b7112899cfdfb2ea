"""The run side of the OpenVINO backend: devices, compile properties and the runner.

Needs only numpy + openvino (no torch): this is what a device with `pip install 'edgevid[openvino]'` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import EdgevidError
from ..base import Runner

VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "stream": "LATENCY"}
#: "stream": latency while other threads of this process work beside the runner (the streaming pipeline's
#: decoder): OpenVINO's own CPU pinning off, so its inference thread and the decoder are not held to cores
#: the scheduler cannot rebalance (x3d_synth INT8, 20,000 streamed frames, adjacent pairs: end-to-end
#: windows/s +5 to +12% unpinned; the runner alone 3-6% slower)


class DeviceUnavailable(EdgevidError):
    """An OpenVINO device that was asked for explicitly but is not present on this machine."""


# --- devices -----------------------------------------------------------------------------------

def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


def device_present(device: str, available: Sequence[str]) -> bool:
    """``GPU`` matches ``GPU.0``; virtual devices (AUTO, HETERO ...) are always accepted."""
    if device.split(":")[0].upper() in VIRTUAL_DEVICES:
        return True
    return any(device == d or device == d.split(".")[0] for d in available)


def require_device(device: str, flag: str) -> None:
    available = available_devices()
    if not device_present(device, available):
        raise DeviceUnavailable(
            f"{flag} {device}: OpenVINO on this machine sees only {', '.join(available) or 'no device'};"
            f" run on a machine with that device or choose one of those"
        )


def runtime_config(device: str, mode: str, threads: int | None, inference_precision: str | None) -> dict[str, str]:
    """The compile properties a runner uses (also what ``benchmark_app -load_config`` gets)."""
    if mode not in HINTS:
        raise EdgevidError(f"mode {mode!r}: choose latency, throughput or stream")
    config = {"PERFORMANCE_HINT": HINTS[mode]}
    kind = device.split(".")[0].upper()
    if mode == "stream" and kind == "CPU":
        config["ENABLE_CPU_PINNING"] = "NO"
    if inference_precision:
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    if kind == "CPU" and threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if kind in ("GPU", "NPU"):  # their compiles are slow: reuse OpenVINO's own model cache
        from ...paths import edgevid_home

        config["CACHE_DIR"] = str(edgevid_home() / "openvino-cache")
    return config


def default_inference_precision(device: str, precision: str) -> str | None:
    """f32 on CPU and GPU (no silent bf16/f16 when measuring accuracy); f16 for FP16 artifacts on
    GPU/NPU; the NPU's own default otherwise (it has no f32)."""
    kind = device.split(".")[0].upper()
    if kind == "NPU":
        return None
    if kind == "GPU" and precision == "fp16":
        return "f16"
    return "f32"


class OpenVINORunner(Runner):
    """One compiled model. Latency mode: one synchronous request. Throughput mode: the device's
    optimal number of requests run concurrently, each on one model batch of the input."""

    def __init__(self, xml: Path, device: str, config: dict[str, str], description: str = "OpenVINO"):
        import openvino as ov

        self.core = ov.Core()
        self.device = device
        self.config = dict(config)
        self.compiled = self.core.compile_model(self.core.read_model(str(xml)), device, self.config)
        shape = self.compiled.inputs[0].get_partial_shape()
        self.static_batch = shape[0].get_length() if shape[0].is_static else None
        dims = [d.get_length() if d.is_static else 1 for d in shape]
        count = 1
        if self.config["PERFORMANCE_HINT"] == "THROUGHPUT":
            count = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        # plain requests, no AsyncInferQueue: a queue holding a Python callback can deadlock when freed
        self._requests = [self.compiled.create_infer_request() for _ in range(count)]
        self.requests = count
        self.input_shape = (dims[0] * count, *dims[1:])
        self.description = description
        self.runtime = f"openvino {ov.__version__.split('-')[0]} ({device})"

    def _chunks(self, clip: np.ndarray) -> list[np.ndarray]:
        if self.static_batch is None or len(clip) == self.static_batch:
            return [clip]
        b = self.static_batch
        padded = len(clip) + (-len(clip)) % b
        if padded != len(clip):
            clip = np.concatenate([clip, np.zeros((padded - len(clip), *clip.shape[1:]), clip.dtype)])
        return [clip[i:i + b] for i in range(0, padded, b)]

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        # share_inputs: the request reads the caller's buffer instead of copying it first (each call waits for its
        # requests, so the buffer outlives them): x3d_synth INT8 alone 1.5-6% faster in two streaming-benchmark pairs
        clip = np.ascontiguousarray(clip, dtype=np.float32)
        chunks = self._chunks(clip)
        outs = []
        if len(self._requests) == 1 or len(chunks) == 1:
            request = self._requests[0]
            for chunk in chunks:
                request.infer({0: chunk}, share_inputs=True)
                outs.append(request.get_output_tensor(0).data.copy())
        else:
            for start in range(0, len(chunks), len(self._requests)):
                busy = list(zip(self._requests, chunks[start:start + len(self._requests)]))
                for request, chunk in busy:
                    request.start_async({0: chunk}, share_inputs=True)
                for request, _ in busy:
                    request.wait()
                    outs.append(request.get_output_tensor(0).data.copy())
        return np.concatenate(outs)[: len(clip)]

    def close(self) -> None:
        self._requests = []
        self.compiled = None
