"""Model metadata that travels with every artifact. Torch-free: runners on a device read it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ClipSpec(BaseModel):
    """How a clip is cut from a video and preprocessed, exactly as at training/test time."""

    model_config = ConfigDict(frozen=True)

    frames: int = Field(gt=0, description="frames per clip (T)")
    stride: int = Field(gt=0, description="sampling stride between frames, in source frames")
    crop: int = Field(gt=0, description="square crop size fed to the model")
    short_side: int = Field(gt=0, description="the short side is resized to this before cropping")
    test_clips: int = Field(1, gt=0, description="temporal views per video at test time")
    test_crops: int = Field(1, gt=0, description="spatial crops per view at test time (1 or 3)")
    sampling: Literal["dense", "segment"] = Field(
        "dense",
        description="dense: `frames` frames `stride` apart (SlowFast); segment: one frame from each of"
        " `frames` equal segments of the whole video (TSN-style, UniFormerV2's kinetics_sparse/ssv2"
        " loaders), where `stride` is only the spacing a live stream samples at",
    )


class Normalization(BaseModel):
    """Per-channel mean/std applied to RGB pixels scaled to [0, 1]."""

    model_config = ConfigDict(frozen=True)

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class Published(BaseModel):
    """Figures the authors published for the full model (None where they gave none), kept as
    published even where the network has another size (``ModelSpec.params_m`` is the measured one)."""

    model_config = ConfigDict(frozen=True)

    params_m: float | None = None
    gflops: float | None = None
    flops_note: str = ""
    top1: float | None = None
    dataset: str = "Kinetics-400"
    source: str = ""


class ModelSpec(BaseModel):
    """Everything a runner, the data layer and the harness need to know about a model."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: str
    params_m: float | None = Field(
        None, description="parameters of this network in millions, as edgevid counts them (to 0.01 M; pinned by a"
        " test); the paper's figure is published.params_m",
    )
    clip: ClipSpec
    norm: Normalization
    layout: str = "NCTHW"
    num_classes: int
    label_set: str = Field(description="name of the label set, e.g. 'kinetics400' or 'synthmotion'")
    published: Published = Published()
    checkpoint_url: str = ""
    checkpoint_layouts: tuple[str, ...] = ()

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int, int]:
        """(N, C, T, H, W) of one preprocessed clip batch."""
        return (batch, 3, self.clip.frames, self.clip.crop, self.clip.crop)


KINETICS_NORM = Normalization(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
