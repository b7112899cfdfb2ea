"""Model metadata that travels with every artifact. Torch-free: runners on a device read it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import EdgevidError


class ClipSpec(BaseModel):
    """How a clip is cut from a video and preprocessed, exactly as at training/test time."""

    model_config = ConfigDict(frozen=True)

    frames: int = Field(gt=0, description="frames per clip (T)")
    stride: int = Field(gt=0, description="sampling stride between frames, in frames at the model's training_fps"
                        " (the video is resampled to it first)")
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


class TestProtocol(BaseModel):
    """How the official code cuts and combines test views (``edgevid eval`` and golden packs follow it).

    Every index formula runs on the video resampled to the spec's ``training_fps`` (see
    ``edgevid.data.sampling``): where the source's rate is the training rate the indices are the
    official code's exactly; otherwise they are the official protocol applied in stream time.
    """

    model_config = ConfigDict(frozen=True)

    starts: Literal["uniform", "offset", "centre"] = Field(
        description="dense clip starts among k test clips: uniform = delta * i / k (SlowFast's default,"
        " TimeSformer: a single clip starts at frame 0); offset = i * floor(delta / (k - 1)), one clip"
        " centred (SlowFast USE_OFFSET_SAMPLING); centre = floor(delta / 2) for one clip, spread to the"
        " last frame for several (edgevid's reference models); delta = frames - clip size"
    )
    spacing: Literal["linspace", "stride"] = Field(
        description="dense frames within a clip: linspace = SlowFast's temporal_sampling, `frames`"
        " indices linspace(start, start + frames * stride - 1) truncated; stride = exactly `stride` apart"
    )
    combine: Literal["sum_softmax", "sum_logits"] = Field(
        description="views of one video: sum of softmax probabilities (SlowFast heads apply softmax at"
        " test time; UniFormerV2 TEST.ADD_SOFTMAX) or sum of logits (TimeSformer's linear head)"
    )
    head_average: Literal["logits", "softmax"] = Field(
        "logits", description="X3D's test head, over the positions its training-crop window leaves at the"
        " test crop: the mean of the logits (pytorchvideo; edgevid's default) or log of the mean softmax"
        " (SlowFast's test head: `edgevid build --protocol slowfast`)"
    )
    source: str = Field("", description="where the protocol is defined in the official code")


PROTOCOLS: dict[str, TestProtocol] = {
    "x3d": TestProtocol(
        starts="uniform", spacing="linspace", combine="sum_softmax",
        source="facebookresearch/SlowFast slowfast/datasets/decoder.py get_start_end_idx (USE_OFFSET_SAMPLING"
        " False) + temporal_sampling; head_helper.X3DHead softmax at test; TestMeter ensemble sum",
    ),
    "timesformer": TestProtocol(
        starts="uniform", spacing="linspace", combine="sum_logits",
        source="facebookresearch/TimeSformer timesformer/datasets/decoder.py get_start_end_idx +"
        " temporal_sampling; linear head, test_net.py preds = model(inputs); TestMeter ensemble sum",
    ),
    "uniformerv2": TestProtocol(
        starts="uniform", spacing="linspace", combine="sum_softmax",
        source="OpenGVLab/UniFormerV2 slowfast/datasets/decoder.py get_seq_frames (sparse);"
        " tools/test_net.py TEST.ADD_SOFTMAX True; TestMeter ensemble sum",
    ),
    "tubevit": TestProtocol(
        starts="uniform", spacing="linspace", combine="sum_softmax",
        source="no official test code (Piergiovanni et al. 2023 test 4x3 views); SlowFast's protocol",
    ),
}
"""Each family's official test protocol (``ModelSpec.protocol`` defaults to its family's)."""

PROTOCOL_CHOICES: dict[str, dict[str, str]] = {
    "x3d": {"slowfast": "softmax"},
}
"""Families whose official codebases disagree on the test head: ``--protocol NAME`` -> ``head_average``.
``default`` is always the spec's own (X3D: pytorchvideo's mean logits)."""


def with_protocol(spec: "ModelSpec", name: str | None, flag: str = "--protocol") -> "ModelSpec":
    """``spec`` with the test protocol ``name`` (None: unchanged; ``default``: the family's own); one-line
    error when the family has no such choice."""
    if name is None:
        return spec
    choices = {"default": "logits", **PROTOCOL_CHOICES.get(spec.family, {})}
    if name not in choices:
        known = ", ".join(choices)
        hint = f"choose one of {known}" if len(choices) > 1 else f"the {spec.family} family has one test protocol; drop {flag}"
        raise EdgevidError(f"{flag} {name}: not a test protocol of {spec.name}; {hint}")
    return spec.model_copy(update={"protocol": spec.protocol.model_copy(update={"head_average": choices[name]})})


def protocol_name(spec: "ModelSpec") -> str:
    """The ``--protocol`` name ``spec`` follows (``default`` unless its family offers a choice)."""
    for name, head in PROTOCOL_CHOICES.get(spec.family, {}).items():
        if spec.protocol is not None and spec.protocol.head_average == head:
            return name
    return "default"


EDGEVID_PROTOCOL = TestProtocol(
    starts="centre", spacing="stride", combine="sum_softmax",
    source="edgevid reference models (scripts/train_reference.py trains and validates with it)",
)
"""The protocol of the models trained here (label set ``synthmotion``)."""

TRAINING_FPS = {"synthmotion": 15.0}
"""Frame rate of a label set's training videos; others (Kinetics, SSv2) are 30 fps, as the
official loaders' ``DATA.TARGET_FPS``."""
DEFAULT_TRAINING_FPS = 30.0


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
    training_fps: float = Field(
        0.0, ge=0, description="frame rate the model was trained at: videos are resampled to it before"
        " sampling (`stride` counts these frames); 0 = the label set's (15 SynthMotion, else 30)"
    )
    protocol: TestProtocol | None = Field(None, description="official test protocol; None = the family's")
    transformer: bool = Field(
        False, description="the network is built of attention blocks (softmax(Q K^T) V, LayerNorm, GELU): the"
        " backends' INT8 recipes read it. The attention products are activation x activation (no weight to"
        " calibrate per channel, a wide range after the softmax), so they stay float where the backend can"
        " (the float_activation_matmuls default of ONNX Runtime and OpenVINO, TensorRT's transformer Q/DQ policy); softmax /"
        " LayerNorm / GELU stay float (NNCF ModelType.TRANSFORMER on OpenVINO, TensorRT keeps LayerNorm fp32);"
        " calibration recipes may give these models their own clip count (clips_by_backend"
        " 'BACKEND/transformer'). Set where each variant is declared (models/*.py)",
    )
    smooth_quant: bool = Field(
        True, description="whether OpenVINO's INT8 recipe for a transformer applies NNCF's SmoothQuant (the"
        " option smooth_quant_alpha overrides). False where it measurably costs accuracy: UniFormerV2 (on the"
        " trained uniformerv2_synth, 200 val clips, SmoothQuant cost 5.5 points, top-1 88.0 vs FP32 93.5,"
        " agreement 91.5%, SQNR 12.3 dB; without it 1.0 point: 92.5, agreement 98.5%, SQNR 25.7 dB)."
        " Not read for convolutional nets",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data):
        """Fill ``training_fps`` and ``protocol`` from the label set and family when not given."""
        if isinstance(data, dict):
            data = dict(data)
            label_set = data.get("label_set", "")
            if not data.get("training_fps"):
                data["training_fps"] = TRAINING_FPS.get(label_set, DEFAULT_TRAINING_FPS)
            if data.get("protocol") is None:
                own = label_set == "synthmotion"
                data["protocol"] = EDGEVID_PROTOCOL if own else PROTOCOLS.get(data.get("family", ""), EDGEVID_PROTOCOL)
        return data

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int, int]:
        """(N, C, T, H, W) of one preprocessed clip batch."""
        return (batch, 3, self.clip.frames, self.clip.crop, self.clip.crop)


KINETICS_NORM = Normalization(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
