"""Tiny registered models for the harness tests (fast to export; one with a LayerNorm + softmax block)."""

from __future__ import annotations

import torch
from torch import nn

from edgevid.models import register_model
from edgevid.models.registry import _REGISTRY
from edgevid.spec import KINETICS_NORM, ClipSpec, ModelSpec

TINY = "harness_tiny"
NAN = "harness_nan"


def _spec(name: str, test_clips: int = 2) -> ModelSpec:
    return ModelSpec(name=name, family="x3d", clip=ClipSpec(frames=4, stride=6, crop=32, short_side=36, test_clips=test_clips),
                     norm=KINETICS_NORM, num_classes=8, label_set="synthmotion")


class TinyVideoNet(nn.Module):
    """Conv3d stem + residual conv block + temporal self-attention (LayerNorm, softmax) + linear head."""

    def __init__(self, num_classes: int = 8, width: int = 8, nan: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
                                  nn.BatchNorm3d(width), nn.SiLU())
        self.temporal = nn.Conv3d(width, width, (3, 1, 1), padding=(1, 0, 0), groups=width)
        self.down = nn.Sequential(nn.Conv3d(width, 2 * width, 3, stride=(1, 2, 2), padding=1), nn.ReLU())
        self.res = nn.Conv3d(2 * width, 2 * width, 1)
        dim = 2 * width
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, num_classes)
        self.nan = nan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.temporal(x)
        x = self.down(x)
        x = x + self.res(x)
        tokens = x.mean(dim=(3, 4)).transpose(1, 2)  # [N, T, C]
        q, k, v = self.qkv(self.norm(tokens)).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        tokens = tokens + self.proj(attn @ v)
        logits = self.head(tokens.mean(1))
        if self.nan:  # sqrt of a negative number: NaN on every input
            logits = logits + torch.sqrt(x.mean() - 1e6)
        return logits


if TINY not in _REGISTRY:
    register_model(_spec(TINY))(lambda num_classes=8, **kw: TinyVideoNet(num_classes, **kw))
    register_model(_spec(NAN, test_clips=1))(lambda num_classes=8, **kw: TinyVideoNet(num_classes, nan=True, **kw))


_BUILT: dict = {}
_ROOT: list = []


def artifact(model: str = TINY, precision: str = "fp32", target: str = "onnx-cpu", **kwargs):
    """Build once per test process (tiny models export in seconds); returns the Artifact."""
    import tempfile

    from edgevid.build import build_artifact

    key = repr((model, precision, target, sorted(kwargs.items())))
    if key not in _BUILT:
        if not _ROOT:
            _ROOT.append(tempfile.mkdtemp(prefix="edgevid-harness-"))
        out = f"{_ROOT[0]}/{len(_BUILT)}"
        if precision == "int8":
            kwargs = {"calib": "synthetic", "calib_size": 8, **kwargs}
        _BUILT[key] = build_artifact(model, target, precision, weights="random", out=out, **kwargs)
    return _BUILT[key]


def copy(art, folder):
    """A private copy of a cached artifact (tests write report.json into it)."""
    import shutil
    from pathlib import Path

    from edgevid.artifact import Artifact

    dest = Path(folder) / art.path.name
    shutil.copytree(art.path, dest)
    return Artifact(dest)
