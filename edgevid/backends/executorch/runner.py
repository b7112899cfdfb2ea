"""The run side of the ExecuTorch backend: ``model.pte`` under ExecuTorch's Python runtime on a host
(its bindings import torch themselves). Phones run the same ``.pte`` with ExecuTorch's C++ runner:
see ``edgevid golden export``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ArtifactError, DataError, first_line
from ..base import Runner


class ExecuTorchRunner(Runner):
    """Runs ``model.pte`` with ExecuTorch's Python runtime (XNNPACK delegate + portable kernels)."""

    def __init__(self, path: Path, input_shape, threads: int | None = None, description: str = "ExecuTorch"):
        import torch
        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        if not Path(path).is_file():
            raise ArtifactError(f"{path} is missing; rebuild the artifact with `edgevid build`")
        if threads and _threadpool_get_thread_count() != threads:
            # Process-wide; safe only before a method loads (delegates keep the pool they saw).
            _unsafe_reset_threadpool(int(threads))
        self._torch = torch
        try:
            self._program = Runtime.get().load_program(str(path))
            self._method = self._program.load_method("forward")
        except Exception as exc:  # noqa: BLE001 - the runtime raises RuntimeError with a code
            raise ArtifactError(f"ExecuTorch cannot load {path} ({first_line(exc, 200)});"
                                " rebuild it with `edgevid build`") from None
        self.input_shape = tuple(input_shape)
        self.threads = _threadpool_get_thread_count()
        self.description = description
        from importlib.metadata import version

        self.runtime = f"executorch {version('executorch')} (Python runtime, host CPU)"

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        clip = np.ascontiguousarray(clip, dtype=np.float32)
        if clip.shape != self.input_shape:
            raise DataError(f"this .pte takes clips of shape {self.input_shape}, got {clip.shape}")
        out = self._method.execute([self._torch.from_numpy(clip)])
        return out[0].numpy().copy()

    def close(self) -> None:
        self._method = None
        self._program = None
