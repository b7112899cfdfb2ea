"""PyTorch eager FP32: the reference that every other artifact is compared with."""

from __future__ import annotations

import numpy as np

from ..base import Backend, BuildRequest, BuildResult, Runner
from .options import TorchEagerOptions

WEIGHTS_FILE = "weights.pt"


class TorchEagerRunner(Runner):
    def __init__(self, model, input_shape, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = model.eval()
        self.input_shape = tuple(input_shape)
        self.description = "PyTorch eager FP32"
        self.runtime = f"torch {torch.__version__} eager"

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))).numpy()


class TorchEagerBackend(Backend):
    name = "torch_eager"
    options_model = TorchEagerOptions
    requirements = {"torch": "torch==2.13.0"}
    extra = "build"
    precisions = ("fp32",)

    def build(self, request: BuildRequest) -> BuildResult:
        import torch

        torch.save(request.model.state_dict(), request.out_dir / WEIGHTS_FILE)
        return BuildResult(quantization={"scheme": "none (FP32 reference)"}, versions={"torch": torch.__version__})

    def open(self, artifact, threads=None, mode="latency") -> Runner:
        import torch

        from ...models import create_model

        spec = artifact.manifest.spec
        model = create_model(artifact.manifest.model, num_classes=spec.num_classes)
        model.load_state_dict(torch.load(artifact.file(WEIGHTS_FILE), weights_only=True))
        return TorchEagerRunner(model, artifact.manifest.input_shape, threads)


BACKEND = TorchEagerBackend()
